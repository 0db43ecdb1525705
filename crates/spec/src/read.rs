//! The reading toolkit that turns YAML nodes into typed fields while collecting every problem at once:
//! maps with known keys (unknown keys warn and name the nearest known key), required fields, scalars of the
//! right type, enumerations that list their allowed names, identifiers, durations, and "did you mean".

use crate::diag::{Diagnostic, Span};
use crate::duration::{Duration, parse_millis};
use crate::model::{Spanned, Str};
use crate::yaml::{Node, Style, Yaml};

/// Words Harness reserves: they cannot be identifiers.
pub const RESERVED: &[&str] = &[
    "or",
    "and",
    "eq",
    "ne",
    "lt",
    "gt",
    "le",
    "ge",
    "div",
    "mod",
    "not",
    "null",
    "true",
    "false",
    "new",
    "var",
    "return",
    "shellScriptProvisioner",
    "class",
];

/// The nearest candidate to `name`, when one is close enough to be a likely typo.
pub fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (c, strsim::levenshtein(&lower, &c.to_ascii_lowercase())))
        .filter(|(c, d)| *d <= (c.len().max(name.len()) / 3).max(2) && *d < c.len().max(1))
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| c)
}

/// ", did you mean `x`?" or nothing.
pub fn did_you_mean<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    suggest(name, candidates).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
}

/// Keys Harness's own editor writes into pipelines that change nothing pipewright does (where a delegate runs,
/// GitOps and caching switches, notification and flow-control settings): accepted without a warning, so a real
/// repository's files validate clean. Unknown keys still warn.
const HARNESS_WRITES: &[&str] = &[
    "onDelegate",
    "allowSimultaneousDeployments",
    "gitOpsEnabled",
    "buildIntelligence",
    "skipInstances",
    "notificationRules",
    "flowControl",
    "caching",
    "slsa_provenance",
];

/// A map node being read.
pub struct MapView<'n> {
    /// The map node.
    pub node: &'n Node,
    entries: &'n [(Node, Node)],
    /// What it is, for messages ("stage `build`").
    pub what: String,
}

impl<'n> MapView<'n> {
    /// The value at `key`, if present and not null.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, _)| k.as_scalar() == Some(key)).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    /// The key node for `key`.
    pub fn key_span(&self, key: &str) -> Span {
        self.entries.iter().find(|(k, _)| k.as_scalar() == Some(key)).map_or(self.node.span, |(k, _)| k.span)
    }

    /// All entries.
    pub fn entries(&self) -> &'n [(Node, Node)] {
        self.entries
    }
}

/// Collects diagnostics while reading.
#[derive(Default)]
pub struct Reader {
    /// Everything found so far.
    pub diags: Vec<Diagnostic>,
}

impl Reader {
    /// Record an error.
    pub fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(span, msg));
    }

    /// Record an error with a hint.
    pub fn error_help(&mut self, span: Span, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::error(span, msg).with_help(help));
    }

    /// Record a warning.
    pub fn warn(&mut self, span: Span, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(span, msg));
    }

    /// Read a map whose keys must be among `known`.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<MapView<'n>> {
        let Yaml::Map(entries) = &node.yaml else {
            self.error(node.span, format!("expected a map for {what}, found {}", node.kind()));
            return None;
        };
        for (i, (k, _)) in entries.iter().enumerate() {
            let Some(key) = k.as_scalar() else {
                self.error(k.span, format!("a key in {what} is {}; keys must be plain names", k.kind()));
                continue;
            };
            if entries[..i].iter().any(|(other, _)| other.as_scalar() == Some(key)) {
                self.error(k.span, format!("duplicate key `{key}` in {what}; each key may appear once"));
            }
            if !known.is_empty() && !known.contains(&key) && !HARNESS_WRITES.contains(&key) {
                let msg = match suggest(key, known.iter().copied()) {
                    Some(s) => format!("unknown key `{key}` in {what} is ignored; did you mean `{s}`?"),
                    None => format!("unknown key `{key}` in {what} is ignored; known keys: {}", known.join(", ")),
                };
                self.warn(k.span, msg);
            }
        }
        Some(MapView { node, entries, what: what.to_string() })
    }

    /// A required field.
    pub fn req<'n>(&mut self, m: &MapView<'n>, key: &str) -> Option<&'n Node> {
        let v = m.get(key);
        if v.is_none() {
            self.error_help(
                m.node.span,
                format!("missing required field `{key}` in {}", m.what),
                format!("add `{key}:` to {}", m.what),
            );
        }
        v
    }

    /// A scalar as text.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<Str> {
        match &node.yaml {
            Yaml::Scalar(s, _) => Some(Spanned::new(s.clone(), node.span)),
            _ => {
                self.error(node.span, format!("expected text for {what}, found {}", node.kind()));
                None
            }
        }
    }

    /// A required text field.
    pub fn req_str(&mut self, m: &MapView<'_>, key: &str) -> Option<Str> {
        let n = self.req(m, key)?;
        self.string(n, &format!("`{key}` of {}", m.what))
    }

    /// An optional text field.
    pub fn opt_str(&mut self, m: &MapView<'_>, key: &str) -> Option<Str> {
        let n = m.get(key)?;
        self.string(n, &format!("`{key}` of {}", m.what))
    }

    /// An optional list of text.
    pub fn opt_str_list(&mut self, m: &MapView<'_>, key: &str) -> Option<Vec<Str>> {
        let n = m.get(key)?;
        let items = self.seq(n, &format!("`{key}` of {}", m.what))?;
        Some(items.iter().filter_map(|i| self.string(i, &format!("an entry of `{key}`"))).collect())
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, m: &MapView<'_>, key: &str) -> Option<bool> {
        let n = m.get(key)?;
        match &n.yaml {
            Yaml::Scalar(s, Style::Plain) if matches!(s.as_str(), "true" | "True" | "TRUE") => Some(true),
            Yaml::Scalar(s, Style::Plain) if matches!(s.as_str(), "false" | "False" | "FALSE") => Some(false),
            _ => {
                self.error(n.span, format!("`{key}` of {} must be true or false, found {}", m.what, show(n)));
                None
            }
        }
    }

    /// An optional whole number.
    pub fn opt_u32(&mut self, m: &MapView<'_>, key: &str) -> Option<u32> {
        let n = m.get(key)?;
        match n.as_scalar().and_then(|s| s.trim().parse::<u32>().ok()) {
            Some(v) => Some(v),
            None => {
                self.error(n.span, format!("`{key}` of {} must be a whole number, found {}", m.what, show(n)));
                None
            }
        }
    }

    /// An optional duration (`10m`, or an expression).
    pub fn opt_duration(&mut self, m: &MapView<'_>, key: &str) -> Option<Duration> {
        let n = m.get(key)?;
        self.duration(n, &format!("`{key}` of {}", m.what))
    }

    /// A duration node.
    pub fn duration(&mut self, n: &Node, what: &str) -> Option<Duration> {
        let s = self.string(n, what)?;
        if s.contains("<+") {
            return Some(Duration { text: s.value, millis: None, span: n.span });
        }
        match parse_millis(&s) {
            Ok(ms) => Some(Duration { text: s.value, millis: Some(ms), span: n.span }),
            Err(e) => {
                self.error(n.span, format!("{what}: {e}"));
                None
            }
        }
    }

    /// A list node.
    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.yaml {
            Yaml::Seq(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            // A whole list given when the pipeline runs (`infrastructureDefinitions: <+input>`): nothing to read
            // until then; the runtime input is listed by `plan` and asked for by `run`.
            Yaml::Scalar(s, _) if s.trim_start().starts_with("<+input>") => Some(&[]),
            _ => {
                self.error(node.span, format!("expected a list for {what}, found {}", node.kind()));
                None
            }
        }
    }

    /// An optional list field, each entry read by `f`.
    pub fn list<T>(&mut self, m: &MapView<'_>, key: &str, mut f: impl FnMut(&mut Self, &Node) -> Option<T>) -> Vec<T> {
        let Some(n) = m.get(key) else { return Vec::new() };
        let Some(items) = self.seq(n, &format!("`{key}` of {}", m.what)) else { return Vec::new() };
        items.iter().filter_map(|i| f(self, i)).collect()
    }

    /// One of a fixed set of names.
    pub fn one_of<T>(&mut self, node: &Node, what: &str, names: &[&str], f: impl Fn(&str) -> Option<T>) -> Option<T> {
        let s = self.string(node, what)?;
        match f(&s) {
            Some(v) => Some(v),
            None => {
                let hint = did_you_mean(&s, names.iter().copied());
                self.error(
                    node.span,
                    format!("unsupported {what} `{}`{hint}; supported: {}", s.value, names.join(", ")),
                );
                None
            }
        }
    }

    /// Check identifier syntax: `^[a-zA-Z_][0-9a-zA-Z_]{0,127}$`, not a reserved word.
    pub fn identifier(&mut self, id: &Str, what: &str) {
        let s = id.value.as_str();
        let mut chars = s.chars();
        let ok_first = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let ok_rest = s.chars().skip(1).all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_first || !ok_rest || s.len() > 128 {
            let fixed: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(128).collect();
            let fixed = if fixed.starts_with(|c: char| c.is_ascii_digit()) { format!("_{fixed}") } else { fixed };
            self.error_help(
                id.span,
                format!("`{s}` is not a valid identifier for {what}: identifiers start with a letter or `_`, hold only letters, digits and `_`, and are at most 128 characters"),
                format!("use e.g. `{fixed}`"),
            );
        } else if RESERVED.contains(&s) {
            self.error_help(
                id.span,
                format!("`{s}` is a reserved word and cannot be the identifier of {what}"),
                format!("use e.g. `{s}_1`"),
            );
        }
    }
}

fn show(n: &Node) -> String {
    match n.as_scalar() {
        Some(s) => format!("`{s}`"),
        None => n.kind().to_string(),
    }
}
