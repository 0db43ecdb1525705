//! `pipewright abort`, `approve`, `reject`, `intervene` and `input`: record a person's decision in the store,
//! where the running execution (in whatever process runs it) picks it up.

use crate::StateArgs;
use anyhow::{Context, bail};
use clap::Args;
use std::process::ExitCode;
use store::{Decision, Node, Status, now_ms};

/// An execution id.
#[derive(Args)]
pub struct ExecArg {
    /// Execution id (or a unique prefix).
    pub execution: String,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Arguments of `approve` / `reject`.
#[derive(Args)]
pub struct ApprovalArgs {
    /// Execution id (or a unique prefix).
    pub execution: String,
    /// The waiting step's path (`stage.step`), when several are waiting.
    #[arg(long)]
    pub node: Option<String>,
    /// A comment kept with the decision.
    #[arg(long)]
    pub comment: Option<String>,
    /// Approver inputs, `NAME=VALUE` (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Arguments of `intervene`.
#[derive(Args)]
pub struct InterveneArgs {
    /// Execution id (or a unique prefix).
    pub execution: String,
    /// The waiting step's path (`stage.step`), when several are waiting.
    #[arg(long)]
    pub node: Option<String>,
    /// What to do with the failed step: retry, ignore, abort, mark-success, mark-failure.
    #[arg(long, value_parser = parse_action)]
    pub action: engine::InterventionAction,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Arguments of `input`.
#[derive(Args)]
pub struct InputArgs {
    /// Execution id (or a unique prefix).
    pub execution: String,
    /// A value the execution asks for, `PATH=VALUE` (repeatable); PATH as `pipewright show` lists it.
    #[arg(long = "input", value_name = "PATH=VALUE", required = true)]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

fn who() -> String {
    std::env::var("USER").unwrap_or_else(|_| "local".into())
}

/// Abort.
pub async fn abort(a: ExecArg) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&a.state).await?;
    let e = store.execution(&a.execution).await?;
    if store.request_abort(&e.id).await? {
        // Locally, an execution still queued ends at once (an engine about to start it sees the abort and does
        // not); a server decides this itself.
        if a.state.server.is_none() && e.status == Status::Queued {
            let local = super::open_local(&a.state).await?;
            // Unless an engine took it meanwhile (then it sees the abort itself).
            let aborted = Some("aborted before it started");
            match local.set_execution_status(&e.id, Status::Aborted, aborted, &store::Fence::unowned()).await {
                Ok(()) | Err(store::StoreError::Fenced(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        println!(
            "abort requested for execution {} (#{} of {}); it stops within a moment",
            e.id, e.sequence_id, e.pipeline
        );
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("execution {} already ended {}; there is nothing to abort", e.id, e.status)
    }
}

async fn waiting_node(
    a_exec: &str,
    node: Option<&str>,
    status: Status,
    state: &StateArgs,
) -> anyhow::Result<(String, Node)> {
    let store = super::open_store(state).await?;
    let e = store.execution(a_exec).await?;
    let n = launch::waiting_node(store.as_ref(), &e, node, status).await?;
    Ok((e.id, n))
}

/// Approve or reject.
pub async fn approval(a: ApprovalArgs, action: store::DecisionAction) -> anyhow::Result<ExitCode> {
    let (exec, node) = waiting_node(&a.execution, a.node.as_deref(), Status::ApprovalWaiting, &a.state).await?;
    let mut inputs = serde_json::Map::new();
    for i in &a.inputs {
        let (k, v) = i.split_once('=').with_context(|| format!("`--input {i}`: expected NAME=VALUE"))?;
        inputs.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let store = super::open_store(&a.state).await?;
    store
        .put_decision(&Decision {
            execution_id: exec.clone(),
            node_id: node.id.clone(),
            action,
            by: who(),
            comment: a.comment,
            inputs: serde_json::Value::Object(inputs),
            at: now_ms(),
        })
        .await?;
    println!("{action}d {} of execution {exec}", node.path);
    Ok(ExitCode::SUCCESS)
}

fn parse_action(s: &str) -> Result<engine::InterventionAction, String> {
    s.parse()
}

/// Intervene.
pub async fn intervene(a: InterveneArgs) -> anyhow::Result<ExitCode> {
    let (exec, node) = waiting_node(&a.execution, a.node.as_deref(), Status::InterventionWaiting, &a.state).await?;
    let store = super::open_store(&a.state).await?;
    store
        .put_decision(&Decision {
            execution_id: exec.clone(),
            node_id: node.id.clone(),
            action: a.action.decision(),
            by: who(),
            comment: None,
            inputs: serde_json::json!({}),
            at: now_ms(),
        })
        .await?;
    println!("{} for {} of execution {exec}", a.action, node.path);
    Ok(ExitCode::SUCCESS)
}

/// Give the runtime inputs an execution waits for: checked as at start, then recorded for the node that asks
/// (the engine, wherever it runs, picks them up).
pub async fn input(a: InputArgs) -> anyhow::Result<ExitCode> {
    // `--input PATH=VALUE` read as `run` reads it.
    let values = super::run::supplied_inputs(&a.inputs, &[])?.into_iter().map(|(k, (v, _))| (k, v)).collect();
    let store = super::open_store(&a.state).await?;
    let e = store.execution(&a.execution).await?;
    let given = match launch::give_inputs(store.as_ref(), &e, &values, &who()).await {
        Ok(g) => g,
        Err(err) => return super::plan::fail(err),
    };
    println!(
        "gave {} to execution {}{}",
        given.given.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
        given.execution_id,
        if given.waiting.is_empty() {
            String::new()
        } else {
            format!("; it still waits for {}", given.waiting.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}
