//! Remote agents, as real processes on loopback against servers on a fresh PostgreSQL database: servers that
//! run no steps themselves (`--no-local-executor`) hand every step to `pipewright agent`s, which claim over
//! HTTP with leases. Fault tests kill an agent mid-step (the step runs again elsewhere as attempt 2), revoke
//! an agent's token (it stops, its task is re-queued), and stop an agent past its lease (its late report is
//! refused; the new attempt's outcome stands). `delegateSelectors` route steps by tag, and a step no agent can
//! take waits, saying so.

mod common;
use common::{Agent, Server, pipeline, replica, scratch_database, stage, until};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const P: &str = "/api/v1/orgs/default/projects/default";

/// The nodes of an execution whose path is `path`.
async fn attempts(s: &Server, id: &str, path: &str) -> Vec<Value> {
    let v = s.ok(Method::GET, &format!("/api/v1/executions/{id}/nodes"), None).await;
    v.as_array().unwrap().iter().filter(|n| n["path"] == path).cloned().collect()
}

async fn log_text(s: &Server, id: &str) -> String {
    let v = s.ok(Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    v["items"].as_array().unwrap().iter().filter_map(|c| c["data"].as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_and_three_agents_run_fifty_executions_each_step_once() {
    let Some(db) = scratch_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir.path().join("a"), &db, "2", &["--no-local-executor"]).await;
    let b = replica(&dir.path().join("b"), &db, "2", &["--no-local-executor"]).await;
    let mut _agents: Vec<Agent> = Vec::new();
    for i in 1..=3 {
        _agents.push(
            Agent::register(&a, dir.path(), if i % 2 == 0 { &b.url } else { &a.url }, &format!("agent-{i}"), "").await,
        );
    }
    a.ok(Method::POST, &format!("{P}/pipelines"), Some(common::fan_pipeline())).await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let via = if i % 2 == 0 { &a } else { &b };
        let e = via.ok(Method::POST, &format!("{P}/pipelines/fan/execute"), Some(json!({}))).await;
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    let mut lines = Vec::new();
    let mut ran_on = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let via = if i % 2 == 0 { &b } else { &a };
        let done = via.wait_end(&via.token, id).await;
        assert_eq!(done["execution"]["status"], "Success", "{done}");
        let steps: Vec<&Value> = done["nodes"].as_array().unwrap().iter().filter(|n| n["kind"] == "step").collect();
        assert_eq!(steps.len(), 6, "{done}");
        assert!(steps.iter().all(|n| n["attempt"] == 1 && n["status"] == "Success"), "{done}");
        let text = log_text(via, id).await;
        lines.extend(common::fan_lines(&text));
        ran_on.extend(text.lines().filter_map(|l| l.split("on agent `").nth(1)?.split('`').next()).map(String::from));
    }
    // Every step of every execution ran exactly once, on the agents, never on a server.
    let unique: BTreeSet<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(lines.len(), 50 * 6);
    assert_eq!(unique.len(), lines.len(), "a step ran twice");
    assert!(ran_on.len() >= 2 && ran_on.iter().all(|n| n.starts_with("agent-")), "{ran_on:?}");
    // The history is the same through either server.
    let ha = a.ok(Method::GET, &format!("{P}/executions?limit=100"), None).await;
    let hb = b.ok(Method::GET, &format!("{P}/executions?limit=100"), None).await;
    assert_eq!(ha["items"], hb["items"]);
    assert_eq!(ha["items"].as_array().unwrap().len(), 50);
    // Agents are listed with their heartbeat and work.
    let list = b.ok(Method::GET, "/api/v1/agents", None).await;
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["agent-1", "agent-2", "agent-3"]);
}

/// A pipeline `hold`: stage `a` echoes, stage `b` waits for `gate` (printing its attempt's pid first).
fn hold(gate: &Path, selectors: &str) -> Value {
    let script = format!("'echo pid $$; while [ ! -f {} ]; do sleep 0.05; done; echo released'", gate.display());
    let b = stage("b", &script);
    let b = if selectors.is_empty() {
        b
    } else {
        b.replacen(
            "        type: Custom\n",
            &format!("        type: Custom\n        delegateSelectors:\n{selectors}"),
            1,
        )
    };
    pipeline("hold", &(stage("a", "echo first") + &b))
}

/// The log text of one node.
async fn node_log(s: &Server, id: &str, node: &str) -> String {
    let v = s.ok(Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    v["items"].as_array().unwrap().iter().filter(|c| c["node_id"] == node).filter_map(|c| c["data"].as_str()).collect()
}

/// Wait until step `b.s` of `id` runs as `attempt` on an agent (its process has printed its pid); returns the
/// agent's name.
async fn running_on(s: &Server, id: &str, attempt: i64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = attempts(s, id, "b.s").await.into_iter().find(|n| n["attempt"] == attempt) {
            let text = node_log(s, id, n["id"].as_str().unwrap()).await;
            if let Some(a) = text
                .rsplit("running on agent `")
                .next()
                .filter(|_| text.contains("running on agent `"))
                .and_then(|t| t.split('`').next())
                && n["status"] == "Running"
                && text.contains("pid ")
            {
                return a.to_string();
            }
        }
        assert!(std::time::Instant::now() < deadline, "attempt {attempt} of b.s never ran on an agent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_step_loses_it_to_another_as_attempt_two() {
    let Some(db) = scratch_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = replica(&dir.path().join("s"), &db, "1", &["--no-local-executor"]).await;
    let mut agents = vec![
        Agent::register(&s, dir.path(), &s.url, "left", "").await,
        Agent::register(&s, dir.path(), &s.url, "right", "").await,
    ];
    let gate = common::gates(dir.path()).join("gate");
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(hold(&gate, ""))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/hold/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let first = running_on(&s, &id, 1).await;
    // kill -9 the agent running the step.
    let i = agents.iter().position(|a| a.stderr.ends_with(format!("{first}.stderr"))).unwrap();
    let mut dead = agents.remove(i);
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    let second = running_on(&s, &id, 2).await;
    assert_ne!(first, second);
    std::fs::write(&gate, "").unwrap();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let tries = attempts(&s, &id, "b.s").await;
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[0]["status"], "Failed");
    let why = tries[0]["failure"].as_str().unwrap();
    assert!(why.starts_with("interrupted: agent `") && why.contains(&first), "{why}");
    assert_eq!(tries[1]["status"], "Success");
    assert_eq!(attempts(&s, &id, "a.s").await.len(), 1, "what finished is not run again");
    let text = log_text(&s, &id).await;
    assert!(text.contains("the step runs again as a new attempt"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_credential_is_replaced_stops_and_its_task_is_requeued() {
    let Some(db) = scratch_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = replica(&dir.path().join("s"), &db, "1", &["--no-local-executor"]).await;
    let mut first = Agent::register(&s, dir.path(), &s.url, "first", "").await;
    let gate = common::gates(dir.path()).join("gate");
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(hold(&gate, ""))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/hold/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(running_on(&s, &id, 1).await, "first");
    let _second = Agent::register(&s, dir.path(), &s.url, "second", "").await;
    let new = s.ok(Method::POST, "/api/v1/agents/first/credential", None).await;
    assert!(new["credential"].as_str().unwrap().starts_with("pwa_"), "{new}");
    // The agent is refused at its next call and stops.
    let status = tokio::task::spawn_blocking(move || {
        let st = first.child.wait().unwrap();
        (st, first)
    })
    .await
    .unwrap();
    assert!(!status.0.success());
    assert!(status.1.said().contains("refused"), "{}", status.1.said());
    // Its task goes to the other agent as a new attempt.
    assert_eq!(running_on(&s, &id, 2).await, "second");
    std::fs::write(&gate, "").unwrap();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_past_its_lease_has_its_late_report_refused() {
    let Some(db) = scratch_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = replica(&dir.path().join("s"), &db, "1", &["--no-local-executor"]).await;
    let frozen = Agent::register(&s, dir.path(), &s.url, "frozen", "").await;
    let gate = common::gates(dir.path()).join("gate");
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(hold(&gate, ""))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/hold/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(running_on(&s, &id, 1).await, "frozen");
    // A partition: the agent stops (its step goes on) past its lease; another agent takes the step over.
    frozen.signal(nix::sys::signal::Signal::SIGSTOP);
    let _thawed = Agent::register(&s, dir.path(), &s.url, "thawed", "").await;
    assert_eq!(running_on(&s, &id, 2).await, "thawed");
    // Both attempts' processes finish; the frozen agent comes back and reports late.
    std::fs::write(&gate, "").unwrap();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    frozen.signal(nix::sys::signal::Signal::SIGCONT);
    until("the frozen agent to learn its task was given away", Duration::from_secs(30), || async {
        frozen.said().contains("given to another agent")
    })
    .await;
    let tries = attempts(&s, &id, "b.s").await;
    assert_eq!(tries.len(), 2, "the late report made no third attempt: {tries:?}");
    assert_eq!(tries[0]["status"], "Failed");
    assert!(tries[0]["failure"].as_str().unwrap().contains("`frozen`"), "{:?}", tries[0]);
    assert_eq!(tries[1]["status"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_selectors_route_steps_to_agents_with_those_tags() {
    let Some(db) = scratch_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = replica(&dir.path().join("s"), &db, "1", &["--no-local-executor"]).await;
    let _plain = Agent::register(&s, dir.path(), &s.url, "plain", "linux").await;
    let gate = common::gates(dir.path()).join("gate");
    std::fs::write(&gate, "").unwrap();
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(hold(&gate, "          - gpu\n          - linux\n"))).await;
    // The plan says so before anything runs.
    until("the agent to connect", Duration::from_secs(30), || async {
        s.ok(Method::GET, "/api/v1/agents", None).await["items"][0]["last_seen"].as_i64().unwrap_or(0) > 0
    })
    .await;
    let plan = s.ok(Method::POST, &format!("{P}/pipelines/hold/plan"), Some(json!({}))).await;
    let warnings = plan["warnings"].to_string();
    assert!(warnings.contains("stage `b`: no online agent has the tags gpu, linux"), "{warnings}");
    assert!(!warnings.contains("stage `a`"), "{warnings}");
    let e = s.ok(Method::POST, &format!("{P}/pipelines/hold/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    // Stage a runs on the plain agent; stage b needs gpu and linux, which no agent has: it waits, saying so.
    until("the step to say it waits", Duration::from_secs(30), || async {
        log_text(&s, &id).await.contains("no agent with tags gpu, linux has taken the step yet")
    })
    .await;
    assert_eq!(attempts(&s, &id, "b.s").await[0]["status"], "Running");
    let _gpu = Agent::register(&s, dir.path(), &s.url, "gpu-box", "linux,gpu,cuda").await;
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let text = log_text(&s, &id).await;
    assert!(text.contains("on agent `plain`"), "{text}");
    assert!(text.contains("on agent `gpu-box`"), "{text}");
    // Draining an agent: it takes nothing new.
    let a = s.ok(Method::POST, "/api/v1/agents/gpu-box/state", Some(json!({"state": "draining"}))).await;
    assert_eq!(a["state"], "draining");
}
