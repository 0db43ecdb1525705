//! The executor seam, held to its word: with a test executor plugged in, the engine starts no process and
//! sends no request itself. Every ShellScript, Run and Http step reaches the executor as a serialisable task
//! with its expressions rendered, its environment, the secrets it carries and its timeout; what the executor
//! reports (exit status, captured variables, an HTTP answer) is all the engine knows of the work, and lines
//! it streams are masked at the engine's sink.

use async_trait::async_trait;
use engine::executor::{End, Executor, Feedback, Report, Response, Task, Work};
use engine::{Engine, EngineConfig, Entities, Quiet, Secrets};
use spec::inputs;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Mode, NewExecution, SqliteStore, Status, Store};
use tokio::sync::watch;

/// Records every task; answers from a script: `exit N`, captured variables and HTTP answers by URL.
#[derive(Debug, Default)]
struct Scripted {
    tasks: Mutex<Vec<Task>>,
}

#[async_trait]
impl Executor for Scripted {
    async fn run(&self, task: &Task, feedback: &dyn Feedback, _abort: watch::Receiver<bool>) -> Report {
        // A task is data: it survives a trip through JSON unchanged (what a remote agent receives).
        let wire = serde_json::to_string(task).unwrap();
        assert_eq!(&serde_json::from_str::<Task>(&wire).unwrap(), task);
        self.tasks.lock().unwrap().push(task.clone());
        let mut report = Report::ended(End::Exited(0));
        match &task.work {
            Work::Shell { script, capture, env, .. } => {
                feedback.line("stdout", &format!("ran: {}", script.trim())).await;
                for (k, v) in env {
                    feedback.line("stdout", &format!("{k}={v}")).await;
                }
                if script.contains("exit 3") {
                    report.end = End::Exited(3);
                }
                for c in capture {
                    report.outputs.insert(c.name.clone(), format!("{}-from-the-executor", c.var));
                }
            }
            Work::Http { url, .. } => {
                report.end = End::Answered;
                report.response = Some(Response { code: 201, body: format!("{{\"url\": \"{url}\"}}") });
            }
        }
        report
    }
}

const YAML: &str = r#"pipeline:
  name: Seam
  identifier: seam
  variables:
    - name: target
      type: String
      value: staging
    - name: token
      type: Secret
      value: deploy_token
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
                  name: Package
                  identifier: package
                  timeout: 90s
                  spec:
                    shell: Bash
                    source:
                      type: Inline
                      spec:
                        script: touch "$PIPEWRIGHT_WORKDIR/proof"; echo packing for <+pipeline.variables.target>
                    environmentVariables:
                      - name: TOKEN
                        type: Secret
                        value: <+pipeline.variables.token>
                    outputVariables:
                      - name: artifact
                        type: String
                        value: ARTIFACT
              - step:
                  type: Run
                  name: Check
                  identifier: check
                  spec:
                    shell: Sh
                    command: echo checking <+execution.steps.package.output.outputVariables.artifact>; exit 3
                  failureStrategies:
                    - onFailure:
                        errors: [AllErrors]
                        action:
                          type: Ignore
              - step:
                  type: Http
                  name: Notify
                  identifier: notify
                  spec:
                    url: https://deploy.example.test/hooks/<+pipeline.variables.target>
                    method: POST
                    headers:
                      - key: Authorization
                        value: Bearer <+pipeline.variables.token>
                    requestBody: '{"artifact": "<+execution.steps.package.output.outputVariables.artifact>"}'
                    assertion: <+httpResponseCode> == 201
                    outputVariables:
                      - name: echoed
                        type: String
                        value: <+httpResponseBody>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_reaches_the_work_only_through_its_executor() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let executor = Arc::new(Scripted::default());
    let mut config = EngineConfig::new(dir.path());
    config.poll_interval = Duration::from_millis(20);
    config.executor = Some(executor.clone());
    let workroot = config.work_root.clone();
    let engine = Engine::new(store.clone(), Arc::new(Quiet), config);

    let doc = spec::parse_document("seam.yaml", YAML.to_string());
    assert!(doc.is_valid(), "{}", doc.render_diagnostics());
    let body = doc.body().unwrap();
    let values = inputs::resolve(&inputs::runtime_inputs(body), &BTreeMap::new(), None).unwrap();
    let p = spec::pipeline_from_node(&inputs::apply(body, &values, &Default::default()), &doc.texts()).unwrap();
    let e = store
        .create_execution(NewExecution {
            org: "default".into(),
            project: "default".into(),
            pipeline: "seam".into(),
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
        .unwrap();
    let secrets =
        Secrets { values: BTreeMap::from([("deploy_token".to_string(), "s3cr3t-value".to_string())]), no_env: true };
    let status = engine.run(&e, &p, &Entities::default(), &secrets).await.unwrap();
    assert_eq!(status, Status::Success);

    // Nothing ran here: the script that would have left a file never did.
    assert!(!workroot.join(&e.id).join("proof").exists(), "the engine ran the script itself");
    assert!(store.step_processes(&e.id).await.unwrap().is_empty());

    let tasks = executor.tasks.lock().unwrap().clone();
    assert_eq!(tasks.len(), 3, "{tasks:#?}");
    let Work::Shell { script, env, capture, .. } = &tasks[0].work else { panic!("{:?}", tasks[0]) };
    assert!(script.ends_with("echo packing for staging"), "rendered: {script}");
    assert!(env.contains(&("TOKEN".to_string(), "s3cr3t-value".to_string())), "{env:?}");
    assert!(env.contains(&("PIPEWRIGHT_STAGE".to_string(), "build".to_string())), "{env:?}");
    assert_eq!(capture[0].var, "ARTIFACT");
    assert_eq!(tasks[0].timeout_ms, Some(90_000));
    assert_eq!(tasks[0].secrets, ["s3cr3t-value"], "the task lists the secret it carries");
    // What the executor captured is what later steps read.
    let Work::Shell { script, .. } = &tasks[1].work else { panic!() };
    assert!(script.contains("echo checking ARTIFACT-from-the-executor"), "{script}");
    assert!(tasks[1].secrets.is_empty());
    let Work::Http { method, url, headers, body } = &tasks[2].work else { panic!() };
    assert_eq!((method.as_str(), url.as_str()), ("POST", "https://deploy.example.test/hooks/staging"));
    assert_eq!(headers, &[("Authorization".to_string(), "Bearer s3cr3t-value".to_string())]);
    assert_eq!(body.as_deref(), Some(r#"{"artifact": "ARTIFACT-from-the-executor"}"#));

    let nodes = store.nodes(&e.id).await.unwrap();
    let by_path = |p: &str| nodes.iter().rev().find(|n| n.path == p).unwrap().clone();
    // The reported exit status drives the failure strategy; the reported answer drives the assertion.
    assert_eq!(by_path("build.check").status, Status::IgnoreFailed);
    assert_eq!(by_path("build.check").failure.as_deref(), Some("the script exited with status 3"));
    assert_eq!(by_path("build.notify").outputs["echoed"], "{\"url\": \"https://deploy.example.test/hooks/staging\"}");
    // Lines the executor streams are masked at the engine's sink.
    let logs: String = store.logs(&e.id, None).await.unwrap().into_iter().map(|c| c.data).collect();
    assert!(logs.contains("TOKEN=**************"), "{logs}");
    assert!(!logs.contains("s3cr3t-value"), "a secret reached the log: {logs}");
}
