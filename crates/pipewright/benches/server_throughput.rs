//! Server throughput benchmark: 20 executions of 50 trivial steps (`true`) each, started at once through the
//! API of a real `pipewright serve` on a fresh SQLite state directory; measured are step completions per
//! second over the whole batch (target ≥ 500 on the 2-core machine) and the step scheduling latency — from a
//! step's predecessor ending to the step starting, as the stored nodes say — at p50 and p99. Steps run
//! confined (the default) and, in the same run, with `--step-isolation none`, as the baseline.
//! Run with `cargo bench -p pipewright --bench server_throughput`.

mod common;

use common::{PASSWORD, await_success, pct, serve, trivial_pipeline};

use std::time::{Duration, Instant};

const EXECUTIONS: usize = 20;
const STEPS: usize = 50;

struct Outcome {
    per_second: f64,
    wall: Duration,
    p50: i64,
    p99: i64,
}

async fn batch(isolation: &str) -> Outcome {
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) =
        serve(&dir.path().join("state"), &["--step-isolation", isolation, "--max-plans-per-user", "64"]);
    let login: serde_json::Value = http
        .post(format!("{url}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let p = format!("{url}/api/v1/orgs/default/projects/default/pipelines");
    let r = http
        .post(&p)
        .bearer_auth(&token)
        .header("content-type", "application/yaml")
        .body(trivial_pipeline(STEPS))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    let start = Instant::now();
    let handles: Vec<_> = (0..EXECUTIONS)
        .map(|_| {
            let (http, token, p) = (http.clone(), token.clone(), p.clone());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{p}/many/execute"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({}))
                    .send()
                    .await;
                let v: serde_json::Value = r.unwrap().json().await.unwrap();
                v["id"].as_str().unwrap_or_else(|| panic!("not started: {v}")).to_string()
            })
        })
        .collect();
    let mut started = Vec::new();
    for h in handles {
        started.push(h.await.unwrap());
    }
    let mut latencies = Vec::new();
    for id in &started {
        let v = await_success(&http, &url, &token, id).await;
        let mut steps: Vec<&serde_json::Value> =
            v["nodes"].as_array().unwrap().iter().filter(|n| n["kind"] == "step").collect();
        steps.sort_by_key(|n| n["position"].as_i64());
        for w in steps.windows(2) {
            if let (Some(end), Some(begin)) = (w[0]["ended_at"].as_i64(), w[1]["started_at"].as_i64()) {
                latencies.push(begin - end);
            }
        }
    }
    let wall = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    latencies.sort_unstable();
    Outcome {
        per_second: (EXECUTIONS * STEPS) as f64 / wall.as_secs_f64(),
        wall,
        p50: pct(&latencies, 0.5),
        p99: pct(&latencies, 0.99),
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    println!("{EXECUTIONS} executions x {STEPS} steps of `true`, started at once through the API");
    for isolation in ["none", "landlock"] {
        let o = batch(isolation).await;
        println!(
            "step isolation {isolation:>8}: {:>6.0} step completions/s ({:.2} s for {}), scheduling latency p50 {} ms, p99 {} ms",
            o.per_second,
            o.wall.as_secs_f64(),
            EXECUTIONS * STEPS,
            o.p50,
            o.p99
        );
    }
}
