//! Servers sharing one PostgreSQL database, as real `pipewright serve` processes on loopback, each test on a
//! fresh database of its own: executions started through either server run exactly once and read the same
//! through both; a token revoked and failed logins counted through one apply on the other; a server killed
//! in the middle of a step has its execution taken over by the other, and a client following the live log
//! resumes there without a gap; a database restarted mid-run (under a server, and under an agent) loses
//! nothing. Where no PostgreSQL answers, the tests fail under CI and are skipped, saying so, elsewhere.

mod common;
use common::{Server, pipeline, stage, until};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use store::Scratch;

const P: &str = "/api/v1/orgs/default/projects/default";

/// A fresh database, or None (skip) where there is no PostgreSQL outside CI.
async fn database() -> Option<Scratch> {
    common::scratch_database().await
}

/// A server on `db`, with its own state directory (its work directories) and the shared key.
async fn replica(state: &Path, db: &Scratch, lease: &str) -> Server {
    common::replica(state, db, lease, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_run_each_execution_once_and_agree() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir.path().join("a"), &db, "2").await;
    let b = replica(&dir.path().join("b"), &db, "2").await;
    // Two stages side by side, then one after them; each stage runs two steps side by side.
    a.ok(Method::POST, &format!("{P}/pipelines"), Some(common::fan_pipeline())).await;
    // Saved through one server, the pipeline is there through the other.
    b.ok(Method::GET, &format!("{P}/pipelines/fan"), None).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let via = if i % 2 == 0 { &a } else { &b };
        let e = via.ok(Method::POST, &format!("{P}/pipelines/fan/execute"), Some(json!({}))).await;
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    for (i, id) in ids.iter().enumerate() {
        let via = if i % 2 == 0 { &b } else { &a };
        let done = via.wait_end(&via.token, id).await;
        assert_eq!(done["execution"]["status"], "Success", "{done}");
    }
    // Every step of every execution ran exactly once: one attempt each, and its line printed once.
    let mut lines = Vec::new();
    for id in &ids {
        let (_, logs) = a.req(Some(&a.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
        let text: String = logs["items"].as_array().unwrap().iter().filter_map(|c| c["data"].as_str()).collect();
        lines.extend(common::fan_lines(&text));
        let nodes = b.ok(Method::GET, &format!("/api/v1/executions/{id}/nodes"), None).await;
        let steps: Vec<&Value> = nodes.as_array().unwrap().iter().filter(|n| n["kind"] == "step").collect();
        assert_eq!(steps.len(), 6, "{nodes}");
        assert!(steps.iter().all(|n| n["attempt"] == 1 && n["status"] == "Success"), "{nodes}");
    }
    let unique: BTreeSet<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(lines.len(), 20 * 6, "{lines:?}");
    assert_eq!(unique.len(), lines.len(), "a step ran twice: {lines:?}");
    for id in &ids {
        for step in ["build.x", "build.y", "scan.x", "scan.y", "publish.x", "publish.y"] {
            assert!(unique.contains(format!("{id} {step}").as_str()), "{id} {step} did not run");
        }
    }
    // The history is the same through either server: executions, numbers, nodes.
    let ha = a.ok(Method::GET, &format!("{P}/executions?limit=100"), None).await;
    let hb = b.ok(Method::GET, &format!("{P}/executions?limit=100"), None).await;
    assert_eq!(ha["items"], hb["items"]);
    assert_eq!(ha["items"].as_array().unwrap().len(), 20);
    let seqs: BTreeSet<i64> =
        ha["items"].as_array().unwrap().iter().map(|e| e["sequence_id"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).collect(), "sequence numbers are unique and dense");
    let na = a.ok(Method::GET, &format!("/api/v1/executions/{}/nodes", ids[3]), None).await;
    let nb = b.ok(Method::GET, &format!("/api/v1/executions/{}/nodes", ids[3]), None).await;
    assert_eq!(na, nb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_and_failed_logins_apply_on_every_server() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir.path().join("a"), &db, "2").await;
    let b = replica(&dir.path().join("b"), &db, "2").await;
    let t = a.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci"}))).await;
    let secret = t["token"].as_str().unwrap().to_string();
    let (st, _) = b.req(Some(&secret), Method::GET, "/api/v1/auth/whoami", None).await;
    assert_eq!(st, 200, "a token issued through one server works on the other");
    let (st, _) =
        a.req(Some(&a.token), Method::DELETE, &format!("/api/v1/tokens/{}", t["id"].as_str().unwrap()), None).await;
    assert_eq!(st, 204);
    let revoked = Instant::now();
    until("the revocation to reach the other server", Duration::from_secs(5), || async {
        b.req(Some(&secret), Method::GET, "/api/v1/auth/whoami", None).await.0 == 401
    })
    .await;
    assert!(revoked.elapsed() < Duration::from_millis(1500), "took {:?}", revoked.elapsed());
    // Failed logins counted through one server count on the other.
    let wrong = json!({"username": "admin", "password": "wrong-password"});
    for _ in 0..5 {
        let (st, _) = a.req(None, Method::POST, "/api/v1/auth/login", Some(&wrong)).await;
        assert_eq!(st, 401);
    }
    let right = json!({"username": "admin", "password": common::ADMIN_PASSWORD});
    let (st, v) = b.req(None, Method::POST, "/api/v1/auth/login", Some(&right)).await;
    assert_eq!(st, 429, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_with_another_key_refuses_to_start() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let _a = replica(&dir.path().join("a"), &db, "2").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(common::step_network_args())
        .arg("--state-dir")
        .arg(dir.path().join("c"))
        .env("PIPEWRIGHT_DATABASE_URL", db.url())
        .env_remove("PIPEWRIGHT_SECRET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sealed under another key") && err.contains("PIPEWRIGHT_SECRET_KEY"), "{err}");
}

/// Read a live log stream until `stop` appears or the stream breaks; the text and the last event id.
async fn follow(resp: &mut reqwest::Response, text: &mut String, last: &mut Option<String>, stop: &str) {
    while let Ok(Some(chunk)) = resp.chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        *last = text.lines().filter_map(|l| l.strip_prefix("id: ")).next_back().map(String::from).or(last.take());
        if text.contains(stop) {
            return;
        }
    }
}

/// The (node, seq) of every `log` event in a stream's text.
fn chunks_in(text: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut is_log = false;
    for l in text.lines() {
        if let Some(ev) = l.strip_prefix("event: ") {
            is_log = ev == "log";
        } else if let Some(d) = l.strip_prefix("data: ")
            && is_log
        {
            let v: Value = serde_json::from_str(d).unwrap();
            out.push((v["node_id"].as_str().unwrap().to_string(), v["seq"].as_i64().unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_s_execution_is_taken_over_and_its_live_log_resumes_on_another() {
    let Some(db) = database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut a = replica(&dir.path().join("a"), &db, "1").await;
    let b = replica(&dir.path().join("b"), &db, "1").await;
    let go = common::gates(dir.path()).join("go");
    let script = format!("'echo waiting; while [ ! -f {} ]; do sleep 0.05; done; echo released'", go.display());
    a.ok(
        Method::POST,
        &format!("{P}/pipelines"),
        Some(pipeline("slow", &(stage("a", "echo first") + &stage("b", &script)))),
    )
    .await;
    let e = a.ok(Method::POST, &format!("{P}/pipelines/slow/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    // A client follows the live log on the server running the execution, until the step waits.
    let mut resp =
        a.http.get(format!("{}/api/v1/executions/{id}/logs/stream", a.url)).bearer_auth(&a.token).send().await.unwrap();
    let (mut first, mut last) = (String::new(), None);
    follow(&mut resp, &mut first, &mut last, "waiting").await;
    assert!(first.contains("waiting"), "{first}");
    // kill -9 the server that owns the execution.
    let _ = a.child.kill();
    let _ = a.child.wait();
    follow(&mut resp, &mut first, &mut last, "\u{0}").await;
    // The other server takes it over once the lease runs out and runs the step again.
    until("the step's second attempt on the other server", Duration::from_secs(30), || async {
        let (_, v) = b.req(Some(&b.token), Method::GET, &format!("/api/v1/executions/{id}/nodes"), None).await;
        v.as_array()
            .is_some_and(|n| n.iter().any(|n| n["path"] == "b.s" && n["attempt"] == 2 && n["status"] == "Running"))
    })
    .await;
    std::fs::write(&go, "").unwrap();
    // The client reconnects to the other server where it left off.
    let mut resp = b
        .http
        .get(format!("{}/api/v1/executions/{id}/logs/stream", b.url))
        .bearer_auth(&b.token)
        .header("last-event-id", last.clone().expect("an event id"))
        .send()
        .await
        .unwrap();
    let (mut rest, mut _l) = (String::new(), None);
    follow(&mut resp, &mut rest, &mut _l, "event: end").await;
    assert!(rest.contains("released") && rest.contains("\"status\":\"Success\""), "{rest}");
    // No gap, nothing twice: the chunks of both streams are every chunk stored, each once.
    let mut seen = chunks_in(&first);
    seen.extend(chunks_in(&rest));
    let (_, stored) = b.req(Some(&b.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    let mut want: Vec<(String, i64)> = stored["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["node_id"].as_str().unwrap().to_string(), c["seq"].as_i64().unwrap()))
        .collect();
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "a chunk was delivered twice");
    want.sort();
    assert_eq!(seen, want);
    // The step ran twice, saying so: the first attempt interrupted, the second a success; stage a once.
    let done = b.wait_end(&b.token, &id).await;
    let nodes = done["nodes"].as_array().unwrap();
    let steps: Vec<&Value> = nodes.iter().filter(|n| n["path"] == "b.s").collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps[0]["failure"].as_str().unwrap().starts_with("interrupted"), "{:?}", steps[0]);
    assert_eq!(steps[1]["status"], "Success");
    assert_eq!(nodes.iter().filter(|n| n["path"] == "a.s").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_loses_nothing() {
    let Some(pg) = common::OwnPostgres::start() else { return };
    let db = Scratch::create(&pg.admin_url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A 12 s lease: the restart stays well within the two thirds of it after which the server gives its
    // hold up (the longer outage is `fencing.rs`'s).
    let s = replica(&dir.path().join("a"), &db, "12").await;
    let go = common::gates(dir.path()).join("go");
    let script = format!(
        "'for i in 1 2 3; do echo before-$i; done; while [ ! -f {} ]; do sleep 0.05; done; for i in 1 2 3; do echo after-$i; sleep 0.2; done'",
        go.display()
    );
    s.ok(
        Method::POST,
        &format!("{P}/pipelines"),
        Some(pipeline("steady", &(stage("a", &script) + &stage("b", "echo b-ran")))),
    )
    .await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/steady/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    until("the step to wait", Duration::from_secs(30), || async {
        let (_, v) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
        v.to_string().contains("before-3")
    })
    .await;
    // The database goes away while the step runs; the step goes on and writes its log meanwhile, and an
    // execution is asked for while the database is down: the request waits for it and is answered once
    // the database is back.
    pg.ctl("stop");
    std::fs::write(&go, "").unwrap();
    let (url, token) = (s.url.clone(), s.token.clone());
    let asked = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}{P}/pipelines/steady/execute"))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.ctl("start");
    let resp = asked.await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let second: Value = resp.json().await.unwrap();
    // Both executions end well, with every line the steps printed.
    for id in [id.as_str(), second["id"].as_str().unwrap()] {
        let done = s.wait_end(&s.token, id).await;
        assert_eq!(done["execution"]["status"], "Success", "{done}");
        let (_, v) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
        let text: String = v["items"].as_array().unwrap().iter().filter_map(|c| c["data"].as_str()).collect();
        for line in ["before-1", "before-3", "after-1", "after-3", "b-ran"] {
            assert_eq!(text.matches(line).count(), 1, "{line} in {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_an_agent_loses_nothing() {
    let Some(pg) = common::OwnPostgres::start() else { return };
    let db = Scratch::create(&pg.admin_url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A 12 s lease: the outage (2 s and the restart) stays well within the two thirds of it after which an
    // agent that cannot renew stops its step (that case is `fencing.rs`'s).
    let s = common::replica(&dir.path().join("a"), &db, "12", &["--no-local-executor"]).await;
    let agent = common::Agent::register(&s, dir.path(), &s.url, "steady", "").await;
    let go = common::gates(dir.path()).join("go");
    let script = format!(
        "'echo before; while [ ! -f {} ]; do sleep 0.05; done; for i in 1 2 3; do echo after-$i; sleep 0.2; done'",
        go.display()
    );
    s.ok(
        Method::POST,
        &format!("{P}/pipelines"),
        Some(pipeline("remote", &(stage("a", &script) + &stage("b", "echo b-ran")))),
    )
    .await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/remote/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    until("the step to run on the agent", Duration::from_secs(30), || async {
        let (_, v) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
        v.to_string().contains("before")
    })
    .await;
    // The database goes away while the agent runs the step; the step ends and the agent reports meanwhile:
    // its calls wait for the server, which waits for the database.
    pg.ctl("stop");
    std::fs::write(&go, "").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.ctl("start");
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let steps: Vec<&Value> = done["nodes"].as_array().unwrap().iter().filter(|n| n["kind"] == "step").collect();
    assert_eq!(steps.len(), 2, "one attempt each: {steps:?}");
    let (_, v) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    let text: String = v["items"].as_array().unwrap().iter().filter_map(|c| c["data"].as_str()).collect();
    for line in ["before", "after-1", "after-3", "b-ran", "on agent `steady`"] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert_eq!(text.matches("after-2").count(), 1, "{text}");
    drop(agent);
}
