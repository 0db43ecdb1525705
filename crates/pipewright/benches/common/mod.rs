//! What the server benchmarks share: a real `pipewright serve` on a loopback port, its admin password set;
//! the pipeline of trivial steps they run; percentiles.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The admin's password in the benchmarks.
pub const PASSWORD: &str = "bench-password-1";

/// Start a server on a state directory with `extra` flags; returns the process and its base URL.
#[allow(dead_code)]
pub fn serve(state: &Path, extra: &[&str]) -> (Child, String) {
    serve_env(state, extra, &[])
}

/// As [`serve`], with environment variables set for the server.
pub fn serve_env(state: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (Child, String) {
    let pw = state.with_extension("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .arg("--admin-password-file")
        .arg(&pw)
        .env("RUST_LOG", "error")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().strip_prefix("listening on ").unwrap().to_string();
    std::thread::spawn(move || lines.map_while(Result::ok).count());
    (child, url)
}

/// Pipeline `many`: one Custom stage of `steps` steps of `true`, one after another.
#[allow(dead_code)]
pub fn trivial_pipeline(steps: usize) -> String {
    let mut s = String::from(
        "pipeline:\n  name: Many\n  identifier: many\n  projectIdentifier: default\n  orgIdentifier: default\n  stages:\n    - stage:\n        name: a\n        identifier: a\n        type: Custom\n        spec:\n          execution:\n            steps:\n",
    );
    for j in 0..steps {
        s.push_str(&format!(
            "              - step:\n                  type: ShellScript\n                  name: t{j}\n                  identifier: t{j}\n                  spec:\n                    shell: Sh\n                    source:\n                      type: Inline\n                      spec:\n                        script: \"true\"\n"
        ));
    }
    s
}

/// The `p` quantile (0 to 1) of sorted values; 0 for none.
#[allow(dead_code)]
pub fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `GET url` with a token, as JSON.
#[allow(dead_code)]
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// Wait for execution `id` to end (asserting it succeeded); its `GET /api/v1/executions/{id}` answer.
#[allow(dead_code)]
pub async fn await_success(http: &reqwest::Client, base: &str, token: &str, id: &str) -> serde_json::Value {
    loop {
        let v = get_json(http, &format!("{base}/api/v1/executions/{id}"), token).await;
        let st = v["execution"]["status"].as_str().unwrap_or_default().to_string();
        if ["Success", "Failed", "Aborted", "Expired"].contains(&st.as_str()) {
            assert_eq!(st, "Success", "{v}");
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
