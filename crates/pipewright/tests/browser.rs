//! End-to-end tests of the web UI in a real browser: a real `pipewright serve` on a loopback port with a
//! temporary state directory, driven by Debian's Chromium (headless) through `playwright-core`
//! (`tests/browser/e2e.mjs`). This file sets up the data over the API — a project, the pipelines, a viewer —
//! then runs the browser script and requires it to pass. Screenshots land in `target/browser-screenshots/`.
//!
//! Chromium and Node.js are needed. `.ci/run` installs both; elsewhere, when Chromium is missing the test
//! says so and passes only outside CI (with `CI` set it fails). npm packages are installed on first use.

mod common;

use common::{ADMIN_PASSWORD, Server};
use reqwest::Method;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn step(id: &str, script: &str) -> String {
    format!(
        "              - step:\n                  type: ShellScript\n                  name: {id}\n                  identifier: {id}\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: {script}\n"
    )
}

fn stage(id: &str, name: &str, steps: &str) -> String {
    format!(
        "    - stage:\n        name: {name}\n        identifier: {id}\n        type: Custom\n        spec:\n          execution:\n            steps:\n{steps}"
    )
}

fn pipeline(id: &str, name: &str, stages: &str) -> serde_json::Value {
    serde_json::Value::String(format!(
        "pipeline:\n  name: {name}\n  identifier: {id}\n  projectIdentifier: checkout\n  orgIdentifier: default\n  allowStageExecutions: true\n  stages:\n{stages}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "Chromium is required in CI (apt-get install chromium)");
        eprintln!("SKIPPED: no Chromium here (apt-get install chromium); the browser tests did not run");
        return;
    };
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        let st = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .expect("npm is required for the browser tests");
        assert!(st.success(), "npm ci failed in {}", dir.display());
    }
    let tmp = tempfile::tempdir().unwrap();
    // Gate files the test creates to release or fix steps: readable by the steps (which run as another user,
    // in a sandbox that is given this directory to read).
    let gates = tmp.path().join("gates");
    std::fs::create_dir(&gates).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&gates, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = tmp.path().join("state");
    let s = Server::start(&state, &["--step-read-path", gates.to_str().unwrap()]).await;

    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "checkout", "name": "Checkout"})))
        .await;
    let p = "/api/v1/orgs/default/projects/checkout/pipelines";
    // The release pipeline of the examples, with selective execution off (the test turns it on in the UI).
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/build-test-deploy.yaml"))
            .unwrap()
            .replace("allowStageExecutions: true", "allowStageExecutions: false");
    s.ok(Method::POST, p, Some(serde_json::Value::String(example))).await;
    let canary =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/canary-release.yaml"))
            .unwrap();
    s.ok(Method::POST, p, Some(serde_json::Value::String(canary))).await;
    // Its service, environments and infrastructure definitions, and an input set.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for (dir, kind) in [
        (".harness/services", "services"),
        (".harness/environments", "environments"),
        (".harness/infrastructures", "infrastructures"),
        ("input-sets", "input-sets"),
    ] {
        for f in std::fs::read_dir(examples.join(dir)).unwrap().flatten() {
            let yaml = std::fs::read_to_string(f.path()).unwrap();
            s.ok(
                Method::POST,
                &format!("/api/v1/orgs/default/projects/checkout/{kind}"),
                Some(serde_json::Value::String(yaml)),
            )
            .await;
        }
    }
    let release = gates.join("release");
    s.ok(
        Method::POST,
        p,
        Some(pipeline(
            "live_logs",
            "Live Logs",
            &stage(
                "watch",
                "Watch",
                &step(
                    "tail",
                    &format!(
                        "echo first line; while [ ! -f {} ]; do sleep 0.05; done; echo released",
                        release.display()
                    ),
                ),
            ),
        )),
    )
    .await;
    let fixed = gates.join("fixed");
    s.ok(
        Method::POST,
        p,
        Some(pipeline(
            "flaky_deploy",
            "Flaky Deploy",
            &(stage(
                "prepare",
                "Prepare",
                &step("make", "bundle=bundle-$RANDOM.tgz; echo prepared $bundle").replace(
                    "                    source:",
                    "                    outputVariables:\n                      - name: bundle\n                        type: String\n                        value: bundle\n                    source:",
                ),
            ) + &stage(
                "deploy",
                "Deploy",
                &step(
                    "push",
                    &format!(
                        "test -f {} && echo deployed <+pipeline.stages.prepare.spec.execution.steps.make.output.outputVariables.bundle>",
                        fixed.display()
                    ),
                ),
            )),
        )),
    )
    .await;
    s.ok(
        Method::POST,
        "/api/v1/user-groups",
        Some(json!({"identifier": "release_managers", "name": "Release managers", "users": ["admin"], "org": "default", "project": "checkout"})),
    )
    .await;
    let approval = "    - stage:\n        name: Sign-off\n        identifier: sign_off\n        type: Approval\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: HarnessApproval\n                  name: Release sign-off\n                  identifier: release_sign_off\n                  timeout: 10m\n                  spec:\n                    approvalMessage: Ship it?\n                    approvers:\n                      userGroups: [release_managers]\n                      minimumCount: 1\n                      disallowPipelineExecutor: false\n";
    s.ok(
        Method::POST,
        p,
        Some(pipeline(
            "gated_release",
            "Gated Release",
            &(approval.to_string() + &stage("ship", "Ship", &step("ship", "echo shipped"))),
        )),
    )
    .await;
    // A failing step whose failure strategy asks a person (ManualIntervention).
    let mi = "                  failureStrategies:\n                    - onFailure:\n                        errors: [AllErrors]\n                        action:\n                          type: ManualIntervention\n                          spec:\n                            timeout: 10m\n                            onTimeout:\n                              action:\n                                type: MarkAsFailure\n";
    s.ok(
        Method::POST,
        p,
        Some(pipeline(
            "smoke_check",
            "Smoke Check",
            &stage("probe", "Probe", &(step("curl", "echo probing; exit 7") + mi)),
        )),
    )
    .await;
    s.ok(Method::POST, "/api/v1/users", Some(json!({"username": "vera", "password": "viewer-password-1"}))).await;
    s.ok(
        Method::POST,
        "/api/v1/role-bindings",
        Some(json!({"principal": {"kind": "user", "id": "vera"}, "role": "_project_viewer",
            "resource_group": "_all_project_level_resources", "org": "default", "project": "checkout"})),
    )
    .await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(dir.join("e2e.mjs"))
        .env("BASE_URL", &s.url)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("VIEWER", "vera")
        .env("VIEWER_PASSWORD", "viewer-password-1")
        .env("GATES", &gates)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &shots)
        .output()
        .expect("node is required for the browser tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "the browser tests failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all browser checks passed"), "{stdout}");
}
