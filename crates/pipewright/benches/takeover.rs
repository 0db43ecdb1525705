//! Takeover benchmark: a server is killed (SIGKILL) while a step runs and started again on the same state
//! directory; measured is the time from the restart to the taken-over execution's next step attempt running,
//! against the lease (the time the dead owner's hold lasts). Target: under the lease plus one second.
//! Run with `cargo bench -p pipewright --bench takeover` (`PW_BENCH_LEASE` seconds, default 1).

mod common;

use common::{PASSWORD, serve};

use std::time::{Duration, Instant};

async fn json(r: reqwest::RequestBuilder) -> serde_json::Value {
    r.send().await.unwrap().json().await.unwrap_or(serde_json::Value::Null)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let lease = std::env::var("PW_BENCH_LEASE").unwrap_or_else(|_| "1".into());
    let lease_ms = (lease.parse::<f64>().unwrap() * 1000.0) as u128;
    let http = reqwest::Client::new();
    let mut samples = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let gate = dir.path().join("gate");
        let (mut child, url) = serve(&state, &["--step-isolation", "none", "--lease-seconds", &lease]);
        let login = json(
            http.post(format!("{url}/api/v1/auth/login"))
                .json(&serde_json::json!({"username": "admin", "password": PASSWORD})),
        )
        .await;
        let token = login["token"].as_str().unwrap().to_string();
        let yaml = format!(
            "pipeline:\n  name: t\n  identifier: t\n  projectIdentifier: default\n  orgIdentifier: default\n  stages:\n    - stage:\n        name: a\n        identifier: a\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Sh\n                    source:\n                      type: Inline\n                      spec:\n                        script: 'while [ ! -f {} ]; do sleep 0.01; done'\n",
            gate.display()
        );
        let p = "/api/v1/orgs/default/projects/default/pipelines";
        http.post(format!("{url}{p}"))
            .bearer_auth(&token)
            .header("content-type", "application/yaml")
            .body(yaml)
            .send()
            .await
            .unwrap();
        let e = json(http.post(format!("{url}{p}/t/execute")).bearer_auth(&token).json(&serde_json::json!({}))).await;
        let id = e["id"].as_str().unwrap().to_string();
        let attempt_running = |url: String, n: i64| {
            let (http, token, id) = (http.clone(), token.clone(), id.clone());
            async move {
                let v = json(http.get(format!("{url}/api/v1/executions/{id}/nodes")).bearer_auth(&token)).await;
                v.as_array().is_some_and(|a| {
                    a.iter().any(|x| x["path"] == "a.s" && x["attempt"] == n && x["status"] == "Running")
                })
            }
        };
        while !attempt_running(url.clone(), 1).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let t0 = Instant::now();
        let (mut child, url) = serve(&state, &["--step-isolation", "none", "--lease-seconds", &lease]);
        while !attempt_running(url.clone(), 2).await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(t0.elapsed());
        std::fs::write(&gate, "").unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
    samples.sort();
    let median = samples[samples.len() / 2].as_millis();
    println!(
        "takeover after a kill -9, median of {}: {median} ms from the restart to the step's new attempt running (lease {lease_ms} ms: {} ms beyond it; min {} ms, max {} ms)",
        samples.len(),
        median.saturating_sub(lease_ms),
        samples[0].as_millis(),
        samples[samples.len() - 1].as_millis()
    );
}
