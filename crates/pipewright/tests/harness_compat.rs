//! Real Harness pipelines as teams write them: one regression test per bug the corpus of public Harness
//! files found (issue 12), each on a pipeline in the shape real repositories use.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn pw(state: &Path) -> Command {
    let mut c = Command::cargo_bin("pipewright").unwrap();
    c.env("PIPEWRIGHT_STATE_DIR", state).env_remove("PIPEWRIGHT_SERVER").env_remove("PIPEWRIGHT_TOKEN");
    c
}

fn write(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, yaml).unwrap();
    f
}

/// A release pipeline whose version has no default: `plan` previews it, listing the input a run will need,
/// and exits 0; a value that breaks the input's pattern is still an error.
#[test]
fn plan_lists_missing_inputs_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "release.yaml",
        r#"pipeline:
  name: Release
  identifier: release
  variables:
    - name: version
      type: String
      value: <+input>.regex(^[0-9]+\.[0-9]+\.[0-9]+$)
  stages:
    - stage:
        name: Publish
        identifier: publish
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Tag
                  identifier: tag
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo "tagging v<+pipeline.variables.version>"
"#,
    );
    pw(dir.path())
        .arg("plan")
        .arg(&f)
        .assert()
        .success()
        .stderr(predicate::str::contains("runtime inputs a run needs a value for"))
        .stderr(predicate::str::contains("pipeline.variables.version: is required and has no default"));
    let out = pw(dir.path()).arg("plan").arg(&f).args(["--output", "json"]).assert().success().get_output().clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["satisfiable"], true);
    assert_eq!(v["required_inputs"][0]["path"], "pipeline.variables.version");
    pw(dir.path())
        .arg("plan")
        .arg(&f)
        .args(["--input", "pipeline.variables.version=latest"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not match"));
}

/// Two step groups of one stage each have a step `build` (a frontend and a backend build, the shape of many
/// monorepo pipelines): legal, since a step's path holds its group; a later step reads both outputs.
#[test]
fn the_same_step_identifier_in_two_step_groups_is_legal() {
    let dir = tempfile::tempdir().unwrap();
    let group = |id: &str, what: &str| {
        format!(
            r#"              - stepGroup:
                  name: {id}
                  identifier: {id}
                  steps:
                    - step:
                        type: Run
                        name: build
                        identifier: build
                        spec:
                          shell: Sh
                          command: ARTIFACT={what}.tgz; echo built $ARTIFACT
                          outputVariables:
                            - name: ARTIFACT
"#
        )
    };
    let yaml = format!(
        r#"pipeline:
  name: Monorepo
  identifier: monorepo
  stages:
    - stage:
        name: Build
        identifier: build_all
        type: CI
        spec:
          cloneCodebase: false
          execution:
            steps:
{}{}              - step:
                  type: Run
                  name: publish
                  identifier: publish
                  spec:
                    shell: Sh
                    command: echo publishing <+execution.steps.frontend.steps.build.output.outputVariables.ARTIFACT> and <+pipeline.stages.build_all.spec.execution.steps.backend.steps.build.output.outputVariables.ARTIFACT>
"#,
        group("frontend", "web"),
        group("backend", "api")
    );
    let f = write(dir.path(), "monorepo.yaml", &yaml);
    pw(dir.path()).arg("validate").arg(&f).assert().success();
    pw(dir.path())
        .args(["run", "--step-isolation", "none"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("publishing web.tgz and api.tgz"));
    // Within one list, a duplicate is still an error, naming the list.
    let dup = yaml.replace("identifier: backend", "identifier: frontend");
    let f = write(dir.path(), "dup.yaml", &dup);
    pw(dir.path())
        .arg("validate")
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("duplicate step identifier `frontend` in stage `build_all`"));
}

/// Harness's status values in expressions: a deploy stage gated on `<+pipeline.stages.build.status> ==
/// "SUCCEEDED"` (the documented idiom) runs; a step printing a status prints `SUCCEEDED`; and `validate` warns
/// about a comparison with a value a status never has, saying which one was meant.
#[test]
fn statuses_in_expressions_have_harness_values() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"pipeline:
  name: Gated
  identifier: gated
  stages:
    - stage:
        name: Build
        identifier: build
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Compile
                  identifier: compile
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo compiled
    - stage:
        name: Deploy
        identifier: deploy
        type: Custom
        when:
          pipelineStatus: Success
          condition: <+pipeline.stages.build.status> == "SUCCEEDED"
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Report
                  identifier: report
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo "build was <+pipeline.stages.build.status>, compile was <+pipeline.stages.build.spec.execution.steps.compile.status>"
"#;
    let f = write(dir.path(), "gated.yaml", yaml);
    pw(dir.path())
        .args(["run", "--step-isolation", "none"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("build was SUCCEEDED, compile was SUCCEEDED"));
    let wrong = write(dir.path(), "wrong.yaml", &yaml.replace(r#"== "SUCCEEDED""#, r#"== "Success""#));
    pw(dir.path())
        .arg("validate")
        .arg(&wrong)
        .assert()
        .success()
        .stderr(predicate::str::contains("a status is never `Success` in an expression"))
        .stderr(predicate::str::contains(r#"write `"SUCCEEDED"`"#));
}
