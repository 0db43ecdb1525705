//! The engine end to end with real processes and a real SQLite file: executors, output variables, step
//! groups and parallel blocks, every failure-strategy action, `when`, looping strategies, timeouts that kill a
//! process tree, abort, approvals, manual intervention, secret masking, and logs.

use engine::{Engine, EngineConfig, Entities, Quiet, Secrets};
use spec::inputs;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use store::{Decision, Execution, Mode, NewExecution, Node, SqliteStore, Status, Store};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    engine: Engine,
    workroot: std::path::PathBuf,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let mut config = EngineConfig::new(dir.path());
    config.kill_grace = Duration::from_millis(500);
    config.poll_interval = Duration::from_millis(20);
    let workroot = config.work_root.clone();
    let engine = Engine::new(store.clone(), Arc::new(Quiet), config);
    Fixture { _dir: dir, store, engine, workroot }
}

fn pipeline(yaml: &str) -> spec::Pipeline {
    let doc = spec::parse_document("test.yaml", yaml.to_string());
    assert!(doc.is_valid(), "{}", doc.render_diagnostics());
    let body = doc.body().unwrap();
    let values = inputs::resolve(&inputs::runtime_inputs(body), &BTreeMap::new(), None).unwrap();
    spec::pipeline_from_node(&inputs::apply(body, &values, &Default::default()), &doc.texts()).unwrap()
}

async fn create(f: &Fixture, p: &spec::Pipeline) -> Execution {
    f.store
        .create_execution(NewExecution {
            org: "default".into(),
            project: "default".into(),
            pipeline: p.identifier.value.clone(),
            pipeline_version: 1,
            mode: Mode::Full,
            triggered_by: "test".into(),
            inputs: serde_json::json!({}),
            selected_stages: vec![],
            snapshot: String::new(),
            source_file: None,
            parent_id: None,
            original_id: None,
        })
        .await
        .unwrap()
}

async fn run_with(f: &Fixture, yaml: &str, secrets: &Secrets) -> (Status, Vec<Node>, Execution) {
    let p = pipeline(yaml);
    let e = create(f, &p).await;
    let status = f.engine.run(&e, &p, &Entities::default(), secrets).await.unwrap();
    let nodes = f.store.nodes(&e.id).await.unwrap();
    (status, nodes, f.store.execution(&e.id).await.unwrap())
}

async fn run(yaml: &str) -> (Status, Vec<Node>, Fixture, Execution) {
    let f = fixture().await;
    let (s, n, e) = run_with(&f, yaml, &Secrets::default()).await;
    (s, n, f, e)
}

fn node<'a>(nodes: &'a [Node], path: &str) -> &'a Node {
    nodes.iter().rev().find(|n| n.path == path).unwrap_or_else(|| {
        panic!("no node {path}; nodes: {:?}", nodes.iter().map(|n| (&n.path, n.status)).collect::<Vec<_>>())
    })
}

fn attempts<'a>(nodes: &'a [Node], path: &str) -> Vec<&'a Node> {
    nodes.iter().filter(|n| n.path == path).collect()
}

/// Indent a block of YAML by `n` spaces.
fn ind(s: &str, n: usize) -> String {
    let mut out: String = s
        .lines()
        .map(|l| if l.is_empty() { String::new() } else { format!("{}{l}", " ".repeat(n)) })
        .collect::<Vec<_>>()
        .join("\n");
    if s.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A ShellScript step that declares output variables (each captured from the shell variable of that name).
fn sh_out(id: &str, script: &str, outputs: &[&str], extra: &str) -> String {
    let outs: String = outputs
        .iter()
        .map(|o| format!("        - name: {o}\n          type: String\n          value: {o}\n"))
        .collect();
    sh(id, script, extra).replace("      source:\n", &format!("      outputVariables:\n{outs}      source:\n"))
}

fn sh(id: &str, script: &str, extra: &str) -> String {
    format!(
        "- step:\n    type: ShellScript\n    name: {id}\n    identifier: {id}\n{}    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: |\n{}\n",
        ind(extra, 4),
        ind(script, 12)
    )
}

fn stage(id: &str, steps: &[String], extra: &str) -> String {
    format!(
        "- stage:\n    name: {id}\n    identifier: {id}\n    type: Custom\n{}    spec:\n      execution:\n        steps:\n{}\n",
        ind(extra, 4),
        ind(&steps.join(""), 10)
    )
}

fn pipe(stages: &[String]) -> String {
    format!("pipeline:\n  name: T\n  identifier: t\n  stages:\n{}\n", ind(&stages.join(""), 4))
}

async fn log_text(store: &Arc<dyn Store>, exec: &str) -> String {
    store.logs(exec, None).await.unwrap().iter().map(|c| c.data.clone()).collect::<Vec<_>>().join("")
}

async fn wait_for(store: &Arc<dyn Store>, exec: &str, status: Status) -> Node {
    // Polls the store's state (the condition itself), bounded.
    for _ in 0..1000 {
        if let Some(n) = store.nodes(exec).await.unwrap().into_iter().find(|n| n.status == status) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no node reached {status}");
}

#[tokio::test]
async fn outputs_flow_between_steps_and_stages() {
    let compile = sh_out("compile", "artifact=\"app-1.tgz\"\necho \"built $artifact with $LEVEL\"", &["artifact"], "").replace(
        "      source:\n",
        "      environmentVariables:\n        - name: LEVEL\n          type: String\n          value: strict\n      source:\n",
    );
    let test = "- step:\n    type: Run\n    name: test\n    identifier: test\n    spec:\n      shell: Sh\n      command: |\n        echo \"GOOS=$GOOS\"\n        PASSED=42\n      envVariables:\n        GOOS: linux\n      outputVariables:\n        - name: PASSED\n".to_string();
    let build = stage("build", &[compile, test], "");
    let deploy = stage(
        "deploy",
        &[sh(
            "use",
            "echo \"deploying <+pipeline.stages.build.spec.execution.steps.compile.output.outputVariables.artifact> after <+pipeline.stages.build.spec.execution.steps.test.output.outputVariables.PASSED> tests\"",
            "",
        )],
        "",
    );
    let (status, nodes, f, e) = run(&pipe(&[build, deploy])).await;
    let logs = log_text(&f.store, &e.id).await;
    assert_eq!(status, Status::Success, "{logs}");
    assert_eq!(node(&nodes, "build.compile").outputs["artifact"], "app-1.tgz");
    assert_eq!(node(&nodes, "build.test").outputs["PASSED"], "42");
    assert!(logs.contains("built app-1.tgz with strict"), "{logs}");
    assert!(logs.contains("GOOS=linux"), "{logs}");
    assert!(logs.contains("deploying app-1.tgz after 42 tests"), "{logs}");
    assert_eq!(e.status, Status::Success);
}

#[tokio::test]
async fn parallel_steps_run_concurrently_and_groups_nest() {
    // Each waits for the other's marker: only concurrent execution can finish before the timeout.
    let a = sh("a", "touch a.mark\nwhile [ ! -f b.mark ]; do sleep 0.01; done", "timeout: 20s\n");
    let b = sh("b", "touch b.mark\nwhile [ ! -f a.mark ]; do sleep 0.01; done", "timeout: 20s\n");
    let par = format!("- parallel:\n{}\n", ind(&format!("{a}{b}"), 4));
    let inner = format!(
        "- stepGroup:\n    name: outer\n    identifier: outer\n    steps:\n{}\n",
        ind(
            &format!(
                "- stepGroup:\n    name: inner\n    identifier: inner\n    steps:\n{}\n",
                ind(&sh_out("deep", "v=deep\necho in-group", &["v"], ""), 6)
            ),
            6
        )
    );
    let after = sh(
        "after",
        "echo got <+pipeline.stages.s.spec.execution.steps.outer.steps.inner.steps.deep.output.outputVariables.v>",
        "",
    );
    let (status, nodes, f, e) = run(&pipe(&[stage("s", &[par, inner, after], "")])).await;
    let logs = log_text(&f.store, &e.id).await;
    assert_eq!(status, Status::Success, "{logs}");
    assert_eq!(node(&nodes, "s.a").status, Status::Success);
    assert_eq!(node(&nodes, "s.outer.inner.deep").status, Status::Success);
    assert!(logs.contains("got deep"), "{logs}");
}

#[tokio::test]
async fn failure_strategy_actions() {
    let fs = |action: &str| {
        format!(
            "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: {action}\n"
        )
    };
    // Ignore → IgnoreFailed, the stage goes on and succeeds.
    let (status, nodes, ..) =
        run(&pipe(&[stage("s", &[sh("bad", "exit 3", &fs("Ignore")), sh("next", "echo next", "")], "")])).await;
    assert_eq!(status, Status::Success);
    assert_eq!(node(&nodes, "s.bad").status, Status::IgnoreFailed);
    assert_eq!(node(&nodes, "s.next").status, Status::Success);
    // MarkAsSuccess.
    let (status, nodes, ..) = run(&pipe(&[stage("s", &[sh("bad", "exit 3", &fs("MarkAsSuccess"))], "")])).await;
    assert_eq!(status, Status::Success);
    assert_eq!(node(&nodes, "s.bad").status, Status::Success);
    // MarkAsFailure, and the default with no strategy: the next step and stage are skipped.
    for extra in [fs("MarkAsFailure"), String::new()] {
        let (status, nodes, ..) = run(&pipe(&[
            stage("s", &[sh("bad", "exit 3", &extra), sh("next", "echo no", "")], ""),
            stage("t", &[sh("x", "echo", "")], ""),
        ]))
        .await;
        assert_eq!(status, Status::Failed);
        assert_eq!(node(&nodes, "s.bad").status, Status::Failed);
        assert_eq!(node(&nodes, "s.bad").failure.as_deref(), Some("the script exited with status 3"));
        assert_eq!(node(&nodes, "s.next").status, Status::Skipped);
        assert_eq!(node(&nodes, "t").status, Status::Skipped);
    }
    // Abort: the execution ends Aborted and later stages do not run.
    let (status, nodes, ..) =
        run(&pipe(&[stage("s", &[sh("bad", "exit 1", &fs("Abort"))], ""), stage("t", &[sh("x", "echo", "")], "")]))
            .await;
    assert_eq!(status, Status::Aborted);
    assert_eq!(node(&nodes, "t").status, Status::Skipped);
    // The innermost strategy wins: the step's Ignore over the stage's MarkAsFailure.
    let (status, nodes, ..) =
        run(&pipe(&[stage("s", &[sh("bad", "exit 1", &fs("Ignore"))], &fs("MarkAsFailure"))])).await;
    assert_eq!(status, Status::Success);
    assert_eq!(node(&nodes, "s.bad").status, Status::IgnoreFailed);
    // Errors must match: a Timeout-only strategy does not handle an exit status.
    let timeout_only =
        "failureStrategies:\n  - onFailure:\n      errors: [Timeout]\n      action:\n        type: Ignore\n";
    let (status, ..) = run(&pipe(&[stage("s", &[sh("bad", "exit 1", timeout_only)], "")])).await;
    assert_eq!(status, Status::Failed);
}

#[tokio::test]
async fn retry_keeps_every_attempt_with_its_logs() {
    let retry = "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: Retry\n        spec:\n          retryCount: 3\n          retryIntervals: [10ms]\n          onRetryFailure:\n            action:\n              type: MarkAsFailure\n";
    let script = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count\necho \"attempt $n\"\n[ $n -ge 3 ]";
    let (status, nodes, f, e) = run(&pipe(&[stage("s", &[sh("flaky", script, retry)], "")])).await;
    assert_eq!(status, Status::Success);
    let all = attempts(&nodes, "s.flaky");
    assert_eq!(
        all.iter().map(|n| (n.attempt, n.status)).collect::<Vec<_>>(),
        vec![(1, Status::Failed), (2, Status::Failed), (3, Status::Success)]
    );
    let logs = f.store.logs(&e.id, Some(&[all[1].id.clone()])).await.unwrap();
    assert!(logs.iter().any(|c| c.data.contains("attempt 2")));
    // Retries exhausted: onRetryFailure applies.
    let (status, nodes, ..) = run(&pipe(&[stage("s", &[sh("bad", "exit 1", retry)], "")])).await;
    assert_eq!(status, Status::Failed);
    assert_eq!(attempts(&nodes, "s.bad").len(), 4);
}

#[tokio::test]
async fn stage_and_pipeline_rollback() {
    let rb = |action: &str| {
        format!(
            "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: {action}\n"
        )
    };
    let with_rollback = |id: &str, steps: &[String], extra: &str| {
        stage(id, steps, extra).replace(
            "      execution:\n        steps:\n",
            &format!(
                "      execution:\n        rollbackSteps:\n{}\n        steps:\n",
                ind(&sh(&format!("undo_{id}"), &format!("echo undo {id} >> undo.log"), ""), 10)
            ),
        )
    };
    let (status, nodes, ..) = run(&pipe(&[with_rollback("s", &[sh("bad", "exit 1", "")], &rb("StageRollback"))])).await;
    assert_eq!(status, Status::Failed);
    assert_eq!(node(&nodes, "s.rollback.undo_s").status, Status::Success);
    // PipelineRollback: every stage that ran rolls back, latest first.
    let (status, _nodes, f, e) = run(&pipe(&[
        with_rollback("one", &[sh("ok", "echo", "")], ""),
        with_rollback("two", &[sh("bad", "exit 1", "")], &rb("PipelineRollback")),
    ]))
    .await;
    assert_eq!(status, Status::Failed);
    let undo = std::fs::read_to_string(f.workroot.join(&e.id).join("undo.log")).unwrap();
    assert_eq!(undo, "undo two\nundo one\n");
}

#[tokio::test]
async fn when_conditions_gate_stages_and_steps() {
    let (status, nodes, ..) = run(&pipe(&[
        stage(
            "a",
            &[
                sh("skipme", "echo", "when:\n  stageStatus: Success\n  condition: <+pipeline.name> == \"other\"\n"),
                sh("run", "exit 1", ""),
            ],
            "",
        ),
        stage("on_failure", &[sh("x", "echo", "")], "when:\n  pipelineStatus: Failure\n"),
        stage("on_success", &[sh("x", "echo", "")], ""),
        stage("always", &[sh("x", "echo <+pipeline.stages.a.status>", "")], "when:\n  pipelineStatus: All\n"),
    ]))
    .await;
    assert_eq!(status, Status::Failed);
    let skip = node(&nodes, "a.skipme");
    assert_eq!(skip.status, Status::Skipped);
    assert_eq!(skip.skip_reason.as_deref(), Some("condition `<+pipeline.name> == \"other\"` is false"));
    assert_eq!(node(&nodes, "on_failure").status, Status::Success);
    assert_eq!(node(&nodes, "on_success").status, Status::Skipped);
    assert_eq!(node(&nodes, "always").status, Status::Success);
}

#[tokio::test]
async fn looping_strategies_expand_into_iterations() {
    let matrix = "strategy:\n  matrix:\n    os: [linux, mac]\n    node: [\"18\", \"20\"]\n    exclude:\n      - os: mac\n        node: \"18\"\n    maxConcurrency: 2\n";
    let step = sh_out(
        "s",
        "v=<+matrix.os>-<+matrix.node>; echo <+matrix.os>-<+matrix.node> <+strategy.iteration>/<+strategy.iterations>",
        &["v"],
        "",
    );
    let repeat = sh("r", "echo region=<+repeat.item>", "strategy:\n  repeat:\n    items: [eu, us]\n");
    let times = sh("t", "echo time <+strategy.iteration>", "strategy:\n  repeat:\n    times: 3\n");
    let par = sh("p", "echo par <+strategy.iteration>", "strategy:\n  parallelism: 2\n");
    let (status, nodes, f, e) =
        run(&pipe(&[stage("m", &[step], matrix), stage("loops", &[repeat, times, par], "")])).await;
    let logs = log_text(&f.store, &e.id).await;
    assert_eq!(status, Status::Success, "{logs}");
    let iters: Vec<&str> = nodes
        .iter()
        .filter(|n| n.parent_id.as_deref() == Some(node(&nodes, "m").id.as_str()))
        .map(|n| n.identifier.as_str())
        .collect();
    assert_eq!(iters.len(), 3, "{iters:?}");
    assert_eq!(node(&nodes, "m_2.s").outputs["v"], "mac-20");
    for want in ["linux-18 0/3", "linux-20 1/3", "mac-20 2/3", "region=eu", "region=us", "time 2", "par 1"] {
        assert!(logs.contains(want), "{want}: {logs}");
    }
    assert_eq!(attempts(&nodes, "loops.t_2").len(), 1);
}

fn gone_or_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_tree() {
    let script = "sleep 300 &\necho $! > child.pid\nsleep 300";
    let (status, nodes, f, e) = run(&pipe(&[stage("s", &[sh("hang", script, "timeout: 1s\n")], "")])).await;
    assert_eq!(status, Status::Failed);
    let n = node(&nodes, "s.hang");
    assert_eq!(n.status, Status::Expired);
    assert!(n.failure.as_deref().unwrap_or_default().contains("timed out"));
    let pid: i32 = std::fs::read_to_string(f.workroot.join(&e.id).join("child.pid")).unwrap().trim().parse().unwrap();
    assert!(gone_or_zombie(pid), "the background child {pid} survived the timeout");
}

#[tokio::test]
async fn a_forked_daemon_does_not_outlive_its_step() {
    let script = "sleep 300 > /dev/null 2>&1 &\necho $! > daemon.pid\necho started";
    let (status, _, f, e) = run(&pipe(&[stage("s", &[sh("fork", script, "timeout: 60s\n")], "")])).await;
    assert_eq!(status, Status::Success);
    let pid: i32 = std::fs::read_to_string(f.workroot.join(&e.id).join("daemon.pid")).unwrap().trim().parse().unwrap();
    assert!(gone_or_zombie(pid), "the daemon {pid} outlived its step");
}

#[tokio::test]
async fn stage_timeout_expires_what_is_running() {
    let (status, nodes, ..) = run(&pipe(&[stage("s", &[sh("hang", "sleep 300", "")], "timeout: 1s\n")])).await;
    assert_eq!(status, Status::Failed);
    assert_eq!(node(&nodes, "s").status, Status::Expired);
    assert_eq!(node(&nodes, "s.hang").status, Status::Expired);
}

#[tokio::test]
async fn abort_stops_a_running_execution() {
    let f = fixture().await;
    let p = pipeline(&pipe(&[
        stage("s", &[sh("long", "echo started\nsleep 300", "")], ""),
        stage("t", &[sh("x", "echo", "")], ""),
    ]));
    let e = create(&f, &p).await;
    let running = {
        let store = f.store.clone();
        let id = e.id.clone();
        async move {
            wait_for(&store, &id, Status::Running).await;
            // The step's process is up once its first line is stored or shown; the stage node is Running first.
            for _ in 0..1000 {
                if store.nodes(&id).await.unwrap().iter().any(|n| n.path == "s.long" && n.status == Status::Running) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(store.request_abort(&id).await.unwrap());
        }
    };
    let (ents, secrets) = (Entities::default(), Secrets::default());
    let (status, ()) = tokio::join!(f.engine.run(&e, &p, &ents, &secrets), running);
    assert_eq!(status.unwrap(), Status::Aborted);
    let nodes = f.store.nodes(&e.id).await.unwrap();
    assert_eq!(node(&nodes, "s.long").status, Status::Aborted);
    assert_eq!(node(&nodes, "t").status, Status::Skipped);
    assert_eq!(f.store.execution(&e.id).await.unwrap().status, Status::Aborted);
    assert!(!f.store.request_abort(&e.id).await.unwrap(), "an ended execution cannot be aborted again");
}

async fn decide(f: &Fixture, yaml: &str, waiting: Status, action: &str) -> (Status, Vec<Node>) {
    let p = pipeline(yaml);
    let e = create(f, &p).await;
    let decider = async {
        let n = wait_for(&f.store, &e.id, waiting).await;
        f.store
            .put_decision(&Decision {
                execution_id: e.id.clone(),
                node_id: n.id.clone(),
                action: action.parse().unwrap(),
                by: "tester".into(),
                comment: None,
                inputs: serde_json::json!({"ticket": "REL-9"}),
                at: 0,
            })
            .await
            .unwrap();
    };
    let (ents, secrets) = (Entities::default(), Secrets::default());
    let (status, ()) = tokio::join!(f.engine.run(&e, &p, &ents, &secrets), decider);
    (status.unwrap(), f.store.nodes(&e.id).await.unwrap())
}

#[tokio::test]
async fn approvals_wait_for_a_decision() {
    let approval = "- step:\n    type: HarnessApproval\n    name: ok\n    identifier: ok\n    timeout: 1m\n    spec:\n      approvalMessage: ship?\n      approvers:\n        userGroups: [release]\n        minimumCount: 1\n        disallowPipelineExecutor: false\n      approverInputs:\n        - name: ticket\n          defaultValue: none\n".to_string();
    let yaml = pipe(&[stage("gate", &[approval], "").replace("type: Custom", "type: Approval")]);
    let f = fixture().await;
    let (status, nodes) = decide(&f, &yaml, Status::ApprovalWaiting, "approve").await;
    assert_eq!(status, Status::Success);
    assert_eq!(node(&nodes, "gate.ok").outputs["ticket"], "REL-9");
    let (status, nodes) = decide(&f, &yaml, Status::ApprovalWaiting, "reject").await;
    assert_eq!(status, Status::Failed);
    assert_eq!(node(&nodes, "gate.ok").status, Status::ApprovalRejected);
}

#[tokio::test]
async fn manual_intervention_waits_then_follows_the_decision() {
    let mi = "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: ManualIntervention\n        spec:\n          timeout: 1m\n          onTimeout:\n            action:\n              type: MarkAsFailure\n";
    let yaml = pipe(&[stage("s", &[sh("bad", "exit 1", mi)], "")]);
    let f = fixture().await;
    let (status, nodes) = decide(&f, &yaml, Status::InterventionWaiting, "mark-success").await;
    assert_eq!(status, Status::Success);
    assert_eq!(node(&nodes, "s.bad").status, Status::Success);
    let (status, nodes) = decide(&f, &yaml, Status::InterventionWaiting, "ignore").await;
    assert_eq!(status, Status::Success);
    assert_eq!(node(&nodes, "s.bad").status, Status::IgnoreFailed);
    // Timeout with no decision: onTimeout applies.
    let quick = mi.replace("timeout: 1m", "timeout: 100ms");
    let (status, nodes, ..) = run(&pipe(&[stage("s", &[sh("bad", "exit 1", &quick)], "")])).await;
    assert_eq!(status, Status::Failed);
    assert_eq!(node(&nodes, "s.bad").status, Status::Failed);
}

#[tokio::test]
async fn secrets_are_masked_in_every_stored_line() {
    let f = fixture().await;
    let mut secrets = Secrets::default();
    secrets.values.insert("token".into(), "s3cr3t-value".into());
    secrets.values.insert("db".into(), "hunter22".into());
    let yaml = pipe(&[stage(
        "s",
        &[sh("leak", "echo token=<+secrets.getValue(\"token\")>\necho db=<+pipeline.variables.db>\necho done", "")],
        "",
    )])
    .replace("  stages:", "  variables:\n    - name: db\n      type: Secret\n      value: db\n  stages:");
    let (status, _, e) = run_with(&f, &yaml, &secrets).await;
    assert_eq!(status, Status::Success);
    let logs = log_text(&f.store, &e.id).await;
    assert!(logs.contains("token=**************"), "{logs}");
    assert!(logs.contains("db=**************"), "{logs}");
    assert!(!logs.contains("s3cr3t-value") && !logs.contains("hunter22"), "{logs}");
}

#[tokio::test]
async fn stdin_is_closed_and_output_is_chunked() {
    let script = "if read line; then echo \"read: $line\"; else echo \"stdin at EOF\"; fi\nseq 1 400000";
    let (status, nodes, f, e) = run(&pipe(&[stage("s", &[sh("io", script, "")], "")])).await;
    assert_eq!(status, Status::Success);
    let chunks = f.store.logs(&e.id, Some(&[node(&nodes, "s.io").id.clone()])).await.unwrap();
    assert!(chunks.len() > 1, "2.7 MB of output should be stored in several chunks");
    let text: String = chunks.iter().map(|c| c.data.as_str()).collect();
    assert!(text.contains("\tstdout\tstdin at EOF\n"));
    assert_eq!(text.lines().filter(|l| l.ends_with("\t400000")).count(), 1);
}

#[tokio::test]
async fn unresolved_expressions_fail_the_step_naming_the_path() {
    // Declared but never set by the script: known statically, missing at run time.
    let (status, nodes, ..) = run(&pipe(&[stage(
        "s",
        &[
            sh_out("x", "echo no value", &["v"], ""),
            sh("y", "echo <+pipeline.stages.s.spec.execution.steps.x.output.outputVariables.v>", ""),
        ],
        "",
    )]))
    .await;
    assert_eq!(status, Status::Failed);
    let failure = node(&nodes, "s.y").failure.clone().unwrap_or_default();
    assert!(failure.contains("pipeline.stages.s.spec.execution.steps.x.output.outputVariables.v"), "{failure}");
}

#[tokio::test]
async fn wait_and_http_steps() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let (code, body) = if req.starts_with("GET /ok") {
                ("200 OK", "{\"version\":\"7\"}")
            } else {
                ("503 Unavailable", "down")
            };
            let resp = format!("HTTP/1.1 {code}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let http = |id: &str, path: &str| {
        format!(
            "- step:\n    type: Http\n    name: {id}\n    identifier: {id}\n    timeout: 10s\n    spec:\n      url: http://127.0.0.1:{port}/{path}\n      method: GET\n      headers:\n        - key: Accept\n          value: application/json\n      assertion: <+httpResponseCode> == 200\n      outputVariables:\n        - name: version\n          type: String\n          value: <+json.object(<+httpResponseBody>).version>\n"
        )
    };
    let wait = "- step:\n    type: Wait\n    name: w\n    identifier: w\n    spec:\n      duration: 50ms\n".to_string();
    let (status, nodes, ..) = run(&pipe(&[stage("s", &[wait, http("ok", "ok")], "")])).await;
    assert_eq!(status, Status::Success);
    assert_eq!(node(&nodes, "s.ok").outputs["version"], "7");
    assert_eq!(node(&nodes, "s.w").status, Status::Success);
    let (status, nodes, ..) = run(&pipe(&[stage("s", &[http("down", "down").replace("      outputVariables:\n        - name: version\n          type: String\n          value: <+json.object(<+httpResponseBody>).version>\n", "")], "")])).await;
    assert_eq!(status, Status::Failed);
    assert!(node(&nodes, "s.down").failure.as_deref().unwrap_or_default().contains("HTTP 503"));
}

#[tokio::test]
async fn history_is_queryable_and_transitions_are_recorded() {
    let f = fixture().await;
    let ok = pipe(&[stage("s", &[sh("x", "echo", "")], "")]);
    let bad = pipe(&[stage("s", &[sh("x", "exit 1", "")], "")]);
    for y in [&ok, &bad, &ok] {
        run_with(&f, y, &Secrets::default()).await;
    }
    let all = f.store.executions(&store::ExecutionQuery::default()).await.unwrap();
    assert_eq!(all.iter().map(|e| e.sequence_id).collect::<Vec<_>>(), vec![3, 2, 1]);
    let failed = f
        .store
        .executions(&store::ExecutionQuery { status: Some(Status::Failed), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].sequence_id, 2);
    let t = f.store.transitions(&all[0].id).await.unwrap();
    let exec_states: Vec<&str> = t.iter().filter(|t| t.node_id.is_none()).map(|t| t.to.as_str()).collect();
    assert_eq!(exec_states, ["Queued", "Running", "Success"]);
}

#[tokio::test]
async fn a_missing_entity_fails_its_stage_with_the_reason() {
    let d = stage("d", &[sh("x", "echo", "")], "").replace("type: Custom", "type: Deployment").replace(
        "    spec:\n      execution:",
        "    spec:\n      deploymentType: Kubernetes\n      service:\n        serviceRef: nope\n      environment:\n        environmentRef: dev\n      execution:",
    );
    let (status, nodes, ..) = run(&pipe(&[d])).await;
    assert_eq!(status, Status::Failed);
    let failure = node(&nodes, "d").failure.clone().unwrap_or_default();
    assert!(failure.contains("service `nope` is not defined"), "{failure}");
}

#[tokio::test]
async fn approvals_count_distinct_approvers_and_can_exclude_the_executor() {
    let approval = "- step:\n    type: HarnessApproval\n    name: ok\n    identifier: ok\n    timeout: 1m\n    spec:\n      approvers:\n        userGroups: [release]\n        minimumCount: 2\n        disallowPipelineExecutor: true\n".to_string();
    let f = fixture().await;
    let p = pipeline(&pipe(&[stage("gate", &[approval], "").replace("type: Custom", "type: Approval")]));
    let e = create(&f, &p).await;
    let decider = async {
        let n = wait_for(&f.store, &e.id, Status::ApprovalWaiting).await;
        for by in ["test", "alice", "alice", "bob"] {
            f.store
                .put_decision(&Decision {
                    execution_id: e.id.clone(),
                    node_id: n.id.clone(),
                    action: "approve".parse().unwrap(),
                    by: by.into(),
                    comment: None,
                    inputs: serde_json::json!({}),
                    at: 0,
                })
                .await
                .unwrap();
        }
    };
    let (ents, secrets) = (Entities::default(), Secrets::default());
    let (status, ()) = tokio::join!(f.engine.run(&e, &p, &ents, &secrets), decider);
    assert_eq!(status.unwrap(), Status::Success);
    let logs = log_text(&f.store, &e.id).await;
    assert!(logs.contains("approve by test: not counted"), "{logs}");
    assert!(logs.contains("1 of 2 approvals"), "{logs}");
    assert_eq!(logs.matches("1 of 2 approvals").count(), 2, "alice twice counts once: {logs}");
}

async fn wait_node(store: &Arc<dyn Store>, exec: &str, path: &str, status: Status) {
    // Polls the store's state (the condition itself), bounded by time (a loaded CI machine is slow).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if store.nodes(exec).await.unwrap().iter().any(|n| n.path == path && n.status == status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let nodes: Vec<(String, Status)> =
        store.nodes(exec).await.unwrap().into_iter().map(|n| (n.path, n.status)).collect();
    panic!("{path} never reached {status}: {nodes:?}");
}

/// A process dies in the middle of a step (its engine future is dropped, as a killed process leaves things):
/// resuming keeps what finished — the first stage is not run again and its output still feeds the second —
/// closes the interrupted attempt and runs the step again as attempt 2.
#[tokio::test]
async fn resume_keeps_what_finished_and_retries_the_interrupted_step() {
    let f = fixture().await;
    let gate = f.workroot.parent().unwrap().join("gate");
    let count = f.workroot.parent().unwrap().join("made");
    let yaml = pipe(&[
        stage(
            "build",
            &[sh_out("make", &format!("echo x >> {}\nartifact=app-7.tgz", count.display()), &["artifact"], "")],
            "",
        ),
        stage(
            "deploy",
            &[sh(
                "push",
                &format!(
                    "echo pushing <+pipeline.stages.build.spec.execution.steps.make.output.outputVariables.artifact>\nwhile [ ! -f {} ]; do sleep 0.02; done",
                    gate.display()
                ),
                "",
            )],
            "",
        ),
    ]);
    let p = pipeline(&yaml);
    let e = create(&f, &p).await;
    // The first process: killed (dropped) once `deploy.push` runs.
    {
        let (entities, secrets) = (Entities::default(), Secrets::default());
        let run = f.engine.run(&e, &p, &entities, &secrets);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("the run ended before it was killed: {r:?}"),
            _ = wait_node(&f.store, &e.id, "deploy.push", Status::Running) => {}
        }
    }
    let before = f.store.nodes(&e.id).await.unwrap();
    assert_eq!(node(&before, "deploy.push").status, Status::Running);
    std::fs::write(&gate, "go").unwrap();
    let status = f.engine.resume(&e, &p, &Entities::default(), &Secrets::default(), &Default::default()).await.unwrap();
    assert_eq!(status, Status::Success);
    let nodes = f.store.nodes(&e.id).await.unwrap();
    // Finished nodes are the same nodes, not run again.
    assert_eq!(node(&nodes, "build.make").id, node(&before, "build.make").id);
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "build ran once");
    let push = attempts(&nodes, "deploy.push");
    assert_eq!(push.len(), 2, "{push:?}");
    assert_eq!((push[0].attempt, push[0].status), (1, Status::Failed));
    assert!(push[0].failure.as_deref().unwrap().starts_with("interrupted"), "{:?}", push[0].failure);
    assert_eq!((push[1].attempt, push[1].status), (2, Status::Success));
    // The stage node is the one the first process made.
    assert_eq!(nodes.iter().filter(|n| n.path == "deploy").count(), 1);
    assert_eq!(node(&nodes, "deploy").status, Status::Success);
    let logs = log_text(&f.store, &e.id).await;
    // The second attempt read the first stage's output (the first attempt's unflushed lines died with it).
    assert!(logs.contains("pushing app-7.tgz"), "{logs}");
    assert!(logs.contains("interrupted: the process running this step stopped"), "{logs}");
}

/// Waits survive their process: an approval decided while nobody ran the execution counts once it is taken
/// over, and an intervention keeps waiting on the same node until someone decides.
#[tokio::test]
async fn resume_keeps_approvals_and_interventions_waiting() {
    let approval = "- step:\n    type: HarnessApproval\n    name: ok\n    identifier: ok\n    timeout: 1m\n    spec:\n      approvalMessage: ship?\n      approvers:\n        userGroups: [release]\n        minimumCount: 1\n        disallowPipelineExecutor: false\n".to_string();
    let mi = "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: ManualIntervention\n        spec:\n          timeout: 1m\n          onTimeout:\n            action:\n              type: MarkAsFailure\n";
    let yaml = pipe(&[
        stage("gate", &[approval], "").replace("type: Custom", "type: Approval"),
        stage("check", &[sh("probe", "exit 3", mi)], ""),
    ]);
    let f = fixture().await;
    let p = pipeline(&yaml);
    let e = create(&f, &p).await;
    let (entities, secrets, seed) = (Entities::default(), Secrets::default(), engine::Seed::default());
    let decide = |node: Node, action: &'static str| {
        let store = f.store.clone();
        let id = e.id.clone();
        async move {
            store
                .put_decision(&Decision {
                    execution_id: id,
                    node_id: node.id,
                    action: action.parse().unwrap(),
                    by: "tester".into(),
                    comment: None,
                    inputs: serde_json::json!({}),
                    at: 0,
                })
                .await
                .unwrap();
        }
    };
    // The first process dies while the approval waits; the approval is given while nobody runs it.
    {
        let run = f.engine.run(&e, &p, &entities, &secrets);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("ended: {r:?}"),
            _ = wait_node(&f.store, &e.id, "gate.ok", Status::ApprovalWaiting) => {}
        }
    }
    let waiting = node(&f.store.nodes(&e.id).await.unwrap(), "gate.ok").clone();
    decide(waiting.clone(), "approve").await;
    // The second process dies while the intervention waits.
    {
        let run = f.engine.resume(&e, &p, &entities, &secrets, &seed);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("ended: {r:?}"),
            _ = wait_node(&f.store, &e.id, "check.probe", Status::InterventionWaiting) => {}
        }
    }
    let nodes = f.store.nodes(&e.id).await.unwrap();
    assert_eq!(node(&nodes, "gate.ok").id, waiting.id);
    assert_eq!(node(&nodes, "gate.ok").status, Status::Success);
    let probe = node(&nodes, "check.probe").clone();
    // The third process: the intervention still waits on the same node; a decision ends it.
    let resumed = f.engine.resume(&e, &p, &entities, &secrets, &seed);
    let decider = async {
        wait_node(&f.store, &e.id, "check.probe", Status::InterventionWaiting).await;
        decide(probe.clone(), "mark-success").await;
    };
    let (status, ()) = tokio::join!(resumed, decider);
    assert_eq!(status.unwrap(), Status::Success);
    let nodes = f.store.nodes(&e.id).await.unwrap();
    assert_eq!(attempts(&nodes, "check.probe").len(), 1, "no new attempt for a decision");
    assert_eq!(node(&nodes, "check.probe").status, Status::Success);
}

/// Run `yaml` and ask for an abort once the node at `path` runs; the nodes as the run left them.
async fn abort_once_running(yaml: &str, path: &str) -> (Status, Vec<Node>) {
    abort_at(yaml, path, Status::Running).await
}

/// An abort that arrives while a step runs leaves no node that had not ended `Success`: what comes next —
/// a looping step, the next iteration of a repeat stage, a step group — is skipped, and every parent of what
/// the abort cut short ends Aborted.
#[tokio::test]
async fn an_abort_leaves_no_later_node_ended_success() {
    let looping = "strategy:\n  repeat:\n    times: 2\n";
    let (status, nodes) =
        abort_once_running(&pipe(&[stage("s", &[sh("a", "sleep 300", ""), sh("b", "echo b", looping)], "")]), "s.a")
            .await;
    assert_eq!(status, Status::Aborted);
    assert_eq!(node(&nodes, "s.a").status, Status::Aborted);
    assert_eq!(node(&nodes, "s.b").status, Status::Skipped, "{nodes:?}");
    assert_eq!(node(&nodes, "s").status, Status::Aborted);

    let repeat = "strategy:\n  repeat:\n    times: 2\n    maxConcurrency: 1\n";
    let (status, nodes) = abort_once_running(
        &pipe(&[stage("r", &[sh("a", "if [ <+strategy.iteration> = 0 ]; then sleep 300; fi", "")], repeat)]),
        "r_0.a",
    )
    .await;
    assert_eq!(status, Status::Aborted);
    assert_eq!(node(&nodes, "r_0").status, Status::Aborted, "{nodes:?}");
    assert_ne!(node(&nodes, "r_1").status, Status::Success, "{nodes:?}");
    assert_eq!(node(&nodes, "r").status, Status::Aborted);

    let group = |id: &str, steps: &[String]| {
        format!("- stepGroup:\n    name: {id}\n    identifier: {id}\n    steps:\n{}", ind(&steps.join(""), 6))
    };
    let (status, nodes) = abort_once_running(
        &pipe(&[stage(
            "g",
            &[group("first", &[sh("x", "sleep 300", "")]), group("second", &[sh("y", "echo y", looping)])],
            "",
        )]),
        "g.first.x",
    )
    .await;
    assert_eq!(status, Status::Aborted);
    assert_eq!(node(&nodes, "g.first").status, Status::Aborted, "{nodes:?}");
    assert_eq!(node(&nodes, "g.second").status, Status::Skipped, "{nodes:?}");
    assert_eq!(node(&nodes, "g").status, Status::Aborted);
}

/// No container that the abort cut short — a child skipped because of it, or aborted — ends Success.
fn no_parent_ended_well_after_the_abort(nodes: &[Node], what: &str) {
    for parent in nodes {
        let cut = nodes.iter().any(|n| {
            n.parent_id.as_deref() == Some(parent.id.as_str())
                && (n.status == Status::Aborted
                    || (n.status == Status::Skipped && n.skip_reason.as_deref() == Some(engine::lifecycle::ABORTED)))
        });
        assert!(
            !(cut && parent.status.is_good()),
            "{what}: {} ended {} though the abort cut its children short: {:?}",
            parent.path,
            parent.status,
            nodes.iter().map(|n| (&n.path, n.status)).collect::<Vec<_>>()
        );
    }
}

/// Run `yaml`, ask for an abort once the node at `path` is in `status`; the nodes as the run left them.
async fn abort_at(yaml: &str, path: &str, status: Status) -> (Status, Vec<Node>) {
    let f = fixture().await;
    let p = pipeline(yaml);
    let e = create(&f, &p).await;
    let abort = async {
        wait_node(&f.store, &e.id, path, status).await;
        assert!(f.store.request_abort(&e.id).await.unwrap());
    };
    let (ents, secrets) = (Entities::default(), Secrets::default());
    let (st, ()) = tokio::join!(f.engine.run(&e, &p, &ents, &secrets), abort);
    (st.unwrap(), f.store.nodes(&e.id).await.unwrap())
}

/// An abort at every phase of every node kind — a plain step running, a looping step after it, a repeat
/// stage's and a matrix stage's iterations, step groups and a looping group's iterations, rollback steps, a
/// step waiting for a person, for an approval, for its retry — leaves no parent ended Success and the
/// execution Aborted.
#[tokio::test]
async fn an_abort_at_every_phase_of_every_node_kind() {
    let group = |id: &str, steps: &[String], extra: &str| {
        format!(
            "- stepGroup:\n    name: {id}\n    identifier: {id}\n{}    steps:\n{}",
            ind(extra, 4),
            ind(&steps.join(""), 6)
        )
    };
    let one_at_a_time = |strategy: &str| format!("strategy:\n  {strategy}\n  maxConcurrency: 1\n");
    let mi = "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: ManualIntervention\n        spec:\n          timeout: 1h\n          onTimeout:\n            action:\n              type: MarkAsFailure\n";
    let retry = "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: Retry\n        spec:\n          retryCount: 3\n          retryIntervals: [1h]\n          onRetryFailure:\n            action:\n              type: MarkAsFailure\n";
    let approval = "- step:\n    type: HarnessApproval\n    name: ok\n    identifier: ok\n    timeout: 1h\n    spec:\n      approvalMessage: ship?\n      approvers:\n        userGroups: [release]\n        minimumCount: 1\n        disallowPipelineExecutor: false\n".to_string();
    let rollback_stage = stage("r", &[sh("bad", "exit 1", "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: StageRollback\n"), sh("never", "echo", "")], "")
        .replace(
            "      execution:\n        steps:\n",
            &format!("      execution:\n        rollbackSteps:\n{}        steps:\n", ind(&(sh("undo", "sleep 300", "") + &sh("undo2", "echo", "")), 10)),
        );
    let later = stage("later", &[sh("z", "echo z", "")], "");
    let cases: Vec<(&str, String, &str, Status)> = vec![
        (
            "plain step",
            pipe(&[stage("s", &[sh("a", "sleep 300", ""), sh("b", "echo", "")], ""), later.clone()]),
            "s.a",
            Status::Running,
        ),
        (
            "looping step",
            pipe(&[stage(
                "s",
                &[sh("a", "sleep 300", ""), sh("b", "echo", "strategy:\n  repeat:\n    times: 2\n")],
                "",
            )]),
            "s.a",
            Status::Running,
        ),
        (
            "looping step's iteration",
            pipe(&[stage(
                "s",
                &[sh("a", "[ <+strategy.iteration> = 0 ] && sleep 300; true", &one_at_a_time("repeat:\n    times: 3"))],
                "",
            )]),
            "s.a_0",
            Status::Running,
        ),
        (
            "repeat stage iteration",
            pipe(&[stage(
                "r",
                &[sh("a", "[ <+strategy.iteration> = 0 ] && sleep 300; true", "")],
                &one_at_a_time("repeat:\n    times: 2"),
            )]),
            "r_0.a",
            Status::Running,
        ),
        (
            "matrix stage iteration",
            pipe(&[stage(
                "m",
                &[sh("a", "[ <+matrix.v> = 1 ] && sleep 300; true", "")],
                "strategy:\n  matrix:\n    v: [1, 2, 3]\n    maxConcurrency: 1\n",
            )]),
            "m_0.a",
            Status::Running,
        ),
        (
            "step group",
            pipe(&[stage(
                "g",
                &[group("first", &[sh("x", "sleep 300", "")], ""), group("second", &[sh("y", "echo", "")], "")],
                "",
            )]),
            "g.first.x",
            Status::Running,
        ),
        (
            "looping group iteration",
            pipe(&[stage(
                "g",
                &[group(
                    "loop",
                    &[sh("x", "[ <+strategy.iteration> = 0 ] && sleep 300; true", "")],
                    &one_at_a_time("repeat:\n    times: 2"),
                )],
                "",
            )]),
            "g.loop_0.x",
            Status::Running,
        ),
        ("rollback steps", pipe(&[rollback_stage]), "r.rollback.undo", Status::Running),
        (
            "waiting for a person",
            pipe(&[stage("s", &[sh("bad", "exit 1", mi), sh("after", "echo", "")], "")]),
            "s.bad",
            Status::InterventionWaiting,
        ),
        (
            "waiting for an approval",
            pipe(&[
                stage("gate", &[approval, sh("after", "echo", "")], "").replace("type: Custom", "type: Approval"),
                later.clone(),
            ]),
            "gate.ok",
            Status::ApprovalWaiting,
        ),
        (
            "waiting for its retry",
            pipe(&[stage("s", &[sh("flaky", "exit 1", retry), sh("after", "echo", "")], "")]),
            "s.flaky",
            Status::Failed,
        ),
    ];
    for (what, yaml, path, when) in cases {
        let (status, nodes) = abort_at(&yaml, path, when).await;
        assert_eq!(
            status,
            Status::Aborted,
            "{what}: {:?}",
            nodes.iter().map(|n| (&n.path, n.status)).collect::<Vec<_>>()
        );
        no_parent_ended_well_after_the_abort(&nodes, what);
        assert!(
            !nodes.iter().any(|n| !n.status.is_final()),
            "{what}: a node was left unfinished: {:?}",
            nodes.iter().map(|n| (&n.path, n.status)).collect::<Vec<_>>()
        );
    }
}

/// The same on a resumed run: the process dies while a repeat stage's first iteration runs, the run is
/// taken over, and the abort comes while the resumed step runs again.
#[tokio::test]
async fn an_abort_of_a_resumed_run_leaves_no_parent_ended_success() {
    let f = fixture().await;
    let yaml = pipe(&[stage(
        "r",
        &[sh("a", "sleep 300", ""), sh("b", "echo", "strategy:\n  repeat:\n    times: 2\n")],
        "strategy:\n  repeat:\n    times: 2\n  maxConcurrency: 1\n",
    )]);
    let p = pipeline(&yaml);
    let e = create(&f, &p).await;
    {
        let (entities, secrets) = (Entities::default(), Secrets::default());
        let run = f.engine.run(&e, &p, &entities, &secrets);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => panic!("the run ended before it was killed: {r:?}"),
            _ = wait_node(&f.store, &e.id, "r_0.a", Status::Running) => {}
        }
    }
    let abort = async {
        // The resumed attempt is attempt 2 of `r_0.a`.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !f
            .store
            .nodes(&e.id)
            .await
            .unwrap()
            .iter()
            .any(|n| n.path == "r_0.a" && n.attempt == 2 && n.status == Status::Running)
        {
            assert!(std::time::Instant::now() < deadline, "the resumed attempt never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(f.store.request_abort(&e.id).await.unwrap());
    };
    let (entities, secrets, seed) = (Entities::default(), Secrets::default(), Default::default());
    let (status, ()) = tokio::join!(f.engine.resume(&e, &p, &entities, &secrets, &seed), abort);
    assert_eq!(status.unwrap(), Status::Aborted);
    let nodes = f.store.nodes(&e.id).await.unwrap();
    no_parent_ended_well_after_the_abort(&nodes, "resumed");
    assert_ne!(node(&nodes, "r_1").status, Status::Success, "{nodes:?}");
}

/// A decision that does not answer the wait it reaches — an approval's answer for a failed step waiting for
/// a person — is said and changes nothing: no fallback picks an action for it; the step follows the decision
/// that does answer.
#[tokio::test]
async fn a_decision_for_another_wait_is_said_and_changes_nothing() {
    let mi = "failureStrategies:\n  - onFailure:\n      errors: [AllErrors]\n      action:\n        type: ManualIntervention\n        spec:\n          timeout: 1m\n          onTimeout:\n            action:\n              type: MarkAsFailure\n";
    let f = fixture().await;
    let p = pipeline(&pipe(&[stage("s", &[sh("bad", "exit 1", mi)], "")]));
    let e = create(&f, &p).await;
    let decider = async {
        let n = wait_for(&f.store, &e.id, Status::InterventionWaiting).await;
        for action in ["approve", "mark-success"] {
            let d = Decision {
                execution_id: e.id.clone(),
                node_id: n.id.clone(),
                action: action.parse().unwrap(),
                by: "tester".into(),
                comment: None,
                inputs: serde_json::json!({}),
                at: 0,
            };
            f.store.put_decision(&d).await.unwrap();
        }
    };
    let (ents, secrets) = (Entities::default(), Secrets::default());
    let (status, ()) = tokio::join!(f.engine.run(&e, &p, &ents, &secrets), decider);
    assert_eq!(status.unwrap(), Status::Success);
    let nodes = f.store.nodes(&e.id).await.unwrap();
    assert_eq!(node(&nodes, "s.bad").status, Status::Success);
    let logs = log_text(&f.store, &e.id).await;
    assert!(logs.contains("`approve` does not answer a failed step's wait; still waiting"), "{logs}");
}
