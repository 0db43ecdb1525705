//! Step handlers: a repository maps the Harness step types pipewright does not run itself to scripts of its
//! own in `.harness/pipewright.yaml`. The handler gets the step (spec resolved) as JSON, runs as a ShellScript
//! step does (confined, masked, timed out) and sets output variables the same way; unmapped types are named up
//! front by `plan` and fail the run with how to map them.

mod common;
use common::{log_text, pw, write};
use predicates::prelude::*;

const SETTINGS: &str = r#"# pipewright's settings for this repository
stepHandlers:
  JiraCreate:
    shell: Bash
    script: |
      issue=$("$PIPEWRIGHT_HANDLERS_DIR/handlers/jira_create.sh")
    outputVariables:
      - name: issueKey
        value: issue
"#;

/// A stand-in for the team's Jira client: reads the step's JSON, prints what it would file, answers a key.
const JIRA: &str = r#"#!/bin/sh
set -eu
summary=$(printf '%s' "$PIPEWRIGHT_STEP_JSON" | sed -n 's/.*"Summary","value":"\([^"]*\)".*/\1/p')
token=$(printf '%s' "$PIPEWRIGHT_STEP_JSON" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
echo "filing a $PIPEWRIGHT_STEP_TYPE in OPS: $summary (token $token)" >&2
echo "OPS-42"
"#;

const PIPELINE: &str = r#"pipeline:
  name: Release Ticket
  identifier: release_ticket
  allowStageExecutions: true
  variables:
    - name: version
      type: String
      value: <+input>.default(3.1.0)
  stages:
    - stage:
        name: Change
        identifier: change
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: JiraCreate
                  name: Create Change
                  identifier: create
                  timeout: 1m
                  spec:
                    connectorRef: jira_cloud
                    projectKey: OPS
                    issueType: Task
                    fields:
                      - name: Summary
                        value: Release <+pipeline.variables.version>
                    token: <+secrets.getValue("jira_token")>
              - step:
                  type: ShellScript
                  name: Announce
                  identifier: announce
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo "change ticket <+execution.steps.create.output.outputVariables.issueKey>"
    - stage:
        name: Rollout
        identifier: rollout
        type: Deployment
        spec:
          deploymentType: Kubernetes
          service:
            serviceRef: api
          environment:
            environmentRef: prod
            infrastructureDefinitions:
              - identifier: prod_k8s
          execution:
            steps:
              - step:
                  type: K8sRollingDeploy
                  name: Rolling
                  identifier: rolling
                  timeout: 10m
                  spec:
                    skipDryRun: false
            rollbackSteps: []
"#;

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join(".harness");
    write(&h, "pipewright.yaml", SETTINGS);
    let j = write(&h, "handlers/jira_create.sh", JIRA);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&j, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(&h, "pipelines/release.yaml", PIPELINE);
    write(
        &h,
        "services/api.yaml",
        "service:\n  name: api\n  identifier: api\n  serviceDefinition:\n    type: Kubernetes\n    spec: {}\n",
    );
    write(&h, "environments/prod.yaml", "environment:\n  name: prod\n  identifier: prod\n  type: Production\n");
    write(
        &h,
        "infrastructures/prod_k8s.yaml",
        "infrastructureDefinition:\n  name: prod k8s\n  identifier: prod_k8s\n  environmentRef: prod\n  deploymentType: Kubernetes\n  type: KubernetesDirect\n  spec:\n    namespace: api\n",
    );
    write(dir.path(), "secrets.yaml", "jira_token: s3cr3t-jira-t0ken\n");
    dir
}

#[test]
fn a_handler_runs_a_harness_step_type_and_sets_its_outputs() {
    let dir = repo();
    let f = dir.path().join(".harness/pipelines/release.yaml");
    let state = dir.path().join("state");
    pw(&state)
        .arg("validate")
        .arg(dir.path().join(".harness"))
        .assert()
        .success()
        .stdout(predicate::str::contains("valid settings: 1 step handlers"));
    // The plan names only the type no handler runs, and how to map it.
    pw(&state).arg("plan").arg(&f).assert().success().stdout(
        predicate::str::contains("`rollout.rolling` is a `K8sRollingDeploy` step")
            .and(predicate::str::contains("stepHandlers"))
            .and(predicate::str::contains("JiraCreate").not()),
    );
    let out = pw(&state)
        .arg("run")
        .arg(&f)
        .args(["--stage", "change", "--secrets-file"])
        .arg(dir.path().join("secrets.yaml"))
        .args(["--output", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Success", "{v}");
    let create = &v["stages"][0]["steps"][0];
    assert_eq!(create["outputs"]["issueKey"], "OPS-42", "{v}");
    let id = v["execution_id"].as_str().unwrap();
    let logs = log_text(&state, id);
    assert!(logs.contains("filing a JiraCreate in OPS: Release 3.1.0"), "{logs}");
    assert!(logs.contains("change ticket OPS-42"), "{logs}");
    // The secret the spec resolves to reaches the handler, and is masked in its log.
    assert!(logs.contains("(token ***)") || logs.contains("(token ****"), "{logs}");
    assert!(!logs.contains("s3cr3t-jira-t0ken"), "{logs}");
}

#[test]
fn an_unmapped_type_fails_its_step_and_says_how_to_map_it() {
    let dir = repo();
    let f = dir.path().join(".harness/pipelines/release.yaml");
    let state = dir.path().join("state");
    let out = pw(&state)
        .arg("run")
        .arg(&f)
        .args(["--stage", "rollout", "--output", "json"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rollout = v["stages"].as_array().unwrap().iter().find(|s| s["identifier"] == "rollout").unwrap();
    let failure = rollout["steps"][0]["failure"].as_str().unwrap_or_default().to_string();
    assert!(failure.contains("pipewright does not run `K8sRollingDeploy` steps itself"), "{v}");
    assert!(failure.contains("stepHandlers: {K8sRollingDeploy: {script: …}}"), "{v}");
    // A settings file with a mistake is refused with its line.
    write(
        &dir.path().join(".harness"),
        "pipewright.yaml",
        "stepHandlers:\n  JiraCreate:\n    shell: Zsh\n    script: true\n",
    );
    pw(&state)
        .arg("run")
        .arg(&f)
        .args(["--stage", "change"])
        .assert()
        .code(predicate::ne(0))
        .stderr(predicate::str::contains("pipewright.yaml:3:12"));
}
