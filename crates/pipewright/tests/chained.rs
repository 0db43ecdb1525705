//! Chained pipelines: a `Pipeline` stage runs another pipeline of the repository as a child execution with
//! the inputs the stage gives, exposes the outputs it lists to later stages, and links parent and child in
//! `show`; the stage is selectable (its outputs reused from an earlier execution) and retryable.

mod common;
use common::{log_text, pw, write};
use predicates::prelude::*;
use std::path::Path;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The platform team's image build, which other teams chain. It fails while the flag file exists.
fn build_image(flag: &Path) -> String {
    format!(
        r#"pipeline:
  name: Build Image
  identifier: build_image
  projectIdentifier: shop
  orgIdentifier: default
  variables:
    - name: service
      type: String
      value: <+input>
    - name: tag
      type: String
      value: <+input>.regex(^v[0-9]+$)
  stages:
    - stage:
        name: Image
        identifier: image
        type: CI
        spec:
          cloneCodebase: false
          execution:
            steps:
              - step:
                  type: Run
                  name: Build
                  identifier: build
                  spec:
                    shell: Sh
                    command: |
                      test ! -f {flag} || exit 1
                      IMAGE="registry.example.test/<+pipeline.variables.service>:<+pipeline.variables.tag>"
                      echo "built $IMAGE"
                    outputVariables:
                      - name: IMAGE
"#,
        flag = flag.display()
    )
}

const RELEASE: &str = r#"pipeline:
  name: Cart Release
  identifier: cart_release
  projectIdentifier: shop
  orgIdentifier: default
  allowStageExecutions: true
  variables:
    - name: tag
      type: String
      value: <+input>.default(v7)
  stages:
    - stage:
        name: Image
        identifier: image
        type: Pipeline
        spec:
          org: default
          project: shop
          pipeline: build_image
          inputs:
            identifier: build_image
            variables:
              - name: service
                type: String
                value: cart
              - name: tag
                type: String
                value: <+pipeline.variables.tag>
          outputs:
            - name: image
              value: <+pipeline.stages.image.spec.execution.steps.build.output.outputVariables.IMAGE>
    - stage:
        name: Deploy
        identifier: deploy
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Apply
                  identifier: apply
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo "deploying <+pipeline.stages.image.output.image>"
"#;

#[test]
fn a_pipeline_stage_runs_a_child_execution_and_passes_its_outputs_on() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join(".harness");
    let flag = dir.path().join("broken");
    write(&h, "pipelines/build_image.yaml", &build_image(&flag));
    let f = write(&h, "pipelines/cart_release.yaml", RELEASE);
    let state = dir.path().join("state");
    pw(&state).arg("validate").arg(&f).assert().success();

    let out = pw(&state).arg("run").arg(&f).args(["--output", "json"]).assert().success().get_output().clone();
    let parent = json(&out);
    assert_eq!(parent["status"], "Success", "{parent}");
    let pid = parent["execution_id"].as_str().unwrap().to_string();
    let logs = log_text(&state, &pid);
    assert!(logs.contains("deploying registry.example.test/cart:v7"), "{logs}");
    // The child is in the history, linked to the parent's stage.
    let history = json(&pw(&state).args(["history", "--output", "json"]).assert().success().get_output().clone());
    let child = history.as_array().unwrap().iter().find(|e| e["pipeline"] == "build_image").unwrap().clone();
    let cid = child["id"].as_str().unwrap().to_string();
    let child_shown =
        json(&pw(&state).args(["show", &cid, "--output", "json"]).assert().success().get_output().clone());
    assert_eq!(child_shown["chained_from"], serde_json::json!({"execution_id": pid, "stage": "image"}));
    assert_eq!(child_shown["inputs"]["pipeline.variables.tag"]["value"], "v7");
    pw(&state)
        .args(["show", &cid])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("chained pipeline: run by stage `image` of execution {pid}")));
    // … and the parent's stage names the child.
    pw(&state)
        .args(["show", &pid])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("childExecutionId = {cid}")));

    // Deploy alone reuses the image stage's outputs from that execution.
    let out = pw(&state)
        .arg("run")
        .arg(&f)
        .args(["--stage", "deploy", "--from-execution", &pid, "--output", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let again = json(&out);
    let aid = again["execution_id"].as_str().unwrap();
    let logs = log_text(&state, aid);
    assert!(logs.contains("deploying registry.example.test/cart:v7"), "{logs}");
}

#[test]
fn a_failed_child_fails_its_stage_and_a_retry_runs_a_new_child() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join(".harness");
    let flags = dir.path().join("flags");
    std::fs::create_dir(&flags).unwrap();
    let flag = flags.join("broken");
    std::fs::write(&flag, "").unwrap();
    write(&h, "pipelines/build_image.yaml", &build_image(&flag));
    let f = write(&h, "pipelines/cart_release.yaml", RELEASE);
    let state = dir.path().join("state");
    // Confined steps see the flag's folder only when allowed to.
    let read = ["--step-read-path", flags.to_str().unwrap()];
    let out = pw(&state).arg("run").arg(&f).args(read).args(["--output", "json"]).assert().code(1).get_output().clone();
    let parent = json(&out);
    let failure = parent["stages"][0]["failure"].as_str().unwrap_or_default().to_string();
    assert!(failure.contains("of pipeline `build_image` ended Failed"), "{parent}");
    // An input the child refuses: it cannot start, and the stage says why.
    let out = pw(&state)
        .arg("run")
        .arg(&f)
        .args(["--input", "pipeline.variables.tag=latest", "--output", "json"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let v = json(&out);
    let failure = v["stages"][0]["failure"].as_str().unwrap_or_default().to_string();
    assert!(failure.contains("could not start") && failure.contains("pipeline.variables.tag"), "{v}");
    // Fixed: a retry of the first execution runs the stage again, with a new child.
    std::fs::remove_file(&flag).unwrap();
    let pid = parent["execution_id"].as_str().unwrap();
    let out = pw(&state).args(["retry", pid, "--output", "json"]).args(read).assert().success().get_output().clone();
    assert_eq!(json(&out)["status"], "Success");
    let history = json(&pw(&state).args(["history", "--output", "json"]).assert().success().get_output().clone());
    let children = history.as_array().unwrap().iter().filter(|e| e["pipeline"] == "build_image").count();
    assert_eq!(children, 2, "{history}");
}

#[test]
fn outputs_and_missing_children_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join(".harness");
    let typo =
        write(&h, "pipelines/typo.yaml", &RELEASE.replace("stages.image.output.image>", "stages.image.output.imgae>"));
    pw(dir.path()).arg("validate").arg(&typo).assert().code(1).stderr(predicate::str::contains(
        "references output `imgae` of stage `image`, which its `outputs` do not list; did you mean `image`?",
    ));
    let f = write(&h, "pipelines/cart_release.yaml", RELEASE);
    let out = pw(dir.path()).arg("run").arg(&f).args(["--output", "json"]).assert().code(1).get_output().clone();
    let v = json(&out);
    let failure = v["stages"][0]["failure"].as_str().unwrap_or_default().to_string();
    assert!(failure.contains("no pipeline file with identifier `build_image`"), "{v}");
}
