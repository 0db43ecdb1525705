//! The built-in `GitClone` step and a CI stage's `cloneCodebase`, on real git repositories: the codebase is
//! fetched from the local checkout the pipeline sits in (at the branch an input set asks for), another
//! repository by path at a tag, and a connector pipewright cannot reach says how to map it.

mod common;
use common::{log_text, pw, write};
use std::path::Path;

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.test")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.test")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

const CI: &str = r#"pipeline:
  name: Shop CI
  identifier: shop_ci
  properties:
    ci:
      codebase:
        connectorRef: github
        repoName: shop
        build: <+input>
  stages:
    - stage:
        name: Test
        identifier: test
        type: CI
        spec:
          cloneCodebase: true
          execution:
            steps:
              - step:
                  type: Run
                  name: Version
                  identifier: version
                  spec:
                    shell: Sh
                    command: |
                      echo "codebase at $(cat VERSION)"
                      VERSION=$(cat VERSION)
                    outputVariables:
                      - name: VERSION
              - step:
                  type: GitClone
                  name: Clone Charts
                  identifier: charts
                  spec:
                    repoName: CHARTS
                    cloneDirectory: charts
                    build:
                      type: tag
                      spec:
                        tag: v2
              - step:
                  type: Run
                  name: Chart
                  identifier: chart
                  spec:
                    shell: Sh
                    command: echo "chart $(cat charts/chart.txt)"
"#;

const RELEASE_BRANCH: &str = r#"inputSet:
  name: release branch
  identifier: release_branch
  pipeline:
    identifier: shop_ci
    properties:
      ci:
        codebase:
          build:
            type: branch
            spec:
              branch: release
"#;

#[test]
fn the_codebase_and_other_repositories_are_fetched_with_git() {
    let dir = tempfile::tempdir().unwrap();
    // Another team's charts repository, with a tag.
    let charts = dir.path().join("charts-repo");
    std::fs::create_dir_all(&charts).unwrap();
    git(&charts, &["init", "-q", "-b", "main"]);
    write(&charts, "chart.txt", "one\n");
    git(&charts, &["add", "."]);
    git(&charts, &["commit", "-q", "-m", "one"]);
    git(&charts, &["tag", "v2"]);
    write(&charts, "chart.txt", "later\n");
    git(&charts, &["commit", "-q", "-am", "later"]);
    // The shop repository, whose pipeline this is; the release branch has another VERSION.
    let shop = dir.path().join("shop");
    std::fs::create_dir_all(&shop).unwrap();
    git(&shop, &["init", "-q", "-b", "main"]);
    write(&shop, "VERSION", "1.0\n");
    let f = write(&shop, ".harness/ci.yaml", &CI.replace("CHARTS", &charts.display().to_string()));
    write(&shop, ".harness/input_sets/release.yaml", RELEASE_BRANCH);
    git(&shop, &["add", "."]);
    git(&shop, &["commit", "-q", "-m", "main"]);
    git(&shop, &["checkout", "-q", "-b", "release"]);
    write(&shop, "VERSION", "2.0-rc\n");
    git(&shop, &["commit", "-q", "-am", "rc"]);
    git(&shop, &["checkout", "-q", "main"]);

    let state = dir.path().join("state");
    let read = ["--step-read-path", charts.to_str().unwrap()];
    let out = pw(&state)
        .arg("run")
        .arg(&f)
        .arg("--inputs-file")
        .arg(shop.join(".harness/input_sets/release.yaml"))
        .args(read)
        .args(["--output", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Success", "{v}");
    let steps: Vec<&str> =
        v["stages"][0]["steps"].as_array().unwrap().iter().map(|s| s["identifier"].as_str().unwrap()).collect();
    assert_eq!(steps, ["clone_codebase", "version", "charts", "chart"]);
    assert_eq!(v["stages"][0]["steps"][1]["outputs"]["VERSION"], "2.0-rc", "the release branch was fetched: {v}");
    let id = v["execution_id"].as_str().unwrap();
    let logs = log_text(&state, id);
    assert!(logs.contains("chart one"), "the tag, not the later commit: {logs}");
    assert!(logs.contains("checked out refs/heads/release of"), "{logs}");
}

#[test]
fn a_connector_pipewright_cannot_reach_says_how_to_map_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "clone.yaml",
        r#"pipeline:
  name: Clone
  identifier: clone
  stages:
    - stage:
        name: Get
        identifier: get
        type: CI
        spec:
          cloneCodebase: false
          execution:
            steps:
              - step:
                  type: GitClone
                  name: Clone
                  identifier: clone
                  spec:
                    connectorRef: gitlab_acme
                    repoName: infra
                    build:
                      type: branch
                      spec:
                        branch: main
"#,
    );
    let out = pw(dir.path()).arg("run").arg(&f).args(["--output", "json"]).assert().code(1).get_output().clone();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failure = v["stages"][0]["steps"][0]["failure"].as_str().unwrap_or_default().to_string();
    assert!(failure.contains("connector `gitlab_acme` has no URL here"), "{v}");
    assert!(failure.contains("connectors: {gitlab_acme: https://github.com/ORG}"), "{v}");
}
