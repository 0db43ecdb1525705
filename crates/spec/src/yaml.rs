//! YAML text → a tree of [`Node`]s, each with its source span. Owns the limits that keep hostile input cheap:
//! file size, nesting depth, total node count (which bounds alias expansion, so a "billion laughs" file is
//! refused instead of expanded), and tab indentation, which YAML forbids and users often mean as spaces.

use crate::diag::{Diagnostic, Pos, Span};
use saphyr_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;

/// Largest file read, in bytes.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting of maps and lists.
pub const MAX_DEPTH: usize = 200;
/// Most nodes one document may expand to, aliases included.
pub const MAX_NODES: usize = 2_000_000;

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `key: value`
    Plain,
    /// `'value'`
    SingleQuoted,
    /// `"value"`
    DoubleQuoted,
    /// `|`
    Literal,
    /// `>`
    Folded,
}

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    /// A scalar's text and style; `null`, numbers and booleans are plain scalars read on demand.
    Scalar(String, Style),
    /// A list.
    Seq(Vec<Node>),
    /// A map, in source order.
    Map(Vec<(Node, Node)>),
}

/// A YAML node and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node.
    pub yaml: Yaml,
    /// Where it is in the file.
    pub span: Span,
}

impl Node {
    /// A plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.yaml, Yaml::Scalar(s, Style::Plain) if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.yaml {
            Yaml::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// What kind of node this is, for messages.
    pub fn kind(&self) -> &'static str {
        match &self.yaml {
            _ if self.is_null() => "nothing (null)",
            Yaml::Scalar(..) => "a scalar",
            Yaml::Seq(_) => "a list",
            Yaml::Map(_) => "a map",
        }
    }

    /// Look up a key in a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.yaml {
            Yaml::Map(m) => m.iter().find(|(k, _)| k.as_scalar() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The position of byte `offset` of this scalar's text in the file (best effort for block scalars).
    pub fn pos_in_scalar(&self, offset: usize, source: &str) -> Pos {
        let Yaml::Scalar(text, style) = &self.yaml else { return self.span.start };
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let newlines = before.matches('\n').count();
        let since_nl = before.rsplit('\n').next().unwrap_or("").chars().count() as u32;
        match style {
            Style::Plain | Style::SingleQuoted | Style::DoubleQuoted if newlines == 0 => {
                let quote = u32::from(*style != Style::Plain);
                Pos { line: self.span.start.line, col: self.span.start.col + quote + since_nl }
            }
            Style::Literal | Style::Folded => {
                // The span of a block scalar starts at its first content line.
                let line = self.span.start.line + newlines as u32;
                let indent = source
                    .lines()
                    .nth(self.span.start.line.saturating_sub(1) as usize)
                    .map_or(0, |l| l.chars().take_while(|c| *c == ' ').count() as u32);
                Pos { line, col: indent + 1 + since_nl }
            }
            _ => self.span.start,
        }
    }

    /// Convert to JSON, keeping scalars' types as YAML's core schema reads them.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.yaml {
            _ if self.is_null() => serde_json::Value::Null,
            Yaml::Scalar(s, Style::Plain) => plain_scalar_json(s),
            Yaml::Scalar(s, _) => serde_json::Value::String(s.clone()),
            Yaml::Seq(items) => serde_json::Value::Array(items.iter().map(Node::to_json).collect()),
            Yaml::Map(entries) => serde_json::Value::Object(
                entries.iter().map(|(k, v)| (k.as_scalar().unwrap_or_default().to_string(), v.to_json())).collect(),
            ),
        }
    }
}

fn plain_scalar_json(s: &str) -> serde_json::Value {
    match s {
        "true" | "True" | "TRUE" => serde_json::Value::Bool(true),
        "false" | "False" | "FALSE" => serde_json::Value::Bool(false),
        _ => {
            if let Ok(i) = s.parse::<i64>() {
                return i.into();
            }
            if s.contains(['.', 'e', 'E'])
                && s.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.')
                && let Ok(f) = s.parse::<f64>()
                && let Some(n) = serde_json::Number::from_f64(f)
            {
                return serde_json::Value::Number(n);
            }
            serde_json::Value::String(s.to_string())
        }
    }
}

fn pos(m: &saphyr_parser::Marker) -> Pos {
    Pos { line: m.line() as u32, col: m.col() as u32 + 1 }
}

fn span(s: &saphyr_parser::Span) -> Span {
    Span { start: pos(&s.start), end: pos(&s.end), file: 0 }
}

enum Frame {
    Seq(Vec<Node>, Span, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Span, usize),
}

fn count(n: &Node) -> usize {
    match &n.yaml {
        Yaml::Scalar(..) => 1,
        Yaml::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Yaml::Map(entries) => 1 + entries.iter().map(|(k, v)| count(k) + count(v)).sum::<usize>(),
    }
}

/// Parse YAML text into its first document's root node.
pub fn load(source: &str) -> Result<Node, Diagnostic> {
    if source.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(
            Span::default(),
            format!(
                "the file is {} bytes; pipewright reads pipeline files of at most {} MiB",
                source.len(),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        ));
    }
    for (i, line) in source.lines().enumerate() {
        let b = line.as_bytes();
        if b.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
            let indent = b.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
            if let Some(col) = b[..indent].iter().position(|c| *c == b'\t') {
                let rest = &line[indent..];
                if !rest.is_empty() && !rest.starts_with('#') {
                    let p = Pos { line: i as u32 + 1, col: col as u32 + 1 };
                    return Err(Diagnostic::error(
                        Span::at(p, 1),
                        "a tab is used for indentation; YAML allows only spaces",
                    )
                    .with_help("replace the tabs at the start of this line with spaces"));
                }
            }
        }
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut nodes = 0usize;
    let mut root: Option<Node> = None;
    let mut documents = 0;
    for item in Parser::new_from_str(source) {
        let (event, sp) = item.map_err(|e| {
            let p = pos(e.marker());
            Diagnostic::error(
                Span { start: p, end: Pos { line: p.line, col: p.col + 1 }, file: 0 },
                format!("invalid YAML: {}", e.info()),
            )
        })?;
        let sp = span(&sp);
        let (finished, anchor) = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => continue,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error(sp, "a second YAML document: a pipewright file holds exactly one")
                        .with_help("split the documents into separate files"));
                }
                continue;
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Diagnostic::error(sp, format!("YAML nested deeper than {MAX_DEPTH} levels")));
                }
                stack.push(Frame::Seq(Vec::new(), sp, anchor));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Diagnostic::error(sp, format!("YAML nested deeper than {MAX_DEPTH} levels")));
                }
                stack.push(Frame::Map(Vec::new(), None, sp, anchor));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, start, anchor)) => {
                    (Node { yaml: Yaml::Seq(items), span: Span { end: sp.end, ..start } }, anchor)
                }
                _ => return Err(Diagnostic::error(sp, "invalid YAML: unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(entries, _, start, anchor)) => {
                    (Node { yaml: Yaml::Map(entries), span: Span { end: sp.end, ..start } }, anchor)
                }
                _ => return Err(Diagnostic::error(sp, "invalid YAML: unbalanced mapping")),
            },
            Event::Scalar(text, style, anchor, _) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                };
                nodes += 1;
                (Node { yaml: Yaml::Scalar(text.into_owned(), style), span: sp }, anchor)
            }
            Event::Alias(id) => {
                let Some((node, n)) = anchors.get(&id) else {
                    return Err(Diagnostic::error(sp, "alias to an unknown anchor"));
                };
                nodes += n;
                if nodes > MAX_NODES {
                    return Err(Diagnostic::error(
                        sp,
                        format!("the YAML expands to more than {MAX_NODES} nodes through aliases (a \"billion laughs\" file?)"),
                    )
                    .with_help("write the repeated parts out, or use fewer nested aliases"));
                }
                let mut node = node.clone();
                node.span = sp;
                (node, 0)
            }
        };
        if matches!(finished.yaml, Yaml::Seq(_) | Yaml::Map(_)) {
            nodes += 1;
        }
        if nodes > MAX_NODES {
            return Err(Diagnostic::error(sp, format!("the YAML holds more than {MAX_NODES} nodes")));
        }
        if anchor != 0 {
            let n = count(&finished);
            anchors.insert(anchor, (finished.clone(), n));
        }
        match stack.last_mut() {
            None => {
                if root.is_none() {
                    root = Some(finished);
                }
            }
            Some(Frame::Seq(items, ..)) => items.push(finished),
            Some(Frame::Map(entries, key, ..)) => match key.take() {
                None => *key = Some(finished),
                Some(k) => entries.push((k, finished)),
            },
        }
    }
    root.ok_or_else(|| {
        Diagnostic::error(Span::default(), "the file is empty: expected a `pipeline:` (or an entity) at the top")
    })
}
