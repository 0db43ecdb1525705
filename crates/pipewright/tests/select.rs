//! Selective stage execution from the command line: dependent stages refused with their exact paths, then
//! run with `--with-deps`, with values reused from an earlier execution (with provenance), or with values
//! supplied; stages of a parallel block; `allowStageExecutions: false`; bad selections; `plan` JSON.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn btd() -> PathBuf {
    examples().join("build-test-deploy.yaml")
}

fn pw(state: &Path) -> Command {
    let mut c = Command::cargo_bin("pipewright").unwrap();
    c.env("PIPEWRIGHT_STATE_DIR", state);
    // Files the test puts in `<state>/gates` release or steer its steps, which see only the paths they are given.
    c.env("PIPEWRIGHT_STEP_READ_PATH", gates(state));
    c
}

/// `<state>/gates`, readable by the step user.
fn gates(state: &Path) -> std::path::PathBuf {
    let dir = state.join("gates");
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn run_json(state: &Path, args: &[&str]) -> serde_json::Value {
    let out = pw(state)
        .arg("run")
        .arg(btd())
        .args(args)
        .args(["--output", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

fn statuses(v: &serde_json::Value) -> Vec<(String, String)> {
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["identifier"].as_str().unwrap().into(), s["status"].as_str().unwrap().into()))
        .collect()
}

const ARTIFACT: &str = "pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact";

#[test]
fn a_dependent_stage_alone_is_refused_with_the_exact_paths() {
    let state = tempfile::tempdir().unwrap();
    pw(state.path())
        .arg("run")
        .arg(btd())
        .args(["--stage", "deploy_prod"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("stage `deploy_prod` reads stage `build`"))
        .stderr(predicate::str::contains(ARTIFACT))
        .stderr(predicate::str::contains("stage `deploy_prod` propagates (useFromStage) from stage `deploy_dev`"))
        .stderr(predicate::str::contains("pipeline.stages.deploy_dev.service"))
        .stderr(predicate::str::contains("--with-deps"));
    let out = pw(state.path())
        .arg("plan")
        .arg(btd())
        .args(["--stage", "deploy_prod", "-o", "json"])
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let plan: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(plan["satisfiable"], false);
    assert_eq!(plan["unmet_dependencies"][0]["stage"], "deploy_prod");
    assert_eq!(plan["unmet_dependencies"][0]["depends_on"], "build");
    assert_eq!(plan["unmet_dependencies"][0]["paths"], serde_json::json!([ARTIFACT]));
    assert_eq!(plan["unmet_dependencies"][0]["via"], "expression");
    assert_eq!(plan["unmet_dependencies"][1]["via"], "propagation");
    assert_eq!(plan["required_inputs"][0]["path"], "pipeline.variables.version");
    // deploy_dev's replicas input is not asked: deploy_dev does not run.
    assert_eq!(plan["required_inputs"].as_array().unwrap().len(), 1);
    // Nothing was recorded.
    pw(state.path()).arg("history").assert().success().stdout(predicate::str::contains("no executions yet"));
}

#[test]
fn with_deps_runs_the_closure() {
    let state = tempfile::tempdir().unwrap();
    let v = run_json(state.path(), &["--stage", "deploy_prod", "--with-deps"]);
    assert_eq!(v["mode"], "selective");
    assert_eq!(
        statuses(&v),
        [
            ("build", "Success"),
            ("unit_tests", "Skipped"),
            ("deploy_dev", "Success"),
            ("smoke_dev", "Skipped"),
            ("deploy_prod", "Success")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn values_are_reused_from_an_earlier_execution_with_provenance() {
    let state = tempfile::tempdir().unwrap();
    let full = run_json(state.path(), &["--input", "pipeline.variables.version=4.2.0"]);
    let first = full["execution_id"].as_str().unwrap().to_string();
    let out = pw(state.path())
        .arg("run")
        .arg(btd())
        .args(["--stage", "deploy_prod", "--from-execution", &first[..12]])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("deploying checkout-4.2.0.tar.gz to prod"), "{text}");
    assert!(text.contains("service=checkout"), "{text}");
    let id = text.lines().next().unwrap().split_whitespace().nth(1).unwrap().to_string();
    let show: serde_json::Value = serde_json::from_slice(
        &pw(state.path()).args(["show", &id, "-o", "json"]).assert().success().get_output().stdout,
    )
    .unwrap();
    let reused: Vec<(&str, &str)> = show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["reused_from"].is_null())
        .map(|s| (s["identifier"].as_str().unwrap(), s["reused_from"].as_str().unwrap()))
        .collect();
    assert_eq!(reused, [("build", first.as_str()), ("deploy_dev", first.as_str())]);
    pw(state.path()).args(["show", &id]).assert().success().stdout(predicate::str::contains(format!(
        "pipeline.stages.build.* reused from execution {first} (stage build)"
    )));
    // A chain: reuse from the execution that itself reused.
    pw(state.path())
        .arg("run")
        .arg(btd())
        .args(["--stage", "deploy_prod", "--from-execution", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains("deploying checkout-4.2.0.tar.gz to prod"));
}

#[test]
fn an_execution_that_cannot_serve_is_explained() {
    let state = tempfile::tempdir().unwrap();
    let only_tests = run_json(state.path(), &["--stage", "unit_tests"]);
    pw(state.path())
        .arg("run")
        .arg(btd())
        .args(["--stage", "deploy_prod", "--from-execution", only_tests["execution_id"].as_str().unwrap()])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("stage `build` ended Skipped in execution"));
    let other = pw(state.path())
        .arg("run")
        .arg(examples().join("independent-checks.yaml"))
        .args(["--output", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let other: serde_json::Value = serde_json::from_slice(&other).unwrap();
    pw(state.path())
        .arg("plan")
        .arg(btd())
        .args(["--stage", "deploy_prod", "--from-execution", other["execution_id"].as_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is of pipeline `independent_checks`, not `build_test_deploy`"));
}

#[test]
fn supplied_values_meet_dependencies() {
    let state = tempfile::tempdir().unwrap();
    let url = "pipeline.stages.deploy_dev.spec.execution.steps.rollout.output.outputVariables.url";
    pw(state.path())
        .arg("run")
        .arg(btd())
        .args(["--stage", "smoke_dev", "--expr", &format!("{url}=https://given.test/checkout")])
        .assert()
        .success()
        .stdout(predicate::str::contains("probing https://given.test/checkout"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("exprs.yaml");
    std::fs::write(&f, format!("{url}: https://file.test\npipeline.stages.nope.status: x\n")).unwrap();
    pw(state.path())
        .arg("run")
        .arg(btd())
        .args(["--stage", "smoke_dev", "--expr-file"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("probing https://file.test"))
        .stderr(predicate::str::contains(
            "warning: --expr pipeline.stages.nope.status: no stage that runs reads this path",
        ));
}

#[test]
fn selection_rules() {
    let state = tempfile::tempdir().unwrap();
    // A stage of a parallel block alone.
    pw(state.path())
        .arg("run")
        .arg(examples().join("independent-checks.yaml"))
        .args(["--stage", "license_scan"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no forbidden licenses"))
        .stdout(predicate::str::contains("docs built").not());
    pw(state.path()).arg("run").arg(btd()).args(["--stage", "deploy_prd"]).assert().code(2).stderr(
        predicate::str::contains(
            "stage `deploy_prd` does not exist in pipeline `build_test_deploy`; did you mean `deploy_prod`?",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("closed.yaml");
    let text = std::fs::read_to_string(examples().join("independent-checks.yaml"))
        .unwrap()
        .replace("allowStageExecutions: true", "allowStageExecutions: false");
    std::fs::write(
        &f,
        text.replace("command: echo \"lint ok\"", "command: echo \"selected=<+pipeline.selectedStages>\""),
    )
    .unwrap();
    pw(state.path()).arg("run").arg(&f).args(["--stage", "lint"]).assert().code(2).stderr(predicate::str::contains(
        "does not allow selective stage executions; set `allowStageExecutions: true`",
    ));
    // A full run still works, and <+pipeline.selectedStages> lists the stages that run.
    pw(state.path())
        .arg("run")
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("selected=[lint,docs,license_scan]"));
}

fn exec_id(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout).lines().next().unwrap().split_whitespace().nth(1).unwrap().to_string()
}

fn show(state: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&pw(state).args(["show", id, "-o", "json"]).assert().success().get_output().stdout).unwrap()
}

/// A pipeline: `prepare` succeeds, `flaky` (a matrix, in a parallel block with `steady`) fails until the file
/// `gate` exists, `after` reads `prepare`'s output.
fn retry_pipeline(dir: &Path) -> PathBuf {
    let gate = gates(dir).join("gate");
    let f = dir.join("retry.yaml");
    let step = |id: &str, script: &str| {
        format!(
            "              - step:\n                  type: ShellScript\n                  name: {id}\n                  identifier: {id}\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: {script}\n"
        )
    };
    let stage = |id: &str, body: String, extra: &str| {
        format!(
            "    - stage:\n        name: {id}\n        identifier: {id}\n        type: Custom\n{extra}        spec:\n          execution:\n            steps:\n{body}"
        )
    };
    let prepare = stage(
        "prepare",
        step("make", "token=T-$RANDOM; echo made $token").replace(
            "                    source:",
            "                    outputVariables:\n                      - name: token\n                        type: String\n                        value: token\n                    source:",
        ),
        "",
    );
    let flaky = stage(
        "flaky",
        step("check", &format!("test -f {} || [ <+matrix.n> = 1 ]", gate.display())),
        "        strategy:\n          matrix:\n            n: [\"1\", \"2\"]\n",
    );
    let steady = stage("steady", step("ok", "echo steady"), "");
    let indent = |s: String| s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n") + "\n";
    let after = stage(
        "after",
        step("use", "echo using <+pipeline.stages.prepare.spec.execution.steps.make.output.outputVariables.token>"),
        "",
    );
    std::fs::write(
        &f,
        format!(
            "pipeline:\n  name: R\n  identifier: r\n  allowStageExecutions: true\n  stages:\n{prepare}    - parallel:\n{}{}{after}",
            indent(flaky),
            indent(steady)
        ),
    )
    .unwrap();
    f
}

#[test]
fn retry_resumes_from_the_failed_stage_reusing_what_succeeded() {
    let state = tempfile::tempdir().unwrap();
    let f = retry_pipeline(state.path());
    let out = pw(state.path()).arg("run").arg(&f).assert().code(1).get_output().stdout.clone();
    let first = exec_id(&out);
    let s = show(state.path(), &first);
    assert_eq!(s["status"], "Failed");
    let token_line = String::from_utf8_lossy(&out).lines().find(|l| l.contains("made T-")).unwrap().to_string();
    let token = token_line.rsplit(' ').next().unwrap().to_string();
    // Still failing: the retry fails again, and is linked to the first execution.
    let out = pw(state.path()).args(["retry", &first, "--only-failed"]).assert().code(1).get_output().stdout.clone();
    let second = exec_id(&out);
    let s2 = show(state.path(), &second);
    assert_eq!(s2["mode"], "retry");
    assert_eq!(s2["parent_id"], first.as_str());
    let st: Vec<(String, String)> = statuses(&s2);
    // --only-failed: `steady` (same parallel block, it succeeded) does not run again.
    assert!(st.contains(&("steady".into(), "Skipped".into())), "{st:?}");
    assert!(st.contains(&("prepare".into(), "Success".into())), "{st:?}");
    std::fs::write(gates(state.path()).join("gate"), "").unwrap();
    let out = pw(state.path()).args(["retry", &second]).assert().success().get_output().stdout.clone();
    let text = String::from_utf8_lossy(&out).to_string();
    // prepare's output was reused from the first execution, through the second.
    assert!(text.contains(&format!("using {token}")), "{text}");
    assert!(!text.contains("made T-"), "prepare ran again: {text}");
    let third = exec_id(&out);
    let s3 = show(state.path(), &third);
    assert_eq!(s3["original_id"], first.as_str());
    assert_eq!(s3["chain"].as_array().unwrap().len(), 3);
    let prepare = s3["stages"].as_array().unwrap().iter().find(|s| s["identifier"] == "prepare").unwrap().clone();
    assert!(prepare["reused_from"].is_string());
    pw(state.path())
        .args(["retry", &third])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("there is nothing to retry"));
    pw(state.path())
        .args(["show", &third])
        .assert()
        .success()
        .stdout(predicate::str::contains("chain (original → re-runs / retries):"));
}

#[test]
fn rerun_and_rerun_stage() {
    let state = tempfile::tempdir().unwrap();
    let first = run_json(state.path(), &["--input", "pipeline.variables.version=5.0.0"])["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Same inputs, editable.
    let out = pw(state.path()).args(["rerun", &first]).assert().success().get_output().stdout.clone();
    assert!(String::from_utf8_lossy(&out).contains("building version 5.0.0"));
    assert_eq!(show(state.path(), &exec_id(&out))["mode"], "rerun");
    pw(state.path())
        .args(["rerun", &first, "--input", "pipeline.variables.version=5.0.1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("building version 5.0.1"));
    // One stage: its dependencies come from the execution.
    let out = pw(state.path())
        .args(["rerun", &first, "--stage", "deploy_prod"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&out).to_string();
    assert!(text.contains("deploying checkout-5.0.0.tar.gz to prod"), "{text}");
    assert!(!text.contains("building version"), "{text}");
    let s = show(state.path(), &exec_id(&out));
    assert_eq!(s["mode"], "rerun_stage");
    assert_eq!(s["parent_id"], first.as_str());
}

#[test]
fn plan_checks_runtime_inputs_like_run() {
    let state = tempfile::tempdir().unwrap();
    pw(state.path())
        .arg("plan")
        .arg(btd())
        .args(["--stage", "deploy_dev", "--with-deps", "--input", "pipeline.stages.deploy_dev.variables.replicas=7"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "pipeline.stages.deploy_dev.variables.replicas: `7` is not one of the allowed values: 1, 2, 3",
        ));
    // The same input is not needed (nor checked) when deploy_dev does not run.
    pw(state.path()).arg("plan").arg(btd()).args(["--stage", "unit_tests"]).assert().success();
}

#[test]
fn rerun_uses_the_yaml_as_it_ran_unless_latest() {
    let state = tempfile::tempdir().unwrap();
    let f = state.path().join("checks.yaml");
    let original = std::fs::read_to_string(examples().join("independent-checks.yaml")).unwrap();
    std::fs::write(&f, &original).unwrap();
    let out = pw(state.path()).arg("run").arg(&f).assert().success().get_output().stdout.clone();
    let first = exec_id(&out);
    std::fs::write(&f, original.replace("echo \"lint ok\"", "echo \"lint changed\"")).unwrap();
    pw(state.path()).args(["rerun", &first]).assert().success().stdout(predicate::str::contains("lint ok"));
    pw(state.path())
        .args(["rerun", &first, "--latest"])
        .assert()
        .success()
        .stdout(predicate::str::contains("lint changed"));
}
