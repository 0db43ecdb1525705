//! What a person reads, as snapshots (`insta`; ids, times and durations redacted): `pipewright run` of the
//! example release pipeline line by line, `show` of the execution it made, `plan` of a selection that cannot
//! run, `validate` of a broken file, and `input` refusing values. A change to any of these words shows up
//! here for review (`cargo insta review`, or `INSTA_UPDATE=always` and a look at the diff).

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn pw(state: &Path) -> Command {
    let mut c = Command::cargo_bin("pipewright").unwrap();
    c.env("PIPEWRIGHT_STATE_DIR", state)
        .env("USER", "release-bot")
        .env_remove("PIPEWRIGHT_SERVER")
        .env_remove("PIPEWRIGHT_TOKEN")
        .current_dir(examples());
    c
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Redact what changes from run to run.
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({filters => vec![
            (r"[0-9A-HJKMNP-TV-Z]{26}", "[ID]"),
            (r"\b\d+\.\ds\b", "[DUR]"),
            (r"\b\d+m\d\ds\b", "[DUR]"),
            (r"\b\d+ms\b", "[DUR]"),
            (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "[TIME]"),
            // The infrastructure key is derived from the execution's id.
            (r#""infraKey":"[0-9a-f]{8}""#, r#""infraKey":"[KEY]""#),
            (r"release-[0-9a-f]{8}", "release-[KEY]"),
        ]}, {
            insta::assert_snapshot!($name, $value);
        });
    };
}

#[test]
fn a_run_and_its_record_read_as_expected() {
    let state = tempfile::tempdir().unwrap();
    let out = pw(state.path()).args(["run", "build-test-deploy.yaml", "--step-isolation", "none"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    snapshot!("run_build_test_deploy", text(&out));
    let history = pw(state.path()).args(["history", "--output", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let id = v[0]["id"].as_str().unwrap().to_string();
    let out = pw(state.path()).args(["show", &id]).output().unwrap();
    assert!(out.status.success());
    snapshot!("show_build_test_deploy", text(&out));
}

#[test]
fn a_selection_that_cannot_run_says_what_is_missing() {
    let state = tempfile::tempdir().unwrap();
    let out = pw(state.path()).args(["plan", "build-test-deploy.yaml", "--stage", "deploy_prod"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    snapshot!("plan_unmet", text(&out));
}

#[test]
fn a_broken_file_gets_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.yaml");
    std::fs::write(
        &f,
        "pipeline:\n  name: Broken\n  identifier: broken\n  stages:\n    - stage:\n        name: Build\n        identifier: build\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScrip\n                  name: Compile\n                  identifier: compile\n                  spec: {}\n",
    )
    .unwrap();
    let out = pw(dir.path()).current_dir(dir.path()).args(["validate", "broken.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    snapshot!("validate_broken", text(&out));
}
