//! Scale-out benchmark on one PostgreSQL database (a fresh one per configuration): trivial-step throughput
//! with 1, 2, 4 and 8 `pipewright agent`s (4 tasks at once each) behind 2 `pipewright serve --no-local-executor`
//! replicas, against the named baseline measured in the same run — one server on the same database running
//! the steps itself; step completions per second and claim latency (a task queued → an agent holding it) at
//! p50 and p99. Then the history-listing load of the SQLite benchmark on a server over PostgreSQL holding
//! 1,000,000 executions: first page of a project's history, 16 keep-alive clients, p50 / p99.
//! Run: `cargo bench -p pipewright --bench scale_out` (needs PostgreSQL; `PIPEWRIGHT_TEST_POSTGRES`,
//! `PW_BENCH_HISTORY` (executions stored), `PW_BENCH_SECONDS`, `PW_BENCH_AGENTS` (e.g. `1,2`) change it).

mod common;

use common::{PASSWORD, await_success, get_json, pct, serve_env, trivial_pipeline};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use store::prelude::*;

const EXECUTIONS: usize = 20;
const STEPS: usize = 50;
const KEY: &str = "3c1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a10";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Value {
    let mut r = http.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(st.is_success(), "POST {url}: {st} {v}");
    v
}

/// A server on the database `db`, given in the environment (servers of one configuration share the secret key).
fn server(dir: &std::path::Path, name: &str, db: &str, extra: &[&str]) -> (Child, String) {
    let mut args = vec!["--step-isolation", "none", "--max-plans-per-user", "64"];
    args.extend_from_slice(extra);
    serve_env(&dir.join(name), &args, &[("PIPEWRIGHT_SECRET_KEY", KEY), ("PIPEWRIGHT_DATABASE_URL", db)])
}

struct Outcome {
    per_second: f64,
    wall: Duration,
    claim_p50: Option<i64>,
    claim_p99: Option<i64>,
}

/// Run the batch: on one server running the steps itself (`agents` 0), or through 2 servers (round robin)
/// with that many agents taking the steps.
async fn batch(agents: usize) -> Outcome {
    let db = store::Scratch::create(&store::Scratch::admin_url()).await.expect("PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut children = Vec::new();
    let urls: Vec<String> = if agents == 0 {
        let (c, u) = server(dir.path(), "solo", db.url(), &[]);
        children.push(c);
        vec![u]
    } else {
        (0..2)
            .map(|i| {
                let (c, u) = server(dir.path(), &format!("r{i}"), db.url(), &["--no-local-executor"]);
                children.push(c);
                u
            })
            .collect()
    };
    let login = post(
        &http,
        &format!("{}/api/v1/auth/login", urls[0]),
        None,
        json!({"username": "admin", "password": PASSWORD}),
    )
    .await;
    let token = login["token"].as_str().unwrap().to_string();
    if agents > 0 {
        let base = &urls[0];
        for i in 0..agents {
            // Each agent registered, with its own credential.
            let r = post(&http, &format!("{base}/api/v1/agents"), Some(&token), json!({"name": format!("bench-{i}")}))
                .await;
            let agent_token = r["credential"].as_str().unwrap().to_string();
            let child = Command::new(env!("CARGO_BIN_EXE_pipewright"))
                .args(["agent", "--server", &urls[i % urls.len()], "--name", &format!("bench-{i}")])
                .args(["--concurrency", "4", "--step-isolation", "none", "--state-dir"])
                .arg(dir.path().join(format!("agent-{i}")))
                .env("PIPEWRIGHT_TOKEN", &agent_token)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            children.push(child);
        }
        // Every agent has asked for work once before the clock starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = get_json(&http, &format!("{base}/api/v1/agents"), &token).await;
            if v["items"].as_array().map_or(0, Vec::len) == agents {
                break;
            }
            assert!(Instant::now() < deadline, "the agents did not connect");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = http
        .post(format!("{}/api/v1/orgs/default/projects/default/pipelines", urls[0]))
        .bearer_auth(&token)
        .header("content-type", "application/yaml")
        .body(trivial_pipeline(STEPS))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let start = Instant::now();
    let handles: Vec<_> = (0..EXECUTIONS)
        .map(|i| {
            let (http, token, url) = (http.clone(), token.clone(), urls[i % urls.len()].clone());
            tokio::spawn(async move {
                let v = post(
                    &http,
                    &format!("{url}/api/v1/orgs/default/projects/default/pipelines/many/execute"),
                    Some(&token),
                    json!({}),
                )
                .await;
                v["id"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap());
    }
    let mut nodes = Vec::new();
    for id in &ids {
        let v = await_success(&http, &urls[0], &token, id).await;
        nodes.extend(
            v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["kind"] == "step")
                .filter_map(|n| n["id"].as_str().map(String::from)),
        );
    }
    let wall = start.elapsed();
    let (mut claim_p50, mut claim_p99) = (None, None);
    if agents > 0 {
        let pg = store::PgStore::open(db.url()).await.unwrap();
        let mut lat = Vec::new();
        for n in &nodes {
            if let Some(t) = pg.task(n).await.unwrap()
                && let Some(c) = t.claimed_at
            {
                lat.push(c - t.created_at);
            }
        }
        lat.sort_unstable();
        claim_p50 = Some(pct(&lat, 0.5));
        claim_p99 = Some(pct(&lat, 0.99));
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Outcome { per_second: (EXECUTIONS * STEPS) as f64 / wall.as_secs_f64(), wall, claim_p50, claim_p99 }
}

/// The history-listing load on a server over PostgreSQL holding `n` executions.
async fn history(n: u64, seconds: u64) {
    let db = store::Scratch::create(&store::Scratch::admin_url()).await.expect("PostgreSQL");
    drop(store::PgStore::open(db.url()).await.unwrap());
    let t = Instant::now();
    let sql = format!(
        "INSERT INTO executions (id, org, project, pipeline, pipeline_version, sequence_id, status, mode,
           triggered_by, inputs, selected_stages, snapshot, created_at, started_at, ended_at)
         SELECT '01' || lpad(g::text, 24, '0'), 'default', CASE WHEN g % 10 = 0 THEN 'other' ELSE 'default' END,
           'p' || (g % 20), 1, g, CASE WHEN g % 7 = 0 THEN 'Failed' ELSE 'Success' END, 'full', 'admin', '{{}}',
           '[]', 'pipeline: {{}}', 1700000000000 + g * 1000, 1700000000000 + g * 1000, 1700000000500 + g * 1000
         FROM generate_series(1, {n}) g; ANALYZE executions;"
    );
    let ok = Command::new("psql")
        .arg(db.url().split_once("?").map_or(db.url(), |(u, _)| u))
        .args(["-q", "-c", &sql])
        .status()
        .unwrap();
    assert!(ok.success());
    println!("stored {n} executions in {:.1} s", t.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = server(dir.path(), "h", db.url(), &[]);
    let http = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
    let login =
        post(&http, &format!("{url}/api/v1/auth/login"), None, json!({"username": "admin", "password": PASSWORD}))
            .await;
    let token = login["token"].as_str().unwrap().to_string();
    let list = format!("{url}/api/v1/orgs/default/projects/default/executions");
    let first = get_json(&http, &list, &token).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 50);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, list, token) = (http.clone(), list.clone(), token.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let r = http.get(&list).bearer_auth(&token).send().await.unwrap();
                    assert!(r.status().is_success());
                    let _ = r.bytes().await.unwrap();
                    lat.push(t.elapsed().as_micros() as i64);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    lat.sort_unstable();
    println!(
        "history of {n} executions on PostgreSQL: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
        lat.len() as f64 / seconds as f64,
        pct(&lat, 0.5) as f64 / 1000.0,
        pct(&lat, 0.99) as f64 / 1000.0
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let agents: Vec<usize> = std::env::var("PW_BENCH_AGENTS")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    println!("{EXECUTIONS} executions x {STEPS} steps of `true` (step isolation none), started at once");
    let base = batch(0).await;
    println!(
        "baseline: 1 server running the steps itself: {:>6.0} step completions/s ({:.2} s)",
        base.per_second,
        base.wall.as_secs_f64()
    );
    for k in agents {
        let o = batch(k).await;
        println!(
            "2 servers + {k} agent(s): {:>6.0} step completions/s ({:.2} s; {:.2}x the baseline), claim latency p50 {} ms, p99 {} ms",
            o.per_second,
            o.wall.as_secs_f64(),
            o.per_second / base.per_second,
            o.claim_p50.unwrap_or(0),
            o.claim_p99.unwrap_or(0)
        );
    }
    history(env("PW_BENCH_HISTORY", 1_000_000), env("PW_BENCH_SECONDS", 10)).await;
}
