//! `pipewright run`: validate the pipeline, gather runtime inputs (input-set files, then `--input`, then
//! defaults) and refuse before anything runs if one is missing or breaks its constraint, load the entities and
//! secrets, record the execution, and run it with live output (a tree updated in place on a terminal, plain
//! lines otherwise) and a summary.

use crate::{Output, StateArgs, StepArgs};
use anyhow::{Context, bail};
use clap::Args;
use engine::{Engine, EngineConfig, Entities, Event, Observer, Secrets, Seed};
use spec::Entity;
use spec::inputs::InputSource;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use store::{Mode, Node, NodeKind, Status, Store};

/// Arguments of `run`.
#[derive(Args)]
pub struct RunArgs {
    /// The pipeline YAML file.
    pub file: PathBuf,
    /// A runtime input: its fully-qualified path and value (repeatable), e.g. `pipeline.variables.version=2.1.0`.
    #[arg(long = "input", value_name = "PATH=VALUE")]
    pub inputs: Vec<String>,
    /// An input set (or overlay input set) YAML file (repeatable; later ones win, `--input` wins over all).
    #[arg(long = "inputs-file", value_name = "FILE")]
    pub inputs_files: Vec<PathBuf>,
    /// Where services, environments and infrastructure definitions are (default: the `.harness/` folder FILE is in, or `.harness/` next to FILE).
    #[arg(long, value_name = "DIR")]
    pub entities: Option<PathBuf>,
    /// More template files (`template:` with `type: Pipeline|Stage|StepGroup|Step`), besides those of the `.harness/` folder.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// pipewright's settings for the pipeline: `stepHandlers` (default: `pipewright.yaml` in the `.harness/` folder).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Secrets as YAML (`id: value`); `PIPEWRIGHT_SECRET_<ID>` environment variables work too.
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Output: live text, or one JSON document at the end.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub selection: super::plan::Selection,
    #[command(flatten)]
    pub steps: StepArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

pub use launch::Prepared;

/// Read an input set (or overlay) file into `out`; an overlay's input sets are looked for next to it.
fn input_set_file(path: &Path, out: &mut BTreeMap<String, (String, InputSource)>) -> anyhow::Result<()> {
    let doc = spec::load_file(path)?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let sets = |id: &str| -> Option<spec::Document> {
        let entries = std::fs::read_dir(&dir).ok()?;
        entries.flatten().map(|e| e.path()).find_map(|p| {
            if !matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                return None;
            }
            let d = spec::load_file(&p).ok()?;
            match &d.entity {
                Some(Entity::InputSet(s)) if s.meta.identifier.value == id => Some(d),
                _ => None,
            }
        })
    };
    launch::input_set_values(&doc, &sets, out).map_err(|e| match e {
        e @ launch::LaunchError::Invalid { .. } => {
            eprint!("{}", e.render());
            anyhow::anyhow!("{}: the input set is invalid", path.display())
        }
        other => anyhow::anyhow!("{other}"),
    })
}

/// Runtime input values from input set files (later win) and `--input PATH=VALUE`s (which win over all).
pub fn supplied_inputs(given: &[String], files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, (String, InputSource)>> {
    let mut supplied = BTreeMap::new();
    for f in files {
        input_set_file(f, &mut supplied)?;
    }
    for i in given {
        let (k, v) = i
            .split_once('=')
            .with_context(|| format!("`--input {i}`: expected PATH=VALUE, e.g. pipeline.variables.version=1.2.3"))?;
        supplied.insert(k.trim().to_string(), (v.to_string(), InputSource::Given));
    }
    Ok(supplied)
}

/// Secrets from a YAML file (`id: value`); `PIPEWRIGHT_SECRET_<ID>` variables are read by the engine.
pub fn secrets(file: Option<&Path>) -> anyhow::Result<Secrets> {
    let mut s = Secrets::default();
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("{}: cannot read the secrets file", f.display()))?;
        let node =
            spec::yaml::load(&text).map_err(|d| anyhow::anyhow!("{}", d.render(&f.display().to_string(), &text)))?;
        let serde_json::Value::Object(m) = node.to_json() else {
            bail!("{}: expected a map of `secret_id: value`", f.display());
        };
        for (k, v) in m {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            s.values.insert(k, v);
        }
    }
    Ok(s)
}

/// Prints progress as plain lines, one per event.
pub struct Printer {
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

impl Printer {
    /// A printer writing to `out`.
    pub fn new(out: Box<dyn std::io::Write + Send>) -> Self {
        Printer { out: Mutex::new(out) }
    }

    /// The line an event prints (none for the end of the execution: the summary says it).
    pub fn line(e: &Event) -> Option<String> {
        let why =
            |n: &Node| n.failure.as_ref().or(n.skip_reason.as_ref()).map(|r| format!(": {r}")).unwrap_or_default();
        Some(match e {
            Event::Started(n) if n.attempt > 1 => format!("▶ {} (attempt {})", n.path, n.attempt),
            Event::Started(n) => format!("▶ {}", n.path),
            Event::Waiting(n) => format!("… {} {}", n.path, n.status),
            Event::Resumed(n) => format!("▶ {} goes on", n.path),
            Event::RetryScheduled { node, after, retry, of } => {
                format!("↻ {} retry {retry} of {of} in {}", node.path, super::duration_text(*after))
            }
            Event::Ended(n) => format!(
                "{} {} {}{} ({})",
                mark(n.status),
                n.path,
                n.status,
                why(n),
                super::duration(n.started_at, n.ended_at)
            ),
            Event::Log { path, stream, line } => {
                let tag = if *stream == "stderr" { "!" } else { " " };
                format!("  [{path}]{tag} {line}")
            }
            Event::Finished(_) => return None,
        })
    }
}

impl Observer for Printer {
    fn event(&self, e: &Event) {
        if let Some(l) = Self::line(e) {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "{l}");
        }
    }
}

/// On a terminal: one line per stage and step that updates in place (a spinner while it runs, its status
/// when it ends), with log lines scrolling above. What the lines say and where they go is [`Tree`]'s.
struct Live {
    mp: indicatif::MultiProgress,
    bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
    tree: Mutex<Tree>,
}

/// Where each node's line goes in the live tree: under its parent, after what its parent already shows, and a
/// retry attempt right after the attempt before it — not at the bottom, where a matrix iteration's retry
/// would land among a later iteration's lines.
#[derive(Default)]
struct Order {
    /// Node → its parent.
    parent: std::collections::HashMap<String, Option<String>>,
    /// Node → the last line of its subtree (itself, or a descendant).
    last: std::collections::HashMap<String, String>,
    /// Path → the latest attempt's node.
    attempt: std::collections::HashMap<String, String>,
}

impl Order {
    /// Place a new node; returns the node whose line it goes right after (none: at the end).
    fn place(&mut self, id: &str, parent: Option<&str>, path: &str) -> Option<String> {
        let anchor = match self.attempt.get(path) {
            Some(prev) => self.last.get(prev).cloned(),
            None => parent.and_then(|p| self.last.get(p).cloned()),
        };
        self.parent.insert(id.to_string(), parent.map(String::from));
        self.last.insert(id.to_string(), id.to_string());
        self.attempt.insert(path.to_string(), id.to_string());
        // Every ancestor whose subtree ended at the anchor now ends at this node.
        let mut up = parent.map(String::from);
        while let Some(a) = up {
            if anchor.is_some() && self.last.get(&a) == anchor.as_ref() {
                self.last.insert(a.clone(), id.to_string());
            }
            up = self.parent.get(&a).cloned().flatten();
        }
        anchor
    }
}

/// The live tree's lines, built from events alone: one line per node, in display order.
#[derive(Default)]
pub struct Tree {
    order: Order,
    /// Node ids in display order.
    rows: Vec<String>,
    /// Node id → its line.
    text: std::collections::HashMap<String, String>,
}

/// What an event changed in the tree.
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    /// The node whose line changed.
    pub id: String,
    /// A new line: the node whose line it goes right after (`None`: at the end).
    pub after: Option<Option<String>>,
    /// The line.
    pub text: String,
    /// The node ended: its line no longer changes (unless a retry note is added).
    pub done: bool,
}

impl Tree {
    /// A node's name, indented by how many nodes it sits under (an iteration under its looping node).
    fn label(&self, n: &Node) -> String {
        let mut depth = 0;
        let mut up = n.parent_id.clone();
        while let Some(p) = up {
            depth += 1;
            up = self.order.parent.get(&p).cloned().flatten();
        }
        let attempt = if n.attempt > 1 { format!(" (attempt {})", n.attempt) } else { String::new() };
        format!("{}{}{attempt}", "  ".repeat(depth), n.identifier)
    }

    fn ended(&self, n: &Node) -> String {
        let why = n.failure.as_ref().or(n.skip_reason.as_ref()).map(|r| format!(" — {r}")).unwrap_or_default();
        format!(
            "{} {} {} ({}){why}",
            mark(n.status),
            self.label(n),
            n.status,
            super::duration(n.started_at, n.ended_at)
        )
    }

    /// Apply an event.
    pub fn apply(&mut self, e: &Event) -> Option<Change> {
        let n = e.node()?;
        let after = if self.text.contains_key(&n.id) {
            None
        } else {
            let anchor = self.order.place(&n.id, n.parent_id.as_deref(), &n.path);
            let at =
                anchor.as_ref().and_then(|a| self.rows.iter().position(|r| r == a)).map_or(self.rows.len(), |i| i + 1);
            self.rows.insert(at, n.id.clone());
            Some(anchor)
        };
        let (text, done) = match e {
            Event::Started(n) | Event::Resumed(n) => (format!("{} Running", self.label(n)), false),
            Event::Waiting(n) => (format!("{} {}", self.label(n), n.status), false),
            Event::RetryScheduled { node, after, retry, of } => {
                (format!("{} — retry {retry} of {of} in {}", self.ended(node), super::duration_text(*after)), true)
            }
            Event::Ended(n) => (self.ended(n), true),
            Event::Log { .. } | Event::Finished(_) => return None,
        };
        self.text.insert(n.id.clone(), text.clone());
        Some(Change { id: n.id.clone(), after, text, done })
    }

    /// Every line, in display order.
    #[cfg(test)]
    pub fn render(&self) -> String {
        self.rows.iter().filter_map(|id| self.text.get(id)).map(|t| format!("{t}\n")).collect()
    }
}

impl Observer for Live {
    fn event(&self, e: &Event) {
        match e {
            Event::Log { path, line, .. } => {
                let _ = self.mp.println(format!("  [{path}] {line}"));
            }
            Event::Finished(_) => {
                let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                for b in bars.values() {
                    if !b.is_finished() {
                        b.finish();
                    }
                }
            }
            _ => {
                let Some(change) = self.tree.lock().unwrap_or_else(|e| e.into_inner()).apply(e) else { return };
                let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(after) = &change.after {
                    let anchor = after.as_ref().and_then(|a| bars.get(a).cloned());
                    let new = indicatif::ProgressBar::new_spinner();
                    let b = match &anchor {
                        Some(a) => self.mp.insert_after(a, new),
                        None => self.mp.add(new),
                    };
                    b.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    bars.insert(change.id.clone(), b);
                }
                let Some(bar) = bars.get(&change.id) else { return };
                if change.done {
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    bar.finish_with_message(change.text);
                } else {
                    bar.set_message(change.text);
                }
            }
        }
    }
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Success => "✓",
        Status::Skipped => "○",
        Status::IgnoreFailed => "~",
        _ => "✗",
    }
}

/// The `--output json` shape: stages with their steps.
pub fn summary_json(e: &store::Execution, nodes: &[Node]) -> serde_json::Value {
    let children =
        |parent: &str| -> Vec<&Node> { nodes.iter().filter(|n| n.parent_id.as_deref() == Some(parent)).collect() };
    fn steps<'a>(n: &'a Node, children: &dyn Fn(&str) -> Vec<&'a Node>) -> Vec<serde_json::Value> {
        children(&n.id)
            .into_iter()
            .map(|c| {
                let mut v = serde_json::json!({
                    "identifier": c.identifier, "path": c.path, "kind": c.kind, "status": c.status, "attempt": c.attempt,
                    "outputs": c.outputs, "failure": c.failure, "skip_reason": c.skip_reason,
                });
                let inner = steps(c, children);
                if !inner.is_empty() {
                    v["steps"] = serde_json::Value::Array(inner);
                }
                v
            })
            .collect()
    }
    let stages: Vec<serde_json::Value> = nodes
        .iter()
        .filter(|n| n.parent_id.is_none() && n.kind == NodeKind::Stage)
        .map(|s| {
            serde_json::json!({
                "identifier": s.identifier, "status": s.status, "failure": s.failure, "skip_reason": s.skip_reason,
                "reused_from": s.reused_from, "steps": steps(s, &children),
            })
        })
        .collect();
    serde_json::json!({
        "execution_id": e.id, "sequence_id": e.sequence_id, "pipeline": e.pipeline, "status": e.status,
        "mode": e.mode, "failure": e.failure, "stages": stages,
    })
}

/// Run.
pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(remote) = super::remote::Remote::from_state(&a.state)? {
        return remote.run(&a).await;
    }
    let doc = match super::plan::load(&a.file, a.templates.as_deref())? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let store = super::open_local(&a.state).await?;
    let settings = a.settings.clone().or_else(|| default_settings(&a.file));
    let planned = match super::plan::make(&doc, &a.selection, Some(store.as_ref()), settings.as_deref()).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let selective = !a.selection.stages.is_empty();
    let opts = Options {
        base_inputs: BTreeMap::new(),
        inputs: a.inputs.clone(),
        inputs_files: a.inputs_files.clone(),
        entities: a.entities.clone().or_else(|| default_entities(&a.file)),
        settings,
        secrets_file: a.secrets_file.clone(),
        output: a.output,
        mode: if selective { Mode::Selective } else { Mode::Full },
        selective,
        parent: None,
        source_file: Some(a.file.display().to_string()),
        steps: a.steps.clone(),
    };
    run_planned(store, &a.state, &doc, planned, opts).await
}

/// What `<+codebase.…>` reads for a local run: the git checkout the pipeline file sits in (branch, commit,
/// repository URL, last commit message). Nothing when there is no checkout or no git: those read as null.
pub fn codebase(pipeline_file: &Path) -> BTreeMap<String, String> {
    let dir = pipeline_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let mut c = BTreeMap::new();
    let Some(sha) = git(&["rev-parse", "HEAD"]) else { return c };
    c.insert("shortCommitSha".to_string(), sha.chars().take(7).collect());
    c.insert("commitSha".to_string(), sha);
    if let Some(b) = git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD") {
        c.insert("build.type".to_string(), "branch".to_string());
        c.insert("build.spec.branch".to_string(), b.clone());
        c.insert("branch".to_string(), b.clone());
        c.insert("sourceBranch".to_string(), b);
    }
    if let Some(u) = git(&["config", "--get", "remote.origin.url"]) {
        c.insert("repoUrl".to_string(), u);
    }
    if let Some(m) = git(&["log", "-1", "--format=%s"]) {
        c.insert("commitMessage".to_string(), m);
    }
    if let Some(a) = git(&["log", "-1", "--format=%an"]) {
        c.insert("gitUser".to_string(), a);
    }
    c
}

/// Services, environments and infrastructure definitions from a directory (none without one).
pub fn load_entities(dir: Option<&Path>) -> anyhow::Result<Entities> {
    match dir {
        Some(d) => Entities::load_dir(d).map_err(|e| anyhow::anyhow!("{}: {e}", d.display())),
        None => Ok(Entities::default()),
    }
}

/// The entities of a pipeline file: the `.harness/` folder it sits in (a repository keeps its pipelines there),
/// else `.harness/` next to it, when it exists.
pub fn default_entities(file: &Path) -> Option<PathBuf> {
    let dir = file.parent().unwrap_or(Path::new("."));
    // A pipeline kept in a repository's `.harness/` folder (or below it) reads the entities of that folder.
    if let Some(h) = dir.ancestors().find(|a| a.file_name().is_some_and(|n| n == ".harness")) {
        return Some(h.to_path_buf());
    }
    let d = dir.join(".harness");
    d.is_dir().then_some(d)
}

/// The settings file of a pipeline file: `pipewright.yaml` in its `.harness/` folder, when there is one.
pub fn default_settings(file: &Path) -> Option<PathBuf> {
    default_entities(file).map(|d| d.join(spec::SETTINGS_FILE)).filter(|f| f.is_file())
}

/// Read a settings file (none: no settings); warnings are printed.
pub fn load_settings(file: Option<&Path>) -> anyhow::Result<spec::Settings> {
    let Some(f) = file else { return Ok(spec::Settings::default()) };
    let (settings, warnings) =
        spec::load_settings(f).map_err(|e| anyhow::anyhow!("{e}{}: invalid settings; nothing was run", f.display()))?;
    eprint!("{warnings}");
    Ok(settings)
}

/// Set up how steps run: their isolation and work root, the step handlers and git connectors of the settings
/// file (whose folder confined steps may read, since the handler scripts live there), and `checkout` — the
/// git checkout a `cloneCodebase` fetches from — readable too. Gives the settings.
pub fn confine(
    config: &mut EngineConfig,
    steps: &StepArgs,
    state_dir: &Path,
    settings: Option<&Path>,
    checkout: Option<&Path>,
) -> anyhow::Result<spec::Settings> {
    let settings = load_settings(settings)?;
    let handlers_dir = settings.path.as_deref().and_then(Path::parent).map(std::path::absolute).transpose()?;
    let steps = with_reads(steps, &settings, checkout)?;
    (config.isolation, config.work_root) = super::isolation(&steps, state_dir, crate::NetworkMode::Host)?;
    config.step_handlers = settings.step_handlers.clone();
    config.handlers_dir = handlers_dir;
    config.git_connectors = settings.connectors.clone();
    Ok(settings)
}

/// The step arguments with what confined steps must also read: the settings file's folder when it maps step
/// handlers (their scripts live there), and the git checkout a `cloneCodebase` fetches from.
pub fn with_reads(steps: &StepArgs, settings: &spec::Settings, checkout: Option<&Path>) -> anyhow::Result<StepArgs> {
    let mut steps = steps.clone();
    if steps.step_isolation != Some(crate::IsolationMode::None) {
        if let Some(d) = settings.path.as_deref().and_then(Path::parent).filter(|_| !settings.step_handlers.is_empty())
        {
            steps.step_read_paths.push(std::path::absolute(d)?);
        }
        if let Some(c) = checkout {
            steps.step_read_paths.push(c.to_path_buf());
        }
    }
    Ok(steps)
}

/// The top folder of the git checkout `file` sits in, if it sits in one.
pub fn checkout_of(file: &Path) -> Option<PathBuf> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let out =
        std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "--show-toplevel"]).output().ok()?;
    let top = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !top.is_empty()).then(|| PathBuf::from(top))
}

/// The templates a pipeline file may use: every template file in its `.harness/` folder (see
/// [`default_entities`]), then those in `--templates DIR`.
pub fn templates(file: &Path, dir: Option<&Path>) -> anyhow::Result<spec::template::Library> {
    let mut lib = spec::template::Library::default();
    if let Some(d) = default_entities(file) {
        lib.load_dir(&d).with_context(|| format!("{}: cannot read the templates", d.display()))?;
    }
    if let Some(d) = dir {
        if !d.is_dir() {
            bail!("--templates {}: not a directory", d.display());
        }
        lib.load_dir(d).with_context(|| format!("{}: cannot read the templates", d.display()))?;
    }
    Ok(lib)
}

/// How to run a planned execution.
pub struct Options {
    /// Inputs applied first (a re-run's original inputs).
    pub base_inputs: BTreeMap<String, (String, InputSource)>,
    /// `--input PATH=VALUE`s (later win).
    pub inputs: Vec<String>,
    /// Input set files.
    pub inputs_files: Vec<PathBuf>,
    /// The entities directory.
    pub entities: Option<PathBuf>,
    /// The settings file (step handlers).
    pub settings: Option<PathBuf>,
    /// The secrets file.
    pub secrets_file: Option<PathBuf>,
    /// Output format.
    pub output: Output,
    /// Mode recorded.
    pub mode: Mode,
    /// Whether stages were selected.
    pub selective: bool,
    /// (parent, original) execution.
    pub parent: Option<(String, String)>,
    /// Step isolation.
    pub steps: StepArgs,
    /// The pipeline file.
    pub source_file: Option<String>,
}

/// Refuse an unsatisfiable plan, apply inputs, and run.
pub async fn run_planned(
    store: Arc<dyn Store>,
    state: &StateArgs,
    doc: &spec::Document,
    planned: super::plan::Planned,
    o: Options,
) -> anyhow::Result<ExitCode> {
    if !planned.plan.satisfiable {
        return super::plan::fail(launch::LaunchError::Unsatisfiable(Box::new(planned)));
    }
    for w in &planned.plan.warnings {
        eprintln!("warning: {w}");
    }
    let run_stages = planned.plan.run_stages();
    let mut supplied = o.base_inputs.clone();
    supplied.extend(supplied_inputs(&o.inputs, &o.inputs_files)?);
    let prepared = match launch::prepare(doc, &supplied, o.selective.then_some(run_stages.as_slice())) {
        Ok(p) => p,
        Err(e) => return super::plan::fail(e),
    };
    let entities = load_entities(o.entities.as_deref())?;
    let secrets = secrets(o.secrets_file.as_deref())?;
    // Every secret the stages that run read must be given before anything runs.
    let missing = launch::missing_secrets(doc, &run_stages, |id| secrets.get(id).is_some());
    if !missing.is_empty() {
        eprintln!("error: the pipeline reads secrets that are not given; nothing was run:");
        for id in &missing {
            eprintln!(
                "  {id}: give it in a file passed with --secrets-file FILE (`{id}: VALUE`), or as PIPEWRIGHT_SECRET_{}",
                id.to_ascii_uppercase().replace(['.', '-'], "_")
            );
        }
        return Ok(ExitCode::from(1));
    }
    let mut config = EngineConfig::new(&state.state_dir);
    let checkout = o.source_file.as_deref().and_then(|f| checkout_of(Path::new(f)));
    let settings = confine(&mut config, &o.steps, &state.state_dir, o.settings.as_deref(), checkout.as_deref())?;
    let mut prepared = prepared;
    prepared.clone_codebase(checkout.map(|c| c.display().to_string()).as_deref(), &settings.connectors);
    if let Some(f) = &o.source_file {
        config.codebase = codebase(Path::new(f));
    }
    config.children =
        LocalChildren::for_file(store.clone(), &config, o.source_file.as_deref().map(Path::new), &entities, &secrets);
    let mut launch = launch::Launch::of(&planned, o.mode, o.selective, &config.triggered_by);
    launch.source_file = o.source_file;
    launch.parent = o.parent;
    let seed = launch::seed(&planned.plan);
    execute(store, config, prepared, &entities, &secrets, o.output, &launch, &seed).await
}

/// Record and run an execution, printing as asked.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    store: Arc<dyn Store>,
    config: EngineConfig,
    prepared: Prepared,
    entities: &Entities,
    secrets: &Secrets,
    output: Output,
    launch: &launch::Launch,
    seed: &Seed,
) -> anyhow::Result<ExitCode> {
    let exec = launch::record(store.as_ref(), &prepared, launch).await?;
    if output == Output::Text {
        println!("execution {} (#{} of {})", exec.id, exec.sequence_id, exec.pipeline);
    }
    // Ctrl-C asks for an abort through the store, like `pipewright abort` from another terminal.
    let ctrl_c = {
        let store = store.clone();
        let id = exec.id.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\naborting {id}…");
                let _ = store.request_abort(&id).await;
            }
        })
    };
    let observer = observer(output);
    let engine = Engine::new(store.clone(), observer, config);
    let status = engine.run_seeded(&exec, &prepared.pipeline, entities, secrets, seed).await;
    ctrl_c.abort();
    let status = status?;
    let exec = store.execution(&exec.id).await?;
    let nodes = store.nodes(&exec.id).await?;
    finish(&exec, &nodes, status, output)
}

/// Runs the child executions of `Pipeline` stages for a local run: the chained pipeline is the pipeline file
/// with that identifier in the folders searched (the pipeline's `.harness/` folder and its own folder), run
/// to its end with the same store, entities, secrets and settings.
pub struct LocalChildren {
    /// The store the parent records into.
    pub store: Arc<dyn Store>,
    /// The parent's engine settings (a child gets them with its depth).
    pub config: EngineConfig,
    /// Where pipeline files are looked for.
    pub search: Vec<PathBuf>,
    /// Templates given with `--templates`.
    pub templates: Option<PathBuf>,
    /// Services, environments, infrastructure definitions.
    pub entities: Entities,
    /// Secrets.
    pub secrets: Secrets,
}

impl std::fmt::Debug for LocalChildren {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChildren").field("search", &self.search).finish_non_exhaustive()
    }
}

impl LocalChildren {
    /// Children for a run of `file` (none when the run has no file).
    pub fn for_file(
        store: Arc<dyn Store>,
        config: &EngineConfig,
        file: Option<&Path>,
        entities: &Entities,
        secrets: &Secrets,
    ) -> Option<Arc<dyn engine::chain::Children>> {
        let file = file?;
        let mut search: Vec<PathBuf> = default_entities(file).into_iter().collect();
        let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        if !search.iter().any(|s| dir.starts_with(s)) {
            search.push(dir);
        }
        Some(Arc::new(LocalChildren {
            store,
            config: config.clone(),
            search,
            templates: None,
            entities: entities.clone(),
            secrets: secrets.clone(),
        }))
    }

    /// The pipeline file whose pipeline has identifier `id`.
    fn find(&self, id: &str) -> Result<(PathBuf, spec::Document), String> {
        let mut seen = Vec::new();
        for dir in &self.search {
            let files = if dir.is_dir() { spec::yaml_files(dir).unwrap_or_default() } else { Vec::new() };
            for f in files {
                let Ok(text) = std::fs::read_to_string(&f) else { continue };
                if !text.lines().any(|l| l.starts_with("pipeline:")) {
                    continue;
                }
                let Ok(root) = spec::yaml::load(&text) else { continue };
                let found = root.get("pipeline").and_then(|p| p.get("identifier")).and_then(spec::Node::as_scalar);
                if let Some(other) = found {
                    seen.push(other.to_string());
                }
                if found == Some(id) {
                    let lib = templates(&f, self.templates.as_deref()).map_err(|e| e.to_string())?;
                    let doc = spec::load_file_with(&f, Some(&lib)).map_err(|e| e.to_string())?;
                    return match launch::check_pipeline(doc) {
                        Ok(d) => Ok((f, d)),
                        Err(e) => Err(e.render()),
                    };
                }
            }
        }
        let hint = spec::did_you_mean(id, seen.iter().map(String::as_str));
        Err(format!(
            "no pipeline file with identifier `{id}` in {}{hint}",
            self.search.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    }
}

#[async_trait::async_trait]
impl engine::chain::Children for LocalChildren {
    async fn run(&self, req: engine::chain::ChildRequest) -> Result<engine::chain::ChildRun, String> {
        let (file, doc) = self.find(&req.pipeline)?;
        let checkout = checkout_of(&file).map(|c| c.display().to_string());
        let (exec, prepared) = launch::child(
            self.store.as_ref(),
            self.store.as_ref(),
            &doc,
            &req,
            &self.config.triggered_by,
            Some(file.display().to_string()),
            checkout.as_deref(),
            &self.config.git_connectors,
        )
        .await
        .map_err(|e| e.render().trim_end().to_string())?;
        let mut config = self.config.clone();
        config.chain_depth = req.depth;
        // Its own `Pipeline` stages chain further, found the same way.
        config.children = Some(Arc::new(LocalChildren {
            store: self.store.clone(),
            config: self.config.clone(),
            search: self.search.clone(),
            templates: self.templates.clone(),
            entities: self.entities.clone(),
            secrets: self.secrets.clone(),
        }));
        config.codebase = codebase(&file);
        let engine = Engine::new(self.store.clone(), Arc::new(engine::Quiet), config);
        let status = engine
            .run_seeded(&exec, &prepared.pipeline, &self.entities, &self.secrets, &Seed::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(engine::chain::ChildRun { execution_id: exec.id, status })
    }
}

/// The live display for an output format.
pub fn observer(output: Output) -> Arc<dyn Observer> {
    use std::io::IsTerminal;
    match output {
        Output::Text if std::io::stdout().is_terminal() => Arc::new(Live {
            mp: indicatif::MultiProgress::new(),
            bars: Mutex::new(Default::default()),
            tree: Mutex::new(Tree::default()),
        }),
        Output::Text => Arc::new(Printer::new(Box::new(std::io::stdout()))),
        Output::Json => Arc::new(engine::Quiet),
    }
}

/// Print an ended execution's summary and give the exit status.
pub fn finish(exec: &store::Execution, nodes: &[Node], status: Status, output: Output) -> anyhow::Result<ExitCode> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary_json(exec, nodes))?),
        Output::Text => {
            println!(
                "{} execution {} (#{}) ended {status} in {}{}",
                mark(status),
                exec.id,
                exec.sequence_id,
                super::duration(exec.started_at, exec.ended_at),
                exec.failure.as_ref().map(|f| format!(": {f}")).unwrap_or_default()
            );
        }
    }
    Ok(if status == Status::Success { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::Order;

    /// The nodes of `examples/flaky-matrix.yaml` as they start: a matrix stage whose iterations each retry
    /// their `flaky` step; each retry's line goes right after its own iteration's first attempt.
    #[test]
    fn retries_stay_under_their_own_iteration() {
        let mut o = Order::default();
        let events = [
            ("I", None, "integration"),
            ("I0", Some("I"), "integration_0"),
            ("I1", Some("I"), "integration_1"),
            ("F0", Some("I0"), "integration_0.flaky"),
            ("F1", Some("I1"), "integration_1.flaky"),
            ("F0b", Some("I0"), "integration_0.flaky"),
            ("F1b", Some("I1"), "integration_1.flaky"),
            ("R", None, "report"),
        ];
        // The display order, built by inserting each line after its anchor.
        let mut lines: Vec<&str> = Vec::new();
        for (id, parent, path) in events {
            match o.place(id, parent, path) {
                Some(a) => {
                    let at = lines.iter().position(|l| *l == a).unwrap();
                    lines.insert(at + 1, id);
                }
                None => lines.push(id),
            }
        }
        assert_eq!(lines, ["I", "I0", "F0", "F0b", "I1", "F1", "F1b", "R"]);
    }
}

#[cfg(test)]
mod events {
    use super::*;
    use store::NodeKind;

    fn node(id: &str, parent: Option<&str>, kind: NodeKind, path: &str, attempt: i64, status: Status) -> Node {
        Node {
            id: id.into(),
            execution_id: "E".into(),
            parent_id: parent.map(String::from),
            kind,
            identifier: path.rsplit('.').next().unwrap_or(path).into(),
            name: path.into(),
            path: path.into(),
            position: 0,
            attempt,
            status,
            started_at: Some(1_000),
            ended_at: status.is_final().then_some(1_400),
            failure: (status == Status::Failed).then(|| "the script exited with status 1".into()),
            skip_reason: None,
            outputs: Default::default(),
            reused_from: None,
        }
    }

    /// `examples/flaky-matrix.yaml` as the engine reports it: two matrix iterations side by side, each step
    /// failing once and retried — the events of the two iterations interleaved.
    fn flaky_matrix() -> Vec<Event> {
        use NodeKind::{Stage, Step};
        let b = Box::new;
        let st = |id, parent, kind, path, attempt, status| node(id, parent, kind, path, attempt, status);
        vec![
            Event::Started(b(st("S", None, Stage, "integration", 1, Status::Running))),
            Event::Started(b(st("I0", Some("S"), Stage, "integration_0", 1, Status::Running))),
            Event::Started(b(st("I1", Some("S"), Stage, "integration_1", 1, Status::Running))),
            Event::Started(b(st("F0", Some("I0"), Step, "integration_0.flaky", 1, Status::Running))),
            Event::Started(b(st("F1", Some("I1"), Step, "integration_1.flaky", 1, Status::Running))),
            Event::Ended(b(st("F0", Some("I0"), Step, "integration_0.flaky", 1, Status::Failed))),
            Event::RetryScheduled {
                node: b(st("F0", Some("I0"), Step, "integration_0.flaky", 1, Status::Failed)),
                after: std::time::Duration::from_secs(1),
                retry: 1,
                of: 2,
            },
            Event::Ended(b(st("F1", Some("I1"), Step, "integration_1.flaky", 1, Status::Failed))),
            Event::RetryScheduled {
                node: b(st("F1", Some("I1"), Step, "integration_1.flaky", 1, Status::Failed)),
                after: std::time::Duration::from_secs(1),
                retry: 1,
                of: 2,
            },
            Event::Started(b(st("F0b", Some("I0"), Step, "integration_0.flaky", 2, Status::Running))),
            Event::Started(b(st("F1b", Some("I1"), Step, "integration_1.flaky", 2, Status::Running))),
            Event::Log { path: "integration_0.flaky".into(), stream: "stdout", line: "db=postgres shard=1".into() },
            Event::Ended(b(st("F1b", Some("I1"), Step, "integration_1.flaky", 2, Status::Success))),
            Event::Ended(b(st("F0b", Some("I0"), Step, "integration_0.flaky", 2, Status::Success))),
            Event::Ended(b(st("I0", Some("S"), Stage, "integration_0", 1, Status::Success))),
            Event::Ended(b(st("I1", Some("S"), Stage, "integration_1", 1, Status::Success))),
            Event::Waiting(b(st("A", None, Stage, "report", 1, Status::InputWaiting))),
            Event::Resumed(b(st("A", None, Stage, "report", 1, Status::Running))),
            Event::Ended(b(st("S", None, Stage, "integration", 1, Status::Success))),
            Event::Ended(b(st("A", None, Stage, "report", 1, Status::Success))),
            Event::Finished(Status::Success),
        ]
    }

    #[test]
    fn the_live_tree_keeps_each_retry_under_its_own_iteration() {
        let mut tree = Tree::default();
        for e in flaky_matrix() {
            tree.apply(&e);
        }
        insta::assert_snapshot!(tree.render());
    }

    #[test]
    fn plain_lines_say_what_happened() {
        let lines: Vec<String> = flaky_matrix().iter().filter_map(Printer::line).collect();
        insta::assert_snapshot!(lines.join("\n"));
    }
}
