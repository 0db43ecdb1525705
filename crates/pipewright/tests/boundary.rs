//! The attack suite of the step boundary (SECURITY.md): each test is an attack a pipeline author, an
//! executor or a step makes against a real `pipewright serve` or `pipewright run`, and must fail. Channels
//! covered here: expansion of looping strategies from runtime inputs (memory), a secret's value in every
//! message path and spelling, the last Account Admin, the login redirect and the page headers.

mod common;
use common::{Server, pipeline, stage};
use reqwest::Method;
use serde_json::json;

const P: &str = "/api/v1/orgs/default/projects/default";

/// A stage whose three-axis matrix takes each axis from a runtime input.
fn matrix_from_inputs() -> serde_json::Value {
    let mut yaml =
        pipeline("fanbomb", &stage("s", "echo <+matrix.x><+matrix.y><+matrix.z>")).as_str().unwrap().to_string();
    yaml = yaml.replace(
        "        type: Custom\n",
        "        type: Custom\n        strategy:\n          matrix:\n            x: <+pipeline.variables.values>\n            y: <+pipeline.variables.values>\n            z: <+pipeline.variables.values>\n",
    );
    yaml = yaml.replace(
        "  stages:\n",
        "  variables:\n    - name: values\n      type: String\n      value: <+input>\n  stages:\n",
    );
    serde_json::Value::String(yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_cannot_expand_a_matrix_past_the_servers_limits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--max-iterations", "500"]).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(matrix_from_inputs())).await;
    let executor = s.user("eve", "_pipeline_executor", "default").await;
    // 1000 values on three axes: 10⁹ combinations, counted and refused before any is built.
    let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let body = json!({"inputs": {"pipeline.variables.values": values.join(",")}});
    let (st, e) = s.req(Some(&executor), Method::POST, &format!("{P}/pipelines/fanbomb/execute"), Some(&body)).await;
    assert!(st.is_success(), "{st} {e}");
    let done = s.wait_end(&executor, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Failed", "{done}");
    let text = done.to_string();
    assert!(
        text.contains("the looping strategy has 1000000000 iterations, more than the 500 a node may have"),
        "{text}"
    );
    // Under the limit the same pipeline runs: 7 × 7 × 7 = 343 iterations.
    let small = json!({"inputs": {"pipeline.variables.values": "1,2,3,4,5,6,7"}});
    let (_, e) = s.req(Some(&executor), Method::POST, &format!("{P}/pipelines/fanbomb/execute"), Some(&small)).await;
    let done = s.wait_end(&executor, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_strategies_are_bounded_by_the_node_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--max-nodes", "300"]).await;
    // 20 stage iterations of a step that itself runs 20 times: 20 × 21 nodes + 20 × 20 step iterations.
    let mut yaml = pipeline("nested", &stage("s", "echo hi")).as_str().unwrap().to_string();
    yaml =
        yaml.replace("        type: Custom\n", "        type: Custom\n        strategy:\n          parallelism: 20\n");
    yaml = yaml.replace(
        "                  identifier: s\n",
        "                  identifier: s\n                  strategy:\n                    repeat:\n                      times: 20\n",
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(serde_json::Value::String(yaml))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/nested/execute"), Some(json!({}))).await;
    let done = s.wait_end(&s.token, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Failed", "{done}");
    assert!(done.to_string().contains("would create more than 300 nodes"), "{done}");
}

#[test]
fn validate_refuses_a_written_strategy_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let axis: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let axis = format!("[{}]", axis.join(", "));
    let yaml = pipeline("big", &stage("s", "echo <+matrix.a>")).as_str().unwrap().replace(
        "        type: Custom\n",
        &format!("        type: Custom\n        strategy:\n          matrix:\n            a: {axis}\n            b: {axis}\n            c: {axis}\n"),
    );
    let file = common::write(dir.path(), "big.yaml", &yaml);
    let out = common::pw(&dir.path().join("st")).arg("validate").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("big.yaml:13:"), "{err}");
    assert!(err.contains("this looping strategy has 1000000 iterations, more than the 10000 a node may have"), "{err}");
}
