//! Durable state for pipewright: the [`Store`] trait (pipelines, executions, nodes, log chunks, status
//! transitions, approval and intervention decisions) and its SQLite implementation. The trait carries data,
//! not rules: it never decides a status, it records the ones it is given, before the engine acts on them.

mod model;
mod sqlite;

pub use model::*;
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
    #[error("state store error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored JSON column could not be read.
    #[error("state store holds unreadable data: {0}")]
    Corrupt(String),
    /// A lookup matched nothing, or more than one thing.
    #[error("{0}")]
    NotFound(String),
}

/// Results of store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Everything pipewright keeps. Every call commits before it returns.
#[async_trait]
pub trait Store: Send + Sync {
    /// Record a pipeline's YAML; a changed YAML gets the next version, an unchanged one keeps its version.
    async fn save_pipeline(&self, org: &str, project: &str, identifier: &str, yaml: &str) -> Result<i64>;
    /// The YAML of a pipeline version.
    async fn pipeline_yaml(&self, org: &str, project: &str, identifier: &str, version: i64) -> Result<String>;
    /// Create an execution; the store assigns the per-pipeline sequence number.
    async fn create_execution(&self, e: NewExecution) -> Result<Execution>;
    /// Set an execution's status (and start / end times), recording the transition.
    async fn set_execution_status(&self, id: &str, status: Status, failure: Option<&str>) -> Result<()>;
    /// One execution by id or unique id prefix.
    async fn execution(&self, id_or_prefix: &str) -> Result<Execution>;
    /// Executions, newest first.
    async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<Execution>>;
    /// Insert or update a node, recording a transition when its status changes.
    async fn put_node(&self, n: &Node) -> Result<()>;
    /// The nodes of an execution, in the order they were created.
    async fn nodes(&self, execution_id: &str) -> Result<Vec<Node>>;
    /// Append a chunk of log text for a node.
    async fn append_log(&self, execution_id: &str, node_id: &str, seq: i64, data: &str) -> Result<()>;
    /// Log chunks of an execution (optionally of some nodes), after `after_seq` per node, in order.
    async fn logs(&self, execution_id: &str, node_ids: Option<&[String]>) -> Result<Vec<LogChunk>>;
    /// Ask a running execution to abort. False when it has already ended.
    async fn request_abort(&self, id: &str) -> Result<bool>;
    /// Whether an abort was asked for.
    async fn abort_requested(&self, id: &str) -> Result<bool>;
    /// Record an approval or intervention decision for a waiting node.
    async fn put_decision(&self, d: &Decision) -> Result<()>;
    /// Take (consume) the oldest pending decision for a node.
    async fn take_decision(&self, execution_id: &str, node_id: &str) -> Result<Option<Decision>>;
    /// Status transitions of an execution, oldest first.
    async fn transitions(&self, execution_id: &str) -> Result<Vec<Transition>>;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
