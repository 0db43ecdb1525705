//! The SQLite store on a real file: sequence numbers per pipeline, id prefixes, node upserts with recorded
//! transitions, log chunks in order, abort requests, decisions taken once, pipeline versions, reopening.

use store::prelude::*;
use store::{Decision, ExecutionQuery, Mode, NewExecution, Node, NodeKind, SqliteStore, Status};

fn new_exec(pipeline: &str) -> NewExecution {
    NewExecution {
        org: "o".into(),
        project: "p".into(),
        pipeline: pipeline.into(),
        pipeline_version: 1,
        mode: Mode::Full,
        triggered_by: "me".into(),
        inputs: serde_json::json!({"a": 1}),
        selected_stages: vec!["s".into()],
        snapshot: "pipeline: {}".into(),
        source_file: None,
        parent_id: None,
        original_id: None,
    }
}

fn node(exec: &str, id: &str, status: Status) -> Node {
    Node {
        id: id.into(),
        execution_id: exec.into(),
        parent_id: None,
        kind: NodeKind::Stage,
        identifier: "s".into(),
        name: "S".into(),
        path: "s".into(),
        position: 0,
        attempt: 1,
        status,
        started_at: None,
        ended_at: None,
        failure: None,
        skip_reason: None,
        outputs: serde_json::Map::new(),
        reused_from: None,
    }
}

#[tokio::test]
async fn executions_nodes_logs_and_decisions_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).await.unwrap();
    let a1 = s.create_execution(new_exec("a")).await.unwrap();
    let b1 = s.create_execution(new_exec("b")).await.unwrap();
    let a2 = s.create_execution(new_exec("a")).await.unwrap();
    assert_eq!((a1.sequence_id, b1.sequence_id, a2.sequence_id), (1, 1, 2));
    assert_eq!(a1.status, Status::Queued);
    assert_eq!(a1.inputs, serde_json::json!({"a": 1}));
    assert_eq!(s.execution(&a2.id).await.unwrap().id, a2.id);
    assert!(s.execution("zzzz").await.unwrap_err().to_string().contains("no execution"));
    let common: String = a1.id.chars().take(2).collect();
    assert!(s.execution(&common).await.unwrap_err().to_string().contains("several"));

    s.set_execution_status(&a1.id, Status::Running, None, &store::Fence::unowned()).await.unwrap();
    s.set_execution_status(&a1.id, Status::Failed, Some("boom"), &store::Fence::unowned()).await.unwrap();
    let e = s.execution(&a1.id).await.unwrap();
    assert_eq!(e.status, Status::Failed);
    assert_eq!(e.failure.as_deref(), Some("boom"));
    assert!(e.started_at.is_some() && e.ended_at.is_some());
    let only_a = s.executions(&ExecutionQuery { pipeline: Some("a".into()), ..Default::default() }).await.unwrap();
    assert_eq!(only_a.len(), 2);
    let failed = s.executions(&ExecutionQuery { status: Some(Status::Failed), ..Default::default() }).await.unwrap();
    assert_eq!(failed.len(), 1);

    let mut n = node(&a2.id, "n1", Status::Running);
    s.put_node(&n, &store::Fence::unowned()).await.unwrap();
    n.status = Status::Success;
    n.outputs.insert("x".into(), "1".into());
    s.put_node(&n, &store::Fence::unowned()).await.unwrap();
    s.put_node(&n, &store::Fence::unowned()).await.unwrap();
    let nodes = s.nodes(&a2.id).await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].outputs["x"], "1");
    let t: Vec<String> =
        s.transitions(&a2.id).await.unwrap().into_iter().filter(|t| t.node_id.is_some()).map(|t| t.to).collect();
    assert_eq!(t, ["Running", "Success"]);

    s.append_log(&a2.id, "n1", 2, "second\n", &store::Fence::unowned()).await.unwrap();
    s.append_log(&a2.id, "n1", 1, "first\n", &store::Fence::unowned()).await.unwrap();
    let logs: Vec<String> = s.logs(&a2.id, None).await.unwrap().into_iter().map(|c| c.data).collect();
    assert_eq!(logs, ["first\n", "second\n"]);

    assert!(!s.abort_requested(&a2.id).await.unwrap());
    assert!(s.request_abort(&a2.id).await.unwrap());
    assert!(s.abort_requested(&a2.id).await.unwrap());
    assert!(!s.request_abort(&a1.id).await.unwrap(), "an ended execution cannot be aborted");

    let d = Decision {
        execution_id: a2.id.clone(),
        node_id: "n1".into(),
        action: "approve".parse().unwrap(),
        by: "me".into(),
        comment: Some("ok".into()),
        inputs: serde_json::json!({}),
        at: 1,
    };
    s.put_decision(&d).await.unwrap();
    assert_eq!(
        s.take_decision(&a2.id, "n1", &store::Fence::unowned()).await.unwrap().unwrap().action,
        store::DecisionAction::Approve
    );
    assert!(
        s.take_decision(&a2.id, "n1", &store::Fence::unowned()).await.unwrap().is_none(),
        "a decision is taken once"
    );

    assert_eq!(s.save_pipeline("o", "p", "a", "v1").await.unwrap(), 1);
    assert_eq!(s.save_pipeline("o", "p", "a", "v1").await.unwrap(), 1);
    assert_eq!(s.save_pipeline("o", "p", "a", "v2").await.unwrap(), 2);

    // Everything is on disk: a new store over the same directory sees it.
    drop(s);
    let again = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(again.executions(&ExecutionQuery::default()).await.unwrap().len(), 3);
}

/// A node another process wrote (an execution taken over) gets its transition from the status it really had:
/// the store that did not write it reads it once.
#[tokio::test]
async fn a_node_written_by_another_process_keeps_its_transition_history() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path()).await.unwrap();
    let e = first.create_execution(new_exec("a")).await.unwrap();
    first.put_node(&node(&e.id, "N1", Status::Running), &store::Fence::unowned()).await.unwrap();
    // The process that wrote it is gone; another one goes on with the same node.
    let second = SqliteStore::open(dir.path()).await.unwrap();
    second.put_node(&node(&e.id, "N1", Status::Failed), &store::Fence::unowned()).await.unwrap();
    second.put_node(&node(&e.id, "N1", Status::Failed), &store::Fence::unowned()).await.unwrap();
    let t: Vec<(Option<String>, String)> = second
        .transitions(&e.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.node_id.as_deref() == Some("N1"))
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(t, vec![(None, "Running".to_string()), (Some("Running".to_string()), "Failed".to_string())]);
    assert_eq!(second.nodes(&e.id).await.unwrap()[0].status, Status::Failed);
}
