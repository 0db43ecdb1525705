//! Harness v0 pipeline YAML → a typed model with source spans. This crate owns reading files (size and
//! encoding checks), the YAML node tree, the model, structural and semantic validation with
//! `FILE:LINE:COL` diagnostics, rendering the model back to YAML, and the JSON Schema. It runs nothing and
//! touches no database.

pub mod diag;
pub mod duration;
pub mod edit;
mod emit;
pub mod inputs;
pub mod model;
mod parse;
mod read;
pub mod template;
mod validate;
pub use validate::{STATUS_VALUES, StageRef};
pub mod yaml;

pub use diag::{Diagnostic, Pos, Severity, Span};
pub use model::*;
pub use read::{did_you_mean, suggest};
pub use yaml::Node;

use read::Reader;
use std::path::Path;
use std::sync::Arc;
pub use template::SourceFile;

/// The entity a file holds, recognised by its top-level key.
#[derive(Debug, Clone)]
pub enum Entity {
    /// `pipeline:`
    Pipeline(Box<Pipeline>),
    /// `service:`
    Service(Box<Service>),
    /// `environment:`
    Environment(Box<Environment>),
    /// `infrastructureDefinition:`
    Infrastructure(Box<InfrastructureDefinition>),
    /// `inputSet:`
    InputSet(Box<InputSet>),
    /// `overlayInputSet:`
    OverlayInputSet(Box<OverlayInputSet>),
    /// `template:`
    Template(Box<template::Template>),
}

impl Entity {
    /// The top-level key.
    pub fn kind(&self) -> &'static str {
        match self {
            Entity::Pipeline(_) => "pipeline",
            Entity::Service(_) => "service",
            Entity::Environment(_) => "environment",
            Entity::Infrastructure(_) => "infrastructureDefinition",
            Entity::InputSet(_) => "inputSet",
            Entity::OverlayInputSet(_) => "overlayInputSet",
            Entity::Template(_) => "template",
        }
    }

    /// The entity's identifier.
    pub fn identifier(&self) -> &str {
        match self {
            Entity::Pipeline(p) => &p.identifier,
            Entity::Service(s) => &s.meta.identifier,
            Entity::Environment(e) => &e.meta.identifier,
            Entity::Infrastructure(i) => &i.meta.identifier,
            Entity::InputSet(i) => &i.meta.identifier,
            Entity::OverlayInputSet(o) => &o.meta.identifier,
            Entity::Template(t) => &t.identifier,
        }
    }

    /// Render back to YAML, under its top-level key.
    pub fn to_yaml(&self) -> String {
        let inner = match self {
            Entity::Pipeline(p) => serde_json::to_value(p),
            Entity::Service(s) => serde_json::to_value(s).map(service_shape),
            Entity::Environment(e) => serde_json::to_value(e),
            Entity::Infrastructure(i) => serde_json::to_value(i),
            Entity::InputSet(i) => serde_json::to_value(i).map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("pipelineIdentifier");
                }
                v
            }),
            Entity::OverlayInputSet(o) => serde_json::to_value(o),
            Entity::Template(t) => Ok(serde_json::json!({
                "name": t.name, "identifier": t.identifier, "versionLabel": t.version, "type": t.kind.name(),
                "spec": t.spec.to_json(),
            })),
        }
        .unwrap_or_default();
        let mut root = serde_json::Map::new();
        root.insert(self.kind().to_string(), inner);
        emit::to_yaml(&serde_json::Value::Object(root))
    }
}

/// A service renders its definition as written (the parsed `variables` and type live inside it).
fn service_shape(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("deploymentType");
        o.remove("variables");
    }
    v
}

/// One loaded file: its text, its YAML tree, the entity it holds (when it could be read), and every problem.
#[derive(Debug, Clone)]
pub struct Document {
    /// The path as given.
    pub path: String,
    /// The text (lossy if it was not UTF-8).
    pub source: String,
    /// The YAML tree, when it parsed.
    pub root: Option<Node>,
    /// The entity, when it could be read.
    pub entity: Option<Entity>,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The other files its spans may point into (the templates it uses): `Span::file` `k` is `files[k - 1]`.
    pub files: Arc<Vec<SourceFile>>,
    /// The templates it uses and where.
    pub uses: Vec<template::Use>,
    /// When it uses templates: the pipeline with every template resolved, as YAML — what an execution records
    /// and runs (`pipewright render` prints it).
    pub resolved: Option<String>,
}

impl Document {
    /// True when there is no error (warnings allowed).
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// Every diagnostic rendered for a terminal.
    pub fn render_diagnostics(&self) -> String {
        render_all(&self.diagnostics, &self.path, &self.source, &self.files, &self.uses)
    }

    /// The label and text of file `file` (as in `Span::file`).
    pub fn file(&self, file: u16) -> (&str, &str) {
        file_of(file, &self.path, &self.source, &self.files)
    }

    /// The texts spans point into, by file number.
    pub fn texts(&self) -> Vec<&str> {
        std::iter::once(self.source.as_str()).chain(self.files.iter().map(|f| f.text.as_str())).collect()
    }

    /// The YAML an execution of this pipeline records: the resolved pipeline when it uses templates, else the
    /// file as written.
    pub fn run_source(&self) -> &str {
        self.resolved.as_deref().unwrap_or(&self.source)
    }

    /// Where span `s` is, as `FILE:LINE:COL`.
    pub fn locate(&self, s: Span) -> String {
        format!("{}:{}:{}", self.file(s.file).0, s.start.line, s.start.col)
    }

    /// The pipeline, if this file holds a valid one.
    pub fn pipeline(&self) -> Option<&Pipeline> {
        match &self.entity {
            Some(Entity::Pipeline(p)) if self.is_valid() => Some(p),
            _ => None,
        }
    }
}

fn file_of<'a>(file: u16, path: &'a str, source: &'a str, files: &'a [SourceFile]) -> (&'a str, &'a str) {
    match file.checked_sub(1).and_then(|k| files.get(k as usize)) {
        Some(f) => (&f.label, &f.text),
        None => (path, source),
    }
}

/// Render diagnostics that may point into a document's template files; one inside a template is followed by
/// where the template is used.
pub fn render_all(
    diags: &[Diagnostic],
    path: &str,
    source: &str,
    files: &[SourceFile],
    uses: &[template::Use],
) -> String {
    let mut out = String::new();
    for d in diags {
        let (label, text) = file_of(d.span.file, path, source, files);
        out.push_str(&d.render(label, text));
        if d.span.file != 0
            && let Some(u) = uses.iter().find(|u| u.file == d.span.file)
        {
            let (at, _) = file_of(u.at.file, path, source, files);
            out.push_str(&format!(
                "  = note: in template `{}`, used at {at}:{}:{}\n",
                u.template, u.at.start.line, u.at.start.col
            ));
        }
    }
    out
}

/// Why a file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read the file: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Read and validate a file (a pipeline that uses templates cannot be resolved: see [`load_file_with`]).
pub fn load_file(path: &Path) -> Result<Document, LoadError> {
    load_file_with(path, None)
}

/// Read and validate a file, resolving its templates from `templates`.
pub fn load_file_with(path: &Path, templates: Option<&template::Library>) -> Result<Document, LoadError> {
    let label = path.display().to_string();
    let io = |source| LoadError::Io { path: label.clone(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return Err(io(std::io::Error::other("it is a directory")));
    }
    if meta.len() > yaml::MAX_FILE_BYTES as u64 {
        let d = Diagnostic::error(
            Span::at(Pos { line: 1, col: 1 }, 1),
            format!(
                "the file is {:.1} MB; pipewright reads pipeline files of at most {} MiB",
                meta.len() as f64 / 1e6,
                yaml::MAX_FILE_BYTES >> 20
            ),
        )
        .with_help("split the file, or check that this is the file you meant");
        return Ok(Document { diagnostics: vec![d], ..Document::empty(label, String::new()) });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    Ok(parse_bytes_with(&label, bytes, templates))
}

/// Validate bytes that claim to be a YAML file.
pub fn parse_bytes(label: &str, bytes: Vec<u8>) -> Document {
    parse_bytes_with(label, bytes, None)
}

/// Validate bytes that claim to be a YAML file, resolving templates from `templates`.
pub fn parse_bytes_with(label: &str, bytes: Vec<u8>, templates: Option<&template::Library>) -> Document {
    match String::from_utf8(bytes) {
        Ok(s) => parse_document_with(label, s, templates),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let prefix = String::from_utf8_lossy(&bytes[..valid]);
            let line = prefix.matches('\n').count() as u32 + 1;
            let col = prefix.rsplit('\n').next().unwrap_or("").chars().count() as u32 + 1;
            let d = Diagnostic::error(
                Span::at(Pos { line, col }, 1),
                format!("the file is not valid UTF-8: byte 0x{:02x} at offset {valid}", bytes[valid]),
            )
            .with_help("save the file as UTF-8");
            Document {
                diagnostics: vec![d],
                ..Document::empty(label.to_string(), String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }
}

const TOP_KEYS: &[&str] =
    &["pipeline", "service", "environment", "infrastructureDefinition", "inputSet", "overlayInputSet", "template"];

impl Document {
    fn empty(path: String, source: String) -> Document {
        Document {
            path,
            source,
            root: None,
            entity: None,
            diagnostics: Vec::new(),
            files: Arc::default(),
            uses: Vec::new(),
            resolved: None,
        }
    }
}

/// Validate YAML text (a pipeline that uses templates cannot be resolved: see [`parse_document_with`]).
pub fn parse_document(label: &str, source: String) -> Document {
    parse_document_with(label, source, None)
}

/// Validate YAML text; the templates a pipeline (or a template) uses are looked up in `templates`.
pub fn parse_document_with(label: &str, source: String, templates: Option<&template::Library>) -> Document {
    let mut doc = Document::empty(label.to_string(), source);
    let root = match yaml::load(&doc.source) {
        Ok(n) => n,
        Err(mut d) => {
            if d.span.start.line == 0 {
                d.span = Span::at(Pos { line: 1, col: 1 }, 1);
            }
            doc.diagnostics.push(d);
            return doc;
        }
    };
    let mut r = Reader::default();
    let mut resolved_body: Option<Node> = None;
    let found = match &root.yaml {
        yaml::Yaml::Map(entries) => entries.iter().find(|(k, _)| k.as_scalar().is_some_and(|k| TOP_KEYS.contains(&k))),
        _ => None,
    };
    match found {
        None => {
            let keys: Vec<&str> = match &root.yaml {
                yaml::Yaml::Map(e) => e.iter().filter_map(|(k, _)| k.as_scalar()).collect(),
                _ => Vec::new(),
            };
            let hint = keys.first().map(|k| read::did_you_mean(k, TOP_KEYS.iter().copied())).unwrap_or_default();
            r.error(
                root.span,
                format!("expected a top-level `pipeline:` (or `service:`, `environment:`, `infrastructureDefinition:`, `inputSet:`, `overlayInputSet:`), found {}{hint}",
                    if keys.is_empty() { root.kind().to_string() } else { format!("`{}`", keys.join("`, `")) }),
            );
        }
        Some((k, v)) => {
            if let yaml::Yaml::Map(entries) = &root.yaml {
                for (other, _) in entries.iter().filter(|(o, _)| o.span != k.span) {
                    r.warn(
                        other.span,
                        format!("unknown top-level key `{}`; it is ignored", other.as_scalar().unwrap_or("?")),
                    );
                }
            }
            let key = k.as_scalar().unwrap_or_default();
            doc.entity = match key {
                "pipeline" => {
                    let mut failed = Vec::new();
                    let body = if doc.source.contains("templateRef") && template::uses_templates(v) {
                        let res = template::resolve(v, templates, &template::Kind::Pipeline);
                        if let Some(lib) = templates {
                            doc.files = lib.files.clone();
                        }
                        doc.uses = res.uses;
                        failed = res.failed;
                        r.diags.extend(res.diagnostics);
                        res.node
                    } else {
                        None
                    };
                    let theirs = r.diags.len();
                    let node = body.as_ref().unwrap_or(v);
                    let sources = doc.texts();
                    let p = parse::pipeline(&mut r, node).map(|p| {
                        let _ = validate::pipeline(&p, node, &sources, &mut r);
                        Entity::Pipeline(Box::new(p))
                    });
                    drop(sources);
                    // Problems inside an element whose template was not found are follow-ons of that error.
                    let mut i = 0;
                    r.diags.retain(|d| {
                        i += 1;
                        i <= theirs || !failed.iter().any(|f| within(d.span, *f))
                    });
                    resolved_body = body;
                    p
                }
                "template" => template_file(v, templates, &doc, &mut r),
                other => {
                    validate::expressions_only(v, &[doc.source.as_str()], &mut r);
                    match other {
                        "service" => parse::service(&mut r, v).map(|s| Entity::Service(Box::new(s))),
                        "environment" => parse::environment(&mut r, v).map(|s| Entity::Environment(Box::new(s))),
                        "infrastructureDefinition" => {
                            parse::infrastructure(&mut r, v).map(|s| Entity::Infrastructure(Box::new(s)))
                        }
                        "inputSet" => parse::input_set(&mut r, v).map(|s| Entity::InputSet(Box::new(s))),
                        _ => parse::overlay_input_set(&mut r, v).map(|s| Entity::OverlayInputSet(Box::new(s))),
                    }
                }
            };
        }
    }
    let mut diags = r.diags;
    diags.sort_by_key(|d| (d.span.file, d.span.start, d.severity == Severity::Warning));
    diags.dedup();
    doc.diagnostics = diags;
    let mut root = root;
    if let Some(body) = resolved_body {
        if let yaml::Yaml::Map(entries) = &mut root.yaml
            && let Some((_, v)) = entries.iter_mut().find(|(k, _)| k.as_scalar() == Some("pipeline"))
        {
            *v = body;
        }
        if doc.is_valid() {
            let mut top = root.clone();
            if let yaml::Yaml::Map(entries) = &mut top.yaml {
                entries.retain(|(k, _)| k.as_scalar() == Some("pipeline"));
            }
            doc.resolved = Some(emit::node_to_yaml(&top));
        }
    }
    doc.root = Some(root);
    doc
}

/// True when `inner` lies within `outer` (same file).
fn within(inner: Span, outer: Span) -> bool {
    inner.file == outer.file && inner.start >= outer.start && inner.start <= outer.end
}

/// Read a template file (`node` is the value of `template:`): its header, and its spec as the stage, step,
/// step group or pipeline it stands for, with the templates it uses resolved from `templates`.
fn template_file(node: &Node, templates: Option<&template::Library>, doc: &Document, r: &mut Reader) -> Option<Entity> {
    let t = match template::read(node, 0) {
        Ok(t) => t,
        Err(ds) => {
            r.diags.extend(ds);
            return None;
        }
    };
    validate::expressions_only(&t.spec, &[doc.source.as_str()], r);
    let res = template::resolve(&t.spec, templates, &t.kind);
    r.diags.extend(res.diagnostics.into_iter().filter(|d| d.span.file == 0));
    let spec = res.node.unwrap_or_else(|| t.spec.clone());
    // The spec read as the element it stands for, named as the template is.
    let mut entries = vec![
        (scalar_node("identifier", spec.span), scalar_node(&t.identifier, spec.span)),
        (scalar_node("name", spec.span), scalar_node(&t.name, spec.span)),
    ];
    let yaml::Yaml::Map(own) = &spec.yaml else {
        r.error(spec.span, format!("the `spec` of a template must be a map, found {}", spec.kind()));
        return None;
    };
    entries.extend(own.iter().filter(|(k, _)| k.as_scalar() != Some("stageType")).cloned());
    let element = Node { yaml: yaml::Yaml::Map(entries), span: spec.span };
    let mut scratch = Reader::default();
    match t.kind {
        template::Kind::Stage => drop(parse::stage(&mut scratch, &element)),
        template::Kind::Step => drop(parse::step(&mut scratch, &element)),
        template::Kind::StepGroup => drop(parse::step_group(&mut scratch, &element)),
        template::Kind::Pipeline => drop(parse::pipeline(&mut scratch, &element)),
        template::Kind::Other(_) => {}
    }
    // Nodes from other templates were checked with their own files.
    r.diags.extend(scratch.diags.into_iter().filter(|d| d.span.file == 0));
    Some(Entity::Template(Box::new(t)))
}

fn scalar_node(text: &str, span: Span) -> Node {
    Node { yaml: yaml::Yaml::Scalar(text.to_string(), yaml::Style::Plain), span }
}

/// Read and validate a pipeline from the value node of its `pipeline:` key (e.g. after runtime inputs were
/// applied with [`inputs::apply`]). `sources` are the texts the spans point into, by file number
/// ([`Document::texts`]).
pub fn pipeline_from_node(node: &Node, sources: &[&str]) -> Result<Pipeline, Vec<Diagnostic>> {
    let mut r = Reader::default();
    let p = parse::pipeline(&mut r, node);
    if let Some(p) = &p {
        let _ = validate::pipeline(p, node, sources, &mut r);
    }
    let errors: Vec<Diagnostic> = r.diags.into_iter().filter(|d| d.severity == Severity::Error).collect();
    match p {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(errors),
    }
}

/// Every expression of a (valid) pipeline that reads another stage, with where it is written. `node` is the
/// value of the `pipeline:` key.
pub fn stage_references(p: &Pipeline, node: &Node, sources: &[&str]) -> Vec<StageRef> {
    let mut scratch = Reader::default();
    validate::pipeline(p, node, sources, &mut scratch)
}

impl Document {
    /// The value node of the top-level key (`pipeline:`, `inputSet:`, …).
    pub fn body(&self) -> Option<&Node> {
        let key = self.entity.as_ref()?.kind();
        self.root.as_ref()?.get(key)
    }
}

/// Every `.yaml` / `.yml` file below `dir`, recursively, sorted.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// From how many stages a pipeline is read and checked on several threads.
pub(crate) const PARALLEL_FROM: usize = 256;

/// Run `f` over `items` split into one chunk per available core, on scoped threads; the results in order.
pub(crate) fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    if threads == 1 || items.len() < 2 {
        return vec![f(items)];
    }
    let size = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items.chunks(size).map(|chunk| scope.spawn(move || f(chunk))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// pipewright's settings for a repository's pipelines (`.harness/pipewright.yaml`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Where they were read from.
    pub path: Option<std::path::PathBuf>,
    /// Step type → the handler that runs it.
    pub step_handlers: std::collections::BTreeMap<String, StepHandler>,
    /// Git connector → the URL its repositories are under (`GitClone` steps and `cloneCodebase` join
    /// `URL/REPO`; a repository-level connector's URL is the repository itself).
    pub connectors: std::collections::BTreeMap<String, String>,
}

/// Harness step types pipewright runs with a built-in handler (a plain local equivalent), unless a
/// `stepHandlers` entry maps them to a script.
pub const BUILTIN_HANDLED: &[&str] = StepType::OWN.split_at(StepType::NAMES.len()).1;

/// The most iterations one node's looping strategy may have by default (a server sets its own limit); `validate`
/// refuses a strategy whose written values already count more.
pub const MAX_ITERATIONS: usize = 10_000;

/// The name of the settings file in a `.harness/` folder.
pub const SETTINGS_FILE: &str = "pipewright.yaml";

/// Read a settings file; its problems come back rendered (`FILE:LINE:COL: …`), warnings beside the settings.
pub fn load_settings(path: &Path) -> Result<(Settings, String), String> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{label}: cannot read the settings file: {e}"))?;
    let root = yaml::load(&text).map_err(|d| d.render(&label, &text))?;
    let mut r = Reader::default();
    let mut settings = Settings { path: Some(path.to_path_buf()), ..Settings::default() };
    if let Some(m) = r.map(&root, "the settings file", &["stepHandlers", "connectors"]) {
        if let Some(h) = m.get("stepHandlers") {
            settings.step_handlers = parse::step_handlers(&mut r, h);
        }
        if let Some(c) = m.get("connectors")
            && let Some(cm) = r.map(c, "`connectors`", &[])
        {
            for (k, v) in cm.entries() {
                match (k.as_scalar(), v.as_scalar()) {
                    (Some(k), Some(url)) if !url.trim().is_empty() => {
                        settings.connectors.insert(k.to_string(), url.trim().trim_end_matches('/').to_string());
                    }
                    _ => r.error(
                        v.span,
                        "a connector maps its identifier to a URL: `connectors: {github: https://github.com/acme}`",
                    ),
                }
            }
        }
    }
    let rendered: String = r.diags.iter().map(|d| d.render(&label, &text)).collect();
    if r.diags.iter().any(|d| d.severity == Severity::Error) {
        return Err(rendered);
    }
    Ok((settings, rendered))
}

/// The JSON Schema of pipeline YAML files.
pub fn pipeline_schema() -> serde_json::Value {
    let mut s = serde_json::to_value(schemars::schema_for!(model::PipelineFile)).unwrap_or_default();
    if let Some(o) = s.as_object_mut() {
        o.insert("$id".into(), "https://pipewright.dev/schema/pipeline.json".into());
        o.insert("title".into(), "pipewright / Harness v0 pipeline".into());
    }
    s
}
