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

mod chained;
mod deploy;
mod drive;
mod group;
mod looping_step;
mod pipeline;
mod stage;
mod stage_body;
mod step;
mod waits;

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
        let lease = self.config.lease;
        let epoch = self.claim(exec).await?;
        // Every write of this run is made under this claim's fence.
        let fence = Fence::owner(&self.config.owner, epoch);
        let (abort_tx, abort_rx) = watch::channel(false);
        let abort_tx = Arc::new(abort_tx);
        let heartbeat = heartbeat(self.store.clone(), exec.id.clone(), fence.clone(), abort_tx.clone(), lease);
        let workdir = self.config.work_root.join(&exec.id);
        if let Err(source) = crate::sandbox::prepare_workspace(&self.config, &workdir) {
            drop(heartbeat);
            return Err(EngineError::WorkDir { path: workdir.display().to_string(), source });
        }
        let prior = if resume { self.prior_nodes(&exec.id).await? } else { HashMap::new() };
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
        let poller = abort_poller(self.store.clone(), exec.id.clone(), run.abort_tx.clone(), self.config.poll_interval);
        let result = run.pipeline().await;
        drop(poller);
        drop(heartbeat);
        // Every step has ended: no process group of this execution is left to stop.
        let _ = self.store.drop_step_process(&exec.id, "", &fence).await;
        let status = result?;
        self.observer.event(&Event::Finished(status));
        Ok(status)
    }
    /// One owner at a time: this process claims the execution (its lease epoch), or says who holds it.
    async fn claim(&self, exec: &Execution) -> Res<i64> {
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
        Ok(epoch)
    }

    /// The nodes a resumed run finds, the latest attempt of each path.
    async fn prior_nodes(&self, execution: &str) -> Res<HashMap<String, Node>> {
        let mut prior: HashMap<String, Node> = HashMap::new();
        for n in self.store.nodes(execution).await? {
            match prior.get(&n.path) {
                Some(p) if (p.attempt, p.position) > (n.attempt, n.position) => {}
                _ => {
                    prior.insert(n.path.clone(), n);
                }
            }
        }
        Ok(prior)
    }
}

impl<'p> StageCx<'p> {
    /// A stage iteration `id` being run under node `node_id`, with its own local values.
    fn new(stage: &'p Stage, id: &str, node_id: &str, local: BTreeMap<String, Value>) -> StageCx<'p> {
        StageCx {
            stage,
            id: id.to_string(),
            node_id: node_id.to_string(),
            path: id.to_string(),
            local,
            failed: AtomicBool::new(false),
            rollback: AtomicBool::new(false),
            background: Arc::default(),
        }
    }

    /// A group iteration inside it: its own failure and rollback state and local values, the stage's
    /// `Background` steps.
    fn within(&self, local: BTreeMap<String, Value>) -> StageCx<'p> {
        StageCx {
            local,
            background: Arc::clone(&self.background),
            ..StageCx::new(self.stage, &self.id, &self.node_id, BTreeMap::new())
        }
    }

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

/// The lease heartbeat: renewed every third of the lease; when it cannot be renewed in time (or was taken
/// over), this process stops acting on the execution — its hold is given up, its steps stopped.
fn heartbeat(
    store: Arc<dyn Store>,
    id: String,
    fence: Fence,
    abort: Arc<watch::Sender<bool>>,
    lease: Duration,
) -> Beat {
    Beat(tokio::spawn(async move {
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(lease / 3).await;
            // A renewal that hangs (the store riding out an outage) counts as not renewed.
            let left = (lease * 2 / 3).saturating_sub(renewed.elapsed()).max(Duration::from_millis(10));
            let answer =
                match tokio::time::timeout(left, store.renew_lease(&id, &fence, crate::owner::until(lease))).await {
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
}

/// Another process asks for an abort through the store: polled every `every`.
fn abort_poller(store: Arc<dyn Store>, id: String, tx: Arc<watch::Sender<bool>>, every: Duration) -> Beat {
    Beat(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if store.abort_requested(&id).await.unwrap_or(false) {
                let _ = tx.send(true);
                return;
            }
        }
    }))
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
