//! Harness templates as a platform team ships them: a repository's `.harness/` folder with a pipeline
//! template, stage, step group and step templates at project, organization and account scope, and pipelines
//! that use them — resolved, validated with errors that point at both files, planned, run, rendered and
//! re-run from what the execution recorded.

mod common;
use common::{log_text, pw, write};
use predicates::prelude::*;

const GO_BUILD: &str = r#"template:
  name: Go Build
  identifier: go_build
  versionLabel: "1.2"
  type: Stage
  projectIdentifier: payments
  orgIdentifier: fintech
  spec:
    type: CI
    spec:
      cloneCodebase: false
      execution:
        steps:
          - step:
              type: Run
              name: Test
              identifier: test
              spec:
                shell: Sh
                command: |
                  echo "go test ./<+stage.variables.package>/..."
                  COVERAGE=87
                outputVariables:
                  - name: COVERAGE
          - stepGroup:
              name: Checks
              identifier: checks
              template:
                templateRef: org.checks
                versionLabel: v3
          - step:
              type: Run
              name: Package
              identifier: package
              spec:
                shell: Sh
                command: |
                  IMAGE="registry.example.test/<+stage.variables.package>:<+pipeline.sequenceId>"
                  echo "built $IMAGE"
                outputVariables:
                  - name: IMAGE
              timeout: <+input>
    variables:
      - name: package
        type: String
        value: <+input>
"#;

const CHECKS: &str = r#"template:
  name: Checks
  identifier: checks
  versionLabel: v3
  type: StepGroup
  orgIdentifier: fintech
  spec:
    stageType: CI
    steps:
      - parallel:
          - step:
              type: Run
              name: Vet
              identifier: vet
              spec:
                shell: Sh
                command: echo "go vet ok"
          - step:
              type: Run
              name: License
              identifier: license
              spec:
                shell: Sh
                command: echo "licenses ok"
"#;

const ROLLOUT: &str = r#"template:
  name: Rollout
  identifier: rollout
  versionLabel: v1
  type: Stage
  projectIdentifier: payments
  orgIdentifier: fintech
  spec:
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
                    script: |
                      echo "rolling out <+pipeline.stages.build.spec.execution.steps.package.output.outputVariables.IMAGE> to <+stage.variables.target>"
              timeout: 2m
          - step:
              name: Tell
              identifier: tell
              template:
                templateRef: account.slack
    variables:
      - name: target
        type: String
        value: <+input>.allowedValues(staging,production)
"#;

const SLACK: &str = r#"template:
  name: Slack
  identifier: slack
  versionLabel: "1"
  type: Step
  spec:
    type: ShellScript
    timeout: 1m
    spec:
      shell: Bash
      source:
        type: Inline
        spec:
          script: echo "slack <+stage.name> done"
"#;

const SERVICE_PIPELINE: &str = r#"template:
  name: Service Pipeline
  identifier: service_pipeline
  versionLabel: v1
  type: Pipeline
  projectIdentifier: payments
  orgIdentifier: fintech
  spec:
    allowStageExecutions: true
    stages:
      - stage:
          name: Build
          identifier: build
          template:
            templateRef: go_build
            versionLabel: "1.2"
            templateInputs:
              type: CI
              variables:
                - name: package
                  type: String
                  value: <+input>
      - stage:
          name: Staging
          identifier: staging
          template:
            templateRef: rollout
            versionLabel: v1
            templateInputs:
              type: Custom
              variables:
                - name: target
                  type: String
                  value: staging
"#;

/// The ledger team's pipeline is the platform's pipeline template; they give the package and timeout.
const LEDGER: &str = r#"pipeline:
  name: Ledger
  identifier: ledger
  projectIdentifier: payments
  orgIdentifier: fintech
  template:
    templateRef: service_pipeline
    versionLabel: v1
    templateInputs:
      stages:
        - stage:
            identifier: build
            template:
              templateInputs:
                type: CI
                variables:
                  - name: package
                    type: String
                    value: ledger
"#;

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join(".harness");
    write(&h, "templates/go_build.yaml", GO_BUILD);
    write(&h, "templates/checks_v3.yaml", CHECKS);
    write(&h, "templates/rollout.yaml", ROLLOUT);
    write(&h, "templates/account/slack.yaml", SLACK);
    write(&h, "templates/service_pipeline.yaml", SERVICE_PIPELINE);
    dir
}

/// A pipeline made of templates at every level runs as the templates say; the execution records the
/// resolved pipeline, so a re-run still works after the template files are gone.
#[test]
fn templates_at_every_level_resolve_run_and_rerun() {
    let dir = repo();
    let f = write(&dir.path().join(".harness"), "pipelines/ledger.yaml", LEDGER);
    let state = dir.path().join("state");
    pw(&state).arg("validate").arg(dir.path().join(".harness")).assert().success().stdout(
        predicate::str::contains("valid pipeline `ledger`: 2 stages, 6 steps")
            .and(predicate::str::contains("valid template `service_pipeline`")),
    );
    // The package step's timeout is the template's own runtime input, left to the run.
    let out = pw(&state)
        .arg("run")
        .arg(&f)
        .args(["--input", "pipeline.stages.build.spec.execution.steps.package.timeout=5m", "--output", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Success", "{v}");
    let id = v["execution_id"].as_str().unwrap().to_string();
    let logs = log_text(&state, &id);
    for want in [
        "go test ./ledger/...",
        "go vet ok",
        "licenses ok",
        "rolling out registry.example.test/ledger:1 to staging",
        "slack Staging done",
    ] {
        assert!(logs.contains(want), "{want} not in\n{logs}");
    }
    // `render` prints what ran: no template reference is left.
    let rendered = pw(&state).arg("render").arg(&f).assert().success().get_output().clone();
    let text = String::from_utf8(rendered.stdout).unwrap();
    assert!(!text.contains("templateRef"), "{text}");
    assert!(text.contains("identifier: license") && text.contains("value: ledger"), "{text}");
    assert!(String::from_utf8_lossy(&rendered.stderr).contains("template org.checks@v3 from"));
    std::fs::remove_dir_all(dir.path().join(".harness/templates")).unwrap();
    let out = pw(&state).args(["rerun", &id, "--output", "json"]).assert().success().get_output().clone();
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["status"], "Success", "{again}");
}

/// A dependency read inside a stage template is planned like any other, and the plan names the template.
#[test]
fn plan_names_the_template_a_dependency_is_read_in() {
    let dir = repo();
    let f = write(&dir.path().join(".harness"), "pipelines/ledger.yaml", LEDGER);
    let out = pw(dir.path())
        .arg("plan")
        .arg(&f)
        .args(["--stage", "staging", "--output", "json"])
        .assert()
        .code(3)
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unmet = &v["unmet_dependencies"][0];
    assert_eq!(unmet["depends_on"], "build", "{v}");
    assert_eq!(unmet["templates"], serde_json::json!(["rollout@v1"]), "{v}");
    pw(dir.path())
        .arg("plan")
        .arg(&f)
        .args(["--stage", "staging"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("(read in template `rollout@v1`)"));
    pw(dir.path())
        .arg("plan")
        .arg(&f)
        .args([
            "--stage",
            "staging",
            "--with-deps",
            "--input",
            "pipeline.stages.build.spec.execution.steps.package.timeout=1m",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("needed by staging (--with-deps; read in template rollout@v1)"));
}

/// An error inside a template points at the template file, and says where the template is used; a template
/// that cannot be found is one error, with no follow-on about the element it stood for.
#[test]
fn errors_point_at_both_files_and_do_not_cascade() {
    let dir = repo();
    let broken = ROLLOUT.replace("outputVariables.IMAGE", "outputVariables.IMAGES");
    write(&dir.path().join(".harness"), "templates/rollout.yaml", &broken);
    let f = write(&dir.path().join(".harness"), "pipelines/ledger.yaml", LEDGER);
    pw(dir.path())
        .arg("validate")
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("templates/rollout.yaml:23:43"))
        .stderr(predicate::str::contains("IMAGES"))
        .stderr(predicate::str::contains("= note: in template `rollout@v1`, used at "))
        .stderr(predicate::str::contains("service_pipeline.yaml:27:26"));
    let out = pw(dir.path()).arg("validate").arg(&f).args(["--output", "json"]).assert().code(1).get_output().clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["errors"][0]["file"].as_str().unwrap().ends_with("templates/rollout.yaml"), "{v}");

    let typo = write(
        &dir.path().join(".harness"),
        "pipelines/typo.yaml",
        &LEDGER.replace("templateRef: service_pipeline", "templateRef: service_pipline"),
    );
    let out = pw(dir.path()).arg("validate").arg(&typo).assert().code(1).get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("did you mean `service_pipeline`?"), "{err}");
    assert_eq!(err.matches(": error:").count(), 1, "one error, no follow-ons:\n{err}");

    // A step template at account scope referenced as if it were the project's.
    let scope = write(
        dir.path(),
        "scope.yaml",
        r#"pipeline:
  name: S
  identifier: s
  stages:
    - stage:
        name: A
        identifier: a
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  name: Tell
                  identifier: tell
                  template:
                    templateRef: slack
                    versionLabel: "1"
"#,
    );
    pw(dir.path())
        .arg("validate")
        .arg(&scope)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("it is an account template"))
        .stderr(predicate::str::contains("write `templateRef: account.slack`"));
    // Without any template, the message says where templates are read from.
    let lonely = tempfile::tempdir().unwrap();
    let alone = write(lonely.path(), "scope.yaml", &std::fs::read_to_string(&scope).unwrap());
    pw(lonely.path())
        .arg("validate")
        .arg(&alone)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no templates were found"))
        .stderr(predicate::str::contains("--templates DIR"));
    // … and `--templates` points at a platform team's checkout elsewhere.
    pw(lonely.path())
        .arg("validate")
        .arg(&alone)
        .arg("--templates")
        .arg(dir.path().join(".harness/templates"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("write `templateRef: account.slack`"));
}

/// `templateInputs` that set a field the template fixed are a warning; a template's runtime inputs left
/// open become the pipeline's, with the template's constraints.
#[test]
fn template_inputs_are_checked_against_the_template() {
    let dir = repo();
    let f = write(
        dir.path(),
        "deploy.yaml",
        r#"pipeline:
  name: Deploy
  identifier: deploy
  projectIdentifier: payments
  orgIdentifier: fintech
  stages:
    - stage:
        name: Release
        identifier: release
        template:
          templateRef: rollout
          versionLabel: v1
          templateInputs:
            type: Custom
            spec:
              execution:
                steps:
                  - step:
                      identifier: apply
                      type: ShellScript
                      timeout: 9m
"#,
    );
    pw(dir.path())
        .arg("validate")
        .arg(&f)
        .arg("--templates")
        .arg(dir.path().join(".harness/templates"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("warning: `templateInputs` of stage `release` sets `spec.execution.steps.apply.timeout`, which template `rollout@v1` does not leave as `<+input>`"))
        // The rollout template reads stage `build`, which this pipeline does not have.
        .stderr(predicate::str::contains("templates/rollout.yaml"));
}

/// An input set for a templated pipeline gives the templates' inputs where the references are, as Harness
/// writes it (`template: {templateInputs: …}` around them).
#[test]
fn an_input_set_reaches_through_template_references() {
    let dir = repo();
    let h = dir.path().join(".harness");
    let f = write(&h, "pipelines/ledger.yaml", LEDGER);
    let set = write(
        &h,
        "input_sets/fast.yaml",
        r#"inputSet:
  name: fast
  identifier: fast
  pipeline:
    identifier: ledger
    template:
      templateInputs:
        stages:
          - stage:
              identifier: build
              template:
                templateInputs:
                  type: CI
                  spec:
                    execution:
                      steps:
                        - step:
                            identifier: package
                            type: Run
                            timeout: 5m
"#,
    );
    let state = dir.path().join("state");
    pw(&state).arg("validate").arg(&set).assert().success();
    let out = pw(&state)
        .arg("run")
        .arg(&f)
        .arg("--inputs-file")
        .arg(&set)
        .args(["--output", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Success", "{v}");
    let id = v["execution_id"].as_str().unwrap();
    let shown = pw(&state).args(["show", id]).assert().success().get_output().stdout.clone();
    let shown = String::from_utf8(shown).unwrap();
    assert!(shown.contains("pipeline.stages.build.spec.execution.steps.package.timeout = 5m"), "{shown}");
}
