//! `pipewright history`: executions newest first, with sequence id, status, mode, start, duration and who
//! ran them.

use crate::{Output, StateArgs};
use clap::Args;
use comfy_table::{Table, presets::NOTHING};
use std::process::ExitCode;
use store::{ExecutionQuery, Status};

/// Arguments of `history`.
#[derive(Args)]
pub struct HistoryArgs {
    /// Only this pipeline (identifier).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Only this status (Success, Failed, Aborted, …).
    #[arg(long, value_parser = |s: &str| s.parse::<Status>())]
    pub status: Option<Status>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
}

/// History.
pub async fn run(a: HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&a.state).await?;
    let list = store
        .executions(&ExecutionQuery {
            pipeline: a.pipeline,
            status: a.status,
            limit: Some(a.limit),
            org: a.state.remote_org(),
            project: a.state.remote_project(),
            ..Default::default()
        })
        .await?;
    if a.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no executions yet");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header([
        "EXECUTION",
        "PIPELINE",
        "#",
        "STATUS",
        "MODE",
        "STARTED (UTC)",
        "DURATION",
        "BY",
        "FROM",
        "ORIGINAL",
    ]);
    for e in &list {
        t.add_row([
            e.id.clone(),
            e.pipeline.clone(),
            e.sequence_id.to_string(),
            e.status.to_string(),
            e.mode.as_str().to_string(),
            super::when(e.started_at.or(Some(e.created_at))),
            super::duration(e.started_at, e.ended_at),
            e.triggered_by.clone(),
            e.parent_id.clone().unwrap_or_default(),
            e.original_id.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}
