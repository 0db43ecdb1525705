//! Harness templates. This module owns template files (top-level `template:` with `type: Pipeline | Stage |
//! StepGroup | Step` and a `spec`), the [`Library`] a pipeline's references are looked up in (by scope —
//! `account.` / `org.` / project — identifier and version label), and resolution: every
//! `template: {templateRef, versionLabel, templateInputs}` of a pipeline's YAML tree is replaced by the
//! template's `spec`, its runtime inputs filled from `templateInputs`, recursively (a stage template may use step
//! templates). Nodes that come from a template keep their place in the template file — their spans carry the
//! file's number — so an error inside a template points at the template, with a note saying where it is used.

use crate::diag::{Diagnostic, Span};
use crate::read::{did_you_mean, suggest};
use crate::yaml::{self, Node, Style, Yaml};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// How deep templates may use templates (a template that uses itself is caught before this).
const MAX_DEPTH: usize = 16;

/// A file a document's spans may point into besides its own: a template file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Its label (the path as found, or `template ID@VERSION` for a stored one).
    pub label: String,
    /// Its text.
    pub text: String,
}

/// What a template is a template of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A whole pipeline (`pipeline: {template: …}`).
    Pipeline,
    /// A stage.
    Stage,
    /// A step group.
    StepGroup,
    /// A step.
    Step,
    /// Another Harness template type (`CustomDeployment`, `ArtifactSource`, `MonitoredService`, …): kept, not
    /// resolved in pipelines.
    Other(String),
}

impl Kind {
    fn of(s: &str) -> Kind {
        match s {
            "Pipeline" => Kind::Pipeline,
            "Stage" => Kind::Stage,
            "StepGroup" => Kind::StepGroup,
            "Step" => Kind::Step,
            other => Kind::Other(other.to_string()),
        }
    }

    /// The name Harness gives it.
    pub fn name(&self) -> &str {
        match self {
            Kind::Pipeline => "Pipeline",
            Kind::Stage => "Stage",
            Kind::StepGroup => "StepGroup",
            Kind::Step => "Step",
            Kind::Other(s) => s,
        }
    }

    /// The YAML key an element of this kind sits under in a pipeline.
    fn key(&self) -> &str {
        match self {
            Kind::Pipeline => "pipeline",
            Kind::Stage => "stage",
            Kind::StepGroup => "stepGroup",
            Kind::Step => "step",
            Kind::Other(s) => s,
        }
    }
}

/// Where a template lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Neither `orgIdentifier` nor `projectIdentifier`: referenced as `account.ID`.
    Account,
    /// `orgIdentifier` only: referenced as `org.ID`.
    Org,
    /// Both: referenced as `ID`.
    Project,
}

impl Scope {
    fn prefix(self) -> &'static str {
        match self {
            Scope::Account => "account.",
            Scope::Org => "org.",
            Scope::Project => "",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Org => "organization",
            Scope::Project => "project",
        }
    }
}

/// One version of one template.
#[derive(Debug, Clone)]
pub struct Template {
    /// `identifier`.
    pub identifier: String,
    /// `name`.
    pub name: String,
    /// `versionLabel`.
    pub version: String,
    /// `type`.
    pub kind: Kind,
    /// Its scope, from `orgIdentifier` / `projectIdentifier`.
    pub scope: Scope,
    /// `spec`, its spans pointing into the template's file.
    pub spec: Node,
    /// The file it was read from: `Span::file` of its nodes.
    pub file: u16,
    /// An administrator of its scope marked this version stable: a reference without `versionLabel` uses
    /// it (files carry no such mark; a server's stored templates do).
    pub stable: bool,
}

impl Template {
    /// `ID@VERSION`, with the scope prefix.
    pub fn reference(&self) -> String {
        format!("{}{}@{}", self.scope.prefix(), self.identifier, self.version)
    }
}

/// Every template a pipeline may use, and the files they were read from.
#[derive(Debug, Clone, Default)]
pub struct Library {
    /// The templates, in the order read.
    pub templates: Vec<Template>,
    /// The files: file `k` (as in [`Span::file`]) is `files[k - 1]`.
    pub files: Arc<Vec<SourceFile>>,
    /// Problems of files that look like templates but could not be read: reported when a reference finds no
    /// template (a broken file is the likely reason).
    pub broken: Vec<(u16, Diagnostic)>,
}

/// Read a template file's header and spec. `node` is the value of the `template:` key.
pub fn read(node: &Node, file: u16) -> Result<Template, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let Yaml::Map(_) = &node.yaml else {
        return Err(vec![Diagnostic::error(
            node.span,
            format!("expected a map under `template:`, found {}", node.kind()),
        )]);
    };
    let mut field = |key: &str| -> Option<String> {
        match node.get(key) {
            Some(v) if !v.is_null() => match v.as_scalar() {
                Some(s) => Some(s.to_string()),
                None => {
                    errors.push(Diagnostic::error(
                        v.span,
                        format!("`{key}` of a template must be a scalar, found {}", v.kind()),
                    ));
                    None
                }
            },
            _ => {
                errors.push(
                    Diagnostic::error(node.span, format!("a template needs `{key}`"))
                        .with_help("a template file reads `template: {name, identifier, versionLabel, type, spec}`"),
                );
                None
            }
        }
    };
    let name = field("name");
    let identifier = field("identifier");
    let version = field("versionLabel");
    let kind = field("type");
    let spec = node.get("spec").filter(|s| !s.is_null());
    if spec.is_none() {
        errors.push(
            Diagnostic::error(
                node.span,
                "a template needs `spec`: the stage, step, step group or pipeline it stands for",
            )
            .with_help("a template file reads `template: {name, identifier, versionLabel, type, spec}`"),
        );
    }
    let (Some(name), Some(identifier), Some(version), Some(kind), Some(spec), true) =
        (name, identifier, version, kind, spec, errors.is_empty())
    else {
        return Err(errors);
    };
    let has = |k: &str| node.get(k).and_then(Node::as_scalar).is_some_and(|s| !s.trim().is_empty());
    let scope = match (has("orgIdentifier"), has("projectIdentifier")) {
        (_, true) => Scope::Project,
        (true, false) => Scope::Org,
        (false, false) => Scope::Account,
    };
    Ok(Template { identifier, name, version, kind: Kind::of(&kind), scope, spec: spec.clone(), file, stable: false })
}

/// The top-level key of a YAML tree, if it is a map.
fn top_key(root: &Node) -> Option<&str> {
    match &root.yaml {
        Yaml::Map(entries) => entries.first().and_then(|(k, _)| k.as_scalar()),
        _ => None,
    }
}

impl Library {
    /// Add a template file's text. Files that are not templates are skipped (a `.harness/` folder holds
    /// pipelines and entities too); a template file that cannot be read is remembered in [`Library::broken`].
    pub fn add(&mut self, label: &str, text: String) {
        let root = match yaml::load(&text) {
            Ok(root) => root,
            Err(mut d) => {
                if text.lines().any(|l| l.starts_with("template:")) {
                    self.push_file(label, text);
                    d.span.file = self.files.len() as u16;
                    self.broken.push((d.span.file, d));
                }
                return;
            }
        };
        if top_key(&root) != Some("template") {
            return;
        }
        self.push_file(label, text);
        let file = self.files.len() as u16;
        let mut root = root;
        retag(&mut root, file);
        let node = root.get("template").cloned().unwrap_or(root);
        match read(&node, file) {
            Ok(t) => self.templates.push(t),
            Err(ds) => self.broken.extend(ds.into_iter().map(|d| (file, d))),
        }
    }

    fn push_file(&mut self, label: &str, text: String) {
        Arc::make_mut(&mut self.files).push(SourceFile { label: label.to_string(), text });
    }

    /// Every template file below `dir` (other YAML files are skipped).
    pub fn load_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        for f in crate::yaml_files(dir)? {
            // Skip files that are not YAML text or too big: they are not templates.
            let Ok(meta) = std::fs::metadata(&f) else { continue };
            if meta.len() > yaml::MAX_FILE_BYTES as u64 {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&f) else { continue };
            if !text.contains("template:") {
                continue;
            }
            self.add(&f.display().to_string(), text);
        }
        Ok(())
    }

    /// True when no template was found.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty() && self.broken.is_empty()
    }

    /// The template `reference` (`ID`, `org.ID`, `account.ID`) at `version` (the newest when none is given).
    pub fn find(&self, reference: &str, version: Option<&str>) -> Result<&Template, Miss> {
        let (scope, id) = match reference.split_once('.') {
            Some(("account", id)) => (Scope::Account, id),
            Some(("org", id)) => (Scope::Org, id),
            _ => (Scope::Project, reference),
        };
        let same_id: Vec<&Template> = self.templates.iter().filter(|t| t.identifier == id).collect();
        if same_id.is_empty() {
            let near = suggest(id, self.templates.iter().map(|t| t.identifier.as_str()));
            return Err(Miss::Unknown { near: near.map(String::from) });
        }
        let in_scope: Vec<&Template> = same_id.iter().copied().filter(|t| t.scope == scope).collect();
        if in_scope.is_empty() {
            let other = same_id[0].scope;
            return Err(Miss::Scope { asked: scope, found: other, write: format!("{}{id}", other.prefix()) });
        }
        match version.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => in_scope
                .iter()
                .copied()
                .find(|t| t.version == v)
                .ok_or_else(|| Miss::Version { versions: in_scope.iter().map(|t| t.version.clone()).collect() }),
            // Without a version label Harness uses the version marked stable in that scope; until one is
            // marked (and in files, which carry no mark), the newest label (in natural order: v2 < v10).
            None => Ok(in_scope
                .iter()
                .copied()
                .find(|t| t.stable)
                .or_else(|| in_scope.iter().copied().max_by(|a, b| natural(&a.version, &b.version)))
                .unwrap_or(in_scope[0])),
        }
    }
}

/// Why a reference found no template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No template has this identifier.
    Unknown {
        /// A close identifier.
        near: Option<String>,
    },
    /// It exists at another scope.
    Scope {
        /// The scope the reference names.
        asked: Scope,
        /// Where it is.
        found: Scope,
        /// The reference that finds it.
        write: String,
    },
    /// It has no such version.
    Version {
        /// The versions it has.
        versions: Vec<String>,
    },
}

/// Compare version labels so that digit runs compare as numbers (`v2` < `v10`).
pub fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((kind, text)) if *kind == d => text.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, p), (true, q)) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            ((_, p), (_, q)) => p.cmp(q),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Set the file number of every span of a tree.
pub fn retag(node: &mut Node, file: u16) {
    node.span.file = file;
    match &mut node.yaml {
        Yaml::Scalar(..) => {}
        Yaml::Seq(items) => items.iter_mut().for_each(|n| retag(n, file)),
        Yaml::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            retag(k, file);
            retag(v, file);
        }),
    }
}

/// True when a tree holds a `template:` reference anywhere (cheap check before resolving).
pub fn uses_templates(node: &Node) -> bool {
    match &node.yaml {
        Yaml::Scalar(..) => false,
        Yaml::Seq(items) => items.iter().any(uses_templates),
        Yaml::Map(entries) => entries.iter().any(|(k, v)| {
            (k.as_scalar() == Some("template") && matches!(v.yaml, Yaml::Map(_)) && v.get("templateRef").is_some())
                || uses_templates(v)
        }),
    }
}

/// One use of a template: which, and where the reference is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// `ID@VERSION` with its scope prefix.
    pub template: String,
    /// The template's file (as in [`Span::file`]).
    pub file: u16,
    /// The `templateRef` that uses it.
    pub at: Span,
}

/// What resolution gives: the tree with every reference replaced, the templates used, and the problems.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The tree.
    pub node: Option<Node>,
    /// Every template used (first use of each file first).
    pub uses: Vec<Use>,
    /// Errors and warnings.
    pub diagnostics: Vec<Diagnostic>,
    /// Spans of references that could not be resolved: problems inside them are follow-ons, not reported.
    pub failed: Vec<Span>,
}

/// Resolve every template reference in `node` — the value of a pipeline's `pipeline:` key (then a pipeline
/// template may stand for it) or of a template's `spec` (then `kind` says what the template is).
pub fn resolve(node: &Node, lib: Option<&Library>, kind: &Kind) -> Resolved {
    let mut r = Resolver { lib, out: Resolved::default(), stack: Vec::new() };
    let node = match kind {
        Kind::Pipeline if node.get("template").is_some_and(|t| t.get("templateRef").is_some()) => {
            // Without its template, what the pipeline gives its template's inputs is not checked: follow-ons.
            r.instantiate(node, &Kind::Pipeline).unwrap_or_else(|| node.clone())
        }
        _ => r.expand(node),
    };
    r.out.node = Some(node);
    r.out
}

struct Resolver<'l> {
    lib: Option<&'l Library>,
    out: Resolved,
    /// The templates being expanded (to catch a template that uses itself).
    stack: Vec<String>,
}

impl Resolver<'_> {
    /// Expand the references below `node`.
    fn expand(&mut self, node: &Node) -> Node {
        match &node.yaml {
            Yaml::Scalar(..) => node.clone(),
            Yaml::Seq(items) => {
                Node { yaml: Yaml::Seq(items.iter().map(|n| self.expand(n)).collect()), span: node.span }
            }
            Yaml::Map(entries) => {
                let entries = entries
                    .iter()
                    .map(|(k, v)| {
                        let kind = match k.as_scalar() {
                            Some("stage") => Some(Kind::Stage),
                            Some("step") => Some(Kind::Step),
                            Some("stepGroup") => Some(Kind::StepGroup),
                            _ => None,
                        };
                        let v = match kind {
                            Some(kind) if v.get("template").is_some_and(|t| matches!(t.yaml, Yaml::Map(_))) => {
                                match self.instantiate(v, &kind) {
                                    Some(done) => done,
                                    None => stub(v, &kind),
                                }
                            }
                            _ => self.expand(v),
                        };
                        (k.clone(), v)
                    })
                    .collect();
                Node { yaml: Yaml::Map(entries), span: node.span }
            }
        }
    }

    fn error(&mut self, span: Span, msg: String, help: String) {
        self.out.diagnostics.push(Diagnostic::error(span, msg).with_help(help));
    }

    /// The element `node` (a map with `template:`) with the template put in its place, or nothing when the
    /// template cannot be found (the error is recorded).
    fn instantiate(&mut self, node: &Node, kind: &Kind) -> Option<Node> {
        let t = node.get("template")?;
        let what = match node.get("identifier").and_then(Node::as_scalar) {
            Some(id) => format!("{} `{id}`", kind.key()),
            None => format!("this {}", kind.key()),
        };
        let fail = |r: &mut Self| {
            r.out.failed.push(node.span);
            None
        };
        let Some(reference) = t.get("templateRef").filter(|n| !n.is_null()) else {
            self.error(
                t.span,
                format!("the template of {what} has no `templateRef`"),
                "write `template: {templateRef: ID, versionLabel: VERSION}`".into(),
            );
            return fail(self);
        };
        let Some(ref_text) = reference.as_scalar().map(str::trim) else {
            self.error(
                reference.span,
                format!("`templateRef` must be a name, found {}", reference.kind()),
                String::new(),
            );
            return fail(self);
        };
        let version = t.get("versionLabel").and_then(Node::as_scalar);
        let Some(lib) = self.lib.filter(|l| !l.is_empty()) else {
            self.error(
                reference.span,
                format!("{what} uses template `{ref_text}`, and no templates were found"),
                "put the template files in `.harness/templates/` (or anywhere in the `.harness/` folder) next to the pipeline, or pass `--templates DIR`".into(),
            );
            return fail(self);
        };
        let template = match lib.find(ref_text, version) {
            Ok(t) => t.clone(),
            Err(miss) => {
                let (msg, help) = match miss {
                    Miss::Unknown { near } => (
                        format!("{what} uses template `{ref_text}`, which is not among the {} templates found{}", lib.templates.len(),
                            near.map(|n| format!("; did you mean `{n}`?")).unwrap_or_default()),
                        "template files are read from the `.harness/` folder next to the pipeline and from `--templates DIR`; their `identifier` is what `templateRef` names".to_string(),
                    ),
                    Miss::Scope { asked, found, write } => (
                        format!("{what} uses template `{ref_text}` at {} scope, but it is an {} template", asked.name(), found.name()),
                        format!("write `templateRef: {write}`"),
                    ),
                    Miss::Version { versions } => (
                        format!("{what} uses version `{}` of template `{ref_text}`, which has versions {}{}", version.unwrap_or_default(),
                            versions.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "),
                            did_you_mean(version.unwrap_or_default(), versions.iter().map(String::as_str))),
                        "set `versionLabel` to one of them".to_string(),
                    ),
                };
                self.error(reference.span, msg, help);
                for (file, d) in &lib.broken {
                    let mut d = d.clone();
                    d.span.file = *file;
                    self.out.diagnostics.push(d);
                }
                return fail(self);
            }
        };
        if &template.kind != kind {
            self.error(
                reference.span,
                format!("{what} uses template `{ref_text}`, which is a {} template", template.kind.name()),
                format!("a {} refers to a template of type {}", kind.key(), kind.name()),
            );
            return fail(self);
        }
        let key = template.reference();
        if self.stack.contains(&key) || self.stack.len() >= MAX_DEPTH {
            self.error(
                reference.span,
                format!("template `{key}` uses itself (through {})", self.stack.join(" → ")),
                "a template cannot contain a reference to itself".into(),
            );
            return fail(self);
        }
        if !self.out.uses.iter().any(|u| u.file == template.file) {
            self.out.uses.push(Use { template: key.clone(), file: template.file, at: reference.span });
        }
        let inputs = t.get("templateInputs").filter(|n| !n.is_null());
        let mut merged = match inputs {
            Some(i) => {
                let mut extra = Vec::new();
                let m = merge(&template.spec, i, &mut extra);
                for (span, path) in extra {
                    self.out.diagnostics.push(
                        Diagnostic::warning(
                            span,
                            format!("`templateInputs` of {what} sets `{path}`, which template `{key}` does not leave as `<+input>`; it is ignored"),
                        )
                        .with_help("only the template's runtime inputs can be set here; edit the template to change other fields"),
                    );
                }
                m
            }
            None => template.spec.clone(),
        };
        // The element's own keys (identifier, name, description, tags, …) come first, then the template's.
        let Yaml::Map(spec_entries) = std::mem::replace(&mut merged.yaml, Yaml::Seq(Vec::new())) else {
            self.error(
                template.spec.span,
                format!("the `spec` of template `{key}` must be a map, found {}", template.spec.kind()),
                String::new(),
            );
            return fail(self);
        };
        let Yaml::Map(own) = &node.yaml else { return fail(self) };
        let mut entries: Vec<(Node, Node)> =
            own.iter().filter(|(k, _)| k.as_scalar() != Some("template")).cloned().collect();
        for (k, v) in spec_entries {
            // A step group template says which stage type it fits (`stageType`); a step group has no such key.
            if *kind == Kind::StepGroup && k.as_scalar() == Some("stageType") {
                continue;
            }
            if !entries.iter().any(|(o, _)| o.as_scalar() == k.as_scalar()) {
                entries.push((k, v));
            }
        }
        let done = Node { yaml: Yaml::Map(entries), span: node.span };
        self.stack.push(key);
        let out = self.expand(&done);
        self.stack.pop();
        Some(out)
    }
}

/// What stands in for an element whose template could not be found, so that the rest of the pipeline reads
/// without follow-on errors (the document is invalid and never runs).
fn stub(node: &Node, kind: &Kind) -> Node {
    let at = node.span;
    let s = |t: &str| Node { yaml: Yaml::Scalar(t.to_string(), Style::Plain), span: at };
    let map = |entries: Vec<(&str, Node)>| Node {
        yaml: Yaml::Map(entries.into_iter().map(|(k, v)| (s(k), v)).collect()),
        span: at,
    };
    let step = || {
        map(vec![
            ("type", s("ShellScript")),
            (
                "spec",
                map(vec![
                    ("shell", s("Bash")),
                    ("source", map(vec![("type", s("Inline")), ("spec", map(vec![("script", s(":"))]))])),
                ]),
            ),
        ])
    };
    let steps = |id: &str| {
        let one = map(vec![("identifier", s(id)), ("name", s(id))]);
        let mut one_entries = match one.yaml {
            Yaml::Map(e) => e,
            _ => Vec::new(),
        };
        if let Yaml::Map(e) = step().yaml {
            one_entries.extend(e);
        }
        Node { yaml: Yaml::Seq(vec![map(vec![("step", Node { yaml: Yaml::Map(one_entries), span: at })])]), span: at }
    };
    let extra = match kind {
        Kind::Step => step(),
        Kind::StepGroup => map(vec![("steps", steps("unresolved"))]),
        _ => map(vec![
            ("type", s("Custom")),
            ("spec", map(vec![("execution", map(vec![("steps", steps("unresolved"))]))])),
        ]),
    };
    let Yaml::Map(own) = &node.yaml else { return node.clone() };
    let mut entries: Vec<(Node, Node)> =
        own.iter().filter(|(k, _)| k.as_scalar() != Some("template")).cloned().collect();
    if let Yaml::Map(e) = extra.yaml {
        entries.extend(e);
    }
    Node { yaml: Yaml::Map(entries), span: at }
}

/// True for a scalar that is a runtime input (`<+input>`, with or without constraints).
fn is_input(n: &Node) -> bool {
    n.as_scalar().is_some_and(|s| s.trim_start().starts_with("<+input>"))
}

/// The key a list item is matched by between a template and its inputs: the identifier of a stage, step or
/// step group, the name of a variable, else its position among items of its shape.
fn item_key(item: &Node, index: usize) -> String {
    if let Yaml::Map(entries) = &item.yaml
        && let [(k, inner)] = entries.as_slice()
        && let Some(kind @ ("stage" | "step" | "stepGroup")) = k.as_scalar()
    {
        return format!("{kind}:{}", inner.get("identifier").and_then(Node::as_scalar).unwrap_or_default());
    }
    if let Some(name) = item.get("identifier").or_else(|| item.get("name")).and_then(Node::as_scalar) {
        return format!("id:{name}");
    }
    format!("#{index}")
}

/// The template's `spec` with its runtime inputs replaced by the values `inputs` gives (same shape). Values
/// for fields that are not runtime inputs are collected in `extra` (span, path).
fn merge(t: &Node, i: &Node, extra: &mut Vec<(Span, String)>) -> Node {
    merge_at(t, i, "", extra)
}

fn merge_at(t: &Node, i: &Node, path: &str, extra: &mut Vec<(Span, String)>) -> Node {
    if is_input(t) {
        // A bare `<+input>` in the inputs leaves the field to the run with the template's own constraints
        // (`.allowedValues`, `.default`, …); anything else is the value.
        return if i.as_scalar().is_some_and(|v| v.trim() == "<+input>") { t.clone() } else { i.clone() };
    }
    let child = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (&t.yaml, &i.yaml) {
        (Yaml::Map(te), Yaml::Map(ie)) => {
            let entries = te
                .iter()
                .map(|(k, v)| {
                    let key = k.as_scalar().unwrap_or_default();
                    // Paths name elements as Harness does: `steps.apply.timeout`, not `steps.apply.step.timeout`.
                    let wrapper = te.len() == 1 && matches!(key, "stage" | "step" | "stepGroup");
                    let at = if wrapper { path.to_string() } else { child(key) };
                    match ie.iter().find(|(ik, _)| ik.as_scalar() == Some(key)) {
                        Some((_, iv)) => (k.clone(), merge_at(v, iv, &at, extra)),
                        None => (k.clone(), v.clone()),
                    }
                })
                .collect();
            for (ik, iv) in ie {
                let key = ik.as_scalar().unwrap_or_default();
                if !te.iter().any(|(k, _)| k.as_scalar() == Some(key)) && !iv.is_null() {
                    extra.push((ik.span, child(key)));
                }
            }
            Node { yaml: Yaml::Map(entries), span: t.span }
        }
        (Yaml::Seq(ts), Yaml::Seq(is)) => {
            let keyed: BTreeMap<String, &Node> = is.iter().enumerate().map(|(n, x)| (item_key(x, n), x)).collect();
            let items = ts
                .iter()
                .enumerate()
                .map(|(n, x)| {
                    let k = item_key(x, n);
                    match keyed.get(&k) {
                        Some(iv) => merge_at(x, iv, &child(k.split_once(':').map_or(k.as_str(), |p| p.1)), extra),
                        None => x.clone(),
                    }
                })
                .collect();
            for (n, x) in is.iter().enumerate() {
                let k = item_key(x, n);
                if !ts.iter().enumerate().any(|(m, y)| item_key(y, m) == k) {
                    extra.push((x.span, child(k.split_once(':').map_or(k.as_str(), |p| p.1))));
                }
            }
            Node { yaml: Yaml::Seq(items), span: t.span }
        }
        // Identifying fields repeated in the inputs (`identifier`, `type`, `name`) match the template: fine.
        (Yaml::Scalar(a, _), Yaml::Scalar(b, _)) if a == b => t.clone(),
        _ if i.is_null() => t.clone(),
        _ => {
            extra.push((i.span, path.to_string()));
            t.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(files: &[&str]) -> Library {
        let mut l = Library::default();
        for (n, f) in files.iter().enumerate() {
            l.add(&format!("t{n}.yaml"), f.to_string());
        }
        l
    }

    const STEP_V1: &str = "template:\n  name: Notify\n  identifier: notify\n  versionLabel: v1\n  type: Step\n  projectIdentifier: p\n  orgIdentifier: o\n  spec:\n    type: ShellScript\n    timeout: 1m\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: <+input>\n";
    const STEP_V10: &str = "template:\n  name: Notify\n  identifier: notify\n  versionLabel: v10\n  type: Step\n  projectIdentifier: p\n  orgIdentifier: o\n  spec:\n    type: ShellScript\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: echo ten\n";
    const ORG_STAGE: &str = "template:\n  name: Build\n  identifier: build\n  versionLabel: \"1\"\n  type: Stage\n  orgIdentifier: o\n  spec:\n    type: Custom\n    spec:\n      execution:\n        steps: []\n";

    #[test]
    fn finds_by_scope_and_version() {
        let l = lib(&[STEP_V1, STEP_V10, ORG_STAGE, "pipeline:\n  name: x\n"]);
        assert_eq!(l.templates.len(), 3);
        assert_eq!(l.files.len(), 3, "non-template files are not kept");
        let cases: &[(&str, Option<&str>, Result<&str, &str>)] = &[
            ("notify", Some("v1"), Ok("notify@v1")),
            ("notify", None, Ok("notify@v10")),
            ("notify", Some(" v10 "), Ok("notify@v10")),
            ("notify", Some("v2"), Err("version")),
            ("org.notify", None, Err("scope")),
            ("org.build", Some("1"), Ok("org.build@1")),
            ("build", Some("1"), Err("scope")),
            ("account.build", None, Err("scope")),
            ("notfy", None, Err("unknown")),
        ];
        for (r, v, want) in cases {
            let got = l.find(r, *v).map(Template::reference).map_err(|m| match m {
                Miss::Unknown { .. } => "unknown",
                Miss::Scope { .. } => "scope",
                Miss::Version { .. } => "version",
            });
            assert_eq!(got.as_deref().map_err(|e| *e), want.map(|s| s), "{r} {v:?}");
        }
    }

    #[test]
    fn natural_order() {
        let cases = [
            ("v2", "v10", std::cmp::Ordering::Less),
            ("1.2", "1.10", std::cmp::Ordering::Less),
            ("b", "a", std::cmp::Ordering::Greater),
            ("v1", "v1", std::cmp::Ordering::Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(natural(a, b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn merge_fills_inputs_and_reports_the_rest() {
        let t =
            yaml::load("c: <+input>.allowedValues(x,y)\na: <+input>\nb: fixed\nlist:\n  - name: x\n    value: <+input>\n  - name: y\n    value: 1\n")
                .unwrap();
        let i = yaml::load(
            "c: <+input>\na: given\nb: other\nlist:\n  - name: x\n    value: 5\n  - name: z\n    value: 2\n",
        )
        .unwrap();
        let mut extra = Vec::new();
        let m = merge(&t, &i, &mut extra);
        assert_eq!(
            m.to_json(),
            serde_json::json!({"c": "<+input>.allowedValues(x,y)", "a": "given", "b": "fixed", "list": [{"name": "x", "value": 5}, {"name": "y", "value": 1}]})
        );
        let paths: Vec<&str> = extra.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(paths, ["b", "list.z"]);
    }

    #[test]
    fn resolve_replaces_steps_and_tags_spans() {
        let l = lib(&[STEP_V1]);
        let p = yaml::load("steps:\n  - step:\n      name: N\n      identifier: n\n      template:\n        templateRef: notify\n        versionLabel: v1\n        templateInputs:\n          type: ShellScript\n          spec:\n            source:\n              spec:\n                script: echo hi\n").unwrap();
        let r = resolve(&p, Some(&l), &Kind::Stage);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        let n = r.node.unwrap();
        let step = &n.get("steps").unwrap();
        let Yaml::Seq(items) = &step.yaml else { panic!() };
        let s = items[0].get("step").unwrap();
        assert_eq!(s.get("identifier").unwrap().as_scalar(), Some("n"));
        assert_eq!(s.get("timeout").unwrap().span.file, 1, "template nodes point into the template file");
        assert_eq!(s.get("identifier").unwrap().span.file, 0);
        assert_eq!(s.to_json()["spec"]["source"]["spec"]["script"], "echo hi");
        assert_eq!(r.uses.len(), 1);
    }

    #[test]
    fn a_template_that_uses_itself_is_an_error() {
        let selfish = "template:\n  name: L\n  identifier: loop\n  versionLabel: v1\n  type: StepGroup\n  projectIdentifier: p\n  orgIdentifier: o\n  spec:\n    steps:\n      - stepGroup:\n          identifier: inner\n          name: inner\n          template:\n            templateRef: loop\n            versionLabel: v1\n";
        let l = lib(&[selfish]);
        let p = yaml::load("steps:\n  - stepGroup:\n      identifier: g\n      name: g\n      template:\n        templateRef: loop\n        versionLabel: v1\n").unwrap();
        let r = resolve(&p, Some(&l), &Kind::Stage);
        assert_eq!(r.diagnostics.len(), 1, "{:?}", r.diagnostics);
        assert!(r.diagnostics[0].message.contains("uses itself"), "{}", r.diagnostics[0].message);
    }
}
