//! Deployment stages with several services and environments, as teams write them: `services.values`,
//! `environments.values`, an `environmentGroup`, `deployToAll`, several infrastructure definitions, in parallel
//! or in sequence, and the list of services given as a runtime input by an input set.

mod common;
use common::{log_text, pw, write};
use predicates::prelude::*;

const PIPELINE: &str = r#"pipeline:
  name: Shop Release
  identifier: shop_release
  allowStageExecutions: true
  stages:
    - stage:
        name: Deploy Dev
        identifier: deploy_dev
        type: Deployment
        spec:
          deploymentType: Kubernetes
          services:
            values:
              - serviceRef: checkout
              - serviceRef: payments
            metadata:
              parallel: true
          environment:
            environmentRef: dev
            deployToAll: true
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Rollout
                  identifier: rollout
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo "deploying <+service.identifier> to <+env.identifier>/<+infra.identifier> in <+infra.namespace>"
            rollbackSteps: []
    - stage:
        name: Deploy QA
        identifier: deploy_qa
        type: Deployment
        spec:
          deploymentType: Kubernetes
          services:
            values: <+input>
          environment:
            environmentRef: qa
            infrastructureDefinitions:
              - identifier: qa_k8s
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Rollout
                  identifier: rollout
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo "qa gets <+service.identifier>"
            rollbackSteps: []
    - stage:
        name: Deploy Prod
        identifier: deploy_prod
        type: Deployment
        spec:
          deploymentType: Kubernetes
          service:
            serviceRef: checkout
          environmentGroup:
            envGroupRef: prod_regions
            environments:
              - environmentRef: prod
                infrastructureDefinitions:
                  - identifier: prod_eu
                  - identifier: prod_us
            metadata:
              parallel: false
          execution:
            steps:
              - step:
                  type: ShellScript
                  name: Rollout
                  identifier: rollout
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: echo "prod region <+infra.identifier>"
            rollbackSteps: []
"#;

const QA_SERVICES: &str = r#"inputSet:
  name: qa services
  identifier: qa_services
  pipeline:
    identifier: shop_release
    stages:
      - stage:
          identifier: deploy_qa
          type: Deployment
          spec:
            services:
              values:
                - serviceRef: payments
"#;

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join(".harness");
    for s in ["checkout", "payments"] {
        write(
            &h,
            &format!("services/{s}.yaml"),
            &format!(
                "service:\n  name: {s}\n  identifier: {s}\n  serviceDefinition:\n    type: Kubernetes\n    spec: {{}}\n"
            ),
        );
    }
    for (e, t) in [("dev", "PreProduction"), ("qa", "PreProduction"), ("prod", "Production")] {
        write(
            &h,
            &format!("environments/{e}.yaml"),
            &format!("environment:\n  name: {e}\n  identifier: {e}\n  type: {t}\n"),
        );
    }
    for (e, i) in [("dev", "dev_eu"), ("dev", "dev_us"), ("qa", "qa_k8s"), ("prod", "prod_eu"), ("prod", "prod_us")] {
        write(
            &h,
            &format!("infrastructures/{i}.yaml"),
            &format!(
                "infrastructureDefinition:\n  name: {i}\n  identifier: {i}\n  environmentRef: {e}\n  deploymentType: Kubernetes\n  type: KubernetesDirect\n  spec:\n    namespace: shop-{i}\n"
            ),
        );
    }
    write(&h, "pipelines/release.yaml", PIPELINE);
    write(&h, "input_sets/qa_services.yaml", QA_SERVICES);
    dir
}

/// Every service to every infrastructure of every environment, each an iteration named for what it deploys;
/// the services of QA come from an input set.
#[test]
fn each_service_is_deployed_to_each_infrastructure() {
    let dir = repo();
    let h = dir.path().join(".harness");
    let state = dir.path().join("state");
    let out = pw(&state)
        .arg("run")
        .arg(h.join("pipelines/release.yaml"))
        .arg("--inputs-file")
        .arg(h.join("input_sets/qa_services.yaml"))
        .args(["--output", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Success", "{v}");
    let combos = |stage: &str| -> Vec<String> {
        let st = v["stages"].as_array().unwrap().iter().find(|s| s["identifier"] == stage).unwrap();
        st["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == "stage")
            .map(|n| {
                let o = &n["outputs"];
                format!(
                    "{} → {} / {}",
                    o["service"]["identifier"].as_str().unwrap(),
                    o["env"]["identifier"].as_str().unwrap(),
                    o["infra"]["identifier"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        combos("deploy_dev"),
        ["checkout → dev / dev_eu", "checkout → dev / dev_us", "payments → dev / dev_eu", "payments → dev / dev_us"]
    );
    assert_eq!(combos("deploy_qa"), ["payments → qa / qa_k8s"]);
    assert_eq!(combos("deploy_prod"), ["checkout → prod / prod_eu", "checkout → prod / prod_us"]);
    let id = v["execution_id"].as_str().unwrap();
    let logs = log_text(&state, id);
    for want in [
        "deploying payments to dev/dev_us in shop-dev_us",
        "deploying checkout to dev/dev_eu in shop-dev_eu",
        "qa gets payments",
        "prod region prod_us",
    ] {
        assert!(logs.contains(want), "{want} not in\n{logs}");
    }
    // In sequence (`parallel: false`): prod_us starts only once prod_eu has ended.
    let out = pw(&state)
        .arg("run")
        .arg(h.join("pipelines/release.yaml"))
        .arg("--inputs-file")
        .arg(h.join("input_sets/qa_services.yaml"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let first_done = text.find("✓ deploy_prod_0 ").unwrap();
    let second_starts = text.find("▶ deploy_prod_1").unwrap();
    assert!(first_done < second_starts, "{text}");
}

/// The list of services is a runtime input: `plan` lists it, a run without it is refused; a stage cannot
/// propagate from a stage that deploys several services.
#[test]
fn lists_as_runtime_inputs_and_propagation_are_checked() {
    let dir = repo();
    let h = dir.path().join(".harness");
    let f = h.join("pipelines/release.yaml");
    pw(dir.path())
        .arg("plan")
        .arg(&f)
        .assert()
        .success()
        .stderr(predicate::str::contains("pipeline.stages.deploy_qa.spec.services.values"));
    pw(dir.path())
        .arg("run")
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pipeline.stages.deploy_qa.spec.services.values"));
    let bad = PIPELINE.replace(
        "          service:\n            serviceRef: checkout\n",
        "          service:\n            useFromStage:\n              stage: deploy_dev\n",
    );
    let b = write(&h, "pipelines/bad.yaml", &bad);
    pw(dir.path())
        .arg("validate")
        .arg(&b)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("stage `deploy_dev` deploys several services or environments"));
}

/// `services: {useFromStage}` deploys an earlier stage's services again, to this stage's environment.
#[test]
fn a_stage_deploys_the_services_of_an_earlier_one() {
    let dir = repo();
    let h = dir.path().join(".harness");
    let stage = |id: &str, services: &str, env: &str, infra: &str| {
        format!(
            "    - stage:\n        name: {id}\n        identifier: {id}\n        type: Deployment\n        spec:\n          deploymentType: Kubernetes\n          services:\n{services}          environment:\n            environmentRef: {env}\n            infrastructureDefinitions:\n              - identifier: {infra}\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: Rollout\n                  identifier: rollout\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo \"<+service.identifier> to <+env.identifier>\"\n            rollbackSteps: []\n"
        )
    };
    let yaml = format!(
        "pipeline:\n  name: Promote\n  identifier: promote\n  allowStageExecutions: true\n  stages:\n{}{}",
        stage(
            "dev",
            "            values:\n              - serviceRef: checkout\n              - serviceRef: payments\n",
            "dev",
            "dev_eu"
        ),
        stage("qa", "            useFromStage:\n              stage: dev\n", "qa", "qa_k8s"),
    );
    let f = write(&h, "pipelines/promote.yaml", &yaml);
    let out = pw(dir.path()).arg("run").arg(&f).args(["--output", "json"]).assert().success().get_output().clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let qa = v["stages"].as_array().unwrap().iter().find(|s| s["identifier"] == "qa").unwrap();
    let deployed: Vec<&str> = qa["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["outputs"]["service"]["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(deployed, ["checkout", "payments"], "{v}");
    // Selected alone, qa needs dev: the plan says it propagates dev's services.
    pw(dir.path())
        .arg("plan")
        .arg(&f)
        .args(["--stage", "qa", "--output", "json"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("pipeline.stages.dev.service"));
}
