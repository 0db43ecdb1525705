//! `pipewright show`: one execution as a tree of stages, step groups, steps and attempts, with statuses,
//! durations, failure messages, skip reasons and output variables.

use crate::{Output, StateArgs};
use clap::Args;
use std::process::ExitCode;
use store::Node;

/// Arguments of `show`.
#[derive(Args)]
pub struct ShowArgs {
    /// Execution id (or a unique prefix).
    pub execution: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub state: StateArgs,
}

fn print_tree(nodes: &[Node], parent: Option<&str>, depth: usize) {
    for n in nodes.iter().filter(|n| n.parent_id.as_deref() == parent) {
        let attempt = if n.attempt > 1 { format!(" (attempt {})", n.attempt) } else { String::new() };
        let why = n
            .failure
            .as_ref()
            .map(|f| format!(" — {f}"))
            .or(n.skip_reason.as_ref().map(|r| format!(" — {r}")))
            .unwrap_or_default();
        println!(
            "{}{:<w$} {:<16} {:>8}{attempt}{why}",
            "  ".repeat(depth),
            n.identifier,
            n.status.to_string(),
            super::duration(n.started_at, n.ended_at),
            w = 28usize.saturating_sub(depth * 2)
        );
        for (k, v) in &n.outputs {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{}  ↳ {k} = {v}", "  ".repeat(depth));
        }
        print_tree(nodes, Some(&n.id), depth + 1);
    }
}

/// Show.
pub async fn run(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&a.state).await?;
    let e = store.execution(&a.execution).await?;
    let nodes = store.nodes(&e.id).await?;
    if a.output == Output::Json {
        let mut v = super::run::summary_json(&e, &nodes);
        v["inputs"] = e.inputs.clone();
        v["started_at"] = serde_json::json!(e.started_at);
        v["ended_at"] = serde_json::json!(e.ended_at);
        v["triggered_by"] = serde_json::json!(e.triggered_by);
        v["parent_id"] = serde_json::json!(e.parent_id);
        v["original_id"] = serde_json::json!(e.original_id);
        v["chained_from"] = match launch::chained_from(&e) {
            Some((exec, stage)) => serde_json::json!({"execution_id": exec, "stage": stage}),
            None => serde_json::Value::Null,
        };
        let root = e.original_id.clone().unwrap_or_else(|| e.id.clone());
        let mut chain = store
            .executions(&store::ExecutionQuery { chain_of: Some(root), limit: Some(1000), ..Default::default() })
            .await?;
        chain.reverse();
        v["chain"] = serde_json::json!(chain
            .iter()
            .map(|c| serde_json::json!({"id": c.id, "sequence_id": c.sequence_id, "status": c.status, "mode": c.mode, "parent_id": c.parent_id}))
            .collect::<Vec<_>>());
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("execution {}  {} #{}  {}  ({})", e.id, e.pipeline, e.sequence_id, e.status, e.mode.as_str());
    println!(
        "started {}  duration {}  by {}",
        super::when(e.started_at),
        super::duration(e.started_at, e.ended_at),
        e.triggered_by
    );
    if let Some(f) = &e.failure {
        println!("failure: {f}");
    }
    if let Some((exec, stage)) = launch::chained_from(&e) {
        println!("chained pipeline: run by stage `{stage}` of execution {exec}");
    }
    let shown = |k: &String| *k != "__dependencies" && k != launch::CHAINED_FROM;
    if let Some(obj) = e.inputs.as_object().filter(|o| o.keys().any(shown)) {
        println!("inputs:");
        for (k, v) in obj.iter().filter(|(k, _)| shown(k)) {
            match (v["value"].as_str(), v["node"].as_str(), v["owner"].as_str()) {
                (Some(value), _, _) if v["source"] == engine::asked::SOURCE => {
                    println!(
                        "  {k} = {value} (given by {} at {})",
                        v["by"].as_str().unwrap_or("?"),
                        v["node"].as_str().unwrap_or("?")
                    )
                }
                (Some(value), _, _) => println!("  {k} = {value} ({})", v["source"]),
                (None, _, _) if v["value"].is_object() || v["value"].is_array() => {
                    println!("  {k} = {} ({})", v["value"], v["source"])
                }
                (None, Some(node), _) => {
                    let about = serde_json::from_value(v["input"].clone())
                        .map(|i| engine::asked::describe(&i))
                        .unwrap_or_default();
                    let about = if about.is_empty() { String::new() } else { format!("; {about}") };
                    println!(
                        "  {k}: WAITING for a value at {node}{about} — pipewright input {} --input {k}=VALUE",
                        e.id
                    )
                }
                (None, None, owner) => {
                    println!("  {k}: asked when the run reaches {}", owner.unwrap_or("its stage"))
                }
            }
        }
    }
    if let Some(deps) = e.inputs.get("__dependencies").and_then(|d| d.as_array()) {
        println!("dependency values:");
        for d in deps {
            let path = d["path"].as_str().unwrap_or_default();
            match d["source"]["kind"].as_str() {
                Some("execution") => println!(
                    "  {path}.* reused from execution {} (stage {})",
                    d["source"]["execution_id"].as_str().unwrap_or_default(),
                    d["source"]["stage"].as_str().unwrap_or_default()
                ),
                _ => println!("  {path} = {} (supplied with --expr)", d["value"].as_str().unwrap_or_default()),
            }
        }
    }
    let root = e.original_id.clone().unwrap_or_else(|| e.id.clone());
    let mut chain = store
        .executions(&store::ExecutionQuery { chain_of: Some(root), limit: Some(1000), ..Default::default() })
        .await?;
    if chain.len() > 1 {
        chain.reverse();
        println!("chain (original → re-runs / retries):");
        for c in &chain {
            let here = if c.id == e.id { "  ← this one" } else { "" };
            let from = c.parent_id.as_ref().map(|p| format!(" from {p}")).unwrap_or_default();
            println!("  #{} {} {} ({}){from}{here}", c.sequence_id, c.id, c.status, c.mode.as_str());
        }
    }
    println!();
    print_tree(&nodes, None, 0);
    Ok(ExitCode::SUCCESS)
}
