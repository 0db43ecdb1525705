//! The execution state machine. Stages run in YAML order, a `parallel` block's stages side by side; steps run
//! in order, `parallel` steps and step groups side by side, step groups nest. Looping strategies expand a
//! stage, group or step into iterations (`id_0`, `id_1`, …) run up to `maxConcurrency` at a time. `when`
//! gates every node; failure strategies are matched innermost first (step → step groups → stage) and applied
//! to the failed step; timeouts stop whole process groups and mark what was running `Expired`; an abort
//! (Ctrl-C, `pipewright abort`, or an `Abort` action) stops everything. Every node record is written to the
//! store before the engine goes on.

use crate::asked;
use crate::decide;
use crate::error::NodeError;
use crate::lifecycle::{self, End};
use crate::logs::{LogSink, Masker};
use crate::looping::{self, Iteration, LoopError, Looping};
use crate::path::NodePath;
use crate::steps;
use crate::tree::{self, NodeCtx};
use crate::{EngineConfig, EngineError, Entities, Event, Observer, Secrets, Seed};
use expr::{Scope, Value};
use futures::future::join_all;
use spec::{ExecutionElement, Pipeline, Stage, StageType, Step, StepGroup, Strategy, VariableType, When};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Execution, Fence, Node, NodeKind, Status, Store, now_ms};
use tokio::sync::{Semaphore, watch};

mod drive;
mod group;
mod looping_step;
mod stage;
mod step;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Res<T> = Result<T, EngineError>;

/// Runs executions.
pub struct Engine {
    store: Arc<dyn Store>,
    observer: Arc<dyn Observer>,
    config: EngineConfig,
}

struct Run<'p> {
    store: Arc<dyn Store>,
    observer: Arc<dyn Observer>,
    config: EngineConfig,
    exec: Execution,
    pipeline: &'p Pipeline,
    entities: &'p Entities,
    secrets: &'p Secrets,
    masker: Arc<Masker>,
    tree: Mutex<Value>,
    abort_tx: Arc<watch::Sender<bool>>,
    /// The hold every write of this run is made under (given up when the lease can no longer be renewed).
    fence: Fence,
    /// The bytes of log this execution may still store.
    log_quota: Arc<crate::logs::LogQuota>,
    abort_rx: watch::Receiver<bool>,
    position: AtomicI64,
    /// Nodes the execution's looping strategies have brought so far (the node budget, `Limits::nodes`).
    expanded: AtomicUsize,
    /// The stages that may run at once (`Limits::stages_at_once`): a stage (iteration) holds a slot from its
    /// start to its end.
    stage_slots: Semaphore,
    failed: AtomicBool,
    rollback_pipeline: AtomicBool,
    ran: Mutex<Vec<RanStage>>,
    seed: &'p Seed,
    /// Resuming: the execution's nodes as the process that died left them, by path (the latest attempt).
    prior: HashMap<String, Node>,
    /// The `.executionInput()` fields not given when the run started, asked as the run reaches their owner.
    asked: Vec<asked::Asked>,
    /// Values given for them so far, by path.
    given: Mutex<BTreeMap<String, String>>,
    /// One ask at a time per owner (iterations of a looping node ask once).
    asking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last log chunk an ask wrote on a node, by node id: the node's own log numbers on after it.
    asked_logs: Mutex<HashMap<String, i64>>,
    /// Where step tasks run.
    executor: Arc<dyn crate::executor::Executor>,
    /// How many nodes wait for inputs: the execution is `InputWaiting` while any does.
    input_waits: tokio::sync::Mutex<usize>,
}

/// A task that lives as long as its run (the lease heartbeat, the abort poller): it stops when the run does,
/// however the run ends (a future dropped in the middle included).
struct Beat(tokio::task::JoinHandle<()>);

impl Drop for Beat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stage iteration that ran: its id, its index among the pipeline's stages, its local values (for
/// `PipelineRollback`).
type RanStage = (String, usize, BTreeMap<String, Value>);

/// One stage iteration being run.
struct StageCx<'p> {
    stage: &'p Stage,
    id: String,
    node_id: String,
    path: String,
    local: BTreeMap<String, Value>,
    failed: AtomicBool,
    rollback: AtomicBool,
    /// The stage's `Background` steps still running: stopped when the stage ends.
    background: Arc<Mutex<Vec<Background>>>,
}

/// A `Background` step's process: what stops it, and its task.
type Background = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

/// Feedback of a `Background` step's process, which outlives the step's own attempt.
struct BackgroundFeedback {
    log: LogSink,
    store: Arc<dyn Store>,
    fence: store::Fence,
    execution_id: String,
    node_id: String,
}

#[async_trait::async_trait]
impl crate::executor::Feedback for BackgroundFeedback {
    async fn line(&self, stream: &'static str, text: &str) {
        self.log.line(stream, text).await;
    }
    async fn tick(&self) {
        self.log.flush_if_idle().await;
    }
    async fn started(&self, p: store::StepProcess) {
        let _ = self.store.put_step_process(&self.execution_id, &self.node_id, &p, &self.fence).await;
    }
}

impl Engine {
    /// An engine over a store.
    pub fn new(store: Arc<dyn Store>, observer: Arc<dyn Observer>, config: EngineConfig) -> Self {
        Engine { store, observer, config }
    }

    /// Run an execution (already created in the store, status `Queued`) to its end.
    pub async fn run(
        &self,
        exec: &Execution,
        pipeline: &Pipeline,
        entities: &Entities,
        secrets: &Secrets,
    ) -> Res<Status> {
        self.run_seeded(exec, pipeline, entities, secrets, &Seed::default()).await
    }

    /// Run an execution with values seeded before it starts (supplied or reused dependencies).
    pub async fn run_seeded(
        &self,
        exec: &Execution,
        pipeline: &Pipeline,
        entities: &Entities,
        secrets: &Secrets,
        seed: &Seed,
    ) -> Res<Status> {
        self.go(exec, pipeline, entities, secrets, seed, false).await
    }

    /// Go on with an execution whose process died: finished nodes stay as they are (their outputs back in
    /// the value tree); a step that was running gets its attempt closed as interrupted and a new attempt under
    /// its failure strategy (the interrupted one counts as a retry); waiting approvals and interventions keep
    /// waiting, on the same node, so a decision taken meanwhile counts.
    pub async fn resume(
        &self,
        exec: &Execution,
        pipeline: &Pipeline,
        entities: &Entities,
        secrets: &Secrets,
        seed: &Seed,
    ) -> Res<Status> {
        self.go(exec, pipeline, entities, secrets, seed, true).await
    }

    async fn go(
        &self,
        exec: &Execution,
        pipeline: &Pipeline,
        entities: &Entities,
        secrets: &Secrets,
        seed: &Seed,
        resume: bool,
    ) -> Res<Status> {
        // An execution that already ended (aborted while queued) or whose abort was asked before it started
        // does not run.
        let current = self.store.execution(&exec.id).await?;
        if current.status.is_final() {
            return Ok(current.status);
        }
        if self.store.abort_requested(&exec.id).await? {
            self.store
                .set_execution_status(&exec.id, Status::Aborted, Some("aborted before it started"), &Fence::unowned())
                .await?;
            self.observer.event(&Event::Finished(Status::Aborted));
            return Ok(Status::Aborted);
        }
        // One owner at a time: this process holds the execution while it renews its lease.
        let lease = self.config.lease;
        let claim =
            |now: i64| self.store.claim_execution(&exec.id, &self.config.owner, now, crate::owner::until(lease));
        let mut claimed = claim(now_ms()).await?;
        if claimed.is_none()
            && let Some((owner, _)) = self.store.lease(&exec.id).await?
            && crate::owner::owner_is_dead(&owner)
        {
            // Its owner was a process of this host that is gone: its hold is void, whatever its lease says.
            claimed = claim(i64::MAX).await?;
        }
        let Some(epoch) = claimed else {
            let (owner, until) = self.store.lease(&exec.id).await?.unwrap_or_default();
            let until = until.map_or_else(
                || "its renewal".to_string(),
                |ms| format!("{} s from now", ((ms - now_ms()) as f64 / 1000.0).max(0.0).ceil()),
            );
            return Err(EngineError::Owned { execution: exec.id.clone(), owner, until });
        };
        // Every write of this run is made under this claim's fence.
        let fence = Fence::owner(&self.config.owner, epoch);
        let (abort_tx, abort_rx) = watch::channel(false);
        let abort_tx = Arc::new(abort_tx);
        let heartbeat = {
            let (store, id, fence, abort) = (self.store.clone(), exec.id.clone(), fence.clone(), abort_tx.clone());
            Beat(tokio::spawn(async move {
                let mut renewed = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(lease / 3).await;
                    // A renewal that hangs (the store riding out an outage) counts as not renewed.
                    let left = (lease * 2 / 3).saturating_sub(renewed.elapsed()).max(Duration::from_millis(10));
                    let answer =
                        match tokio::time::timeout(left, store.renew_lease(&id, &fence, crate::owner::until(lease)))
                            .await
                        {
                            Ok(Ok(held)) => Some(held),
                            Ok(Err(_)) | Err(_) => None,
                        };
                    match crate::owner::after_renewal(answer, renewed.elapsed(), lease) {
                        crate::owner::Renewal::Held => renewed = tokio::time::Instant::now(),
                        crate::owner::Renewal::Retry => {}
                        // Taken over, or the lease can no longer be trusted: this process stops acting on the
                        // execution — its steps are stopped and every write refused — so that it never runs
                        // beside the owner that takes it over.
                        crate::owner::Renewal::GiveUp => {
                            fence.lose();
                            let _ = abort.send(true);
                            return;
                        }
                    }
                }
            }))
        };
        let workdir = self.config.work_root.join(&exec.id);
        if let Err(source) = crate::sandbox::prepare_workspace(&self.config, &workdir) {
            drop(heartbeat);
            return Err(EngineError::WorkDir { path: workdir.display().to_string(), source });
        }
        let mut prior: HashMap<String, Node> = HashMap::new();
        if resume {
            for n in self.store.nodes(&exec.id).await? {
                match prior.get(&n.path) {
                    Some(p) if (p.attempt, p.position) > (n.attempt, n.position) => {}
                    _ => {
                        prior.insert(n.path.clone(), n);
                    }
                }
            }
        }
        let next_position = prior.values().map(|n| n.position + 1).max().unwrap_or(0);
        // A run taken over counts the log its earlier owner stored against the quota.
        let stored =
            if resume { self.store.logs(&exec.id, None).await?.iter().map(|c| c.data.len() as u64).sum() } else { 0 };
        let log_quota = crate::logs::LogQuota::new(self.config.max_log_bytes, stored);
        let (asked, given) = asked::read(&current.inputs);
        let run = Run {
            store: self.store.clone(),
            observer: self.observer.clone(),
            config: self.config.clone(),
            exec: exec.clone(),
            pipeline,
            entities,
            secrets,
            masker: {
                // Every secret this execution may read is masked from the start, wherever it surfaces.
                let m = Masker::default();
                secrets.values.values().for_each(|v| m.add(v));
                Arc::new(m)
            },
            tree: Mutex::new(Value::Map(BTreeMap::new())),
            abort_tx,
            abort_rx,
            fence: fence.clone(),
            log_quota,
            position: AtomicI64::new(next_position),
            expanded: AtomicUsize::new(0),
            stage_slots: Semaphore::new(self.config.limits.stages_at_once.max(1)),
            failed: AtomicBool::new(false),
            rollback_pipeline: AtomicBool::new(false),
            ran: Mutex::new(Vec::new()),
            seed,
            prior,
            asked,
            given: Mutex::new(given),
            asking: Mutex::new(HashMap::new()),
            asked_logs: Mutex::new(HashMap::new()),
            executor: self.config.executor.clone().unwrap_or_else(|| {
                // A step stopped because the hold was given up ends within the lease: its SIGTERM → SIGKILL
                // grace is at most a quarter of it.
                Arc::new(crate::executor::LocalExecutor::new(
                    self.config.isolation.clone(),
                    self.config.work_root.clone(),
                    self.config.kill_grace.min(lease / 4),
                ))
            }),
            input_waits: tokio::sync::Mutex::new(0),
        };
        // Another process (`pipewright abort`, a Ctrl-C handler) asks through the store.
        let poller = {
            let store = self.store.clone();
            let tx = run.abort_tx.clone();
            let id = exec.id.clone();
            let every = self.config.poll_interval;
            Beat(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if store.abort_requested(&id).await.unwrap_or(false) {
                        let _ = tx.send(true);
                        return;
                    }
                }
            }))
        };
        let result = run.pipeline().await;
        drop(poller);
        drop(heartbeat);
        // Every step has ended: no process group of this execution is left to stop.
        let _ = self.store.drop_step_process(&exec.id, "", &fence).await;
        let status = result?;
        self.observer.event(&Event::Finished(status));
        Ok(status)
    }
}

impl StageCx<'_> {
    /// What a stage (iteration) or group iteration learns from one of its children's ends — the one place its
    /// failure and rollback state change: a child that did not end well makes the later ones' status gates
    /// see a failure; a child whose failure strategy asked for the stage's rollback has it run.
    fn learn(&self, end: &End) {
        if !end.status.is_good() {
            self.failed.store(true, Ordering::SeqCst);
        }
        if end.signal == Some(lifecycle::Signal::StageRollback) {
            self.rollback.store(true, Ordering::SeqCst);
        }
    }
}

impl<'p> Run<'p> {
    /// What the execution learns from a stage's end — the one place its failure state changes: a stage that
    /// did not end well fails the pipeline (later stages' status gates and `<+pipeline.status>` see it).
    fn learn(&self, end: &End) {
        if !end.status.is_good() {
            self.failed.store(true, Ordering::SeqCst);
            self.set_tree(&["pipeline", "status"], Value::String(Status::Failed.expression_value().into()));
            self.set_tree(&["pipeline", "currentStatus"], Value::String(Status::Failed.expression_value().into()));
        }
    }

    fn aborted(&self) -> bool {
        *self.abort_rx.borrow()
    }

    fn new_node(&self, parent: Option<&str>, kind: NodeKind, identifier: &str, name: &str, path: &str) -> Node {
        if let Some(n) = self.prior.get(path) {
            // Resuming: the node the dead process left (same id, so decisions and logs stay attached).
            return n.clone();
        }
        Node {
            id: ulid::Ulid::new().to_string(),
            execution_id: self.exec.id.clone(),
            parent_id: parent.map(String::from),
            kind,
            identifier: identifier.to_string(),
            name: name.to_string(),
            path: path.to_string(),
            position: self.position.fetch_add(1, Ordering::SeqCst),
            attempt: 1,
            status: Status::Queued,
            started_at: None,
            ended_at: None,
            failure: None,
            skip_reason: None,
            outputs: serde_json::Map::new(),
            reused_from: None,
        }
    }

    /// Store a node, then tell the observer what happened to it (`event`: `Event::Started`, `Event::Ended`, …).
    async fn save(&self, n: &Node, event: fn(Box<Node>) -> Event) -> Res<()> {
        // What is stored and shown never holds a secret value: failures (an Http URL, an error quoting a
        // value), skip reasons, output and stage variables are masked on their way out.
        let masked;
        let n = if self.has_secret(n) {
            let mut m = n.clone();
            m.failure = m.failure.map(|f| self.masker.mask(&f));
            m.skip_reason = m.skip_reason.map(|f| self.masker.mask(&f));
            m.outputs.values_mut().for_each(|v| self.masker.mask_json(v));
            masked = m;
            &masked
        } else {
            n
        };
        self.store.put_node(n, &self.fence).await?;
        self.observer.event(&event(Box::new(n.clone())));
        Ok(())
    }

    fn has_secret(&self, n: &Node) -> bool {
        let m = &self.masker;
        n.failure.as_deref().is_some_and(|t| m.holds_secret(t))
            || n.skip_reason.as_deref().is_some_and(|t| m.holds_secret(t))
            || n.outputs.values().any(|v| m.json_holds_secret(v))
    }

    /// Every runtime input given so far (at the start, and `.executionInput()`s answered since), as the
    /// environment variables steps get: `PIPEWRIGHT_INPUT_<PATH>`.
    fn input_env(&self) -> Vec<(String, String)> {
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        if let Some(map) = self.exec.inputs.as_object() {
            for (path, v) in map.iter().filter(|(k, _)| !k.starts_with("__")) {
                let value = match v.get("value").unwrap_or(v) {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => continue,
                    other => other.to_string(),
                };
                out.insert(spec::inputs::input_env_name(path), value);
            }
        }
        for (path, v) in self.given.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.insert(spec::inputs::input_env_name(path), v.clone());
        }
        out.into_iter().collect()
    }

    /// Record the execution's status, its failure masked.
    async fn set_status(&self, status: Status, failure: Option<&str>) -> Res<()> {
        let failure = failure.map(|f| self.masker.mask(f));
        self.store.set_execution_status(&self.exec.id, status, failure.as_deref(), &self.fence).await?;
        Ok(())
    }

    /// The tags an agent must have to run a step (`delegateSelectors`, as `Pipeline::delegate_selectors`
    /// chooses them), rendered; empty ones dropped.
    fn selectors(&self, s: &Step, cx: &StageCx<'_>, ctx: &NodeCtx<'_>) -> Vec<String> {
        let mut out: Vec<String> = self
            .pipeline
            .delegate_selectors(cx.stage, s)
            .iter()
            .filter_map(|v| ctx.render(&v.value).ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    async fn start(&self, n: &mut Node) -> Res<()> {
        n.status = Status::Running;
        // A node taken over keeps the time it first started.
        n.started_at.get_or_insert_with(now_ms);
        self.save(n, Event::Started).await
    }

    async fn finish(&self, n: &mut Node, status: Status, failure: Option<String>) -> Res<Status> {
        n.status = status;
        n.failure = failure;
        n.ended_at = Some(now_ms());
        self.save(n, Event::Ended).await?;
        Ok(status)
    }

    async fn skip(&self, n: &mut Node, reason: String) -> Res<Status> {
        n.skip_reason = Some(reason);
        n.ended_at = Some(now_ms());
        n.status = Status::Skipped;
        self.save(n, Event::Ended).await?;
        Ok(Status::Skipped)
    }

    fn sink(&self, node: &Node) -> LogSink {
        let asked = self.asked_logs.lock().unwrap_or_else(|e| e.into_inner()).get(&node.id).copied();
        LogSink::new(
            (self.store.clone(), self.fence.clone()),
            self.observer.clone(),
            self.masker.clone(),
            &self.exec.id,
            &node.id,
            &node.path,
        )
        .with_quota(self.log_quota.clone())
        .after(asked.unwrap_or(0))
    }

    fn set_tree(&self, path: &[&str], v: Value) {
        let mut t = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        tree::set(&mut t, path, v);
    }

    /// Evaluate against the tree.
    fn with_ctx<T>(&self, local: &BTreeMap<String, Value>, scope: &Scope, f: impl FnOnce(&NodeCtx<'_>) -> T) -> T {
        // Synchronous: the lock is held only while evaluating, never across an await.
        let global = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        let ctx = NodeCtx { global: &global, local, scope, secrets: self.secrets, masker: &self.masker };
        f(&ctx)
    }

    async fn pipeline(&self) -> Res<Status> {
        let p = self.pipeline;
        self.store.set_execution_status(&self.exec.id, Status::Running, None, &self.fence).await?;
        let mut root = BTreeMap::new();
        root.insert("name".into(), Value::String(p.name.value.clone()));
        root.insert("identifier".into(), Value::String(p.identifier.value.clone()));
        root.insert("sequenceId".into(), Value::Int(self.exec.sequence_id));
        root.insert("executionId".into(), Value::String(self.exec.id.clone()));
        root.insert("startTs".into(), Value::Int(now_ms()));
        root.insert("status".into(), Value::String(Status::Running.expression_value().into()));
        root.insert("currentStatus".into(), Value::String(Status::Running.expression_value().into()));
        // Runs started by a person (the CLI, the API, the web UI): Harness's value for a manual run.
        root.insert("triggerType".into(), Value::String("MANUAL".into()));
        root.insert(
            "executionUrl".into(),
            self.config.url.as_ref().map_or(Value::Null, |u| Value::String(format!("{u}/executions/{}", self.exec.id))),
        );
        root.insert(
            "description".into(),
            p.description.as_ref().map_or(Value::Null, |d| Value::String(d.value.clone())),
        );
        root.insert("tags".into(), Value::from(serde_json::Value::Object(p.tags.clone().unwrap_or_default())));
        root.insert("properties".into(), p.properties.clone().map_or(Value::Null, Value::from));
        root.insert("orgIdentifier".into(), Value::String(self.exec.org.clone()));
        root.insert("projectIdentifier".into(), Value::String(self.exec.project.clone()));
        root.insert(
            "triggeredBy".into(),
            Value::Map(BTreeMap::from([("name".to_string(), Value::String(self.exec.triggered_by.clone()))])),
        );
        let selected: Vec<String> = if self.exec.selected_stages.is_empty() {
            p.all_stages().iter().map(|s| s.identifier.value.clone()).collect()
        } else {
            self.exec.selected_stages.clone()
        };
        root.insert("selectedStages".into(), Value::List(selected.iter().cloned().map(Value::String).collect()));
        root.insert("stages".into(), Value::Map(BTreeMap::new()));
        root.insert("variables".into(), Value::Map(BTreeMap::new()));
        self.set_tree(&["pipeline"], Value::Map(root));
        for (k, v) in &self.config.codebase {
            let mut path = vec!["codebase"];
            path.extend(k.split('.'));
            self.set_tree(&path, Value::String(v.clone()));
        }
        let given = self.given.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (path, v) in given {
            self.set_tree(&["executionInput", path.as_str()], Value::String(v));
        }
        // The pipeline's own `.executionInput()` fields are asked before anything else runs.
        if let Err((status, why)) =
            self.ask(None, "pipeline", false, p.timeout.as_ref().and_then(|t| t.as_std())).await?
        {
            self.set_status(status, Some(&why)).await?;
            return Ok(status);
        }

        let scope = Scope::default();
        for v in &p.variables {
            match self.variable(v, &BTreeMap::new(), &scope) {
                Ok(val) => self.set_tree(&["pipeline", "variables", v.name.as_str()], val),
                Err(e) => {
                    let msg = e.within("pipeline variable", &v.name.value).to_string();
                    self.set_status(Status::Failed, Some(&msg)).await?;
                    return Ok(Status::Failed);
                }
            }
        }

        for (path, v) in &self.seed.values {
            let segs: Vec<&str> = path.split('.').collect();
            self.set_tree(&segs, v.clone());
        }
        // Resuming: what finished before the process died is back in the tree (outputs, statuses, variables).
        if !self.prior.is_empty() {
            let done: Vec<Node> = self.prior.values().filter(|n| n.status.is_final()).cloned().collect();
            if let Value::Map(root) = crate::tree_from_nodes(&done)
                && let Some(Value::Map(p)) = root.get("pipeline")
                && let Some(Value::Map(stages)) = p.get("stages")
            {
                for (id, sub) in stages {
                    self.set_tree(&["pipeline", "stages", id], sub.clone());
                }
            }
        }

        let stages = async {
            for group in p.stage_groups() {
                if group.len() == 1 {
                    let end = self.stage(group[0]).await?;
                    self.learn(&end);
                } else {
                    fan_out(group.clone(), group.len(), |s| self.stage(s), |end| self.learn(end)).await?;
                }
            }
            Res::Ok(())
        };
        let timed_out = match p.timeout.as_ref().and_then(|t| t.as_std()) {
            Some(t) => match tokio::time::timeout(t, stages).await {
                Ok(r) => {
                    r?;
                    false
                }
                Err(_) => true,
            },
            None => {
                stages.await?;
                false
            }
        };
        if timed_out {
            self.expire_running("").await?;
            let _ = self.abort_tx.send(true);
        }
        if self.rollback_pipeline.load(Ordering::SeqCst) && !self.aborted() {
            self.pipeline_rollback().await?;
        }
        let (status, failure) = if timed_out {
            (Status::Expired, Some("the pipeline timed out".to_string()))
        } else if self.aborted() {
            (Status::Aborted, Some("the execution was aborted".to_string()))
        } else if self.failed.load(Ordering::SeqCst) {
            (Status::Failed, None)
        } else {
            (Status::Success, None)
        };
        self.set_status(status, failure.as_deref()).await?;
        Ok(status)
    }

    fn variable(&self, v: &spec::Variable, local: &BTreeMap<String, Value>, scope: &Scope) -> Result<Value, NodeError> {
        let raw = v.value.as_ref().map(|s| s.value.clone()).or_else(|| v.default.as_ref().map(|d| d.value.clone()));
        let Some(raw) = raw else {
            if v.required == Some(true) {
                return Err(NodeError::Required);
            }
            return Ok(Value::String(String::new()));
        };
        let text = self.with_ctx(local, scope, |c| c.render(&raw))?;
        match v.var_type {
            VariableType::Secret => {
                // A Secret variable's value names a secret; one rendered into a secret's value is a mistake,
                // reported without the value (it would be the secret, in a spelling the mask might miss).
                if raw.contains("<+") && self.masker.holds_secret(&text) {
                    return Err(NodeError::SecretValueNotIdentifier);
                }
                let id =
                    text.trim().strip_prefix("account.").or(text.trim().strip_prefix("org.")).unwrap_or(text.trim());
                let value = self.secrets.get(id).ok_or_else(|| NodeError::MissingSecret { id: id.to_string() })?;
                self.masker.add(&value);
                Ok(Value::String(value))
            }
            VariableType::Number => match text.trim().parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) => text.trim().parse::<f64>().map(Value::Float).map_err(|_| NodeError::NotANumber(text.clone())),
            },
            VariableType::String => Ok(Value::String(text)),
        }
    }

    fn stage_index(&self, s: &Stage) -> usize {
        self.pipeline.all_stages().iter().position(|x| x.identifier.value == s.identifier.value).unwrap_or(0)
    }

    /// One stage iteration: its entry in the tree, variables, service / environment, steps, rollback.
    async fn stage_body(
        &self,
        s: &'p Stage,
        iid: String,
        node: &Node,
        mut local: BTreeMap<String, Value>,
        target: Option<&looping::Target>,
    ) -> Res<End> {
        let scope = Scope::stage(&iid);
        let base = ["pipeline", "stages", iid.as_str()];
        self.set_tree(&[&base[..], &["identifier"]].concat(), Value::String(iid.clone()));
        self.set_tree(&[&base[..], &["name"]].concat(), Value::String(s.name.value.clone()));
        self.set_tree(
            &[&base[..], &["type"]].concat(),
            Value::String(
                serde_json::to_value(s.stage_type).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            ),
        );
        self.set_tree(&[&base[..], &["status"]].concat(), Value::String(Status::Running.expression_value().into()));
        let log = self.sink(node);
        if s.stage_type == StageType::Deployment
            && let Err(e) = self.deployment(s, &iid, &mut local, &scope, target)
        {
            log.line("pipewright", &e.to_string()).await;
            log.flush().await;
            return Ok(End::new(Status::Failed, Some(e.to_string())));
        }
        for v in &s.variables {
            match self.variable(v, &local, &scope) {
                Ok(val) => self.set_tree(&[&base[..], &["variables", v.name.as_str()]].concat(), val),
                Err(e) => {
                    let msg = e.within("stage variable", &v.name.value).to_string();
                    log.line("pipewright", &msg).await;
                    log.flush().await;
                    return Ok(End::new(Status::Failed, Some(msg)));
                }
            }
        }
        if s.stage_type == StageType::Pipeline {
            let (status, reason) = self.chained(s, &iid, &local, &scope, &log).await?;
            if let Some(r) = &reason {
                log.line("pipewright", r).await;
            }
            log.flush().await;
            return Ok(End::new(status, reason));
        }
        let cx = StageCx {
            stage: s,
            id: iid.clone(),
            node_id: node.id.clone(),
            path: iid.clone(),
            local,
            failed: AtomicBool::new(false),
            rollback: AtomicBool::new(false),
            background: Arc::default(),
        };
        self.ran.lock().unwrap_or_else(|e| e.into_inner()).push((iid.clone(), self.stage_index(s), cx.local.clone()));
        let body = self.elements(&cx, &s.spec.execution.steps, Vec::new(), &cx.node_id, &cx.path, false);
        let mut end = match s.timeout.as_ref().and_then(|t| t.as_std()) {
            Some(t) => match tokio::time::timeout(t, body).await {
                Ok(r) => r?,
                Err(_) => {
                    self.expire_running(&format!("{iid}.")).await?;
                    log.line(
                        "pipewright",
                        &format!(
                            "stage timed out after {}",
                            s.timeout.as_ref().map(|t| t.text.as_str()).unwrap_or("?")
                        ),
                    )
                    .await;
                    End::new(Status::Expired, None)
                }
            },
            None => body.await?,
        };
        if self.aborted() && !end.status.is_final() {
            end.status = Status::Aborted;
        }
        if cx.rollback.load(Ordering::SeqCst) && !s.spec.execution.rollback_steps.is_empty() {
            log.line("pipewright", "running the stage's rollback steps").await;
            self.elements(
                &cx,
                &s.spec.execution.rollback_steps,
                Vec::new(),
                &cx.node_id,
                &format!("{iid}.rollback"),
                true,
            )
            .await?;
        }
        // The stage's background services end with it.
        let running: Vec<Background> = std::mem::take(&mut *cx.background.lock().unwrap_or_else(|e| e.into_inner()));
        if !running.is_empty() {
            log.line("pipewright", &format!("stopping {} background step(s)", running.len())).await;
        }
        for (stop, _) in &running {
            let _ = stop.send(true);
        }
        for (_, task) in running {
            let _ = task.await;
        }
        log.flush().await;
        Ok(end)
    }

    /// Start a `Background` step's process and leave it running until its stage ends; its lines go to the
    /// step's log meanwhile.
    fn start_background(&self, cx: &StageCx<'_>, node: &Node, task: crate::executor::Task, after: i64) {
        let feedback = BackgroundFeedback {
            log: self.sink(node).after(after),
            store: self.store.clone(),
            fence: self.fence.clone(),
            execution_id: self.exec.id.clone(),
            node_id: node.id.clone(),
        };
        let executor = self.executor.clone();
        let (stop, stopped) = watch::channel(false);
        let mut abort = self.abort_rx.clone();
        let task = tokio::spawn(async move {
            // An abort of the execution stops it too.
            let (tx, rx) = watch::channel(false);
            let mut stopped = stopped;
            let run = executor.run(&task, &feedback, rx);
            tokio::pin!(run);
            let report = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = stopped.changed() => { let _ = tx.send(true); }
                    _ = steps::wait_abort(&mut abort) => { let _ = tx.send(true); }
                }
            };
            feedback.log.line("pipewright", &format!("background step stopped ({:?})", report.end)).await;
            feedback.log.flush().await;
        });
        cx.background.lock().unwrap_or_else(|e| e.into_inner()).push((stop, task));
    }

    /// A `Pipeline` stage: run the chained pipeline as a child execution with the stage's inputs, wait for it,
    /// and read the stage's outputs from what the child recorded.
    async fn chained(
        &self,
        s: &Stage,
        iid: &str,
        local: &BTreeMap<String, Value>,
        scope: &Scope,
        log: &LogSink,
    ) -> Res<(Status, Option<String>)> {
        let Some(c) = s.spec.chained.as_ref() else {
            return Ok((Status::Failed, Some("the stage names no pipeline to run".into())));
        };
        let Some(children) = self.config.children.clone() else {
            return Ok((
                Status::Failed,
                Some("this runner cannot start chained pipelines (`Pipeline` stages run with `pipewright run` and on a server)".into()),
            ));
        };
        if self.config.chain_depth >= crate::chain::MAX_DEPTH {
            return Ok((
                Status::Failed,
                Some(format!(
                    "pipelines chain deeper than {} levels; does pipeline `{}` chain itself?",
                    crate::chain::MAX_DEPTH,
                    c.pipeline.value
                )),
            ));
        }
        let render = |v: Option<&spec::Str>, default: &str| -> Result<String, NodeError> {
            match v {
                Some(v) => Ok(self.with_ctx(local, scope, |x| x.render(v))?),
                None => Ok(default.to_string()),
            }
        };
        let prepared = (|| -> Result<_, NodeError> {
            let org = render(c.org.as_ref(), &self.exec.org)?;
            let project = render(c.project.as_ref(), &self.exec.project)?;
            let pipeline = render(Some(&c.pipeline), "")?;
            let inputs = match &c.inputs {
                Some(i) => self.with_ctx(local, scope, |x| x.render_json(i, "inputs"))?,
                None => serde_json::Value::Null,
            };
            Ok((org, project, pipeline, inputs))
        })();
        let (org, project, pipeline, inputs) = match prepared {
            Ok(x) => x,
            Err(e) => return Ok((Status::Failed, Some(e.to_string()))),
        };
        log.line("pipewright", &format!("running pipeline `{pipeline}` ({org}/{project}) as a child execution")).await;
        log.flush().await;
        let req = crate::chain::ChildRequest {
            parent_execution: self.exec.id.clone(),
            parent_stage: iid.to_string(),
            org,
            project,
            pipeline: pipeline.clone(),
            inputs,
            depth: self.config.chain_depth + 1,
        };
        let run = match children.run(req).await {
            Ok(r) => r,
            Err(e) => return Ok((Status::Failed, Some(format!("pipeline `{pipeline}` could not start: {e}")))),
        };
        self.set_tree(&["pipeline", "stages", iid, "childExecutionId"], Value::String(run.execution_id.clone()));
        log.line("pipewright", &format!("child execution {} ended {}", run.execution_id, run.status)).await;
        // The outputs read the child's values.
        let nodes = self.store.nodes(&run.execution_id).await?;
        let child_tree = crate::tree_from_nodes(&nodes);
        let mut outputs = BTreeMap::new();
        let child_scope = Scope::default();
        let none = BTreeMap::new();
        let ctx = crate::tree::NodeCtx {
            global: &child_tree,
            local: &none,
            scope: &child_scope,
            secrets: self.secrets,
            masker: &self.masker,
        };
        let mut problem = None;
        for o in &c.outputs {
            match ctx.render(&o.value) {
                Ok(v) => {
                    outputs.insert(o.name.value.clone(), Value::String(v));
                }
                Err(e) if run.status == Status::Success => {
                    problem = Some(format!("output `{}`: {e}", o.name.value));
                }
                // A child that did not succeed may not have produced it.
                Err(_) => {}
            }
        }
        self.set_tree(&["pipeline", "stages", iid, "output"], Value::Map(outputs));
        if let Some(p) = problem {
            return Ok((Status::Failed, Some(p)));
        }
        let status = match run.status {
            Status::Success | Status::IgnoreFailed => Status::Success,
            other if other.is_final() => other,
            _ => Status::Failed,
        };
        let reason = (status != Status::Success)
            .then(|| format!("child execution {} of pipeline `{pipeline}` ended {}", run.execution_id, run.status));
        Ok((status, reason))
    }

    /// A stage's resolved values, kept on its node so a later execution can reuse them.
    fn stage_values(&self, iid: &str) -> serde_json::Map<String, serde_json::Value> {
        let t = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = serde_json::Map::new();
        for key in ["variables", "service", "serviceVariables", "env", "infra", "output", "childExecutionId"] {
            if let Some(v) = tree::get(&t, &["pipeline".into(), "stages".into(), iid.into(), key.into()])
                && let Ok(j) = serde_json::to_value(v)
            {
                out.insert(key.to_string(), j);
            }
        }
        out
    }

    async fn pipeline_rollback(&self) -> Res<()> {
        let ran: Vec<_> = self.ran.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let stages = self.pipeline.all_stages();
        for (iid, idx, local) in ran.into_iter().rev() {
            let s = stages[idx];
            if s.spec.execution.rollback_steps.is_empty() {
                continue;
            }
            let mut node = self.new_node(
                None,
                NodeKind::Stage,
                &format!("{iid}_rollback"),
                &format!("{} (rollback)", s.name.value),
                &format!("{iid}.rollback"),
            );
            self.start(&mut node).await?;
            let cx = StageCx {
                stage: s,
                id: iid.clone(),
                node_id: node.id.clone(),
                path: iid.clone(),
                local,
                failed: AtomicBool::new(false),
                rollback: AtomicBool::new(false),
                background: Arc::default(),
            };
            let end = self
                .elements(&cx, &s.spec.execution.rollback_steps, Vec::new(), &node.id, &format!("{iid}.rollback"), true)
                .await?;
            self.finish(&mut node, end.status, None).await?;
        }
        Ok(())
    }

    /// What a Deployment stage deploys when it is more than one service to one infrastructure: every service of
    /// `services` to every infrastructure definition of every environment of `environments` (or of its one
    /// `environment`, which may list several), and whether they run side by side. None for one target.
    fn deploy_targets(&self, s: &Stage, scope: &Scope) -> Result<Option<(Vec<looping::Target>, bool)>, NodeError> {
        let spec = &s.spec;
        if s.stage_type != StageType::Deployment {
            return Ok(None);
        }
        let local = BTreeMap::new();
        let render = |v: &spec::Str| self.with_ctx(&local, scope, |c| c.render(v));
        let single_env = spec.environment.as_ref().filter(|e| e.use_from_stage.is_none());
        let many_infras = single_env.is_some_and(|e| {
            e.infrastructure_definitions.len() > 1
                || (e.deploy_to_all == Some(true) && e.infrastructure_definitions.is_empty())
        });
        if spec.services.is_none() && spec.environments.is_none() && !many_infras {
            return Ok(None);
        }
        let mut services = Vec::new();
        // `services: {useFromStage}`: the services of that stage (following its own propagation).
        let mut from = spec;
        for _ in 0..self.pipeline.all_stages().len() {
            let Some(u) = from.services.as_ref().and_then(|m| m.use_from_stage.as_ref()) else { break };
            let Some(src) = self.pipeline.all_stages().into_iter().find(|x| x.identifier.value == u.stage.value) else {
                return Err(NodeError::Targets(format!(
                    "stage `{}` propagates its services from stage `{}`, which does not exist",
                    s.identifier.value, u.stage.value
                )));
            };
            from = &src.spec;
        }
        let refs: Vec<&spec::Str> = match &from.services {
            Some(m) => m.values.iter().filter_map(|v| v.service_ref.as_ref()).collect(),
            None => from.service.as_ref().and_then(|c| c.service_ref.as_ref()).into_iter().collect(),
        };
        for r in refs {
            services.push(render(r)?);
        }
        if spec
            .services
            .as_ref()
            .is_some_and(|m| m.use_from_stage.is_none() && m.values.iter().any(|v| v.service_ref.is_none()))
        {
            return Err(NodeError::Targets("a service of `services` propagates from another stage (`useFromStage`); list the services by `serviceRef`, or propagate them all with `services: {useFromStage: {stage: …}}`".into()));
        }
        let env_cfgs: Vec<&spec::EnvironmentConfig> = match &spec.environments {
            Some(m) => m.values.iter().collect(),
            None => single_env.into_iter().collect(),
        };
        let mut envs = Vec::new();
        for e in env_cfgs {
            let Some(r) = &e.environment_ref else {
                return Err(NodeError::Targets("an environment of `environments` propagates from another stage (`useFromStage`); list the environments by `environmentRef`".into()));
            };
            let env = render(r)?;
            let mut infras: Vec<String> =
                e.infrastructure_definitions.iter().map(|d| render(&d.identifier)).collect::<Result<_, _>>()?;
            if infras.is_empty() && e.deploy_to_all == Some(true) {
                infras = self
                    .entities
                    .infrastructures
                    .values()
                    .filter(|i| i.environment_ref.value == env)
                    .map(|i| i.meta.identifier.value.clone())
                    .collect();
            }
            if infras.is_empty() {
                return Err(NodeError::Targets(format!(
                    "environment `{env}` has no infrastructure definition to deploy to: list them under `infrastructureDefinitions`, or set `deployToAll: true` with infrastructure definitions of `environmentRef: {env}` in the entities"
                )));
            }
            envs.push((env, infras));
        }
        let parallel = spec.services.as_ref().is_none_or(|m| m.parallel)
            && spec.environments.as_ref().is_none_or(|m| m.parallel)
            && (spec.services.is_some() || spec.environments.is_some());
        Ok(Some((looping::targets(&services, &envs), parallel)))
    }

    /// Resolve a Deployment stage's service, environment and infrastructure (following `useFromStage`).
    fn deployment(
        &self,
        s: &Stage,
        iid: &str,
        local: &mut BTreeMap<String, Value>,
        scope: &Scope,
        target: Option<&looping::Target>,
    ) -> Result<(), NodeError> {
        let spec = &s.spec;
        let target_service = target.and_then(|t| t.service.clone());
        let target_env = target.and_then(|t| t.env.clone());
        let from_stage = |stage: &str, key: &'static str| -> Result<Value, NodeError> {
            let t = self.tree.lock().unwrap_or_else(|e| e.into_inner());
            tree::get(&t, &["pipeline".into(), "stages".into(), stage.into(), key.into()])
                .cloned()
                .ok_or_else(|| NodeError::NotPropagated { stage: stage.to_string(), key })
        };
        // Service.
        let service_from = spec
            .service
            .as_ref()
            .and_then(|c| c.use_from_stage.as_ref())
            .or(spec.service_config.as_ref().and_then(|c| c.use_from_stage.as_ref()));
        let service_ref = spec
            .service
            .as_ref()
            .and_then(|c| c.service_ref.as_ref())
            .or(spec.service_config.as_ref().and_then(|c| c.reference.as_ref()));
        let service_id = match (target_service, service_ref) {
            (Some(id), _) => Some(id),
            (None, Some(r)) if service_from.is_none() => Some(self.with_ctx(local, scope, |c| c.render(r))?),
            _ => None,
        };
        if let (Some(u), None) = (service_from, &service_id) {
            local.insert("service".into(), from_stage(&u.stage, "service")?);
            local.insert("serviceVariables".into(), from_stage(&u.stage, "serviceVariables")?);
        } else if let Some(id) = service_id {
            let svc = self
                .entities
                .services
                .get(&id)
                .ok_or_else(|| NodeError::UndefinedEntity { kind: "service", id: id.clone() })?;
            local.insert(
                "service".into(),
                Value::Map(BTreeMap::from([
                    ("name".to_string(), Value::String(svc.meta.name.value.clone())),
                    ("identifier".to_string(), Value::String(svc.meta.identifier.value.clone())),
                    (
                        "type".to_string(),
                        Value::String(svc.deployment_type.as_ref().map(|t| t.value.clone()).unwrap_or_default()),
                    ),
                ])),
            );
            let mut vars = BTreeMap::new();
            for v in &svc.variables {
                vars.insert(
                    v.name.value.clone(),
                    self.variable(v, local, scope).map_err(|e| e.within("service variable", &v.name.value))?,
                );
            }
            local.insert("serviceVariables".into(), Value::Map(vars));
        }
        // Environment and infrastructure.
        let env_from = spec
            .environment
            .as_ref()
            .and_then(|c| c.use_from_stage.as_ref())
            .or(spec.infrastructure.as_ref().and_then(|c| c.use_from_stage.as_ref()));
        if let (Some(u), None) = (env_from, &target_env) {
            local.insert("env".into(), from_stage(&u.stage, "env")?);
            local.insert("infra".into(), from_stage(&u.stage, "infra")?);
        } else if target_env.is_some() || spec.environment.is_some() {
            let (env_ref, infra_id) = match &target_env {
                Some((e, i)) => (e.clone(), Some(i.clone())),
                None => {
                    let env_cfg = spec.environment.as_ref().expect("checked above");
                    let e = env_cfg
                        .environment_ref
                        .as_ref()
                        .map(|r| self.with_ctx(local, scope, |c| c.render(r)))
                        .transpose()?
                        .unwrap_or_default();
                    let i = env_cfg
                        .infrastructure_definitions
                        .first()
                        .map(|d| self.with_ctx(local, scope, |c| c.render(&d.identifier)))
                        .transpose()?;
                    (e, i)
                }
            };
            let env = self
                .entities
                .environments
                .get(&env_ref)
                .ok_or_else(|| NodeError::UndefinedEntity { kind: "environment", id: env_ref.clone() })?;
            let mut vars = BTreeMap::new();
            for v in &env.variables {
                vars.insert(
                    v.name.value.clone(),
                    self.variable(v, local, scope).map_err(|e| e.within("environment variable", &v.name.value))?,
                );
            }
            local.insert(
                "env".into(),
                Value::Map(BTreeMap::from([
                    ("name".to_string(), Value::String(env.meta.name.value.clone())),
                    ("identifier".to_string(), Value::String(env.meta.identifier.value.clone())),
                    ("type".to_string(), Value::String(format!("{:?}", env.env_type))),
                    ("variables".to_string(), Value::Map(vars)),
                ])),
            );
            if let Some(infra_id) = infra_id {
                let infra = self.entities.infrastructures.get(infra_id.as_str()).ok_or_else(|| {
                    NodeError::UndefinedEntity { kind: "infrastructure definition", id: infra_id.clone() }
                })?;
                let key = infra_key(&self.exec.id, &infra.meta.identifier.value);
                // Harness's short form, the default release name in the infrastructure definitions it generates.
                let short: String = key.chars().take(6).collect();
                let mut with_key = local.clone();
                with_key.insert("INFRA_KEY".into(), Value::String(key.clone()));
                with_key.insert("INFRA_KEY_SHORT_ID".into(), Value::String(short.clone()));
                let mut m = BTreeMap::new();
                for (k, v) in &infra.spec {
                    let val = match v {
                        serde_json::Value::String(s) => {
                            Value::String(self.with_ctx(&with_key, scope, |c| c.render(s))?)
                        }
                        other => Value::from(other.clone()),
                    };
                    m.insert(k.clone(), val);
                }
                m.insert("name".into(), Value::String(infra.meta.name.value.clone()));
                m.insert("identifier".into(), Value::String(infra.meta.identifier.value.clone()));
                m.insert("infraKey".into(), Value::String(key.clone()));
                local.insert("infra".into(), Value::Map(m));
                local.insert("INFRA_KEY".into(), Value::String(key));
                local.insert("INFRA_KEY_SHORT_ID".into(), Value::String(short));
            }
        }
        for key in ["service", "serviceVariables", "env", "infra"] {
            if let Some(v) = local.get(key) {
                self.set_tree(&["pipeline", "stages", iid, key], v.clone());
            }
        }
        Ok(())
    }

    fn when(
        &self,
        when: Option<&When>,
        is_stage: bool,
        failed: bool,
        local: &BTreeMap<String, Value>,
        scope: &Scope,
    ) -> Result<Option<String>, NodeError> {
        let status = when.and_then(|w| if is_stage { w.pipeline_status } else { w.stage_status });
        if let Some(skip) = decide::status_gate(status, is_stage, failed) {
            return Ok(Some(skip));
        }
        if let Some(c) = when.and_then(|w| w.condition.as_ref()) {
            let ok = self.with_ctx(local, scope, |ctx| ctx.condition(c))?;
            if !ok {
                return Ok(Some(format!("condition `{}` is false", c.value)));
            }
        }
        Ok(None)
    }

    /// The iterations of a node's looping strategy: its expressions evaluated here, the expansion in
    /// `looping::expand`.
    /// Each iteration brings `per_iteration` nodes (itself and what it holds), counted against the
    /// execution's node budget before anything is expanded.
    fn iterations(
        &self,
        strategy: Option<&Strategy>,
        per_iteration: usize,
        local: &BTreeMap<String, Value>,
        scope: &Scope,
    ) -> Result<Vec<Iteration>, NodeError> {
        let limits = self.config.limits;
        // A looping node after the budget is spent fails before its lists are even rendered.
        if strategy.is_some() && self.expanded.load(Ordering::SeqCst) >= limits.nodes {
            return Err(LoopError::TooManyNodes { limit: limits.nodes }.into());
        }
        let render_value = |v: &serde_json::Value| -> Result<Value, String> {
            match v {
                serde_json::Value::String(s) => Ok(Value::String(self.with_ctx(local, scope, |c| c.render(s))?)),
                other => Ok(Value::from(other.clone())),
            }
        };
        let list = |v: &serde_json::Value| -> Result<Vec<Value>, String> {
            match v {
                serde_json::Value::Array(a) => a.iter().map(render_value).collect(),
                other => Ok(looping::items(render_value(other)?)),
            }
        };
        let l = match strategy {
            None => Looping::Once,
            Some(Strategy::Parallelism(n)) => Looping::Parallelism(n.value as usize),
            Some(Strategy::Repeat(r)) => Looping::Repeat(match (&r.items, r.times) {
                (Some(items), _) => {
                    let mut out = Vec::new();
                    for i in items {
                        out.extend(list(i)?.into_iter().map(Some));
                    }
                    out
                }
                (None, Some(t)) if t as usize > limits.iterations => {
                    return Err(LoopError::TooMany { count: t.into(), limit: limits.iterations }.into());
                }
                (None, Some(t)) => vec![None; t as usize],
                _ => vec![None],
            }),
            Some(Strategy::Matrix(m)) => Looping::Matrix {
                axes: m
                    .axes
                    .iter()
                    .map(|(axis, values)| Ok((axis.clone(), list(values)?)))
                    .collect::<Result<_, String>>()?,
                exclude: m
                    .exclude
                    .iter()
                    .map(|ex| ex.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect())
                    .collect(),
            },
        };
        if matches!(l, Looping::Once) {
            return Ok(looping::expand(&l, local, limits.iterations)?);
        }
        // Counted, and taken from the node budget, before anything is expanded.
        let count = looping::count(&l);
        if count > limits.iterations as u128 {
            return Err(LoopError::TooMany { count, limit: limits.iterations }.into());
        }
        let mut taken = 0;
        self.expanded
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                let more = looping::admit(count, per_iteration, used, limits.nodes).ok()?;
                taken = more;
                Some(used + more)
            })
            .map_err(|_| LoopError::TooManyNodes { limit: limits.nodes })?;
        let its = match looping::expand(&l, local, limits.iterations) {
            Ok(its) => its,
            Err(e) => {
                self.expanded.fetch_sub(taken, Ordering::SeqCst);
                return Err(e.into());
            }
        };
        // What `exclude` removed goes back to the budget.
        self.expanded.fetch_sub(taken.saturating_sub(its.len() * per_iteration.max(1)), Ordering::SeqCst);
        Ok(its)
    }

    /// Run a list of execution elements in order; returns the worst status.
    fn elements<'a>(
        &'a self,
        cx: &'a StageCx<'p>,
        els: &'p [ExecutionElement],
        groups: Vec<(&'p StepGroup, String)>,
        parent: &'a str,
        path: &'a str,
        rollback: bool,
    ) -> BoxFut<'a, Res<End>> {
        Box::pin(async move {
            let mut all = Ended::default();
            for e in els {
                let end = self.element(cx, e, groups.clone(), parent, path, rollback).await?;
                cx.learn(&end);
                all.add(&end);
            }
            Ok(all.end())
        })
    }

    fn element<'a>(
        &'a self,
        cx: &'a StageCx<'p>,
        e: &'p ExecutionElement,
        groups: Vec<(&'p StepGroup, String)>,
        parent: &'a str,
        path: &'a str,
        rollback: bool,
    ) -> BoxFut<'a, Res<End>> {
        Box::pin(async move {
            match e {
                ExecutionElement::Step(s) => self.step_with_strategy(cx, s, groups, parent, path, rollback).await,
                ExecutionElement::StepGroup(g) => self.group_with_strategy(cx, g, groups, parent, path, rollback).await,
                ExecutionElement::Parallel(inner) => {
                    let each = |i| self.element(cx, i, groups.clone(), parent, path, rollback);
                    fan_out(inner.iter().collect(), inner.len(), each, |end| cx.learn(end)).await
                }
            }
        })
    }

    fn scope_of(&self, cx: &StageCx<'_>, groups: &[(&StepGroup, String)]) -> Scope {
        let mut s = Scope::stage(&cx.id);
        for (_, gid) in groups {
            s = s.group(gid);
        }
        s
    }

    fn tree_path(&self, cx: &StageCx<'_>, groups: &[(&StepGroup, String)], id: &str, rollback: bool) -> Vec<String> {
        let mut p = NodePath::stage(&cx.id, None);
        if rollback {
            p = p.rollback();
        }
        for (_, gid) in groups {
            p = p.child(gid, None);
        }
        p.child(id, None).tree()
    }

    /// Wait for `pipewright intervene`; `None` when the wait timed out.
    async fn intervene(
        &self,
        node: &mut Node,
        log: &LogSink,
        timeout: Option<Duration>,
    ) -> Res<Option<decide::InterventionAction>> {
        node.status = Status::InterventionWaiting;
        self.save(node, Event::Waiting).await?;
        log.line(
            "pipewright",
            &format!(
                "waiting for a decision: pipewright intervene {} --node {} --action retry|ignore|abort|mark-success|mark-failure",
                self.exec.id, node.path
            ),
        )
        .await;
        log.flush().await;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut abort = self.abort_rx.clone();
        loop {
            if let Some(d) = self.store.take_decision(&self.exec.id, &node.id, &self.fence).await? {
                log.line("pipewright", &format!("{} by {}", d.action, d.by)).await;
                // Decisions are written by pipewright's own CLI and API, which only write known actions.
                let choice = match d.action.parse() {
                    Ok(c) => c,
                    Err(e) => {
                        log.line("pipewright", &format!("{e}; treated as mark-failure")).await;
                        decide::InterventionAction::MarkFailure
                    }
                };
                return Ok(Some(choice));
            }
            if self.aborted() {
                return Ok(Some(decide::InterventionAction::Abort));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                log.line("pipewright", "no decision before the timeout").await;
                return Ok(None);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = steps::wait_abort(&mut abort) => {}
            }
        }
    }

    /// Ask for the `.executionInput()` fields of `owner` not given yet (with `when_only`, only those in its
    /// `when`), on `node` (`None`: the pipeline's own fields, asked by the execution), and wait until each is
    /// given. `Err` holds the status and reason the node ends with: nothing came before the timeout, or the
    /// execution was aborted.
    async fn ask(
        &self,
        mut node: Option<&mut Node>,
        owner: &str,
        when_only: bool,
        timeout: Option<Duration>,
    ) -> Res<Result<(), (Status, String)>> {
        let when = format!("{owner}.when.");
        let pending = || -> Vec<asked::Asked> {
            let given = self.given.lock().unwrap_or_else(|e| e.into_inner());
            self.asked
                .iter()
                .filter(|a| {
                    a.owner == owner && (!when_only || a.path.starts_with(&when)) && !given.contains_key(&a.path)
                })
                .cloned()
                .collect()
        };
        if pending().is_empty() {
            return Ok(Ok(()));
        }
        let turn = self.asking.lock().unwrap_or_else(|e| e.into_inner()).entry(owner.to_string()).or_default().clone();
        let _turn = turn.lock().await;
        let mut wanted = pending();
        if wanted.is_empty() {
            // Another iteration of this node asked, and got them.
            return Ok(Ok(()));
        }
        let (node_id, node_path) = match node.as_deref() {
            Some(n) => (n.id.clone(), n.path.clone()),
            None => (self.exec.id.clone(), "pipeline".to_string()),
        };
        let log = match node.as_deref() {
            Some(n) => {
                // The node may have log chunks already (an earlier ask, or the process that died asked on it).
                let mut logged = self.asked_logs.lock().unwrap_or_else(|e| e.into_inner()).get(&n.id).copied();
                if self.prior.contains_key(&n.path) {
                    let chunks = self.store.logs(&self.exec.id, Some(std::slice::from_ref(&n.id))).await?;
                    logged = logged.max(chunks.iter().map(|c| c.seq).max());
                }
                self.sink(n).after(logged.unwrap_or(0))
            }
            None => LogSink::shown_only(self.observer.clone(), self.masker.clone(), &node_path),
        };
        // The execution says what it waits for, and on which node, before anyone is told.
        for a in &wanted {
            let entry = asked::waiting_entry(a, &node_id, &node_path);
            self.store.set_execution_input(&self.exec.id, &a.path, &entry, &self.fence).await?;
        }
        let before = node.as_deref().map(|n| n.status);
        if let Some(n) = node.as_deref_mut() {
            n.status = Status::InputWaiting;
            n.started_at.get_or_insert_with(now_ms);
            self.save(n, Event::Waiting).await?;
        }
        self.input_waits(true).await?;
        let mut line = format!("waiting for runtime inputs: pipewright input {}", self.exec.id);
        for a in &wanted {
            line.push_str(&format!(" --input {}=VALUE", a.path));
        }
        log.line("pipewright", &line).await;
        for a in &wanted {
            let about = asked::describe(&a.input);
            let about = if about.is_empty() { String::new() } else { format!(" ({about})") };
            log.line("pipewright", &format!("  {}{about}", a.path)).await;
        }
        log.flush().await;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut abort = self.abort_rx.clone();
        let outcome = loop {
            while let Some(d) = self.store.take_decision(&self.exec.id, &node_id, &self.fence).await? {
                for (path, v) in d.inputs.as_object().into_iter().flatten() {
                    let Some(i) = wanted.iter().position(|a| &a.path == path) else { continue };
                    let value = v.as_str().map_or_else(|| v.to_string(), String::from);
                    // The CLI, the API and the web UI check values before they are recorded; this is the last word.
                    if let Err(e) = wanted[i].input.check(&value) {
                        log.line("pipewright", &format!("`{path}`: {e}; still waiting for it")).await;
                        continue;
                    }
                    let a = wanted.remove(i);
                    self.given.lock().unwrap_or_else(|e| e.into_inner()).insert(a.path.clone(), value.clone());
                    self.set_tree(&["executionInput", a.path.as_str()], Value::String(value.clone()));
                    let entry = asked::given_entry(&value, &d.by, &node_path);
                    self.store.set_execution_input(&self.exec.id, &a.path, &entry, &self.fence).await?;
                    log.line("pipewright", &format!("`{}` given by {}", a.path, d.by)).await;
                }
            }
            if wanted.is_empty() {
                break Ok(());
            }
            if self.aborted() {
                break Err((Status::Aborted, "the execution was aborted while waiting for runtime inputs".to_string()));
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                let paths: Vec<&str> = wanted.iter().map(|a| a.path.as_str()).collect();
                break Err((
                    Status::Expired,
                    format!("no value was given for {} before the timeout", paths.join(", ")),
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = steps::wait_abort(&mut abort) => {}
            }
        };
        if let Err((_, why)) = &outcome {
            log.line("pipewright", why).await;
        }
        log.flush().await;
        if node.is_some() {
            // The node's own log numbers on after what the ask wrote.
            let last = log.seq().await;
            self.asked_logs.lock().unwrap_or_else(|e| e.into_inner()).insert(node_id.clone(), last);
        }
        self.input_waits(false).await?;
        if let (Ok(()), Some(n), Some(before)) = (&outcome, node, before) {
            n.status = before;
            self.save(n, Event::Resumed).await?;
        }
        Ok(outcome)
    }

    /// One more (or one fewer) node waiting for inputs: the execution is `InputWaiting` while any is.
    async fn input_waits(&self, more: bool) -> Res<()> {
        let mut n = self.input_waits.lock().await;
        let was = *n;
        *n = if more { was + 1 } else { was.saturating_sub(1) };
        match (was, *n) {
            (0, 1) => self.set_status(Status::InputWaiting, None).await?,
            (1, 0) if !self.aborted() => self.set_status(Status::Running, None).await?,
            _ => {}
        }
        Ok(())
    }

    /// Mark every non-final node under `prefix` (all, when empty) as Expired.
    async fn expire_running(&self, prefix: &str) -> Res<()> {
        for mut n in self.store.nodes(&self.exec.id).await? {
            if !n.status.is_final() && (prefix.is_empty() || n.path.starts_with(prefix)) {
                n.status = Status::Expired;
                n.ended_at = Some(now_ms());
                n.failure = Some("timed out".into());
                self.save(&n, Event::Ended).await?;
            }
        }
        Ok(())
    }
}

/// The YAML path of a step or step group (`id`) of a stage: what `.executionInput()` fields name as their owner.
fn yaml_path(cx: &StageCx<'_>, groups: &[(&StepGroup, String)], id: &str, rollback: bool) -> String {
    let mut p = NodePath::stage(&cx.stage.identifier.value, None);
    if rollback {
        p = p.rollback();
    }
    for (g, _) in groups {
        p = p.child(&g.identifier.value, None);
    }
    p.child(id, None).owner()
}

fn json_map(m: &serde_json::Map<String, serde_json::Value>) -> Value {
    Value::from(serde_json::Value::Object(m.clone()))
}

fn infra_key(exec: &str, infra: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (exec, infra).hash(&mut h);
    format!("{:x}", h.finish())[..8].to_string()
}

fn max_concurrency(s: Option<&Strategy>, n: usize) -> usize {
    let m = match s {
        Some(Strategy::Matrix(m)) => m.max_concurrency,
        Some(Strategy::Repeat(r)) => r.max_concurrency,
        _ => None,
    };
    m.map_or(n, |m| m as usize).clamp(1, n.max(1))
}

/// The one fan-out: run `items` side by side, at most `max` at a time (a strategy's `maxConcurrency`; all of
/// them for a parallel block); each child's end is learnt (`learn`) as it comes, and they roll up into one
/// (`Ended::of`). Every child runs to its end even when another fails; a store error of any is the fan-out's.
async fn fan_out<T, F, Fut>(items: Vec<T>, max: usize, run: F, learn: impl Fn(&End)) -> Res<End>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Res<End>>,
{
    let sem = Semaphore::new(max.max(1));
    let futs: Vec<_> = items
        .into_iter()
        .map(|it| {
            let (sem, run, learn) = (&sem, &run, &learn);
            async move {
                let _permit = sem.acquire().await;
                let end = run(it).await?;
                learn(&end);
                Res::Ok(end)
            }
        })
        .collect();
    let mut all = Ended::default();
    for r in join_all(futs).await {
        all.add(&r?);
    }
    Ok(all.end())
}

/// Children's ends rolled up: the worst status, and whether the abort cut any short.
#[derive(Debug, Default)]
struct Ended {
    worst: Option<Status>,
    by_abort: bool,
}

impl Ended {
    fn add(&mut self, e: &End) {
        self.worst = Some(decide::worst(self.worst.unwrap_or(Status::Success), e.status));
        self.by_abort |= e.by_abort;
    }

    /// What a container tells the lifecycle: `ChildrenEnded` reads the worst and the abort from this.
    fn end(self) -> End {
        End { status: self.worst.unwrap_or(Status::Success), reason: None, by_abort: self.by_abort, signal: None }
    }
}

/// Whether a `when` condition reads the looping variables of its own node (`matrix`, `repeat`, `strategy`):
/// then it is evaluated once per iteration, as Harness does, instead of once for the node.
fn reads_loop_vars(when: Option<&When>) -> bool {
    let Some(c) = when.and_then(|w| w.condition.as_ref()) else { return false };
    expr::parse_condition(c).is_ok_and(|e| {
        expr::references(&e, &Scope::default()).iter().any(|r| matches!(r.root(), "matrix" | "repeat" | "strategy"))
    })
}

/// A `when` split for a looping node whose condition reads its iteration: the status gate, for the node, and the
/// condition, for each iteration. Any other node's `when` stays whole.
fn split_when(when: Option<&When>, looping: bool) -> (Option<When>, Option<When>) {
    match when {
        Some(w) if looping && reads_loop_vars(when) => (
            Some(When { condition: None, ..w.clone() }),
            Some(When { pipeline_status: None, stage_status: None, condition: w.condition.clone() }),
        ),
        other => (other.cloned(), None),
    }
}
