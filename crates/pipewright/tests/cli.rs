//! The `pipewright` binary as a user runs it: `validate` on the examples and on broken files (text and JSON
//! output, exit codes), entity files, directories, unreadable paths, and `schema`.

use assert_cmd::Command;
use predicates::prelude::*;

fn pw() -> Command {
    Command::cargo_bin("pipewright").unwrap()
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn validate_examples_directory_succeeds() {
    pw().arg("validate")
        .arg(examples())
        .assert()
        .success()
        .stdout(predicate::str::contains("valid pipeline `build_test_deploy`: 5 stages, 5 steps"))
        .stdout(predicate::str::contains("valid environment `dev`"))
        .stdout(predicate::str::contains("valid infrastructureDefinition `dev_cluster`"))
        .stdout(predicate::str::contains("valid service `checkout`"))
        .stdout(predicate::str::contains("valid inputSet `release_2_1`"));
}

#[test]
fn validate_reports_every_error_with_position_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "pipeline:\n  name: Bad\n  identifier: bad\n  timeout: banana\n  stages:\n    - stage:\n        name: A\n        identifier: a\n        type: Deploy\n        spec: {}\n",
    )
    .unwrap();
    let out = pw().arg("validate").arg(&f).assert().code(1).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let path = f.display().to_string();
    assert!(
        stderr.contains(&format!("{path}:4:12: error: `timeout` of the pipeline: `banana` is not a duration")),
        "{stderr}"
    );
    assert!(stderr.contains("4 |   timeout: banana\n  |            ^^^^^^"), "{stderr}");
    assert!(stderr.contains(&format!("{path}:9:15: error: unsupported stage type `Deploy`")), "{stderr}");
    assert!(String::from_utf8(out.stdout).unwrap().contains("invalid: 2 errors"));
}

#[test]
fn validate_json_output_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yaml");
    std::fs::write(&f, "pipeline:\n  name: P\n  identifier: p\n  stage: []\n").unwrap();
    let out = pw().args(["validate", "--output", "json"]).arg(&f).assert().code(1).get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["file"], f.display().to_string());
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(v["errors"][0]["column"], 3);
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("missing required field `stages`"));
    assert_eq!(v["warnings"][0]["line"], 4);
    assert!(v["warnings"][0]["message"].as_str().unwrap().contains("did you mean `stages`"));

    let ok = pw().args(["validate", "-o", "json"]).arg(examples().join("flaky-matrix.yaml")).assert().success();
    let v: serde_json::Value = serde_json::from_slice(&ok.get_output().stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["kind"], "pipeline");
    assert_eq!(v["errors"], serde_json::json!([]));
}

#[test]
fn validate_bad_inputs_exit_1_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tabs.yaml", b"pipeline:\n\tname: x\n".to_vec(), "tab is used for indentation"),
        ("latin1.yaml", b"pipeline:\n  name: caf\xe9\n".to_vec(), "not valid UTF-8"),
        (
            "unterminated.yaml",
            b"pipeline:\n  name: <+pipeline.name\n  identifier: p\n  stages: []\n".to_vec(),
            "no closing `>`",
        ),
        ("malformed.yaml", b"pipeline: {name: [\n".to_vec(), "invalid YAML"),
        ("deep.yaml", format!("pipeline: {}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(), "limit"),
    ];
    for (name, bytes, want) in cases {
        let f = dir.path().join(name);
        std::fs::write(&f, bytes).unwrap();
        pw().arg("validate").arg(&f).assert().code(1).stderr(predicate::str::contains(want));
    }
    pw().args(["validate", "/nonexistent/pipeline.yaml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/nonexistent/pipeline.yaml: cannot read the file"));
}

#[test]
fn schema_prints_json_schema() {
    let out = pw().arg("schema").assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    assert!(v["properties"]["pipeline"].is_object());
}

#[test]
fn help_shows_examples() {
    pw().args(["validate", "--help"]).assert().success().stdout(predicate::str::contains("Examples:"));
    pw().args(["schema", "--help"]).assert().success().stdout(predicate::str::contains("Example:"));
}
