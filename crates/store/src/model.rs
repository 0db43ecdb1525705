//! The records the store keeps: executions, nodes, log chunks, transitions, decisions, and the Harness
//! statuses and execution modes they carry (same names in JSON as in Harness).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Harness's statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Created, not started.
    Queued,
    /// Running.
    Running,
    /// Finished well.
    Success,
    /// Finished badly.
    Failed,
    /// Stopped by a person or a failure strategy.
    Aborted,
    /// Timed out.
    Expired,
    /// Failed, and a failure strategy ignored it.
    IgnoreFailed,
    /// Did not run (condition false, not selected).
    Skipped,
    /// Waiting for an approval.
    ApprovalWaiting,
    /// An approval was rejected.
    ApprovalRejected,
    /// Waiting for a person's decision after a failure.
    InterventionWaiting,
    /// Paused.
    Paused,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 12] = [
        Status::Queued,
        Status::Running,
        Status::Success,
        Status::Failed,
        Status::Aborted,
        Status::Expired,
        Status::IgnoreFailed,
        Status::Skipped,
        Status::ApprovalWaiting,
        Status::ApprovalRejected,
        Status::InterventionWaiting,
        Status::Paused,
    ];

    /// The name, as in Harness.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "Queued",
            Status::Running => "Running",
            Status::Success => "Success",
            Status::Failed => "Failed",
            Status::Aborted => "Aborted",
            Status::Expired => "Expired",
            Status::IgnoreFailed => "IgnoreFailed",
            Status::Skipped => "Skipped",
            Status::ApprovalWaiting => "ApprovalWaiting",
            Status::ApprovalRejected => "ApprovalRejected",
            Status::InterventionWaiting => "InterventionWaiting",
            Status::Paused => "Paused",
        }
    }

    /// Whether the status is final.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Success
                | Status::Failed
                | Status::Aborted
                | Status::Expired
                | Status::IgnoreFailed
                | Status::Skipped
                | Status::ApprovalRejected
        )
    }

    /// Whether the status counts as a good outcome for what follows (`pipelineStatus: Success`).
    pub fn is_good(self) -> bool {
        matches!(self, Status::Success | Status::IgnoreFailed | Status::Skipped)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL.into_iter().find(|x| x.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            format!("unknown status `{s}`; expected one of {}", Status::ALL.map(Status::as_str).join(", "))
        })
    }
}

/// How an execution came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// All stages.
    Full,
    /// Selected stages.
    Selective,
    /// A re-run of an execution.
    Rerun,
    /// Some stages of an execution re-run.
    RerunStage,
    /// Resumed from the failed stage.
    Retry,
}

impl Mode {
    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Selective => "selective",
            Mode::Rerun => "rerun",
            Mode::RerunStage => "rerun_stage",
            Mode::Retry => "retry",
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Mode::Full, Mode::Selective, Mode::Rerun, Mode::RerunStage, Mode::Retry]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode `{s}`"))
    }
}

/// What is needed to create an execution.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Organization.
    pub org: String,
    /// Project.
    pub project: String,
    /// Pipeline identifier.
    pub pipeline: String,
    /// Pipeline version (from [`crate::Store::save_pipeline`]).
    pub pipeline_version: i64,
    /// How it came to be.
    pub mode: Mode,
    /// Who started it.
    pub triggered_by: String,
    /// Runtime inputs by path.
    pub inputs: serde_json::Value,
    /// Selected stages (empty: all).
    pub selected_stages: Vec<String>,
    /// The resolved pipeline YAML it runs.
    pub snapshot: String,
    /// The file it was run from, if any.
    pub source_file: Option<String>,
    /// The execution it was derived from (re-run / retry).
    pub parent_id: Option<String>,
    /// The first execution of the chain.
    pub original_id: Option<String>,
}

/// An execution record.
#[derive(Debug, Clone, Serialize)]
pub struct Execution {
    /// ULID.
    pub id: String,
    /// Organization.
    pub org: String,
    /// Project.
    pub project: String,
    /// Pipeline identifier.
    pub pipeline: String,
    /// Pipeline version.
    pub pipeline_version: i64,
    /// Per-pipeline sequence number, from 1.
    pub sequence_id: i64,
    /// Status.
    pub status: Status,
    /// Mode.
    pub mode: Mode,
    /// Who started it.
    pub triggered_by: String,
    /// Runtime inputs by path.
    pub inputs: serde_json::Value,
    /// Selected stages (empty: all).
    pub selected_stages: Vec<String>,
    /// The pipeline YAML it ran.
    #[serde(skip)]
    pub snapshot: String,
    /// The file it was run from.
    pub source_file: Option<String>,
    /// The execution it came from.
    pub parent_id: Option<String>,
    /// The first execution of its chain.
    pub original_id: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Created (ms).
    pub created_at: i64,
    /// Started (ms).
    pub started_at: Option<i64>,
    /// Ended (ms).
    pub ended_at: Option<i64>,
}

/// Filters for [`crate::Store::executions`].
#[derive(Debug, Clone, Default)]
pub struct ExecutionQuery {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this execution and those derived from it (re-runs, retries).
    pub chain_of: Option<String>,
    /// At most this many (default 50).
    pub limit: Option<i64>,
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A stage (or one iteration of a looping stage).
    Stage,
    /// A step group (or one iteration).
    StepGroup,
    /// A step (or one iteration).
    Step,
}

impl NodeKind {
    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Stage => "stage",
            NodeKind::StepGroup => "step_group",
            NodeKind::Step => "step",
        }
    }
}

/// A stage, step group or step execution (one attempt of one iteration).
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// ULID.
    pub id: String,
    /// Execution.
    pub execution_id: String,
    /// The enclosing node.
    pub parent_id: Option<String>,
    /// Kind.
    pub kind: NodeKind,
    /// Identifier (iterations carry a suffix: `build_0`).
    pub identifier: String,
    /// Display name.
    pub name: String,
    /// Dotted path of identifiers from the stage down (`deploy.group.step`).
    pub path: String,
    /// Creation order.
    pub position: i64,
    /// Attempt, from 1.
    pub attempt: i64,
    /// Status.
    pub status: Status,
    /// Started (ms).
    pub started_at: Option<i64>,
    /// Ended (ms).
    pub ended_at: Option<i64>,
    /// Failure message.
    pub failure: Option<String>,
    /// Why it was skipped.
    pub skip_reason: Option<String>,
    /// Output variables.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Execution and node this one was reused from.
    pub reused_from: Option<String>,
}

/// A chunk of log text (lines joined by `\n`, each prefixed with its timestamp).
#[derive(Debug, Clone, Serialize)]
pub struct LogChunk {
    /// Node.
    pub node_id: String,
    /// Sequence within the node.
    pub seq: i64,
    /// Text.
    pub data: String,
}

/// A status change.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// Node, or none for the execution itself.
    pub node_id: Option<String>,
    /// Previous status.
    pub from: Option<String>,
    /// New status.
    pub to: String,
    /// Why.
    pub reason: Option<String>,
    /// When (ms).
    pub at: i64,
}

/// A person's decision for a waiting node.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Execution.
    pub execution_id: String,
    /// Node.
    pub node_id: String,
    /// `approval` or `intervention`.
    pub kind: String,
    /// `approve`, `reject`, `retry`, `ignore`, `abort`, `mark-success`, …
    pub action: String,
    /// Who decided.
    pub by: String,
    /// Comment.
    pub comment: Option<String>,
    /// Approver inputs.
    pub inputs: serde_json::Value,
    /// When (ms).
    pub at: i64,
}
