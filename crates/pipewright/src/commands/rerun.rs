//! `pipewright rerun` and `pipewright retry`: new executions derived from one in the history. A re-run uses
//! the pipeline YAML as it was (or the current file with `--latest`, re-planned), the same inputs (overridable)
//! and the same selection; `rerun --stage` re-runs some stages and reuses every dependency outside them from
//! that execution; `retry` resumes a failed execution from its first failed stage (or the failed stages of a
//! parallel block), reusing what succeeded. Each new execution links to the one it came from. `resume` is not a
//! new execution: it goes on with one whose process died (its owner's lease ran out), from where it was.

use super::run::{Options, default_entities, run_planned};
use crate::{Output, StateArgs};
use anyhow::{Context, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::{Execution, Mode, Store};

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
    /// Services, environments and infrastructure definitions (default: the `.harness/` folder the pipeline file is in, or `.harness/` next to it).
    #[arg(long, value_name = "DIR")]
    pub entities: Option<PathBuf>,
    /// Secrets as YAML (`id: value`).
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub steps: crate::StepArgs,
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

/// The pipeline a re-run or retry of `e` runs, validated: the YAML `e` ran (as the server does), or the file as
/// it is now with `--latest`. On an invalid pipeline, prints why and gives the exit status.
async fn document(
    store: &dyn store::History,
    e: &Execution,
    latest: bool,
) -> anyhow::Result<Result<spec::Document, ExitCode>> {
    let doc = if latest {
        let f =
            e.source_file.as_ref().context("the execution was not run from a file; --latest has nothing to read")?;
        let lib = super::run::templates(Path::new(f), None)?;
        launch::check_pipeline(
            spec::load_file_with(Path::new(f), Some(&lib))
                .with_context(|| format!("{f}: cannot read the pipeline file"))?,
        )
    } else {
        launch::recorded_document(store, e).await
    };
    match doc {
        Ok(d) => Ok(Ok(d)),
        Err(e) => super::plan::fail(e).map(Err),
    }
}

async fn start(
    store: std::sync::Arc<dyn Store>,
    c: &Common,
    orig: &Execution,
    doc: spec::Document,
    sel: launch::Selection,
    mode: Mode,
) -> anyhow::Result<ExitCode> {
    let planned = match launch::plan(&doc, &sel, Some(store.as_ref())).await {
        Ok(p) => p,
        Err(e) => return super::plan::fail(e),
    };
    let entities =
        c.entities.clone().or_else(|| orig.source_file.as_deref().and_then(|f| default_entities(Path::new(f))));
    let opts = Options {
        base_inputs: launch::original_inputs(orig),
        inputs: c.inputs.clone(),
        inputs_files: c.inputs_files.clone(),
        entities,
        settings: orig.source_file.as_deref().and_then(|f| super::run::default_settings(Path::new(f))),
        secrets_file: c.secrets_file.clone(),
        output: c.output,
        mode,
        selective: !sel.stages.is_empty(),
        parent: Some(launch::derived_from(orig)),
        source_file: orig.source_file.clone(),
        steps: c.steps.clone(),
    };
    run_planned(store, &c.state, &doc, planned, opts).await
}

/// `rerun`.
pub async fn rerun(a: RerunArgs) -> anyhow::Result<ExitCode> {
    if let Some(remote) = super::remote::Remote::from_state(&a.common.state)? {
        return remote.rerun(&a).await;
    }
    let store = super::open_local(&a.common.state).await?;
    let orig = store.execution(&a.common.execution).await?;
    let (sel, mode) = launch::rerun_selection(&orig, &a.stages);
    let doc = match document(store.as_ref(), &orig, a.common.latest).await? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    start(store, &a.common, &orig, doc, sel, mode).await
}

/// `retry`.
pub async fn retry(a: RetryArgs) -> anyhow::Result<ExitCode> {
    if let Some(remote) = super::remote::Remote::from_state(&a.common.state)? {
        return remote.retry(&a).await;
    }
    let store = super::open_local(&a.common.state).await?;
    let orig = store.execution(&a.common.execution).await?;
    let doc = match document(store.as_ref(), &orig, a.common.latest).await? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let sel = match launch::retry_selection(store.as_ref(), &orig, &doc, a.stage.as_deref(), a.only_failed).await {
        Ok(s) => s,
        Err(e @ launch::LaunchError::BadRequest(_)) => bail!("{e}"),
        Err(e) => return super::plan::fail(e),
    };
    start(store, &a.common, &orig, doc, sel, Mode::Retry).await
}

/// Arguments of `resume`.
#[derive(Args)]
pub struct ResumeArgs {
    /// The execution (id or unique prefix).
    pub execution: String,
    /// Services, environments and infrastructure definitions (default: the `.harness/` folder the pipeline file is in, or `.harness/` next to it).
    #[arg(long, value_name = "DIR")]
    pub entities: Option<PathBuf>,
    /// Secrets as YAML (`id: value`).
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// When another process still holds the execution, wait until its hold runs out (it died) instead of
    /// refusing. A process that is alive renews its hold: then this waits until it stops.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub steps: crate::StepArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

/// `resume`: take over an execution whose process died and go on with it here — finished steps kept, the
/// interrupted one run again as a new attempt (after stopping what it left running), waits still waiting.
pub async fn resume(a: ResumeArgs) -> anyhow::Result<ExitCode> {
    if super::remote::Remote::from_state(&a.state)?.is_some() {
        bail!("a server takes over its executions itself once their process stops; `resume` is for local runs");
    }
    let store = super::open_local(&a.state).await?;
    let e = store.execution(&a.execution).await?;
    if e.status.is_final() {
        bail!(
            "execution {} ended {}; there is nothing to resume (`pipewright retry {}` runs it again from its failed stage)",
            e.id,
            e.status,
            e.id
        );
    }
    let (_, pipeline, seed) = match launch::resumable(store.as_ref(), &e).await {
        Ok(p) => p,
        Err(err) => return super::plan::fail(err),
    };
    let entities_dir =
        a.entities.clone().or_else(|| e.source_file.as_deref().and_then(|f| default_entities(Path::new(f))));
    let entities = super::run::load_entities(entities_dir.as_deref())?;
    let secrets = super::run::secrets(a.secrets_file.as_deref())?;
    let mut config = engine::EngineConfig::new(&a.state.state_dir);
    if let Some(f) = &e.source_file {
        config.codebase = super::run::codebase(Path::new(f));
    }
    let settings = e.source_file.as_deref().and_then(|f| super::run::default_settings(Path::new(f)));
    let checkout = e.source_file.as_deref().and_then(|f| super::run::checkout_of(Path::new(f)));
    super::run::confine(&mut config, &a.steps, &a.state.state_dir, settings.as_deref(), checkout.as_deref())?;
    config.triggered_by = e.triggered_by.clone();
    if a.output == Output::Text {
        println!("resuming execution {} (#{} of {})", e.id, e.sequence_id, e.pipeline);
    }
    let engine = engine::Engine::new(store.clone(), super::run::observer(a.output), config);
    let status = loop {
        match engine.resume(&e, &pipeline, &entities, &secrets, &seed).await {
            Ok(s) => break s,
            Err(engine::EngineError::Owned { .. }) if a.wait => {
                // The store says when the hold ends; look again then (a live owner will have renewed it).
                let until = store.lease(&e.id).await?.and_then(|(_, u)| u).unwrap_or(0);
                let left = (until - store::now_ms()).clamp(50, 5_000) as u64;
                tokio::time::sleep(std::time::Duration::from_millis(left)).await;
            }
            Err(err @ engine::EngineError::Owned { .. }) => bail!("{err}"),
            Err(err) => return Err(err.into()),
        }
    };
    let e = store.execution(&e.id).await?;
    let nodes = store.nodes(&e.id).await?;
    super::run::finish(&e, &nodes, status, a.output)
}
