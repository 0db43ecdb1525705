//! `pipewright plan` and the selection flags shared with `run`: build the stage dependency graph, read an
//! earlier execution's values when `--from-execution` is given, and print what would run, be skipped or be
//! reused, the runtime inputs that will be asked, and every unmet dependency with the flags that would meet
//! it — without running anything.

use crate::{Output, StateArgs};
use anyhow::{Context, bail};
use clap::Args;
use spec::Document;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// More template files, besides those of the `.harness/` folder.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// pipewright's settings (step handlers; default: `pipewright.yaml` in the `.harness/` folder).
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
}

pub use launch::Planned;

/// Print a launch error as the CLI does and give its exit status (2 for a bad selection, 3 for an
/// unsatisfiable plan, 1 otherwise).
pub fn fail(e: launch::LaunchError) -> anyhow::Result<ExitCode> {
    use launch::LaunchError as L;
    match e {
        L::Store(e) => Err(e.into()),
        L::WrongKind(m) | L::BadRequest(m) => Err(anyhow::anyhow!(m)),
        e @ L::Selection(_) => {
            eprint!("{}", e.render());
            Ok(ExitCode::from(2))
        }
        e @ L::Unsatisfiable(_) => {
            eprint!("{}", e.render());
            eprintln!("nothing was run (`pipewright plan` shows the whole plan)");
            Ok(ExitCode::from(3))
        }
        e @ L::Inputs(_) => {
            eprint!("{}", e.render());
            eprintln!("give them with --input PATH=VALUE or --inputs-file FILE");
            Ok(ExitCode::from(1))
        }
        e @ (L::Invalid { .. } | L::Given(_)) => {
            eprint!("{}", e.render());
            Ok(ExitCode::from(1))
        }
    }
}

/// Load and validate the pipeline file, resolving its templates (from its `.harness/` folder and `templates`).
pub fn load(file: &Path, templates: Option<&Path>) -> anyhow::Result<Result<Document, ExitCode>> {
    let lib = super::run::templates(file, templates)?;
    let doc = spec::load_file_with(file, Some(&lib))?;
    match launch::check_pipeline(doc) {
        Ok(d) => Ok(Ok(d)),
        Err(e) => fail(e).map(Err),
    }
}

impl Selection {
    /// The selection as the launch crate takes it (reading `--expr-file`).
    pub fn to_launch(&self) -> anyhow::Result<launch::Selection> {
        let mut exprs = BTreeMap::new();
        if let Some(f) = &self.expr_file {
            let text = std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?;
            let node = spec::yaml::load(&text)
                .map_err(|d| anyhow::anyhow!("{}", d.render(&f.display().to_string(), &text)))?;
            let serde_json::Value::Object(m) = node.to_json() else {
                bail!("{}: expected a map of `path: value`", f.display())
            };
            for (k, v) in m {
                exprs.insert(k, v.as_str().map_or_else(|| v.to_string(), String::from));
            }
        }
        for e in &self.exprs {
            let (k, v) = e.split_once('=').with_context(|| format!("`--expr {e}`: expected PATH=VALUE"))?;
            exprs.insert(k.trim().to_string(), v.to_string());
        }
        Ok(launch::Selection {
            stages: self.stages.clone(),
            with_deps: self.with_deps,
            from_execution: self.from_execution.clone(),
            exprs,
            any_stage: self.any_stage,
            handled: Vec::new(),
        })
    }
}

/// Plan a selection; prints the error and returns the exit code when no plan can be made.
pub async fn make(
    doc: &Document,
    sel: &Selection,
    store: Option<&dyn store::History>,
    settings: Option<&Path>,
) -> anyhow::Result<Result<Planned, ExitCode>> {
    let mut sel = sel.to_launch()?;
    sel.handled = super::run::load_settings(settings)?.step_handlers.into_keys().collect();
    match launch::plan(doc, &sel, store).await {
        Ok(p) => Ok(Ok(p)),
        Err(e) => fail(e).map(Err),
    }
}

/// Print a plan (as `launch::plan_json` gives it) as text.
pub fn print(p: &serde_json::Value) {
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header(["STAGE", "ACTION", "WHY"]);
    for s in p["stages"].as_array().into_iter().flatten() {
        let why = match s["reused_from"].as_str() {
            Some(e) => format!("{} — from execution {e}", str_of(&s["reason"])),
            None => str_of(&s["reason"]),
        };
        t.add_row([str_of(&s["identifier"]), str_of(&s["action"]), why]);
    }
    println!("{t}");
    let required = p["required_inputs"].as_array().cloned().unwrap_or_default();
    if !required.is_empty() {
        println!("\nruntime inputs:");
        for f in &required {
            let mut c = Vec::new();
            if let Some(d) = f["default"].as_str() {
                c.push(format!("default {d}"));
            }
            if let Some(a) = f["allowed_values"].as_array() {
                c.push(format!("one of {}", a.iter().map(str_of).collect::<Vec<_>>().join(", ")));
            }
            if let Some(r) = f["regex"].as_str() {
                c.push(format!("matches {r}"));
            }
            println!(
                "  {}{}",
                str_of(&f["path"]),
                if c.is_empty() { " (required)".into() } else { format!(" ({})", c.join("; ")) }
            );
        }
    }
    for w in p["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", str_of(w));
    }
}

/// `pipewright plan`.
pub async fn run(a: PlanArgs) -> anyhow::Result<ExitCode> {
    if let Some(remote) = super::remote::Remote::from_state(&a.state)? {
        return remote.plan(&a).await;
    }
    let doc = match load(&a.file, a.templates.as_deref())? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let store = if a.selection.from_execution.is_some() { Some(super::open_store(&a.state).await?) } else { None };
    let settings = a.settings.clone().or_else(|| super::run::default_settings(&a.file));
    let planned = match make(
        &doc,
        &a.selection,
        store.as_deref().map(|s| s as &dyn store::History),
        settings.as_deref(),
    )
    .await?
    {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let json = launch::plan_json(&planned);
    show(&json, a.output)?;
    if !planned.plan.satisfiable {
        return Ok(ExitCode::from(3));
    }
    // The inputs are checked exactly as `run` would check them, for the stages that would run.
    let run_stages = planned.plan.run_stages();
    let selective = !a.selection.stages.is_empty();
    let supplied = super::run::supplied_inputs(&a.inputs, &a.inputs_files)?;
    match launch::prepare(&doc, &supplied, selective.then_some(run_stages.as_slice())) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        // A plan is a preview: inputs that only lack a value are what the run will ask for.
        Err(launch::LaunchError::Inputs(problems)) if problems.iter().all(|p| p.missing) => {
            if a.output == Output::Text {
                eprintln!("runtime inputs a run needs a value for (give them with --input PATH=VALUE):");
                for p in &problems {
                    eprintln!("  {}: {}", p.path, p.message);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => fail(e),
    }
}

/// Print a plan's JSON as asked (text also explains unmet dependencies).
pub fn show(json: &serde_json::Value, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(json)?),
        Output::Text => {
            print(json);
            if json["satisfiable"] == false {
                eprint!("{}", launch::explain_unmet(json));
            }
        }
    }
    Ok(())
}
