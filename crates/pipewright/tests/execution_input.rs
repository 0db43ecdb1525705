//! Runtime inputs asked while the run goes (`<+input>.executionInput()`), as users meet them: `pipewright run`
//! stops at the stage or step that needs a value and says what it waits for; `pipewright input` (locally and
//! against a server) and the API give values, checked as at start; a run killed while it waits is resumed and
//! takes the value given meanwhile; a value nobody gives ends the node `Expired` at its timeout. Real
//! processes, a real SQLite state directory, a real server.

mod common;

use assert_cmd::Command;
use predicates::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const TICKET: &str =
    "pipeline.stages.promote.spec.execution.steps.record_change.spec.environmentVariables.CHANGE_TICKET.value";
const TRAFFIC: &str = "pipeline.stages.canary.variables.traffic_percent";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/canary-release.yaml")
}

fn pw(state: &Path) -> Command {
    let mut c = Command::cargo_bin("pipewright").unwrap();
    c.env("PIPEWRIGHT_STATE_DIR", state).env_remove("PIPEWRIGHT_SERVER").env_remove("PIPEWRIGHT_TOKEN");
    c
}

fn show(state: &Path, id: &str) -> Value {
    let out = pw(state).args(["show", id, "--output", "json"]).assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

/// A `pipewright run` whose output lines arrive on a channel.
struct Run {
    child: Child,
    id: String,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(state: &Path, args: &[&str]) -> Run {
        Run::spawn(state, &[&["run"], args].concat())
    }

    /// Any command whose first line names the execution (`run`, `resume`).
    fn spawn(state: &Path, args: &[&str]) -> Run {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipewright"))
            .env("PIPEWRIGHT_STATE_DIR", state)
            .env("PIPEWRIGHT_LEASE_SECONDS", "1")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(60)).unwrap();
        let id = first.split_whitespace().find(|w| w.len() == 26).unwrap().to_string();
        Run { child, id, lines, seen: vec![first] }
    }

    /// Read the rest of the lines (the process has ended).
    fn until_end(&mut self) {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(60)) {
            self.seen.push(l);
        }
    }

    /// Read lines until one contains `marker` (bounded).
    fn until(&mut self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    let hit = l.contains(marker);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("`{marker}` never came; the run printed:\n{}", self.seen.join("\n"))
                }
            }
        }
    }
}

#[test]
fn a_run_asks_for_inputs_when_it_reaches_them() {
    let state = tempfile::tempdir().unwrap();
    let mut run = Run::start(state.path(), &[example().to_str().unwrap()]);
    run.until(&format!("waiting for runtime inputs: pipewright input {} --input {TRAFFIC}=VALUE", run.id));
    run.until(&format!("{TRAFFIC} (one of 5, 10, 25)"));
    let id = run.id.clone();
    let shown = show(state.path(), &id);
    assert_eq!(shown["status"], "InputWaiting", "{shown}");
    assert_eq!(shown["stages"][0]["status"], "Success", "build ran before anything was asked");
    assert_eq!(shown["stages"][1]["status"], "InputWaiting");
    pw(state.path())
        .args(["show", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("{TRAFFIC}: WAITING for a value at canary; one of 5, 10, 25")))
        .stdout(predicate::str::contains(format!("{TICKET}: asked when the run reaches")));
    pw(state.path()).args(["history"]).assert().success().stdout(predicate::str::contains("InputWaiting"));
    // Only what is asked now can be given, and only values its marker allows.
    pw(state.path())
        .args(["input", &id, "--input", &format!("{TICKET}=CHG-1")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "is not asked yet: the run asks for it when it reaches `pipeline.stages.promote.spec.execution.steps.record_change`",
        ));
    pw(state.path())
        .args(["input", &id, "--input", &format!("{TRAFFIC}=50")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("`50` is not one of the allowed values: 5, 10, 25"));
    pw(state.path())
        .args(["input", &id, "--input", "pipeline.stages.canary.variables.traffic_pct=5"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("did you mean `{TRAFFIC}`?")));
    pw(state.path())
        .args(["input", &id, "--input", &format!("{TRAFFIC}=10")])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("gave `{TRAFFIC}` to execution {id}")));
    run.until("routing 10% of traffic to checkout-2.4.0.tar.gz");
    run.until(&format!("--input {TICKET}=VALUE"));
    pw(state.path())
        .args(["input", &id, "--input", &format!("{TICKET}=CHG 1042")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not match the regular expression `^CHG-[0-9]+$`"));
    pw(state.path()).args(["input", &id, "--input", &format!("{TICKET}=CHG-1042")]).assert().success();
    run.until("promoting 2.4.0 under CHG-1042");
    assert!(run.child.wait().unwrap().success());
    let shown = show(state.path(), &id);
    assert_eq!(shown["status"], "Success", "{shown}");
    let given = &shown["inputs"][TRAFFIC];
    assert_eq!(
        (&given["value"], &given["source"], &given["node"]),
        (&json!("10"), &json!("ExecutionInput"), &json!("canary"))
    );
    assert!(given["by"].is_string());
    assert_eq!(shown["inputs"][TICKET]["node"], "promote.record_change");
    // The log says what was asked and who gave it.
    pw(state.path())
        .args(["logs", &id, "--stage", "canary"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("`{TRAFFIC}` given by")));
    // It ended: nothing more can be given.
    pw(state.path())
        .args(["input", &id, "--input", &format!("{TRAFFIC}=5")])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("ended Success; it waits for nothing"));
}

fn asking_pipeline(dir: &Path, timeout: &str) -> PathBuf {
    let f = dir.join("hotfix.yaml");
    std::fs::write(
        &f,
        format!(
            "pipeline:
  name: Hotfix
  identifier: hotfix
  variables:
    - name: reason
      type: String
      value: <+input>.regex(^[a-z ]+$).executionInput()
  stages:
    - stage:
        name: Patch
        identifier: patch
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Apply
                  identifier: apply
                  timeout: {timeout}
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo \"patching because <+pipeline.variables.reason> on $TARGET\"
                    environmentVariables:
                      - name: TARGET
                        type: String
                        value: <+input>.allowedValues(blue,green).executionInput()
"
        ),
    )
    .unwrap();
    f
}

/// Killed while it waits: the value given meanwhile is not lost, and `resume` goes on with it.
#[test]
fn a_run_killed_while_waiting_resumes_with_the_values_given_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = asking_pipeline(dir.path(), "1m");
    let mut run = Run::start(&state, &["--step-isolation", "none", file.to_str().unwrap()]);
    // The pipeline's own inputs are asked before any stage starts.
    run.until("--input pipeline.variables.reason=VALUE");
    let id = run.id.clone();
    let shown = show(&state, &id);
    assert_eq!(shown["status"], "InputWaiting", "{shown}");
    assert!(shown["stages"].as_array().is_none_or(|s| s.is_empty()), "no stage started before it was given: {shown}");
    pw(&state).args(["input", &id, "--input", "pipeline.variables.reason=disk full"]).assert().success();
    run.until("--input pipeline.stages.patch.spec.execution.steps.apply.spec.environmentVariables.TARGET.value=VALUE");
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    // Nobody runs it now; the value is recorded all the same, and the execution still says what it waits for.
    pw(&state)
        .args([
            "input",
            &id,
            "--input",
            "pipeline.stages.patch.spec.execution.steps.apply.spec.environmentVariables.TARGET.value=green",
        ])
        .assert()
        .success();
    let out = pw(&state).args(["resume", &id, "--wait", "--step-isolation", "none"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("patching because disk full on green"), "{text}");
    let shown = show(&state, &id);
    assert_eq!(shown["status"], "Success", "{shown}");
    let apply = &shown["stages"][0]["steps"][0];
    assert_eq!((apply["status"].as_str(), apply["attempt"].as_i64()), (Some("Success"), Some(1)), "{apply}");
}

/// Killed while the pipeline itself asks: `resume` asks again on the same log, and its lines are stored (no
/// chunk numbered twice).
#[test]
fn a_run_killed_while_the_pipeline_asks_resumes_and_asks_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = asking_pipeline(dir.path(), "1m");
    let mut run = Run::start(&state, &["--step-isolation", "none", file.to_str().unwrap()]);
    run.until("--input pipeline.variables.reason=VALUE");
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let mut resume = Run::spawn(&state, &["resume", &run.id, "--wait", "--step-isolation", "none"]);
    resume.until("--input pipeline.variables.reason=VALUE");
    pw(&state).args(["input", &run.id, "--input", "pipeline.variables.reason=power cut"]).assert().success();
    resume
        .until("--input pipeline.stages.patch.spec.execution.steps.apply.spec.environmentVariables.TARGET.value=VALUE");
    pw(&state)
        .args([
            "input",
            &run.id,
            "--input",
            "pipeline.stages.patch.spec.execution.steps.apply.spec.environmentVariables.TARGET.value=blue",
        ])
        .assert()
        .success();
    resume.until("patching because power cut on blue");
    assert!(resume.child.wait().unwrap().success());
    resume.until_end();
    assert!(!resume.seen.iter().any(|l| l.contains("could not store log lines")), "{}", resume.seen.join("\n"));
}

/// An input nobody gives ends its step `Expired` at the step's timeout, and the execution with it.
#[test]
fn an_input_nobody_gives_expires_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = asking_pipeline(dir.path(), "1s");
    let mut run = Run::start(&state, &["--step-isolation", "none", file.to_str().unwrap()]);
    run.until("--input pipeline.variables.reason=VALUE");
    let id = run.id.clone();
    pw(&state).args(["input", &id, "--input", "pipeline.variables.reason=routine"]).assert().success();
    run.until("no value was given for pipeline.stages.patch.spec.execution.steps.apply.spec.environmentVariables.TARGET.value before the timeout");
    assert!(!run.child.wait().unwrap().success());
    let shown = show(&state, &id);
    assert_eq!(shown["status"], "Failed", "{shown}");
    assert_eq!(shown["stages"][0]["steps"][0]["status"], "Expired");
}

/// Through a server: the API and `pipewright input --server` give values, with the API's checks and RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_cli_against_a_server_give_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::Server::start(&dir.path().join("state"), &["--step-isolation", "none"]).await;
    let p = "/api/v1/orgs/default/projects/checkout";
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "checkout"}))).await;
    let yaml = std::fs::read_to_string(example()).unwrap();
    s.ok(Method::POST, &format!("{p}/pipelines"), Some(Value::String(yaml))).await;
    let viewer = s.user("viewer", "_project_viewer", "checkout").await;
    let e = s.ok(Method::POST, &format!("{p}/pipelines/canary_release/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let x = format!("/api/v1/executions/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = s.ok(Method::GET, &x, None).await;
        if v["execution"]["status"] == "InputWaiting" {
            let entry = &v["execution"]["inputs"][TRAFFIC];
            assert_eq!(
                (&entry["node"], &entry["input"]["allowed_values"]),
                (&json!("canary"), &json!(["5", "10", "25"]))
            );
            break;
        }
        assert!(Instant::now() < deadline, "never asked: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = json!({"inputs": {TRAFFIC: "25"}});
    let (st, v) = s.req(Some(&viewer), Method::POST, &format!("{x}/input"), Some(&body)).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) =
        s.req(Some(&s.token), Method::POST, &format!("{x}/input"), Some(&json!({"inputs": {TRAFFIC: "7"}}))).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"], "invalid_inputs");
    assert_eq!(v["problems"][0]["path"], TRAFFIC);
    let v = s.ok(Method::POST, &format!("{x}/input"), Some(body)).await;
    assert_eq!(v["given"], json!([TRAFFIC]));
    // The CLI as a client of the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = s.ok(Method::GET, &x, None).await;
        if v["execution"]["inputs"][TICKET]["node"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the ticket was never asked: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (url, token) = (s.url.clone(), s.token.clone());
    let arg = format!("{TICKET}=CHG-7");
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || {
        Command::cargo_bin("pipewright")
            .unwrap()
            .env("PIPEWRIGHT_SERVER", url)
            .env("PIPEWRIGHT_TOKEN", token)
            .args(["input", &id2, "--input", &arg])
            .assert()
            .success()
            .stdout(predicate::str::contains(format!("gave `{TICKET}`")));
    })
    .await
    .unwrap();
    let v = s.wait_end(&s.token, &id).await;
    assert_eq!(v["execution"]["status"], "Success", "{v}");
    assert_eq!(v["execution"]["inputs"][TRAFFIC]["by"], "admin");
    assert_eq!(v["execution"]["inputs"][TICKET]["value"], "CHG-7");
}
