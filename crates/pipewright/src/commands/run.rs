//! `pipewright run`: validate the pipeline, gather runtime inputs (input-set files, then `--input`, then
//! defaults) and refuse before anything runs if one is missing or breaks its constraint, load the entities and
//! secrets, record the execution, and run it with live output (a tree updated in place on a terminal, plain
//! lines otherwise) and a summary.

use crate::{Output, StateArgs};
use anyhow::{Context, bail};
use clap::Args;
use engine::{Engine, EngineConfig, Entities, Event, Observer, Secrets, Seed};
use spec::inputs::{self, InputSource};
use spec::{Entity, Pipeline};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use store::{Mode, NewExecution, Node, NodeKind, Status, Store};

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
    /// Where services, environments and infrastructure definitions are (default: `.harness/` next to FILE).
    #[arg(long, value_name = "DIR")]
    pub entities: Option<PathBuf>,
    /// Secrets as YAML (`id: value`); `PIPEWRIGHT_SECRET_<ID>` environment variables work too.
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Output: live text, or one JSON document at the end.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub selection: super::plan::Selection,
    #[command(flatten)]
    pub state: StateArgs,
}

/// A pipeline ready to run: validated, inputs applied.
pub struct Prepared {
    /// The pipeline with inputs applied.
    pub pipeline: Pipeline,
    /// Inputs by path with their source.
    pub inputs: BTreeMap<String, (String, InputSource)>,
    /// The resolved pipeline as YAML.
    pub snapshot: String,
    /// The original file text.
    pub source: String,
}

fn input_set_file(path: &Path, out: &mut BTreeMap<String, (String, InputSource)>) -> anyhow::Result<()> {
    let doc = spec::load_file(path)?;
    if !doc.is_valid() {
        eprint!("{}", doc.render_diagnostics());
        bail!("{}: the input set is invalid", path.display());
    }
    match &doc.entity {
        Some(Entity::InputSet(s)) => {
            let body = doc.body().context("input set body")?;
            let pipeline = body.get("pipeline").context("input set has no pipeline")?;
            let src = InputSource::InputSet(s.meta.identifier.value.clone());
            for (k, v) in inputs::input_set_values(pipeline) {
                out.insert(k, (v, src.clone()));
            }
            Ok(())
        }
        Some(Entity::OverlayInputSet(o)) => {
            // The referenced input sets are looked for next to the overlay file.
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
            for e in std::fs::read_dir(dir)?.flatten() {
                let p = e.path();
                if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                    && let Ok(d) = spec::load_file(&p)
                    && let Some(Entity::InputSet(s)) = &d.entity
                {
                    found.insert(s.meta.identifier.value.clone(), p.clone());
                }
            }
            for r in &o.input_set_references {
                let p = found.get(r.as_str()).with_context(|| {
                    format!(
                        "{}: overlay input set references `{}`, which is not an input set in {}",
                        path.display(),
                        r.value,
                        dir.display()
                    )
                })?;
                input_set_file(p, out)?;
            }
            Ok(())
        }
        _ => bail!("{}: expected an `inputSet:` or `overlayInputSet:` file", path.display()),
    }
}

/// Apply runtime inputs to a validated pipeline document (only the inputs of `stages` are required when
/// given); on failure, print why and return the exit code.
pub fn prepare(
    doc: &spec::Document,
    given: &[String],
    files: &[PathBuf],
    stages: Option<&[String]>,
) -> anyhow::Result<Result<Prepared, ExitCode>> {
    let body = doc.body().context("pipeline body")?;
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
    let fields = inputs::runtime_inputs(body);
    let values = match inputs::resolve(&fields, &supplied, stages) {
        Ok(v) => v,
        Err(problems) => {
            eprintln!("error: runtime inputs are missing or invalid; nothing runs:");
            for p in &problems {
                eprintln!("  {}: {}", p.path, p.message);
            }
            eprintln!("give them with --input PATH=VALUE or --inputs-file FILE");
            return Ok(Err(ExitCode::from(1)));
        }
    };
    let applied = inputs::apply(body, &values);
    let pipeline = match spec::pipeline_from_node(&applied, &doc.source) {
        Ok(p) => p,
        Err(errors) => {
            for d in &errors {
                eprint!("{}", d.render(&doc.path, &doc.source));
            }
            eprintln!("{}: invalid once runtime inputs were applied; nothing was run", doc.path);
            return Ok(Err(ExitCode::from(1)));
        }
    };
    let snapshot = Entity::Pipeline(Box::new(pipeline.clone())).to_yaml();
    Ok(Ok(Prepared { pipeline, inputs: values, snapshot, source: doc.source.clone() }))
}

fn secrets(file: Option<&Path>) -> anyhow::Result<Secrets> {
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

/// Prints progress as plain lines.
struct Printer {
    out: Mutex<std::io::Stdout>,
}

impl Observer for Printer {
    fn event(&self, e: &Event) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = match e {
            Event::Node(n) => match n.status {
                Status::Running if n.attempt > 1 => writeln!(out, "▶ {} (attempt {})", n.path, n.attempt),
                Status::Running => writeln!(out, "▶ {}", n.path),
                Status::Queued => Ok(()),
                s if s.is_final() => {
                    let why =
                        n.failure.as_ref().or(n.skip_reason.as_ref()).map(|r| format!(": {r}")).unwrap_or_default();
                    writeln!(out, "{} {} {}{why} ({})", mark(s), n.path, s, super::duration(n.started_at, n.ended_at))
                }
                s => writeln!(out, "… {} {}", n.path, s),
            },
            Event::Log { path, stream, line } => {
                let tag = if *stream == "stderr" { "!" } else { " " };
                writeln!(out, "  [{path}]{tag} {line}")
            }
            Event::Finished(_) => Ok(()),
        };
    }
}

/// On a terminal: one line per stage and step that updates in place (a spinner while it runs, its status
/// when it ends), with log lines scrolling above.
struct Live {
    mp: indicatif::MultiProgress,
    bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl Live {
    fn label(n: &Node) -> String {
        let depth = n.path.matches('.').count();
        let attempt = if n.attempt > 1 { format!(" (attempt {})", n.attempt) } else { String::new() };
        format!("{}{}{attempt}", "  ".repeat(depth), n.identifier)
    }
}

impl Observer for Live {
    fn event(&self, e: &Event) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            Event::Node(n) if n.status == Status::Queued => {}
            Event::Node(n) => {
                let bar = bars.entry(n.id.clone()).or_insert_with(|| {
                    let b = self.mp.add(indicatif::ProgressBar::new_spinner());
                    b.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    b
                });
                if n.status.is_final() {
                    let why =
                        n.failure.as_ref().or(n.skip_reason.as_ref()).map(|r| format!(" — {r}")).unwrap_or_default();
                    bar.set_style(
                        indicatif::ProgressStyle::with_template("{msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    );
                    bar.finish_with_message(format!(
                        "{} {} {} ({}){why}",
                        mark(n.status),
                        Self::label(n),
                        n.status,
                        super::duration(n.started_at, n.ended_at)
                    ));
                } else {
                    bar.set_message(format!("{} {}", Self::label(n), n.status));
                }
            }
            Event::Log { path, line, .. } => {
                let _ = self.mp.println(format!("  [{path}] {line}"));
            }
            Event::Finished(_) => {
                for b in bars.values() {
                    if !b.is_finished() {
                        b.finish();
                    }
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
    let doc = match super::plan::load(&a.file)? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let store = super::open_store(&a.state).await?;
    let planned = match super::plan::make(&doc, &a.selection, Some(store.as_ref())).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let selective = !a.selection.stages.is_empty();
    let opts = Options {
        inputs: a.inputs.clone(),
        inputs_files: a.inputs_files.clone(),
        entities: a.entities.clone().or_else(|| default_entities(&a.file)),
        secrets_file: a.secrets_file.clone(),
        output: a.output,
        mode: if selective { Mode::Selective } else { Mode::Full },
        selective,
        parent: None,
        source_file: Some(a.file.display().to_string()),
    };
    run_planned(store, &a.state, &doc, planned, opts).await
}

/// `.harness/` next to a pipeline file, when it exists.
pub fn default_entities(file: &Path) -> Option<PathBuf> {
    let d = file.parent().unwrap_or(Path::new(".")).join(".harness");
    d.is_dir().then_some(d)
}

/// How to run a planned execution.
pub struct Options {
    /// `--input PATH=VALUE`s (later win).
    pub inputs: Vec<String>,
    /// Input set files.
    pub inputs_files: Vec<PathBuf>,
    /// The entities directory.
    pub entities: Option<PathBuf>,
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
        super::plan::explain_unmet(&planned);
        eprintln!("nothing was run (`pipewright plan` shows the whole plan)");
        return Ok(ExitCode::from(3));
    }
    for w in &planned.plan.warnings {
        eprintln!("warning: {w}");
    }
    let run_stages = planned.plan.run_stages();
    let prepared = match prepare(doc, &o.inputs, &o.inputs_files, o.selective.then_some(run_stages.as_slice()))? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let entities = match &o.entities {
        Some(d) => Entities::load_dir(d).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?,
        None => Entities::default(),
    };
    let secrets = secrets(o.secrets_file.as_deref())?;
    let seed = Seed {
        values: planned.plan.seeds.iter().map(|s| (s.path.clone(), s.value.clone())).collect(),
        reused: planned.plan.reused.clone(),
    };
    let provenance: Vec<serde_json::Value> = planned
        .plan
        .seeds
        .iter()
        .map(|s| match &s.from {
            plan::Provenance::Supplied => serde_json::json!({"path": s.path, "value": s.value, "source": s.from}),
            plan::Provenance::Execution { .. } => serde_json::json!({"path": s.path, "source": s.from}),
        })
        .collect();
    let launch = Launch {
        source_file: o.source_file,
        mode: o.mode,
        selected: if o.selective { run_stages } else { Vec::new() },
        seed,
        provenance,
        parent: o.parent,
    };
    execute(store, state, prepared, &entities, &secrets, o.output, launch).await
}

/// How an execution comes to be.
pub struct Launch {
    /// The file it runs from.
    pub source_file: Option<String>,
    /// Mode.
    pub mode: Mode,
    /// The stages that run (empty: all).
    pub selected: Vec<String>,
    /// Values seeded before it runs.
    pub seed: Seed,
    /// Where each seeded value comes from.
    pub provenance: Vec<serde_json::Value>,
    /// The execution it derives from: (parent, original).
    pub parent: Option<(String, String)>,
}

/// Record and run an execution, printing as asked.
pub async fn execute(
    store: Arc<dyn Store>,
    state: &StateArgs,
    prepared: Prepared,
    entities: &Entities,
    secrets: &Secrets,
    output: Output,
    launch: Launch,
) -> anyhow::Result<ExitCode> {
    let p = &prepared.pipeline;
    let org = p.org_identifier.as_ref().map_or("default".to_string(), |s| s.value.clone());
    let project = p.project_identifier.as_ref().map_or("default".to_string(), |s| s.value.clone());
    let version = store.save_pipeline(&org, &project, &p.identifier, &prepared.source).await?;
    let config = EngineConfig::new(&state.state_dir);
    let mut inputs: serde_json::Map<String, serde_json::Value> = prepared
        .inputs
        .iter()
        .map(|(k, (v, src))| (k.clone(), serde_json::json!({"value": v, "source": src})))
        .collect();
    if !launch.provenance.is_empty() {
        inputs.insert("__dependencies".into(), serde_json::Value::Array(launch.provenance.clone()));
    }
    let exec = store
        .create_execution(NewExecution {
            org,
            project,
            pipeline: p.identifier.value.clone(),
            pipeline_version: version,
            mode: launch.mode,
            triggered_by: config.triggered_by.clone(),
            inputs: serde_json::Value::Object(inputs),
            selected_stages: launch.selected.clone(),
            snapshot: prepared.snapshot.clone(),
            source_file: launch.source_file.clone(),
            parent_id: launch.parent.as_ref().map(|p| p.0.clone()),
            original_id: launch.parent.as_ref().map(|p| p.1.clone()),
        })
        .await?;
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
    use std::io::IsTerminal;
    let observer: Arc<dyn Observer> = match output {
        Output::Text if std::io::stdout().is_terminal() => {
            Arc::new(Live { mp: indicatif::MultiProgress::new(), bars: Mutex::new(Default::default()) })
        }
        Output::Text => Arc::new(Printer { out: Mutex::new(std::io::stdout()) }),
        Output::Json => Arc::new(engine::Quiet),
    };
    let engine = Engine::new(store.clone(), observer, config);
    let status = engine.run_seeded(&exec, p, entities, secrets, &launch.seed).await;
    ctrl_c.abort();
    let status = status?;
    let exec = store.execution(&exec.id).await?;
    let nodes = store.nodes(&exec.id).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary_json(&exec, &nodes))?),
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
