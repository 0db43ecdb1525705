//! `pipewright logs`: the stored log lines of an execution, optionally of one stage or step, optionally
//! following a running execution until it ends.

use crate::StateArgs;
use anyhow::bail;
use clap::Args;
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `logs`.
#[derive(Args)]
pub struct LogsArgs {
    /// Execution id (or a unique prefix).
    pub execution: String,
    /// Only this stage.
    #[arg(long)]
    pub stage: Option<String>,
    /// Only this step (identifier).
    #[arg(long)]
    pub step: Option<String>,
    /// Keep printing new lines until the execution ends.
    #[arg(long, short)]
    pub follow: bool,
    /// Prefix each line with its time.
    #[arg(long)]
    pub timestamps: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

/// Logs.
pub async fn run(a: LogsArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&a.state).await?;
    let e = store.execution(&a.execution).await?;
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    loop {
        // Read the end state first, then the nodes and chunks: nothing written before the end is missed.
        let ended = !a.follow || store.execution(&e.id).await?.status.is_final();
        let nodes = store.nodes(&e.id).await?;
        let chosen: Vec<String> = nodes
            .iter()
            .filter(|n| {
                let stage = n.path.split('.').next().unwrap_or_default();
                let stage_ok = a
                    .stage
                    .as_ref()
                    .is_none_or(|s| stage == s || stage.strip_prefix(s.as_str()).is_some_and(|r| r.starts_with('_')));
                let step_ok = a.step.as_ref().is_none_or(|s| {
                    n.identifier == *s || n.identifier.strip_prefix(s.as_str()).is_some_and(|r| r.starts_with('_'))
                });
                stage_ok && step_ok
            })
            .map(|n| n.id.clone())
            .collect();
        if chosen.is_empty() && !a.follow {
            bail!("no stage or step of execution {} matches the --stage / --step given", e.id);
        }
        let paths: std::collections::HashMap<&str, &str> =
            nodes.iter().map(|n| (n.id.as_str(), n.path.as_str())).collect();
        for c in store.logs(&e.id, Some(&chosen)).await? {
            if !seen.insert((c.node_id.clone(), c.seq)) {
                continue;
            }
            let path = paths.get(c.node_id.as_str()).copied().unwrap_or("?");
            for line in c.data.lines() {
                let mut parts = line.splitn(3, '\t');
                let (ts, _stream, text) =
                    (parts.next().unwrap_or_default(), parts.next(), parts.next().unwrap_or_default());
                if a.timestamps {
                    println!("{} [{path}] {text}", super::when(ts.parse().ok()));
                } else {
                    println!("[{path}] {text}");
                }
            }
        }
        if ended {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
