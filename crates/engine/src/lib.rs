//! The execution engine: runs a validated pipeline as an execution record. It owns the state machine
//! (stages in order, parallel blocks, step groups, looping strategies, `when` conditions, failure strategies,
//! timeouts, abort), the executors (ShellScript, Run, Http, Wait, HarnessApproval), output capture, secret
//! masking and log capture. Every state change goes to the [`store::Store`] before the engine acts on it; the
//! engine holds no SQL.

#![deny(clippy::too_many_lines)]

pub mod asked;
pub mod chain;
pub mod decide;
pub mod error;
pub mod executor;
pub mod lifecycle;
mod logs;
pub mod looping;
pub mod owner;
pub mod path;
mod process;
mod run;
pub mod sandbox;
mod steps;
mod tree;

pub use decide::InterventionAction;
pub use logs::Masker;
pub use run::Engine;

use spec::{Environment, InfrastructureDefinition, Service};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::{Node, Status};

/// Why the engine could not run an execution at all (a node's own failure is a status, not an error).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Another live process owns the execution.
    #[error(
        "execution {execution} is run by another process ({owner}) whose hold on it lasts until {until}; it can be taken over only once that process stops renewing it"
    )]
    Owned {
        /// The execution.
        execution: String,
        /// Its owner.
        owner: String,
        /// When the owner's lease ends unless renewed, in words.
        until: String,
    },
    /// The working directory could not be made.
    #[error("cannot create the working directory {path}: {source}")]
    WorkDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Executions get `<work_root>/<execution id>/` as their working directory.
    pub work_root: PathBuf,
    /// Time between SIGTERM and SIGKILL when a step is stopped.
    pub kill_grace: Duration,
    /// How often the engine looks for an abort request or a decision made by another process.
    pub poll_interval: Duration,
    /// Who is running the pipeline (`<+pipeline.triggeredBy.name>`).
    pub triggered_by: String,
    /// How step processes are confined.
    pub isolation: sandbox::Isolation,
    /// This process as an execution owner (`owner::owner_id`).
    pub owner: String,
    /// How long this process's hold on an execution lasts without a heartbeat (renewed every third of it).
    pub lease: Duration,
    /// Where step tasks run (none: a [`executor::LocalExecutor`] with `isolation`, `work_root` and
    /// `kill_grace`).
    pub executor: Option<std::sync::Arc<dyn executor::Executor>>,
    /// The web address executions are shown at (`<+pipeline.executionUrl>` is `URL/executions/ID`); none for
    /// a local run, where it is null.
    pub url: Option<String>,
    /// What `<+codebase.…>` reads (the checkout the pipeline file sits in); keys it lacks read as null.
    pub codebase: BTreeMap<String, String>,
    /// Scripts that run the step types pipewright does not run itself (`.harness/pipewright.yaml`), and the
    /// folder of that file (`PIPEWRIGHT_HANDLERS_DIR` for the scripts).
    pub step_handlers: BTreeMap<String, spec::StepHandler>,
    /// The folder the step handlers' settings file is in.
    pub handlers_dir: Option<PathBuf>,
    /// Git connector → URL (`GitClone` steps).
    pub git_connectors: BTreeMap<String, String>,
    /// Who runs the child executions of `Pipeline` stages (none: such a stage fails, saying so).
    pub children: Option<std::sync::Arc<dyn chain::Children>>,
    /// How deep this execution is in a chain of pipelines (0: started by a person).
    pub chain_depth: u32,
    /// How far looping strategies may expand.
    pub limits: looping::Limits,
    /// The bytes of log one execution may store ([`logs::LogQuota`]); 64 MiB unless set.
    pub max_log_bytes: u64,
}

/// The default of [`EngineConfig::max_log_bytes`].
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

impl EngineConfig {
    /// Defaults under a state directory.
    pub fn new(state_dir: &Path) -> Self {
        // Absolute, because steps run with the working directory as their current directory.
        let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        EngineConfig {
            work_root: state_dir.join("work"),
            kill_grace: Duration::from_secs(5),
            poll_interval: Duration::from_millis(200),
            triggered_by: std::env::var("USER").unwrap_or_else(|_| "local".into()),
            isolation: sandbox::Isolation::None,
            owner: owner::owner_id(),
            lease: owner::lease_from_env(),
            executor: None,
            url: None,
            codebase: BTreeMap::new(),
            step_handlers: BTreeMap::new(),
            handlers_dir: None,
            git_connectors: BTreeMap::new(),
            children: None,
            chain_depth: 0,
            limits: looping::Limits::default(),
            max_log_bytes: MAX_LOG_BYTES,
        }
    }
}

/// Services, environments and infrastructure definitions by identifier.
#[derive(Debug, Clone, Default)]
pub struct Entities {
    /// Services.
    pub services: BTreeMap<String, Service>,
    /// Environments.
    pub environments: BTreeMap<String, Environment>,
    /// Infrastructure definitions.
    pub infrastructures: BTreeMap<String, InfrastructureDefinition>,
}

impl Entities {
    /// Read every entity file below `dir` (a `.harness/` folder). Invalid files are errors with diagnostics.
    pub fn load_dir(dir: &Path) -> Result<Entities, String> {
        let mut out = Entities::default();
        let files = spec::yaml_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for f in files {
            let doc = spec::load_file(&f).map_err(|e| e.to_string())?;
            // A repository's `.harness/` folder holds pipelines, input sets and templates beside the entities:
            // only a broken service, environment or infrastructure definition stops the run.
            let top = doc.root.as_ref().and_then(|r| match &r.yaml {
                spec::yaml::Yaml::Map(entries) => entries.first().and_then(|(k, _)| k.as_scalar()).map(String::from),
                _ => None,
            });
            let entity_file = matches!(top.as_deref(), Some("service" | "environment" | "infrastructureDefinition"));
            if !doc.is_valid() {
                if entity_file {
                    return Err(doc.render_diagnostics());
                }
                continue;
            }
            match doc.entity {
                Some(spec::Entity::Service(s)) => {
                    out.services.insert(s.meta.identifier.value.clone(), *s);
                }
                Some(spec::Entity::Environment(e)) => {
                    out.environments.insert(e.meta.identifier.value.clone(), *e);
                }
                Some(spec::Entity::Infrastructure(i)) => {
                    out.infrastructures.insert(i.meta.identifier.value.clone(), *i);
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Secret values by identifier: given explicitly, or from `PIPEWRIGHT_SECRET_<ID>` in the environment.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Explicit values.
    pub values: BTreeMap<String, String>,
    /// Do not read `PIPEWRIGHT_SECRET_<ID>` from the environment (a server's environment is not its users').
    pub no_env: bool,
}

impl Secrets {
    /// The value of secret `id`.
    pub fn get(&self, id: &str) -> Option<String> {
        self.values.get(id).cloned().or_else(|| {
            if self.no_env {
                return None;
            }
            let var = format!("PIPEWRIGHT_SECRET_{}", id.to_ascii_uppercase().replace(['.', '-'], "_"));
            std::env::var(var).ok()
        })
    }
}

/// Values put in place before an execution runs (a selective run's supplied and reused values), and the
/// stages whose results are reused from an earlier execution.
#[derive(Debug, Clone, Default)]
pub struct Seed {
    /// Fully-qualified dotted path → value.
    pub values: Vec<(String, expr::Value)>,
    /// Stage → (execution it is reused from, its status there).
    pub reused: BTreeMap<String, (String, String)>,
}

/// Rebuild an execution's value tree (`pipeline.stages.…` statuses, stage variables, service / environment /
/// infrastructure, step outputs) from its stored nodes, to reuse its values.
pub fn tree_from_nodes(nodes: &[Node]) -> expr::Value {
    let mut root = expr::Value::Map(BTreeMap::new());
    for n in nodes {
        let path = path::NodePath::from_store(&n.path).tree();
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        // The latest attempt wins: nodes come in creation order.
        tree::set(
            &mut root,
            &[&refs[..], &["status"]].concat(),
            expr::Value::String(n.status.expression_value().into()),
        );
        match n.kind {
            store::NodeKind::Stage => {
                for (k, v) in &n.outputs {
                    tree::set(&mut root, &[&refs[..], &[k.as_str()]].concat(), expr::Value::from(v.clone()));
                }
            }
            _ if !n.outputs.is_empty() => {
                tree::set(
                    &mut root,
                    &[&refs[..], &["output", "outputVariables"]].concat(),
                    expr::Value::from(serde_json::Value::Object(n.outputs.clone())),
                );
            }
            _ => {}
        }
    }
    root
}

/// Something that happened during an execution, for live display. Node events carry the node as stored
/// (masked).
#[derive(Debug, Clone)]
pub enum Event {
    /// A node began: a stage, an iteration, a step group, or an attempt of a step (a retry when its `attempt`
    /// is above 1).
    Started(Box<Node>),
    /// A node waits for people: approval, a decision after a failure, runtime inputs (its status says which).
    Waiting(Box<Node>),
    /// A node that waited goes on.
    Resumed(Box<Node>),
    /// An attempt failed and the step runs again after `after` (the failed attempt's node).
    RetryScheduled {
        /// The attempt that failed.
        node: Box<Node>,
        /// How long until the next attempt.
        after: Duration,
        /// Which retry comes (1-based) …
        retry: u32,
        /// … of how many.
        of: u32,
    },
    /// A node ended (its final status, failure or skip reason).
    Ended(Box<Node>),
    /// A log line of a node (already masked).
    Log {
        /// The node's path (`stage.step`).
        path: String,
        /// `stdout` or `stderr` or `pipewright`.
        stream: &'static str,
        /// The line.
        line: String,
    },
    /// The execution ended.
    Finished(Status),
}

impl Event {
    /// The event a stored status change is, for a reader that sees only stored nodes (a client of a server):
    /// the same classification the engine makes as it goes.
    pub fn of_change(n: Node, from: Option<Status>) -> Option<Event> {
        let waits =
            |s: Status| matches!(s, Status::ApprovalWaiting | Status::InterventionWaiting | Status::InputWaiting);
        Some(match n.status {
            Status::Queued => return None,
            s if s.is_final() => Event::Ended(Box::new(n)),
            s if waits(s) => Event::Waiting(Box::new(n)),
            _ if from.is_some_and(waits) => Event::Resumed(Box::new(n)),
            _ => Event::Started(Box::new(n)),
        })
    }

    /// Its name in a live stream: `started`, `waiting`, `resumed`, `retry_scheduled`, `ended`, `log`, `finished`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Started(_) => "started",
            Event::Waiting(_) => "waiting",
            Event::Resumed(_) => "resumed",
            Event::RetryScheduled { .. } => "retry_scheduled",
            Event::Ended(_) => "ended",
            Event::Log { .. } => "log",
            Event::Finished(_) => "finished",
        }
    }

    /// The node an event is about.
    pub fn node(&self) -> Option<&Node> {
        match self {
            Event::Started(n) | Event::Waiting(n) | Event::Resumed(n) | Event::Ended(n) => Some(n),
            Event::RetryScheduled { node, .. } => Some(node),
            Event::Log { .. } | Event::Finished(_) => None,
        }
    }
}

/// Receives [`Event`]s as they happen.
pub trait Observer: Send + Sync {
    /// Called for every event, in order per node.
    fn event(&self, e: &Event);
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &Event) {}
}
