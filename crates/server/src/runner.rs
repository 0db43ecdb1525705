//! Executions started over the API run here, in the background, on the same engine the CLI uses. The runner
//! keeps the running tasks (the queue depth), wakes live-log streams when an execution has news, records
//! metrics (started, finished by status, step durations), and at shutdown lets running executions finish for
//! a grace period before asking the rest to abort — so none is left `Running`.

use engine::{Engine, EngineConfig, Entities, Event, Observer, Secrets, Seed};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Execution, NodeKind, Store};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Background executions of one server.
pub struct Runner {
    store: Arc<dyn Store>,
    state_dir: PathBuf,
    isolation: engine::sandbox::Isolation,
    work_root: PathBuf,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
    news: Mutex<HashMap<String, Arc<Notify>>>,
    stopping: AtomicBool,
    stop_notify: Arc<Notify>,
    /// This server as an execution owner.
    owner: String,
    /// How long this server's hold on an execution lasts without a heartbeat.
    lease: Duration,
    /// The address the web UI is reached at, for `<+pipeline.executionUrl>`.
    url: Option<String>,
    /// The server's step handlers (`serve --settings`).
    settings: spec::Settings,
    /// Where steps run when not here (remote agents); none: this server runs them.
    executor: Option<Arc<dyn engine::executor::Executor>>,
    /// How far looping strategies may expand (`serve --max-iterations`, `--max-nodes`).
    loop_limits: engine::looping::Limits,
    max_log_bytes: u64,
}

/// What a running execution needs.
pub struct Job {
    /// The recorded execution.
    pub execution: Execution,
    /// The pipeline with inputs applied.
    pub pipeline: spec::Pipeline,
    /// Services, environments, infrastructure definitions.
    pub entities: Entities,
    /// The secrets it may read.
    pub secrets: Secrets,
    /// Seeded values.
    pub seed: Seed,
    /// Who started it.
    pub triggered_by: String,
    /// Taken over from a process that died: go on from where it was.
    pub resume: bool,
    /// Who runs its `Pipeline` stages' child executions (none: those stages fail, saying so).
    pub children: Option<Arc<dyn engine::chain::Children>>,
}

struct Watch {
    news: Arc<Notify>,
}

impl Observer for Watch {
    fn event(&self, e: &Event) {
        match e {
            Event::Ended(n) => {
                if n.kind == NodeKind::Step
                    && let (Some(s), Some(e)) = (n.started_at, n.ended_at)
                {
                    metrics::histogram!("pipewright_step_duration_seconds").record((e - s) as f64 / 1000.0);
                }
            }
            Event::Finished(status) => {
                metrics::counter!("pipewright_executions_finished_total", "status" => status.to_string()).increment(1);
            }
            _ => {}
        }
        self.news.notify_waiters();
    }
}

impl Runner {
    /// A runner over a store.
    pub fn new(
        store: Arc<dyn Store>,
        state_dir: PathBuf,
        isolation: engine::sandbox::Isolation,
        work_root: PathBuf,
        lease: Duration,
        url: Option<String>,
        settings: spec::Settings,
    ) -> Runner {
        Runner {
            store,
            state_dir,
            isolation,
            work_root,
            tasks: Mutex::new(HashMap::new()),
            news: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            stop_notify: Arc::new(Notify::new()),
            owner: engine::owner::owner_id(),
            lease,
            url,
            settings,
            executor: None,
            loop_limits: engine::looping::Limits::default(),
            max_log_bytes: engine::MAX_LOG_BYTES,
        }
    }

    /// The bytes of log one execution may store.
    pub fn with_max_log_bytes(mut self, bytes: u64) -> Runner {
        self.max_log_bytes = bytes;
        self
    }

    /// Bound looping strategies by `limits`.
    pub fn with_loop_limits(mut self, limits: engine::looping::Limits) -> Runner {
        self.loop_limits = limits;
        self
    }

    /// Run steps with `executor` instead of on this server (remote agents).
    pub fn with_executor(mut self, executor: Option<Arc<dyn engine::executor::Executor>>) -> Runner {
        self.executor = executor;
        self
    }

    /// This server as an execution owner.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How long this server's hold on an execution lasts without a heartbeat.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether an execution runs on this server now.
    pub fn running(&self, id: &str) -> bool {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).get(id).is_some_and(|t| !t.is_finished())
    }

    /// Whether the server is shutting down.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Resolves when the server starts shutting down.
    pub async fn stopped(&self) {
        let n = self.stop_notify.notified();
        if self.stopping() {
            return;
        }
        n.await;
    }

    /// The notifier woken when execution `id`, running on this server, has news (a status change, a log
    /// line); none for executions that are not running here (readers then look again on a timer).
    pub fn news(&self, id: &str) -> Option<Arc<Notify>> {
        self.news.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn depth(&self) -> usize {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|_, t| !t.is_finished());
        tasks.len()
    }

    /// How this server's engine runs `job`, `depth` deep in a chain of pipelines.
    fn config(&self, job: &Job, depth: u32) -> EngineConfig {
        let mut config = EngineConfig::new(&self.state_dir);
        config.triggered_by = job.triggered_by.clone();
        config.isolation = self.isolation.clone();
        config.work_root = self.work_root.clone();
        config.owner = self.owner.clone();
        config.lease = self.lease;
        config.url = self.url.clone();
        config.step_handlers = self.settings.step_handlers.clone();
        config.handlers_dir = self.settings.path.as_deref().and_then(|p| p.parent()).map(PathBuf::from);
        config.git_connectors = self.settings.connectors.clone();
        config.children = job.children.clone();
        config.chain_depth = depth;
        config.executor = self.executor.clone();
        config.limits = self.loop_limits;
        config.max_log_bytes = self.max_log_bytes;
        config
    }

    /// Run a chained pipeline's child execution to its end, in the task of the stage that waits for it.
    pub async fn run_child(&self, job: Job, depth: u32) -> Result<store::Status, String> {
        let config = self.config(&job, depth);
        let engine = Engine::new(self.store.clone(), Arc::new(engine::Quiet), config);
        engine
            .run_seeded(&job.execution, &job.pipeline, &job.entities, &job.secrets, &job.seed)
            .await
            .map_err(|e| e.to_string())
    }

    /// Run a recorded execution in the background.
    pub fn start(self: &Arc<Self>, job: Job) {
        metrics::counter!("pipewright_executions_started_total").increment(1);
        let id = job.execution.id.clone();
        let news: Arc<Notify> = Arc::default();
        self.news.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), news.clone());
        let me = self.clone();
        let handle = tokio::spawn(async move {
            let config = me.config(&job, 0);
            let engine = Engine::new(me.store.clone(), Arc::new(Watch { news: news.clone() }), config);
            let (e, p, ents, secrets, seed) = (&job.execution, &job.pipeline, &job.entities, &job.secrets, &job.seed);
            let result = if job.resume {
                engine.resume(e, p, ents, secrets, seed).await
            } else {
                engine.run_seeded(e, p, ents, secrets, seed).await
            };
            match result {
                Ok(_) => {}
                // Another live process holds it: it is theirs to finish.
                Err(err @ engine::EngineError::Owned { .. }) => tracing::info!("{err}"),
                // The store failed under it, or this server gave up its hold (it could not renew the lease in
                // time, or another server took the execution over): nothing more is written; once the lease
                // runs out a server takes the execution over and goes on with it.
                Err(err @ engine::EngineError::Store(_)) => {
                    tracing::warn!("execution {}: {err}; left to be taken over when its lease runs out", e.id);
                }
                Err(err) => {
                    tracing::error!("execution {} could not run: {err}", e.id);
                    // Recorded under this server's hold, if it still has it (claiming again keeps the epoch
                    // of its own claim; another server's claim makes this one fail).
                    let owner = me.owner().to_string();
                    let claimed = engine::owner::claim(me.store.as_ref(), &e.id, &owner, me.lease()).await;
                    if let Ok(Some(epoch)) = claimed {
                        let fence = store::Fence::owner(&owner, epoch);
                        let why = err.to_string();
                        let _ = me.store.set_execution_status(&e.id, store::Status::Failed, Some(&why), &fence).await;
                    }
                }
            }
            news.notify_waiters();
            me.news.lock().unwrap_or_else(|e| e.into_inner()).remove(&job.execution.id);
            metrics::gauge!("pipewright_queue_depth").set(me.depth().saturating_sub(1) as f64);
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).insert(id, handle);
        metrics::gauge!("pipewright_queue_depth").set(self.depth() as f64);
    }

    /// Stop taking work; live streams end.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_notify.notify_waiters();
    }

    /// Wait for running executions up to `grace`, then ask the rest to abort and wait for them to record it.
    pub async fn finish(&self, grace: Duration) {
        self.begin_stop();
        let handles: Vec<(String, JoinHandle<()>)> =
            self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        let deadline = tokio::time::Instant::now() + grace;
        let mut left = Vec::new();
        for (id, mut h) in handles {
            if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
                left.push((id, h));
            }
        }
        for (id, _) in &left {
            tracing::warn!("execution {id} did not finish within the shutdown grace period; aborting it");
            let _ = self.store.request_abort(id).await;
        }
        for (_, h) in left {
            let _ = h.await;
        }
    }
}
