//! Real Harness pipelines as teams write them: one regression test per bug the corpus of public Harness
//! files found (issue 12), each on a pipeline in the shape real repositories use.

mod common;
use common::{log_text, pw, write};
use predicates::prelude::*;

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

/// Built-ins `validate` accepts resolve at run time: the trigger type of a manual run, the description and
/// tags, the current status, the step's and stage's own names, `INFRA_KEY_SHORT_ID` (the default release name
/// in the infrastructure definitions Harness generates), `codebase.*` from the git checkout the pipeline sits
/// in, and `trigger.*` as null on a manual run.
#[test]
fn builtins_that_validate_also_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let harness = repo.join(".harness");
    for d in ["services", "environments", "infrastructures"] {
        std::fs::create_dir_all(harness.join(d)).unwrap();
    }
    write(
        &harness.join("services"),
        "api.yaml",
        "service:\n  name: api\n  identifier: api\n  serviceDefinition:\n    type: Kubernetes\n    spec: {}\n",
    );
    write(
        &harness.join("environments"),
        "staging.yaml",
        "environment:\n  name: staging\n  identifier: staging\n  type: PreProduction\n",
    );
    write(
        &harness.join("infrastructures"),
        "staging_k8s.yaml",
        "infrastructureDefinition:\n  name: staging k8s\n  identifier: staging_k8s\n  environmentRef: staging\n  deploymentType: Kubernetes\n  type: KubernetesDirect\n  spec:\n    connectorRef: k8s\n    namespace: api-staging\n    releaseName: release-<+INFRA_KEY_SHORT_ID>\n",
    );
    let f = write(
        &harness,
        "deploy.yaml",
        r#"pipeline:
  name: Deploy API
  identifier: deploy_api
  description: Ships the API to staging
  tags:
    team: payments
  stages:
    - stage:
        name: Deploy Staging
        identifier: deploy_staging
        type: Deployment
        spec:
          deploymentType: Kubernetes
          service:
            serviceRef: api
          environment:
            environmentRef: staging
            infrastructureDefinitions:
              - identifier: staging_k8s
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Announce
                  identifier: announce
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: |
                          echo "trigger=<+pipeline.triggerType> url=<+pipeline.executionUrl> desc=<+pipeline.description> team=<+pipeline.tags.team> now=<+pipeline.currentStatus>"
                          echo "step=<+step.name>/<+step.identifier> stage=<+stage.name>/<+stage.identifier> release=<+infra.releaseName> short=<+INFRA_KEY_SHORT_ID>"
                          echo "branch=<+codebase.branch> sha=<+codebase.shortCommitSha> pr=<+trigger.prNumber> payload=<+eventPayload.ref>"
"#,
    );
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Dev")
            .env("GIT_AUTHOR_EMAIL", "dev@example.test")
            .env("GIT_COMMITTER_NAME", "Dev")
            .env("GIT_COMMITTER_EMAIL", "dev@example.test")
            .output()
            .unwrap();
        assert!(ok.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&ok.stderr));
        String::from_utf8_lossy(&ok.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "release-1"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "first"]);
    let sha = git(&["rev-parse", "HEAD"]);
    pw(&dir.path().join("state")).arg("validate").arg(&f).assert().success();
    let out = pw(&dir.path().join("state"))
        .args(["run", "--step-isolation", "none"])
        .arg(&f)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("trigger=MANUAL url=null desc=Ships the API to staging team=payments now=RUNNING"), "{text}");
    assert!(text.contains("step=Announce/announce stage=Deploy Staging/deploy_staging release=release-"), "{text}");
    let short = text.split("short=").nth(1).unwrap().lines().next().unwrap().trim().to_string();
    assert_eq!(short.len(), 6, "{text}");
    assert!(text.contains(&format!("release=release-{short} ")), "{text}");
    assert!(text.contains(&format!("branch=release-1 sha={} pr=null payload=null", &sha[..7])), "{text}");
}

/// A looping stage or step group whose `when` reads its own iteration (`<+matrix.region>`,
/// `<+strategy.iteration>`): evaluated once per iteration, as Harness does — only the iterations it admits run.
#[test]
fn a_looping_nodes_when_is_evaluated_per_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "regions.yaml",
        r#"pipeline:
  name: Regional Rollout
  identifier: regional_rollout
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Custom
        strategy:
          matrix:
            region: [eu-west-1, us-east-1, ap-south-1]
        when:
          pipelineStatus: Success
          condition: <+matrix.region> != "ap-south-1"
        spec:
          execution:
            steps:
              - stepGroup:
                  name: Canary
                  identifier: canary
                  strategy:
                    repeat:
                      items: [5, 25, 100]
                  when:
                    stageStatus: Success
                    condition: <+strategy.iteration> < 2
                  steps:
                    - step:
                        type: ShellScript
                        name: Shift
                        identifier: shift
                        spec:
                          shell: Sh
                          source:
                            type: Inline
                            spec:
                              script: echo "<+matrix.region> at <+repeat.item>%"
"#,
    );
    pw(dir.path()).arg("validate").arg(&f).assert().success();
    let out =
        pw(dir.path()).args(["run", "--step-isolation", "none"]).arg(&f).assert().success().get_output().stdout.clone();
    let text = String::from_utf8_lossy(&out);
    for shown in ["eu-west-1 at 5%", "eu-west-1 at 25%", "us-east-1 at 5%", "us-east-1 at 25%"] {
        assert!(text.contains(shown), "{shown}: {text}");
    }
    assert!(!text.contains("at 100%") && !text.contains("ap-south-1 at"), "{text}");
    assert!(text.contains("○ deploy_2 Skipped: condition `<+matrix.region> != \"ap-south-1\"` is false"), "{text}");
}

/// A matrix with a non-list key (here a misplaced `parallel: 2`, as found in a public repository): Harness
/// ignores it; pipewright warns, ignores it, and runs the real axes.
#[test]
fn a_non_list_matrix_key_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "tests.yaml",
        r#"pipeline:
  name: Tests
  identifier: tests
  stages:
    - stage:
        name: Test
        identifier: test
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Unit
                  identifier: unit
                  strategy:
                    matrix:
                      jdk: ["17", "21"]
                      parallel: 2
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo "testing on jdk <+matrix.jdk>"
"#,
    );
    pw(dir.path())
        .arg("validate")
        .arg(&f)
        .assert()
        .success()
        .stderr(predicate::str::contains("`parallel` in the matrix of step `unit` is not a list of values"));
    pw(dir.path())
        .args(["run", "--step-isolation", "none"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("testing on jdk 17"))
        .stdout(predicate::str::contains("testing on jdk 21"));
}

/// A notification stage that runs when the build failed, planned on its own: the stage it reads the status of
/// does not run, so the plan says it will see SKIPPED.
#[test]
fn plan_says_when_a_condition_reads_a_stage_that_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "notify.yaml",
        r#"pipeline:
  name: Build And Notify
  identifier: build_and_notify
  allowStageExecutions: true
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
                        script: make
    - stage:
        name: Notify
        identifier: notify
        type: Custom
        when:
          pipelineStatus: All
          condition: <+pipeline.stages.build.status> == "FAILED"
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Page
                  identifier: page
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo the build failed
"#,
    );
    let out = pw(dir.path()).arg("plan").arg(&f).args(["--stage", "notify"]).assert().success().get_output().clone();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("stage `notify` reads the status of stage `build`, which does not run: it will see SKIPPED"),
        "{text}"
    );
}

/// A `<+…>` nested inside a reference path, as Harness allows: a looping step group reads the status of its
/// own iteration's step through `g<+stepGroup.identifierPostFix>`; the inner expression is resolved and spliced
/// in. `validate` accepts it and still checks the path around it.
#[test]
fn a_nested_expression_inside_a_reference_path_is_spliced_in() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"pipeline:
  name: Shards
  identifier: shards
  stages:
    - stage:
        name: Test
        identifier: s1
        type: Custom
        spec:
          execution:
            steps:
              - stepGroup:
                  name: shard
                  identifier: g
                  strategy:
                    repeat:
                      items: [unit, integration]
                  steps:
                    - step:
                        type: ShellScript
                        name: run tests
                        identifier: t
                        spec:
                          shell: Sh
                          source:
                            type: Inline
                            spec:
                              script: echo "running <+repeat.item> tests"
                    - step:
                        type: ShellScript
                        name: report
                        identifier: report
                        spec:
                          shell: Sh
                          source:
                            type: Inline
                            spec:
                              script: echo "shard<+strategy.identifierPostFix> tests <+pipeline.stages.s1.spec.execution.steps.g<+stepGroup.identifierPostFix>.steps.t.status>"
"#;
    let f = write(dir.path(), "shards.yaml", yaml);
    pw(dir.path()).arg("validate").arg(&f).assert().success();
    pw(dir.path())
        .args(["run", "--step-isolation", "none"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("shard_0 tests SUCCEEDED"))
        .stdout(predicate::str::contains("shard_1 tests SUCCEEDED"));
    // The path around the spliced expression is still checked.
    let typo = write(dir.path(), "typo.yaml", &yaml.replace("steps.g<+stepGroup", "steps.gg<+stepGroup"));
    pw(dir.path()).arg("validate").arg(&typo).assert().code(1).stderr(predicate::str::contains("gg"));
}

/// A whole list given as a runtime input — the infrastructure definitions of a deployment stage, as templates
/// and shared pipelines write them — loads: `validate` accepts it and `plan` lists it as an input to give.
#[test]
fn a_whole_list_as_a_runtime_input_loads() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "shared.yaml",
        r#"pipeline:
  name: Shared Deploy
  identifier: shared_deploy
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        spec:
          deploymentType: Kubernetes
          service:
            serviceRef: <+input>
          environment:
            environmentRef: <+input>
            infrastructureDefinitions: <+input>
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Rollout
                  identifier: rollout
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo rolling out
"#,
    );
    pw(dir.path()).arg("validate").arg(&f).assert().success();
    let out = pw(dir.path()).arg("plan").arg(&f).args(["--output", "json"]).assert().success().get_output().clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths: Vec<&str> =
        v["required_inputs"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"pipeline.stages.deploy.spec.environment.infrastructureDefinitions"), "{paths:?}");
}

/// Input sets that give a map or a list for a field that is `<+input>` as a whole — the standard CI codebase
/// shape (`build: <+input>` given `{type: branch, spec: {branch: main}}`) and the infrastructure definitions of
/// a shared deployment pipeline — supply the whole structure, and the run uses it.
#[test]
fn an_input_set_gives_maps_and_lists_for_whole_fields() {
    let dir = tempfile::tempdir().unwrap();
    let harness = dir.path().join(".harness");
    for d in ["services", "environments", "infrastructures", "input_sets"] {
        std::fs::create_dir_all(harness.join(d)).unwrap();
    }
    write(
        &harness.join("services"),
        "web.yaml",
        "service:\n  name: web\n  identifier: web\n  serviceDefinition:\n    type: Kubernetes\n    spec: {}\n",
    );
    write(
        &harness.join("environments"),
        "qa.yaml",
        "environment:\n  name: qa\n  identifier: qa\n  type: PreProduction\n",
    );
    write(
        &harness.join("infrastructures"),
        "qa_k8s.yaml",
        "infrastructureDefinition:\n  name: qa k8s\n  identifier: qa_k8s\n  environmentRef: qa\n  deploymentType: Kubernetes\n  type: KubernetesDirect\n  spec:\n    connectorRef: k8s\n    namespace: web-qa\n",
    );
    let f = write(
        &harness,
        "ship.yaml",
        r#"pipeline:
  name: Ship Web
  identifier: ship_web
  properties:
    ci:
      codebase:
        connectorRef: github
        repoName: web
        build: <+input>
  stages:
    - stage:
        name: Deploy
        identifier: deploy
        type: Deployment
        spec:
          deploymentType: Kubernetes
          service:
            serviceRef: <+input>
          environment:
            environmentRef: <+input>
            infrastructureDefinitions: <+input>
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Rollout
                  identifier: rollout
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo "<+service.name> from <+pipeline.properties.ci.codebase.build.spec.branch> to <+env.name> in <+infra.namespace>"
"#,
    );
    let set = write(
        &harness.join("input_sets"),
        "qa.yaml",
        r#"inputSet:
  name: QA
  identifier: qa
  pipeline:
    identifier: ship_web
    properties:
      ci:
        codebase:
          build:
            type: branch
            spec:
              branch: main
    stages:
      - stage:
          identifier: deploy
          type: Deployment
          spec:
            service:
              serviceRef: web
            environment:
              environmentRef: qa
              infrastructureDefinitions:
                - identifier: qa_k8s
"#,
    );
    let state = dir.path().join("state");
    pw(&state).arg("validate").arg(&f).arg(&set).assert().success();
    pw(&state)
        .args(["run", "--step-isolation", "none", "--inputs-file"])
        .arg(&set)
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("web from main to qa in web-qa"));
    let out = pw(&state).args(["history", "--output", "json"]).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_string();
    let out = pw(&state).args(["show", &id, "--output", "json"]).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["inputs"]["pipeline.stages.deploy.spec.environment.infrastructureDefinitions"]["value"],
        serde_json::json!([{"identifier": "qa_k8s"}]),
        "{v}"
    );
    // A re-run gives the same structures again.
    pw(&state)
        .args(["rerun", &id, "--step-isolation", "none"])
        .assert()
        .success()
        .stdout(predicate::str::contains("web from main to qa in web-qa"));
}

/// Keys Harness's editor writes on its own (`onDelegate`, `allowSimultaneousDeployments`, `gitOpsEnabled`) are
/// accepted without warnings; a truly unknown key still warns, naming the nearest known one.
#[test]
fn keys_harness_writes_are_accepted_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"pipeline:
  name: Quiet
  identifier: quiet
  stages:
    - stage:
        name: Ops
        identifier: ops
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Check
                  identifier: check
                  spec:
                    shell: Bash
                    onDelegate: true
                    source:
                      type: Inline
                      spec:
                        script: echo ok
"#;
    let f = write(dir.path(), "quiet.yaml", yaml);
    pw(dir.path()).arg("validate").arg(&f).assert().success().stderr(predicate::str::contains("warning").not());
    let typo = write(dir.path(), "typo.yaml", &yaml.replace("onDelegate: true", "sheel: Bash"));
    pw(dir.path())
        .arg("validate")
        .arg(&typo)
        .assert()
        .success()
        .stderr(predicate::str::contains("unknown key `sheel`"))
        .stderr(predicate::str::contains("did you mean `shell`?"));
}

/// A secret the stages that run read but nobody gave is reported before anything runs, with the two ways to
/// give it; a selective run of a stage that reads no secret runs.
#[test]
fn a_missing_secret_is_reported_before_the_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "publish.yaml",
        r#"pipeline:
  name: Publish
  identifier: publish
  allowStageExecutions: true
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
                  name: Pack
                  identifier: pack
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo packed > pack.log
    - stage:
        name: Publish
        identifier: publish
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Upload
                  identifier: upload
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo uploading with <+secrets.getValue("registry-token")>
"#,
    );
    let state = dir.path().join("state");
    pw(&state)
        .env_remove("PIPEWRIGHT_SECRET_REGISTRY_TOKEN")
        .args(["run", "--step-isolation", "none"])
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("reads secrets that are not given; nothing was run"))
        .stderr(predicate::str::contains(
            "--secrets-file FILE (`registry-token: VALUE`), or as PIPEWRIGHT_SECRET_REGISTRY_TOKEN",
        ));
    // Nothing was recorded: no execution started.
    let out = pw(&state).args(["history", "--output", "json"]).assert().success().get_output().stdout.clone();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap(), serde_json::json!([]));
    pw(&state)
        .env_remove("PIPEWRIGHT_SECRET_REGISTRY_TOKEN")
        .args(["run", "--step-isolation", "none", "--stage", "build"])
        .arg(&f)
        .assert()
        .success();
    pw(&state)
        .env("PIPEWRIGHT_SECRET_REGISTRY_TOKEN", "s3cret-token")
        .args(["run", "--step-isolation", "none"])
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains("uploading with **************"));
}

/// A real CD pipeline's shape: a Jira ticket, a Kubernetes rolling deploy and a Slack-style notification among
/// steps pipewright runs. Every Harness step type loads (its spec kept as data); `validate` and `plan` say
/// which steps pipewright does not run; the run fails at such a step unless a failure strategy lets it go on;
/// the resolved pipeline (what a taken-over run reads back) keeps the type and spec.
#[test]
fn every_harness_step_type_loads_and_says_what_pipewright_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"pipeline:
  name: K8s Release
  identifier: k8s_release
  stages:
    - stage:
        name: Release
        identifier: release
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: JiraCreate
                  name: Open Ticket
                  identifier: open_ticket
                  timeout: 5m
                  spec:
                    connectorRef: jira
                    projectKey: REL
                    issueType: Task
                    fields:
                      - name: Summary
                        value: Release <+pipeline.sequenceId>
                  failureStrategies:
                    - onFailure:
                        errors: [AllErrors]
                        action:
                          type: Ignore
              - step:
                  type: ShellScript
                  name: Render
                  identifier: render
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo rendered manifests
              - step:
                  type: K8sRollingDeploy
                  name: Rollout
                  identifier: rollout
                  timeout: 10m
                  spec:
                    skipDryRun: false
                    pruningEnabled: false
"#;
    let f = write(dir.path(), "k8s.yaml", yaml);
    pw(dir.path()).arg("validate").arg(&f).assert().success().stderr(predicate::str::contains(
        "step `rollout` is a `K8sRollingDeploy` step, which pipewright does not run itself",
    ));
    let out = pw(dir.path()).arg("plan").arg(&f).assert().success().get_output().clone();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("step `release.open_ticket` is a `JiraCreate` step"), "{text}");
    assert!(text.contains("step `release.rollout` is a `K8sRollingDeploy` step"), "{text}");
    let state = dir.path().join("state");
    pw(&state)
        .args(["run", "--step-isolation", "none"])
        .arg(&f)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "~ release.open_ticket IgnoreFailed: pipewright does not run `JiraCreate` steps itself",
        ))
        .stdout(predicate::str::contains("rendered manifests"))
        .stdout(predicate::str::contains(
            "✗ release.rollout Failed: pipewright does not run `K8sRollingDeploy` steps itself",
        ));
    // An unknown type is still an error, with the nearest Harness name.
    let typo = write(dir.path(), "typo.yaml", &yaml.replace("type: K8sRollingDeploy", "type: K8sRolingDeploy"));
    pw(dir.path())
        .arg("validate")
        .arg(&typo)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unsupported step type `K8sRolingDeploy`; did you mean `K8sRollingDeploy`?"));
}

/// An expression that does not parse is reported at its line and column in the file, with a help line, and
/// never as an offset.
#[test]
fn expression_errors_say_where_and_how_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.yaml",
        r#"pipeline:
  name: Bad
  identifier: bad
  stages:
    - stage:
        name: A
        identifier: a
        type: Custom
        when:
          pipelineStatus: Success
          condition: <+pipeline.variables.x> ==
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: S
                  identifier: s
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo <+pipeline.name
"#,
    );
    let out = pw(dir.path()).arg("validate").arg(&f).assert().code(1).get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.yaml:11:"), "{err}");
    assert!(err.contains("bad.yaml:24:"), "{err}");
    assert_eq!(err.matches("= help:").count(), 2, "{err}");
    assert!(!err.contains("offset"), "{err}");
}

/// The other Harness stage types load: a security-testing stage runs like a build stage, an IaC stage's
/// steps run as in a Custom stage (its workspace kept, said once), and `<+stage.type>` is Harness's name.
#[test]
fn security_and_iac_stages_load_and_run_their_steps() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "platform.yaml",
        r#"pipeline:
  name: Platform
  identifier: platform
  stages:
    - stage:
        name: Scan
        identifier: scan
        type: SecurityTests
        spec:
          cloneCodebase: false
          platform:
            os: Linux
            arch: Amd64
          runtime:
            type: Cloud
            spec: {}
          execution:
            steps:
              - step:
                  type: Run
                  name: Audit
                  identifier: audit
                  spec:
                    shell: Sh
                    command: echo "scanning in a <+stage.type> stage"
    - stage:
        name: Provision
        identifier: provision
        type: IACM
        spec:
          workspace: network
          platform:
            os: Linux
            arch: Amd64
          runtime:
            type: Cloud
            spec: {}
          execution:
            steps:
              - step:
                  type: IACMTerraformPlugin
                  name: Plan
                  identifier: plan
                  timeout: 10m
                  spec:
                    command: plan
                  failureStrategies:
                    - onFailure:
                        errors:
                          - AllErrors
                        action:
                          type: Ignore
              - step:
                  type: Run
                  name: Report
                  identifier: report
                  spec:
                    shell: Sh
                    command: echo "provisioned in a <+stage.type> stage"
"#,
    );
    pw(dir.path()).arg("validate").arg(&f).assert().success().stderr(predicate::str::contains(
        "stage `provision` is a `IACM` stage: pipewright runs its steps as in a Custom stage",
    ));
    let out = pw(dir.path()).arg("run").arg(&f).args(["--output", "json"]).assert().success().get_output().clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Success", "{v}");
    let id = v["execution_id"].as_str().unwrap();
    let logs = log_text(dir.path(), id);
    assert!(logs.contains("scanning in a SecurityTests stage"), "{logs}");
    assert!(logs.contains("provisioned in a IACM stage"), "{logs}");
}

/// A `Background` step starts a service that the following steps use, and that ends with its stage.
#[test]
fn a_background_step_lives_until_its_stage_ends() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "integration.yaml",
        r#"pipeline:
  name: Integration
  identifier: integration
  stages:
    - stage:
        name: Test
        identifier: test
        type: CI
        spec:
          cloneCodebase: false
          execution:
            steps:
              - step:
                  type: Background
                  name: Fake DB
                  identifier: db
                  spec:
                    shell: Sh
                    envVariables:
                      DB_NAME: orders
                    command: |
                      echo $$ > db.pid
                      echo "db $DB_NAME listening"
                      while true; do date +%s > db.alive; sleep 0.1; done
              - step:
                  type: Run
                  name: Tests
                  identifier: tests
                  spec:
                    shell: Sh
                    command: |
                      i=0
                      while [ ! -f db.alive ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
                      test -f db.alive || exit 1
                      echo "tests ran against the db"
    - stage:
        name: After
        identifier: after
        type: Custom
        spec:
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Check
                  identifier: check
                  spec:
                    shell: Sh
                    source:
                      type: Inline
                      spec:
                        script: echo "after the stage"
"#,
    );
    pw(dir.path()).arg("validate").arg(&f).assert().success().stderr(predicate::str::contains("Background").not());
    let out = pw(dir.path()).arg("run").arg(&f).args(["--output", "json"]).assert().success().get_output().clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Success", "{v}");
    let id = v["execution_id"].as_str().unwrap();
    let logs = log_text(dir.path(), id);
    for want in ["db orders listening", "tests ran against the db", "stopping 1 background step(s)", "after the stage"]
    {
        assert!(logs.contains(want), "{want} not in\n{logs}");
    }
    // The service is gone: no process runs a script of this execution (each step has its own PID namespace,
    // so this is looked at from outside).
    let left = common::processes_with(&format!(".pw/{id}/"));
    assert!(left.is_empty(), "{left:?}");
}
