//! Durable state for pipewright, by role: [`History`] (what readers query), [`Requests`] (what people ask of
//! a running execution), [`Journal`] (what the launcher and the engine write), [`Feed`] (incremental reads for
//! live streams), [`Leases`] (one owner per execution), [`Tasks`] (steps handed to remote agents) and
//! [`Directory`] (the server's records, tokens and audit trail); [`Store`] is all of them, [`Client`] what a
//! client of the history needs. The records are `domain`'s plain data, re-exported here. The traits carry data, not rules: a store never decides a status,
//! it records the ones it is given, before the engine acts on them. The SQLite implementation is the `sqlite`
//! feature, the PostgreSQL one the `postgres` feature (both on by default); without them this crate links no
//! database driver. [`open`] picks one from where the state is kept.

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use domain::*;
#[cfg(feature = "postgres")]
use postgres::redact;
#[cfg(feature = "postgres")]
pub use postgres::{PgStore, Scratch};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use async_trait::async_trait;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory or database file could not be created or opened.
    #[error("cannot open the state store at {path}: {message}")]
    Open {
        /// The file or directory.
        path: String,
        /// What went wrong and what to do.
        message: String,
    },
    /// A query failed.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("state store error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored JSON column could not be read.
    #[error("state store holds unreadable data: {0}")]
    Corrupt(String),
    /// A lookup matched nothing, or more than one thing.
    #[error("{0}")]
    NotFound(String),
    /// A journal write under a hold that is no longer the execution's (another process took it over, or the
    /// writer gave it up), or a change of an execution that has ended: nothing was written.
    #[error("{0}")]
    Fenced(String),
    /// A remote store (a pipewright server) refused or failed.
    #[error("{0}")]
    Remote(String),
}

/// Every role trait, to call a store's methods on a concrete type (`use store::prelude::*`).
pub mod prelude {
    pub use crate::{Client, Directory, Feed, History, Journal, Leases, Requests, Store, Tasks};
}

/// Results of store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What readers query: pipeline versions, executions, their nodes, logs and transitions — all a client of a server
/// needs to show an execution.
#[async_trait]
pub trait History: Send + Sync {
    /// The YAML of a pipeline version.
    async fn pipeline_yaml(&self, org: &str, project: &str, identifier: &str, version: i64) -> Result<String>;
    /// One execution by id or unique id prefix.
    async fn execution(&self, id_or_prefix: &str) -> Result<Execution>;
    /// Executions, newest first.
    async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<Execution>>;
    /// The nodes of an execution, in the order they were created.
    async fn nodes(&self, execution_id: &str) -> Result<Vec<Node>>;
    /// Log chunks of an execution (optionally of some nodes), after `after_seq` per node, in order.
    async fn logs(&self, execution_id: &str, node_ids: Option<&[String]>) -> Result<Vec<LogChunk>>;
    /// Status transitions of an execution, oldest first.
    async fn transitions(&self, execution_id: &str) -> Result<Vec<Transition>>;
}

/// What people ask of a running execution, wherever it runs: to abort, or a decision for a waiting node (approval,
/// intervention, runtime inputs).
#[async_trait]
pub trait Requests: Send + Sync {
    /// Ask a running execution to abort. False when it has already ended.
    async fn request_abort(&self, id: &str) -> Result<bool>;
    /// Record an approval or intervention decision for a waiting node.
    async fn put_decision(&self, d: &Decision) -> Result<()>;
}

/// What the launcher and the engine write as an execution goes, and what the engine reads back of requests made to
/// it.
#[async_trait]
pub trait Journal: Send + Sync {
    /// Record a pipeline's YAML; a changed YAML gets the next version, an unchanged one keeps its version.
    async fn save_pipeline(&self, org: &str, project: &str, identifier: &str, yaml: &str) -> Result<i64>;
    /// Create an execution; the store assigns the per-pipeline sequence number.
    async fn create_execution(&self, e: NewExecution) -> Result<Execution>;
    // Every write below takes the `Fence` it is made under and is refused (`StoreError::Fenced`, nothing
    // written) when that hold is no longer the execution's, checked in the write's own statement or
    // transaction.

    /// Set an execution's status (and start / end times), recording the transition. An execution that has
    /// ended keeps its final status (`Fenced`).
    async fn set_execution_status(&self, id: &str, status: Status, failure: Option<&str>, fence: &Fence) -> Result<()>;
    /// Set one entry of an execution's runtime inputs (`inputs[path] = value`): an input asked while the
    /// execution runs (`.executionInput()`), as it is asked and once it is given.
    async fn set_execution_input(&self, id: &str, path: &str, value: &serde_json::Value, fence: &Fence) -> Result<()>;
    /// Insert or update a node, recording a transition when its status changes.
    async fn put_node(&self, n: &Node, fence: &Fence) -> Result<()>;
    /// Append a chunk of log text for a node; a chunk already stored (same node and `seq`) is kept as it is, so
    /// a write repeated after a lost answer is stored once.
    async fn append_log(&self, execution_id: &str, node_id: &str, seq: i64, data: &str, fence: &Fence) -> Result<()>;
    /// Whether an abort was asked for.
    async fn abort_requested(&self, id: &str) -> Result<bool>;
    /// Take (consume) the oldest pending decision for a node.
    async fn take_decision(&self, execution_id: &str, node_id: &str, fence: &Fence) -> Result<Option<Decision>>;
    /// Record the process group a step runs in (host, group id, the leader's start time in clock ticks).
    async fn put_step_process(&self, execution_id: &str, node_id: &str, p: &StepProcess, fence: &Fence) -> Result<()>;
    /// Forget a step's process group (it ended); with an empty `node_id`, every one of the execution.
    async fn drop_step_process(&self, execution_id: &str, node_id: &str, fence: &Fence) -> Result<()>;
    /// The process groups recorded for an execution's steps, by node id.
    async fn step_processes(&self, execution_id: &str) -> Result<Vec<(String, StepProcess)>>;
}

/// Incremental reads for live streams and lookups by prefix (a server's live logs).
#[async_trait]
pub trait Feed: Send + Sync {
    /// Executions whose id starts with `prefix` (case-insensitive), at most `limit`, by id.
    async fn executions_by_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<Execution>>;
    /// Status transitions of an execution with an id above `after`, oldest first, at most `limit`.
    async fn transitions_after(&self, execution_id: &str, after: i64, limit: i64) -> Result<Vec<Transition>>;
    /// Log chunks of an execution with a cursor above `after`, in the order they were written, at most `limit`.
    async fn logs_after(&self, execution_id: &str, after: i64, limit: i64) -> Result<Vec<LogChunk>>;
}

/// One owner per execution: claims, heartbeats, and executions whose owner is gone.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Take an unfinished execution for `owner` until `until` (ms): it succeeds when nobody owns it, `owner`
    /// does already, or the owner's lease ended before `now`. One statement: two processes never both win.
    /// Returns the claim's epoch (raised whenever the owner changes: the fence of the new owner's writes),
    /// or None when the claim failed.
    async fn claim_execution(&self, id: &str, owner: &str, now: i64, until: i64) -> Result<Option<i64>>;
    /// Renew the lease of the fence's owner; false when another process has taken the execution over (or
    /// the fence is not an owner's).
    async fn renew_lease(&self, id: &str, fence: &Fence, until: i64) -> Result<bool>;
    /// Who owns an execution and until when (ms), if anyone does.
    async fn lease(&self, id: &str) -> Result<Option<(String, Option<i64>)>>;
    /// Unfinished executions nobody runs: their owner's lease ended before `now`, or nobody took one created
    /// before `unowned_before`.
    async fn orphaned(&self, now: i64, unowned_before: i64) -> Result<Vec<Execution>>;
}

/// The server's directory: organizations, projects, users, roles and the other records, tokens, the audit trail,
/// and deleting a scope's history.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Insert a record, or replace it when `replace`; false when it exists and `replace` is false.
    async fn put_record(&self, r: &Record, replace: bool) -> Result<bool>;
    /// One record.
    async fn record(&self, kind: &str, org: &str, project: &str, identifier: &str) -> Result<Option<Record>>;
    /// Records of a kind, optionally only in one organization / project, ordered by identifier.
    async fn records(&self, kind: &str, org: Option<&str>, project: Option<&str>) -> Result<Vec<Record>>;
    /// Delete a record; false when there was none.
    async fn delete_record(&self, kind: &str, org: &str, project: &str, identifier: &str) -> Result<bool>;
    /// Delete `keys` in one transaction unless it would take the last record that `keep` matches: then
    /// nothing is deleted and the answer is `None`; else how many were deleted. Changes guarded by the same
    /// `keep` are serialised, so two concurrent deletes of the last two matching records cannot both succeed.
    async fn delete_records_keeping(&self, keys: &[RecordKey], keep: &Keep) -> Result<Option<u64>>;
    /// Delete every record in an organization (and its projects) or one project.
    async fn delete_scope(&self, org: &str, project: Option<&str>) -> Result<u64>;
    /// Store a new token.
    async fn put_token(&self, t: &Token) -> Result<()>;
    /// The token with this hash.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>>;
    /// Tokens, optionally of one principal.
    async fn tokens(&self, principal: Option<(&str, &str)>) -> Result<Vec<Token>>;
    /// Revoke a token; false when there is none or it was already revoked.
    async fn revoke_token(&self, id: &str) -> Result<bool>;
    /// Bind a token (issued before tokens were bound) to its principal's internal id.
    async fn bind_token(&self, id: &str, principal_uid: &str) -> Result<()>;
    /// Delete the execution history (executions, nodes, logs, transitions, decisions) and the pipeline
    /// versions of an organization, or of one of its projects; returns how many executions were deleted.
    async fn delete_history(&self, org: &str, project: Option<&str>) -> Result<u64>;
    /// Record an audited action.
    async fn audit(&self, e: &AuditEvent) -> Result<()>;
    /// Audited actions, newest first.
    async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>>;
    /// Failed logins counted under `key` in a window that began at or after `since` (ms); 0 otherwise.
    async fn login_failures(&self, key: &str, since: i64) -> Result<i64>;
    /// Count a failed login under `key` at `now`; a window that began before `since` starts again at `now`.
    /// Returns the count in the window. Windows that ended are forgotten.
    async fn count_login_failure(&self, key: &str, now: i64, since: i64) -> Result<i64>;
    /// Forget `key`'s failed logins (after a success).
    async fn clear_login_failures(&self, key: &str) -> Result<()>;
}

/// Step attempts handed to remote agents, and the agents: a task is queued, claimed by one agent under a
/// lease it renews, and ends done (reported), lost (the lease ran out) or cancelled. Every transition is one
/// conditional statement, so two agents never hold one task and a report from an agent that no longer holds
/// its task is refused.
#[async_trait]
pub trait Tasks: Send + Sync {
    /// Queue a task (again with the same id: nothing happens).
    async fn enqueue_task(&self, t: &NewTask) -> Result<()>;
    /// Give the oldest queued task `agent` may take to it until `until`, under the lease token whose hash is
    /// `lease`: the agent is active, the task is in the agent's scope (its organization and project, where
    /// the agent has them), `tags` hold every selector, and the task's stage is not held by another agent
    /// seen after `alive_after` (a stage's steps share one workspace). None when there is none.
    async fn claim_task(
        &self,
        agent: &AgentRecord,
        tags: &[String],
        lease: &str,
        now: i64,
        until: i64,
        alive_after: i64,
    ) -> Result<Option<TaskRecord>>;
    /// Renew the holder's lease on a task (the first renewal confirms the agent starts it; the agent counts
    /// as seen): None when it no longer holds it, else whether it is asked to stop.
    async fn renew_task(&self, id: &str, holder: Holder<'_>, until: i64) -> Result<Option<bool>>;
    /// Append output the holder sent for its task; false when it no longer holds it.
    async fn append_task_output(&self, id: &str, holder: Holder<'_>, data: &str) -> Result<bool>;
    /// A task's output chunks with a cursor above `after`, in order, at most `limit`.
    async fn task_output_after(&self, id: &str, after: i64, limit: i64) -> Result<Vec<(i64, String)>>;
    /// Record how the holder's task ended; false (and nothing recorded) when it no longer holds it.
    async fn finish_task(&self, id: &str, holder: Holder<'_>, report: &str, now: i64) -> Result<bool>;
    /// One task.
    async fn task(&self, id: &str) -> Result<Option<TaskRecord>>;
    /// Stop a task: a queued one ends cancelled, a claimed one is asked to stop (its agent reports).
    async fn cancel_task(&self, id: &str, now: i64) -> Result<()>;
    /// Tasks whose agent's lease ran out before `now` (or whose agent was revoked): those it had started become
    /// lost, those it never confirmed go back to the queue (they never ran). Returns them, as they are now.
    async fn expire_tasks(&self, now: i64) -> Result<Vec<TaskRecord>>;
    /// Register an agent (state `active`, never seen) with the hash of its credential; false when the name
    /// is taken.
    async fn register_agent(&self, a: &AgentRecord, secret: &str) -> Result<bool>;
    /// Give an agent a new credential (its hash), which replaces the old one; false when there is no such
    /// agent.
    async fn set_agent_secret(&self, name: &str, secret: &str) -> Result<bool>;
    /// The agent whose credential has this hash, if any (without its running tasks counted).
    async fn agent_by_secret(&self, secret: &str) -> Result<Option<AgentRecord>>;
    /// Record that an agent asked for work: its version and last heartbeat.
    async fn agent_seen(&self, name: &str, version: &str, now: i64) -> Result<()>;
    /// The agents, by name, with the tasks each holds.
    async fn agents(&self) -> Result<Vec<AgentRecord>>;
    /// Set an agent's state (`active`, `draining`, `revoked`); false when there is no such agent.
    async fn set_agent_state(&self, name: &str, state: &str) -> Result<bool>;
    /// Wake-ups about tasks (this process's and, where the store can tell, other processes').
    fn signals(&self) -> &Signals;
}

/// Wake-ups about tasks, so claimers and the executors waiting for tasks to end need not poll: a task queued
/// wakes one claimer — the one of the agent holding its stage when there is one — and a task that ended wakes
/// whoever waits for it. A store shared between processes forwards its peers' news too (PostgreSQL's
/// `LISTEN/NOTIFY`); waiters still look again now and then, so a lost wake-up costs latency, never
/// correctness.
#[derive(Debug, Default)]
pub struct Signals {
    any: tokio::sync::Notify,
    agents: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Notify>>>,
    tasks: std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Notify>>>,
}

impl Signals {
    /// What wakes one claimer when a task another agent's stage does not hold is queued.
    pub fn any(&self) -> &tokio::sync::Notify {
        &self.any
    }

    fn waiter(
        map: &std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Notify>>>,
        key: &str,
    ) -> std::sync::Arc<tokio::sync::Notify> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get(key).and_then(std::sync::Weak::upgrade) {
            return n;
        }
        if m.len() > 1024 {
            m.retain(|_, w| w.strong_count() > 0);
        }
        let n = std::sync::Arc::new(tokio::sync::Notify::new());
        m.insert(key.to_string(), std::sync::Arc::downgrade(&n));
        n
    }

    /// What wakes agent `name`'s claimers when a task of a stage it holds is queued (keep it while waiting).
    pub fn agent(&self, name: &str) -> std::sync::Arc<tokio::sync::Notify> {
        Self::waiter(&self.agents, name)
    }

    /// What wakes the waiters on task `id` when it may have ended (keep it while waiting).
    pub fn task(&self, id: &str) -> std::sync::Arc<tokio::sync::Notify> {
        Self::waiter(&self.tasks, id)
    }

    /// A task was queued; `agent` holds its stage, if anyone does.
    pub fn queued(&self, agent: Option<&str>) {
        let mine = agent.filter(|a| !a.is_empty()).and_then(|a| {
            self.agents.lock().unwrap_or_else(|e| e.into_inner()).get(a).and_then(std::sync::Weak::upgrade)
        });
        match mine {
            Some(n) => n.notify_one(),
            None => self.any.notify_one(),
        }
    }

    /// Task `id` may have ended.
    pub fn ended(&self, id: &str) {
        let n = self.tasks.lock().unwrap_or_else(|e| e.into_inner()).get(id).and_then(std::sync::Weak::upgrade);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }

    /// News may have been missed (a lost connection): wake everyone to look again.
    pub fn everything(&self) {
        self.any.notify_waiters();
        for map in [&self.agents, &self.tasks] {
            for n in map.lock().unwrap_or_else(|e| e.into_inner()).values().filter_map(std::sync::Weak::upgrade) {
                n.notify_waiters();
            }
        }
    }

    /// Tasks a lease expiry changed (`Tasks::expire_tasks`): those back in the queue wake a claimer, those
    /// lost wake whoever waits for them.
    pub fn expired(&self, tasks: &[TaskRecord]) {
        for t in tasks {
            match t.state {
                TaskState::Queued => self.queued(None),
                _ => self.ended(&t.id),
            }
        }
    }

    /// Act on a notification's payload: `q:<agent>` (queued; the agent may be empty) or `e:<task id>`.
    pub fn dispatch(&self, payload: &str) {
        if let Some(agent) = payload.strip_prefix("q:") {
            self.queued(Some(agent));
        } else if let Some(id) = payload.strip_prefix("e:") {
            self.ended(id);
        }
    }
}

/// Everything pipewright keeps, every role in one: what a server and a local run use. Every call commits
/// before it returns.
pub trait Store: Client + Journal + Feed + Leases + Directory + Tasks {}

impl<T: History + Requests + Journal + Feed + Leases + Directory + Tasks> Store for T {}

/// What a client of the history needs — read it, and ask running executions for things — whether the history
/// is a local state directory or a server (`pipewright --server`).
pub trait Client: History + Requests {}

impl<T: History + Requests> Client for T {}

/// Open the store: the PostgreSQL database at `database_url` when one is given (`postgres://…`), else the
/// SQLite file in `state_dir`.
#[cfg(all(feature = "sqlite", feature = "postgres"))]
pub async fn open(database_url: Option<&str>, state_dir: &std::path::Path) -> Result<std::sync::Arc<dyn Store>> {
    match database_url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(std::sync::Arc::new(PgStore::open(url).await?))
        }
        Some(url) => Err(StoreError::Open {
            path: redact(url),
            message: "pipewright keeps state in PostgreSQL (postgres://USER@HOST:PORT/DATABASE) or, without \
                      --database-url, in SQLite under --state-dir"
                .into(),
        }),
        None => Ok(std::sync::Arc::new(SqliteStore::open(state_dir).await?)),
    }
}
