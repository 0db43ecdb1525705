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
mod validate;
pub use validate::{STATUS_VALUES, StageRef};
pub mod yaml;

pub use diag::{Diagnostic, Pos, Severity, Span};
pub use model::*;
pub use read::{did_you_mean, suggest};
pub use yaml::Node;

use read::Reader;
use std::path::Path;

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
        self.diagnostics.iter().map(|d| d.render(&self.path, &self.source)).collect()
    }

    /// The pipeline, if this file holds a valid one.
    pub fn pipeline(&self) -> Option<&Pipeline> {
        match &self.entity {
            Some(Entity::Pipeline(p)) if self.is_valid() => Some(p),
            _ => None,
        }
    }
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

/// Read and validate a file.
pub fn load_file(path: &Path) -> Result<Document, LoadError> {
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
        return Ok(Document { path: label, source: String::new(), root: None, entity: None, diagnostics: vec![d] });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    Ok(parse_bytes(&label, bytes))
}

/// Validate bytes that claim to be a YAML file.
pub fn parse_bytes(label: &str, bytes: Vec<u8>) -> Document {
    match String::from_utf8(bytes) {
        Ok(s) => parse_document(label, s),
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
                path: label.to_string(),
                source: String::from_utf8_lossy(&bytes).into_owned(),
                root: None,
                entity: None,
                diagnostics: vec![d],
            }
        }
    }
}

const TOP_KEYS: &[&str] =
    &["pipeline", "service", "environment", "infrastructureDefinition", "inputSet", "overlayInputSet"];

/// Validate YAML text.
pub fn parse_document(label: &str, source: String) -> Document {
    let mut doc = Document { path: label.to_string(), source, root: None, entity: None, diagnostics: Vec::new() };
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
                "pipeline" => parse::pipeline(&mut r, v).map(|p| {
                    let _ = validate::pipeline(&p, v, &doc.source, &mut r);
                    Entity::Pipeline(Box::new(p))
                }),
                other => {
                    validate::expressions_only(v, &doc.source, &mut r);
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
    diags.sort_by_key(|d| (d.span.start, d.severity == Severity::Warning));
    diags.dedup();
    doc.diagnostics = diags;
    doc.root = Some(root);
    doc
}

/// Read and validate a pipeline from the value node of its `pipeline:` key (e.g. after runtime inputs were
/// applied with [`inputs::apply`]). `source` is the text the spans point into.
pub fn pipeline_from_node(node: &Node, source: &str) -> Result<Pipeline, Vec<Diagnostic>> {
    let mut r = Reader::default();
    let p = parse::pipeline(&mut r, node);
    if let Some(p) = &p {
        let _ = validate::pipeline(p, node, source, &mut r);
    }
    let errors: Vec<Diagnostic> = r.diags.into_iter().filter(|d| d.severity == Severity::Error).collect();
    match p {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(errors),
    }
}

/// Every expression of a (valid) pipeline that reads another stage, with where it is written. `node` is the
/// value of the `pipeline:` key.
pub fn stage_references(p: &Pipeline, node: &Node, source: &str) -> Vec<StageRef> {
    let mut scratch = Reader::default();
    validate::pipeline(p, node, source, &mut scratch)
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

/// The JSON Schema of pipeline YAML files.
pub fn pipeline_schema() -> serde_json::Value {
    let mut s = serde_json::to_value(schemars::schema_for!(model::PipelineFile)).unwrap_or_default();
    if let Some(o) = s.as_object_mut() {
        o.insert("$id".into(), "https://pipewright.dev/schema/pipeline.json".into());
        o.insert("title".into(), "pipewright / Harness v0 pipeline".into());
    }
    s
}
