//! `pipewright plan` and the selection flags shared with `run`: build the stage dependency graph, read an
//! earlier execution's values when `--from-execution` is given, and print what would run, be skipped or be
//! reused, the runtime inputs that will be asked, and every unmet dependency with the flags that would meet
//! it — without running anything.

use crate::{Output, StateArgs};
use anyhow::{Context, bail};
use clap::Args;
use plan::{Action, Plan, Request, Source, Via};
use spec::inputs::{self, InputField};
use spec::{Document, Entity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::{NodeKind, Store};

/// Stage selection and dependency values (shared by `plan` and `run`).
#[derive(Args, Clone, Default)]
pub struct Selection {
    /// Run only this stage (repeatable). The pipeline must set `allowStageExecutions: true`.
    #[arg(long = "stage", value_name = "ID")]
    pub stages: Vec<String>,
    /// Also run every stage the selected ones depend on (transitively).
    #[arg(long)]
    pub with_deps: bool,
    /// Reuse the values of stages that do not run from this execution (id or unique prefix).
    #[arg(long, value_name = "EXEC")]
    pub from_execution: Option<String>,
    /// Give the value of a path a selected stage reads from a stage that does not run (repeatable).
    #[arg(long = "expr", value_name = "PATH=VALUE")]
    pub exprs: Vec<String>,
    /// A YAML map of `path: value` for expression values.
    #[arg(long, value_name = "FILE")]
    pub expr_file: Option<PathBuf>,
    /// Set by `retry`: select stages whatever `allowStageExecutions` says.
    #[arg(skip)]
    pub any_stage: bool,
}

/// Arguments of `plan`.
#[derive(Args)]
pub struct PlanArgs {
    /// The pipeline YAML file.
    pub file: PathBuf,
    #[command(flatten)]
    pub selection: Selection,
    /// Runtime input values, checked as `run` checks them (missing, not allowed, not matching: exit 1).
    #[arg(long = "input", value_name = "PATH=VALUE")]
    pub inputs: Vec<String>,
    /// Input set files, checked the same way.
    #[arg(long = "inputs-file", value_name = "FILE")]
    pub inputs_files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
}

/// A planned selection.
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// Runtime inputs the run needs.
    pub required: Vec<InputField>,
}

/// Load and validate the pipeline file.
pub fn load(file: &Path) -> anyhow::Result<Result<Document, ExitCode>> {
    let doc = spec::load_file(file)?;
    if !doc.is_valid() {
        eprint!("{}", doc.render_diagnostics());
        eprintln!("{}: invalid; nothing was run", doc.path);
        return Ok(Err(ExitCode::from(1)));
    }
    match &doc.entity {
        Some(Entity::Pipeline(_)) => Ok(Ok(doc)),
        other => {
            bail!("{}: expected a pipeline file, found a {}", file.display(), other.as_ref().map_or("?", Entity::kind))
        }
    }
}

fn supplied_exprs(sel: &Selection) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(f) = &sel.expr_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?;
        let node =
            spec::yaml::load(&text).map_err(|d| anyhow::anyhow!("{}", d.render(&f.display().to_string(), &text)))?;
        let serde_json::Value::Object(m) = node.to_json() else {
            bail!("{}: expected a map of `path: value`", f.display())
        };
        for (k, v) in m {
            out.insert(k, v.as_str().map_or_else(|| v.to_string(), String::from));
        }
    }
    for e in &sel.exprs {
        let (k, v) = e.split_once('=').with_context(|| format!("`--expr {e}`: expected PATH=VALUE"))?;
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Read an execution's values for reuse. A stage that execution itself reused is read from where it came from.
pub async fn source(store: &dyn Store, id: &str) -> anyhow::Result<Source> {
    source_at(store, id, 0).await
}

fn source_at<'a>(
    store: &'a dyn Store,
    id: &'a str,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Source>> + Send + 'a>> {
    Box::pin(async move {
        let e = store.execution(id).await?;
        let nodes = store.nodes(&e.id).await?;
        let stages: Vec<&store::Node> =
            nodes.iter().filter(|n| n.kind == NodeKind::Stage && n.parent_id.is_none()).collect();
        let statuses = stages.iter().map(|n| (n.identifier.clone(), n.status.to_string())).collect();
        let mut tree = engine::tree_from_nodes(&nodes);
        for n in stages.iter().filter(|n| n.reused_from.is_some()) {
            let from = n.reused_from.as_deref().unwrap_or_default();
            if depth < 16
                && let Ok(earlier) = source_at(store, from, depth + 1).await
                && let Some(sub) =
                    earlier.tree.get("pipeline").and_then(|p| p.get("stages")).and_then(|s| s.get(&n.identifier))
                && let expr::Value::Map(root) = &mut tree
                && let Some(expr::Value::Map(p)) = root.get_mut("pipeline")
                && let Some(expr::Value::Map(s)) = p.get_mut("stages")
            {
                s.insert(n.identifier.clone(), sub.clone());
            }
        }
        Ok(Source { execution_id: e.id, pipeline: e.pipeline, statuses, tree })
    })
}

/// Plan a selection; prints the error and returns the exit code when no plan can be made.
pub async fn make(
    doc: &Document,
    sel: &Selection,
    store: Option<&dyn Store>,
) -> anyhow::Result<Result<Planned, ExitCode>> {
    let body = doc.body().context("pipeline body")?;
    let Some(Entity::Pipeline(p)) = &doc.entity else { bail!("not a pipeline") };
    let refs = spec::stage_references(p, body, &doc.source);
    let graph = plan::graph(p, &refs);
    let src = match (&sel.from_execution, store) {
        (Some(id), Some(store)) => Some(source(store, id).await?),
        (Some(_), None) => bail!("--from-execution needs the state directory"),
        _ => None,
    };
    let req = Request {
        selected: sel.stages.clone(),
        with_deps: sel.with_deps,
        supplied: supplied_exprs(sel)?,
        source: src,
        any_stage: sel.any_stage,
    };
    let plan = match plan::plan(p, &graph, &req) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Err(ExitCode::from(2)));
        }
    };
    let run = plan.run_stages();
    let required =
        inputs::runtime_inputs(body).into_iter().filter(|f| f.stage.as_ref().is_none_or(|s| run.contains(s))).collect();
    Ok(Ok(Planned { plan, required }))
}

/// The JSON shape of a plan.
pub fn plan_json(p: &Planned) -> serde_json::Value {
    serde_json::json!({
        "satisfiable": p.plan.satisfiable,
        "stages": p.plan.stages,
        "required_inputs": p.required.iter().map(|f| {
            let mut v = serde_json::json!({"path": f.path});
            if let Some(d) = &f.input.default { v["default"] = d.clone().into(); }
            if let Some(a) = &f.input.allowed_values { v["allowed_values"] = serde_json::json!(a); }
            if let Some(r) = &f.input.regex { v["regex"] = r.clone().into(); }
            if f.input.execution_input { v["execution_input"] = true.into(); }
            v
        }).collect::<Vec<_>>(),
        "unmet_dependencies": p.plan.unmet_dependencies,
        "warnings": p.plan.warnings,
    })
}

/// Print the unmet dependencies and how to meet them.
pub fn explain_unmet(p: &Planned) {
    eprintln!("error: the selected stages depend on values nothing provides:");
    for u in &p.plan.unmet_dependencies {
        let via = match u.via {
            Via::Expression => "reads",
            Via::Propagation => "propagates (useFromStage) from",
        };
        eprintln!("  stage `{}` {via} stage `{}`:", u.stage, u.depends_on);
        for path in &u.paths {
            eprintln!("    {path}");
        }
        if let Some(n) = &u.note {
            eprintln!("    ({n})");
        }
    }
    eprintln!("meet them with one of:");
    eprintln!("  --with-deps                    run the stages they depend on too");
    eprintln!("  --from-execution EXEC          reuse the values of an earlier execution (`pipewright history`)");
    if p.plan.unmet_dependencies.iter().any(|u| u.via == Via::Expression) {
        let example = p
            .plan
            .unmet_dependencies
            .iter()
            .find(|u| u.via == Via::Expression)
            .map(|u| u.paths[0].clone())
            .unwrap_or_default();
        eprintln!("  --expr {example}=VALUE   give each value");
    }
}

/// Print a plan as text.
pub fn print(p: &Planned) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header(["STAGE", "ACTION", "WHY"]);
    for s in &p.plan.stages {
        let action = match s.action {
            Action::Run => "run",
            Action::Skip => "skip",
            Action::Reuse => "reuse",
        };
        let why = match &s.reused_from {
            Some(e) => format!("{} — from execution {e}", s.reason),
            None => s.reason.clone(),
        };
        t.add_row([s.identifier.as_str(), action, why.as_str()]);
    }
    println!("{t}");
    if !p.required.is_empty() {
        println!("\nruntime inputs:");
        for f in &p.required {
            let mut c = Vec::new();
            if let Some(d) = &f.input.default {
                c.push(format!("default {d}"));
            }
            if let Some(a) = &f.input.allowed_values {
                c.push(format!("one of {}", a.join(", ")));
            }
            if let Some(r) = &f.input.regex {
                c.push(format!("matches {r}"));
            }
            println!(
                "  {}{}",
                f.path,
                if c.is_empty() { " (required)".into() } else { format!(" ({})", c.join("; ")) }
            );
        }
    }
    for w in &p.plan.warnings {
        println!("warning: {w}");
    }
}

/// `pipewright plan`.
pub async fn run(a: PlanArgs) -> anyhow::Result<ExitCode> {
    let doc = match load(&a.file)? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let store = if a.selection.from_execution.is_some() { Some(super::open_store(&a.state).await?) } else { None };
    let planned = match make(&doc, &a.selection, store.as_deref()).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan_json(&planned))?),
        Output::Text => {
            print(&planned);
            if !planned.plan.satisfiable {
                explain_unmet(&planned);
            }
        }
    }
    if !planned.plan.satisfiable {
        return Ok(ExitCode::from(3));
    }
    // The inputs are checked exactly as `run` would check them, for the stages that would run.
    let run_stages = planned.plan.run_stages();
    let selective = !a.selection.stages.is_empty();
    match super::run::prepare(&doc, &a.inputs, &a.inputs_files, selective.then_some(run_stages.as_slice()))? {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(code) => Ok(code),
    }
}
