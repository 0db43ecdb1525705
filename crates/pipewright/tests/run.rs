//! `pipewright run` and the history commands as a user runs them: real processes, a real SQLite file in a
//! temporary state directory, the example pipelines, runtime-input errors, abort and approval from another
//! process, two runs at once, and a state directory that cannot be used.

use assert_cmd::Command;
use predicates::prelude::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn pw(state: &Path) -> Command {
    let mut c = Command::cargo_bin("pipewright").unwrap();
    c.env("PIPEWRIGHT_STATE_DIR", state).env_remove("PIPEWRIGHT_SECRET_API_TOKEN");
    c
}

/// `<state>/gates`, readable by the step user: files the test puts there release or steer its steps, which
/// see only the paths they are given.
fn gates(state: &Path) -> std::path::PathBuf {
    let dir = state.join("gates");
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn json(state: &Path, args: &[&str]) -> serde_json::Value {
    let out = pw(state).args(args).args(["--output", "json"]).assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn the_example_runs_end_to_end_and_is_recorded() {
    let state = tempfile::tempdir().unwrap();
    pw(state.path())
        .arg("run")
        .arg(examples().join("build-test-deploy.yaml"))
        .assert()
        .success()
        .stdout(predicate::str::contains("[deploy_dev.rollout]  service=checkout env=dev namespace=checkout-dev"))
        .stdout(predicate::str::contains(
            "[deploy_prod.rollout]  service=checkout image=registry.example.test/checkout:1.0.0",
        ))
        .stdout(predicate::str::contains("ended Success"));
    let history = json(state.path(), &["history"]);
    assert_eq!(history[0]["status"], "Success");
    assert_eq!(history[0]["sequence_id"], 1);
    assert_eq!(history[0]["mode"], "full");
    let id = history[0]["id"].as_str().unwrap().to_string();
    let show = json(state.path(), &["show", &id[..10]]);
    assert_eq!(show["status"], "Success");
    let stages: Vec<&str> =
        show["stages"].as_array().unwrap().iter().map(|s| s["identifier"].as_str().unwrap()).collect();
    assert_eq!(stages, ["build", "unit_tests", "deploy_dev", "smoke_dev", "deploy_prod"]);
    assert_eq!(show["stages"][0]["steps"][0]["outputs"]["artifact"], "checkout-1.0.0.tar.gz");
    assert_eq!(show["inputs"]["pipeline.variables.version"]["source"], "Default");
    pw(state.path())
        .args(["logs", &id, "--stage", "build"])
        .assert()
        .success()
        .stdout(predicate::str::contains("[build.compile] building version 1.0.0"))
        .stdout(predicate::str::contains("deploying").not());
    pw(state.path())
        .args(["show", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains("↳ artifact = checkout-1.0.0.tar.gz"));
}

#[test]
fn input_sets_and_inputs_are_applied_in_order() {
    let state = tempfile::tempdir().unwrap();
    let out = pw(state.path())
        .arg("run")
        .arg(examples().join("build-test-deploy.yaml"))
        .arg("--inputs-file")
        .arg(examples().join("input-sets/release-2-1.yaml"))
        .args(["--output", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["status"], "Success");
    assert_eq!(v["stages"][0]["steps"][0]["outputs"]["artifact"], "checkout-2.1.0.tar.gz");
    let show = json(state.path(), &["show", v["execution_id"].as_str().unwrap()]);
    assert_eq!(show["inputs"]["pipeline.variables.version"]["source"]["InputSet"], "release_2_1");
    assert_eq!(show["inputs"]["pipeline.stages.deploy_dev.variables.replicas"]["value"], "2");
    // --input wins over the input set.
    pw(state.path())
        .arg("run")
        .arg(examples().join("build-test-deploy.yaml"))
        .arg("--inputs-file")
        .arg(examples().join("input-sets/release-2-1.yaml"))
        .args(["--input", "pipeline.variables.version=3.0.1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("building version 3.0.1"));
}

#[test]
fn bad_runtime_inputs_are_refused_before_anything_runs() {
    let state = tempfile::tempdir().unwrap();
    pw(state.path())
        .arg("run")
        .arg(examples().join("build-test-deploy.yaml"))
        .args(["--input", "pipeline.variables.version=banana", "--input", "pipeline.stages.deploy_dev.variables.replicas=9"])
        .args(["--input", "pipeline.variables.verison=1.0.0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pipeline.variables.version: `banana` does not match the regular expression"))
        .stderr(predicate::str::contains("pipeline.stages.deploy_dev.variables.replicas: `9` is not one of the allowed values: 1, 2, 3"))
        .stderr(predicate::str::contains("pipeline.variables.verison: is not a runtime input of this pipeline; did you mean `pipeline.variables.version`?"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yaml");
    std::fs::write(
        &f,
        "pipeline:\n  name: P\n  identifier: p\n  variables:\n    - name: who\n      type: String\n      value: <+input>.allowedValues(a,b)\n  stages:\n    - stage:\n        name: s\n        identifier: s\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: x\n                  identifier: x\n                  spec:\n                    shell: Sh\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo <+pipeline.variables.who>\n",
    )
    .unwrap();
    pw(state.path()).arg("run").arg(&f).assert().code(1).stderr(predicate::str::contains(
        "pipeline.variables.who: is required and has no default; allowed values: a, b",
    ));
    // Nothing was recorded.
    assert_eq!(json(state.path(), &["history"]), serde_json::json!([]));
    pw(state.path())
        .arg("run")
        .arg(&f)
        .args(["--input", "pipeline.variables.who=a"])
        .assert()
        .success()
        .stdout(predicate::str::contains("[s.x]  a"));
    // A value is data: an input holding an expression is used as written, never evaluated.
    let free = dir.path().join("free.yaml");
    let heredoc = "script: |\n                          cat <<'EOF'\n                          <+pipeline.variables.who>\n                          EOF\n";
    std::fs::write(
        &free,
        std::fs::read_to_string(&f)
            .unwrap()
            .replace(".allowedValues(a,b)", "")
            .replace("script: echo <+pipeline.variables.who>\n", heredoc),
    )
    .unwrap();
    pw(state.path())
        .arg("run")
        .arg(&free)
        .args(["--input", "pipeline.variables.who=<+pipeline.name>'s \\ <+secrets.getValue(\"x\")>"])
        .assert()
        .success()
        .stdout(predicate::str::contains("[s.x]  <+pipeline.name>'s \\ <+secrets.getValue(\"x\")>"));
}

#[test]
fn an_unusable_state_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    pw(&file.join("state"))
        .arg("run")
        .arg(examples().join("independent-checks.yaml"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot open the state store"))
        .stderr(predicate::str::contains("--state-dir"));
    // A file that is not a pipewright database is left untouched.
    let state = dir.path().join("corrupt");
    std::fs::create_dir(&state).unwrap();
    let junk = vec![0x42u8; 8192];
    std::fs::write(state.join("pipewright.db"), &junk).unwrap();
    pw(&state)
        .arg("run")
        .arg(examples().join("independent-checks.yaml"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not a pipewright database or is damaged"));
    assert_eq!(std::fs::read(state.join("pipewright.db")).unwrap(), junk);
}

#[test]
fn two_runs_at_once_share_one_state_directory() {
    let state = tempfile::tempdir().unwrap();
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("pipewright"))
            .env("PIPEWRIGHT_STATE_DIR", state.path())
            .arg("run")
            .arg(examples().join("flaky-matrix.yaml"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let history = json(state.path(), &["history"]);
    let mut seq: Vec<i64> = history.as_array().unwrap().iter().map(|e| e["sequence_id"].as_i64().unwrap()).collect();
    seq.sort();
    assert_eq!(seq, [1, 2]);
}

/// Start `run` in the background and read its output until `marker` appears; returns the child, the
/// execution id, and the reader to drain.
fn start_until(state: &Path, file: &Path, marker: &str) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipewright"))
        .env("PIPEWRIGHT_STATE_DIR", state)
        .env("PIPEWRIGHT_STEP_READ_PATH", gates(state))
        .arg("run")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let id = first.split_whitespace().nth(1).unwrap().to_string();
    for l in lines.by_ref() {
        if l.unwrap().contains(marker) {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, id)
}

fn one_step(script_or_step: &str) -> String {
    format!(
        "pipeline:\n  name: P\n  identifier: p\n  stages:\n    - stage:\n        name: s\n        identifier: s\n        type: Custom\n        spec:\n          execution:\n            steps:\n{script_or_step}    - stage:\n        name: t\n        identifier: t\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: Wait\n                  name: w\n                  identifier: w\n                  spec:\n                    duration: 1ms\n"
    )
}

#[test]
fn abort_from_another_process() {
    let state = tempfile::tempdir().unwrap();
    let f = state.path().join("long.yaml");
    std::fs::write(
        &f,
        one_step("              - step:\n                  type: ShellScript\n                  name: long\n                  identifier: long\n                  spec:\n                    shell: Sh\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo started; sleep 300\n"),
    )
    .unwrap();
    let (mut child, id) = start_until(state.path(), &f, "started");
    pw(state.path()).args(["abort", &id]).assert().success().stdout(predicate::str::contains("abort requested"));
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let show = json(state.path(), &["show", &id]);
    assert_eq!(show["status"], "Aborted");
    assert_eq!(show["stages"][0]["steps"][0]["status"], "Aborted");
    assert_eq!(show["stages"][1]["status"], "Skipped");
    pw(state.path()).args(["abort", &id]).assert().code(1).stderr(predicate::str::contains("already ended Aborted"));
}

#[test]
fn approve_from_another_process() {
    let state = tempfile::tempdir().unwrap();
    let f = state.path().join("gate.yaml");
    std::fs::write(
        &f,
        one_step("              - step:\n                  type: HarnessApproval\n                  name: ok\n                  identifier: ok\n                  timeout: 5m\n                  spec:\n                    approvalMessage: ship?\n                    approvers:\n                      userGroups: [release]\n                      minimumCount: 1\n                      disallowPipelineExecutor: false\n"),
    )
    .unwrap();
    let (mut child, id) = start_until(state.path(), &f, "waiting for approval");
    pw(state.path())
        .args(["reject", &id, "--node", "nope"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("waiting: s.ok"));
    pw(state.path())
        .args(["approve", &id, "--comment", "go"])
        .assert()
        .success()
        .stdout(predicate::str::contains("approved s.ok"));
    assert!(child.wait().unwrap().success());
    assert_eq!(json(state.path(), &["show", &id])["status"], "Success");
}

#[test]
fn a_missing_shell_fails_the_step_clearly() {
    let state = tempfile::tempdir().unwrap();
    pw(state.path())
        .env("PATH", "/nonexistent")
        .arg("run")
        .arg(examples().join("independent-checks.yaml"))
        .args(["--stage", "docs"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("cannot start `sh`: No such file or directory"));
}

#[test]
fn logs_follow_prints_until_the_execution_ends() {
    let state = tempfile::tempdir().unwrap();
    let gate = gates(state.path()).join("gate");
    let f = state.path().join("wait.yaml");
    std::fs::write(
        &f,
        one_step(&format!("              - step:\n                  type: ShellScript\n                  name: w\n                  identifier: w\n                  spec:\n                    shell: Sh\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo before; while [ ! -f {} ]; do sleep 0.05; done; echo after gate\n", gate.display())),
    )
    .unwrap();
    let (mut run, id) = start_until(state.path(), &f, "before");
    let follow = std::process::Command::new(assert_cmd::cargo::cargo_bin("pipewright"))
        .env("PIPEWRIGHT_STATE_DIR", state.path())
        .args(["logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(&gate, "").unwrap();
    assert!(run.wait().unwrap().success());
    let out = follow.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("before") && text.contains("after gate"), "{text}");
}

/// Poll a condition on the system's state (a file, a process), bounded.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `kill -9` a `pipewright run` in the middle of a step; `pipewright resume` refuses while the run lives,
/// then — once it is dead — stops the step process it left behind, runs the step again as a new attempt
/// (recorded with the interrupted one), keeps what finished, and finishes the execution.
#[test]
fn a_killed_run_is_resumed_from_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (count, pidfile, gate) = (dir.path().join("count"), dir.path().join("pid"), dir.path().join("gate"));
    let step = |id: &str, script: &str| {
        format!(
            "              - step:\n                  type: ShellScript\n                  name: {id}\n                  identifier: {id}\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: {script}\n"
        )
    };
    let stage = |id: &str, steps: String| {
        format!(
            "    - stage:\n        name: {id}\n        identifier: {id}\n        type: Custom\n        spec:\n          execution:\n            steps:\n{steps}"
        )
    };
    let yaml = format!(
        "pipeline:\n  name: Resumable\n  identifier: resumable\n  stages:\n{}{}",
        stage("build", step("make", &format!("echo made >> {}", count.display()))),
        stage(
            "deploy",
            step(
                "push",
                &format!(
                    "echo $$ > {}; while [ ! -f {} ]; do sleep 0.02; done; echo pushed",
                    pidfile.display(),
                    gate.display()
                )
            )
        ),
    );
    let file = dir.path().join("resumable.yaml");
    std::fs::write(&file, yaml).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("pipewright");
    let mut run = std::process::Command::new(&bin)
        .args(["run", "--step-isolation", "none"])
        .arg(&file)
        .env("PIPEWRIGHT_STATE_DIR", &state)
        .env("PIPEWRIGHT_LEASE_SECONDS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let id = first.split_whitespace().nth(1).unwrap().to_string();
    // Its output is read on (a closed pipe would end it before the kill does).
    std::thread::spawn(move || lines.map_while(Result::ok).count());
    until("the step to start", || std::fs::read_to_string(&pidfile).is_ok_and(|p| p.trim().parse::<i32>().is_ok()));
    let orphan: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // While the run lives, its execution is not anyone else's.
    pw(&state)
        .args(["resume", &id, "--step-isolation", "none"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("is run by another process"));
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(alive(orphan), "the step outlived its run");
    std::fs::remove_file(&pidfile).unwrap();
    let resume = std::process::Command::new(&bin)
        .args(["resume", &id, "--wait", "--step-isolation", "none"])
        .env("PIPEWRIGHT_STATE_DIR", &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    until("the new attempt", || std::fs::read_to_string(&pidfile).is_ok_and(|p| p.trim().parse::<i32>().is_ok()));
    assert!(!alive(orphan), "the orphaned step {orphan} was not stopped first");
    std::fs::write(&gate, "go").unwrap();
    let out = resume.wait_with_output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let shown = json(&state, &["show", &id]);
    assert_eq!(shown["status"], "Success", "{shown}");
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "build ran once");
    let text = shown.to_string();
    assert!(text.contains("interrupted: the process running this step stopped"), "{text}");
}

/// Whether a process runs (a zombie waiting to be reaped has ended).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|state| state != "Z")
}
