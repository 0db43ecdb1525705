//! `pipewright rerun` and `pipewright retry`: new executions derived from one in the history. A re-run uses
//! the pipeline YAML as it was (or the current file with `--latest`, re-planned), the same inputs (overridable)
//! and the same selection; `rerun --stage` re-runs some stages and reuses every dependency outside them from
//! that execution; `retry` resumes a failed execution from its first failed stage (or the failed stages of a
//! parallel block), reusing what succeeded. Each new execution links to the one it came from.

use super::plan::{Planned, Selection};
use super::run::{Options, default_entities, run_planned};
use crate::{Output, StateArgs};
use anyhow::{Context, bail};
use clap::Args;
use spec::Entity;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::{Execution, Mode, NodeKind, Status, Store};

/// Options shared by `rerun` and `retry`.
#[derive(Args, Clone)]
pub struct Common {
    /// The execution (id or unique prefix).
    pub execution: String,
    /// Override a runtime input (repeatable).
    #[arg(long = "input", value_name = "PATH=VALUE")]
    pub inputs: Vec<String>,
    /// Input set files (applied over the original inputs; `--input` wins).
    #[arg(long = "inputs-file", value_name = "FILE")]
    pub inputs_files: Vec<PathBuf>,
    /// Use the pipeline file as it is now instead of the YAML the execution ran (re-planned).
    #[arg(long)]
    pub latest: bool,
    /// Services, environments and infrastructure definitions (default: `.harness/` next to the pipeline file).
    #[arg(long, value_name = "DIR")]
    pub entities: Option<PathBuf>,
    /// Secrets as YAML (`id: value`).
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Arguments of `rerun`.
#[derive(Args)]
pub struct RerunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Re-run only these stages; their dependencies outside them are reused from the execution.
    #[arg(long = "stage", value_name = "ID")]
    pub stages: Vec<String>,
}

/// Arguments of `retry`.
#[derive(Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub common: Common,
    /// Retry from this stage instead of the first failed one.
    #[arg(long, value_name = "ID")]
    pub stage: Option<String>,
    /// In a parallel block, retry only the stages that failed (default: all stages of the block).
    #[arg(long)]
    pub only_failed: bool,
}

async fn document(store: &dyn Store, e: &Execution, latest: bool) -> anyhow::Result<spec::Document> {
    let (label, yaml) = if latest {
        let f =
            e.source_file.as_ref().context("the execution was not run from a file; --latest has nothing to read")?;
        (f.clone(), std::fs::read_to_string(f).with_context(|| format!("{f}: cannot read the pipeline file"))?)
    } else {
        let yaml = store.pipeline_yaml(&e.org, &e.project, &e.pipeline, e.pipeline_version).await?;
        (format!("{} (as run by execution {})", e.source_file.as_deref().unwrap_or(&e.pipeline), e.id), yaml)
    };
    Ok(spec::parse_document(&label, yaml))
}

fn original_inputs(e: &Execution) -> Vec<String> {
    e.inputs
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| *k != "__dependencies")
                .filter_map(|(k, v)| v["value"].as_str().map(|v| format!("{k}={v}")))
                .collect()
        })
        .unwrap_or_default()
}

async fn launch(
    store: std::sync::Arc<dyn Store>,
    c: &Common,
    orig: &Execution,
    sel: Selection,
    mode: Mode,
) -> anyhow::Result<ExitCode> {
    let doc = document(store.as_ref(), orig, c.latest).await?;
    if !doc.is_valid() {
        eprint!("{}", doc.render_diagnostics());
        bail!("the pipeline is invalid; nothing was run");
    }
    if !matches!(doc.entity, Some(Entity::Pipeline(_))) {
        bail!("execution {} did not run a pipeline file", orig.id);
    }
    let planned: Planned = match super::plan::make(&doc, &sel, Some(store.as_ref())).await? {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let mut inputs = original_inputs(orig);
    inputs.extend(c.inputs.iter().cloned());
    let entities =
        c.entities.clone().or_else(|| orig.source_file.as_deref().and_then(|f| default_entities(Path::new(f))));
    let opts = Options {
        inputs,
        inputs_files: c.inputs_files.clone(),
        entities,
        secrets_file: c.secrets_file.clone(),
        output: c.output,
        mode,
        selective: !sel.stages.is_empty(),
        parent: Some((orig.id.clone(), orig.original_id.clone().unwrap_or_else(|| orig.id.clone()))),
        source_file: orig.source_file.clone(),
    };
    run_planned(store, &c.state, &doc, planned, opts).await
}

/// `rerun`.
pub async fn rerun(a: RerunArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&a.common.state).await?;
    let orig = store.execution(&a.common.execution).await?;
    let sel = if a.stages.is_empty() {
        // The same selection, the same supplied values, reuse from the same execution.
        let deps = orig.inputs.get("__dependencies").and_then(|d| d.as_array()).cloned().unwrap_or_default();
        let from = deps.iter().find_map(|d| d["source"]["execution_id"].as_str().map(String::from));
        let exprs = deps
            .iter()
            .filter(|d| d["source"]["kind"] == "supplied")
            .filter_map(|d| Some(format!("{}={}", d["path"].as_str()?, d["value"].as_str()?)))
            .collect();
        Selection { stages: orig.selected_stages.clone(), from_execution: from, exprs, ..Selection::default() }
    } else {
        Selection { stages: a.stages.clone(), from_execution: Some(orig.id.clone()), ..Selection::default() }
    };
    let mode = if a.stages.is_empty() { Mode::Rerun } else { Mode::RerunStage };
    launch(store, &a.common, &orig, sel, mode).await
}

/// `retry`.
pub async fn retry(a: RetryArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&a.common.state).await?;
    let orig = store.execution(&a.common.execution).await?;
    match orig.status {
        Status::Failed | Status::Aborted | Status::Expired | Status::ApprovalRejected => {}
        s if !s.is_final() => bail!("execution {} is still {s}; retry it once it has ended", orig.id),
        s => bail!("execution {} ended {s}; there is nothing to retry (`pipewright rerun` runs it again)", orig.id),
    }
    let doc = document(store.as_ref(), &orig, a.common.latest).await?;
    let Some(Entity::Pipeline(p)) = &doc.entity else { bail!("execution {} did not run a valid pipeline", orig.id) };
    let nodes = store.nodes(&orig.id).await?;
    let status_of = |id: &str| {
        nodes
            .iter()
            .find(|n| n.kind == NodeKind::Stage && n.parent_id.is_none() && n.identifier == id)
            .map(|n| n.status)
    };
    let groups = p.stage_groups();
    let start = match &a.stage {
        Some(s) => groups.iter().position(|g| g.iter().any(|x| x.identifier.value == *s)).with_context(|| {
            let all: Vec<&str> = p.all_stages().iter().map(|s| s.identifier.as_str()).collect();
            let hint =
                spec::suggest(s, all.iter().copied()).map(|h| format!("; did you mean `{h}`?")).unwrap_or_default();
            format!("stage `{s}` does not exist in pipeline `{}`{hint}", p.identifier.value)
        })?,
        None => groups
            .iter()
            .position(|g| g.iter().any(|s| status_of(&s.identifier).is_some_and(|st| !st.is_good())))
            .context("no stage of that execution failed")?,
    };
    let was_selected = |id: &str| orig.selected_stages.is_empty() || orig.selected_stages.iter().any(|s| s == id);
    let mut stages = Vec::new();
    for (i, g) in groups.iter().enumerate().skip(start) {
        for s in g {
            let id = s.identifier.value.clone();
            let failed = status_of(&id).is_some_and(|st| !st.is_good());
            if i == start && a.only_failed && a.stage.is_none() && !failed {
                continue;
            }
            if was_selected(&id) {
                stages.push(id);
            }
        }
    }
    let sel = Selection { stages, from_execution: Some(orig.id.clone()), any_stage: true, ..Selection::default() };
    launch(store, &a.common, &orig, sel, Mode::Retry).await
}
