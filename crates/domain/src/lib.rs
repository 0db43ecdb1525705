//! pipewright's records as plain data — executions, nodes, log chunks, transitions, decisions, records,
//! tokens, audit events, and the Harness statuses and execution modes they carry (same names in JSON as in
//! Harness). No database here: the engine, the planner and the server's rules need these types without
//! linking a database driver; the store crate keeps them.

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
    /// Waiting for runtime inputs asked while the execution runs (`.executionInput()`).
    InputWaiting,
    /// Paused.
    Paused,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 13] = [
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
        Status::InputWaiting,
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
            Status::InputWaiting => "InputWaiting",
            Status::Paused => "Paused",
        }
    }

    /// The value Harness expressions give for this status (`<+pipeline.stages.s.status> == "SUCCEEDED"`); the
    /// API and the CLI keep the names above.
    pub fn expression_value(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Running => "RUNNING",
            Status::Success => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Aborted => "ABORTED",
            Status::Expired => "EXPIRED",
            Status::IgnoreFailed => "IGNORE_FAILED",
            Status::Skipped => "SKIPPED",
            Status::ApprovalWaiting => "APPROVAL_WAITING",
            Status::ApprovalRejected => "APPROVAL_REJECTED",
            Status::InterventionWaiting => "INTERVENTION_WAITING",
            Status::InputWaiting => "INPUT_WAITING",
            Status::Paused => "PAUSED",
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[serde(skip_serializing, default)]
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
    /// Only this organization.
    pub org: Option<String>,
    /// Only this project.
    pub project: Option<String>,
    /// Only this mode.
    pub mode: Option<Mode>,
    /// Only started by this principal.
    pub triggered_by: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    /// Created before (ms).
    pub until: Option<i64>,
    /// Only executions older than this cursor (`created_at:id` of the last one of a page).
    pub before: Option<(i64, String)>,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogChunk {
    /// Position in the execution's log stream (increasing in the order chunks were written).
    #[serde(default)]
    pub cursor: i64,
    /// Node.
    pub node_id: String,
    /// Sequence within the node.
    pub seq: i64,
    /// Text.
    pub data: String,
}

/// A status change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transition {
    /// Position in the store's transition log (increasing).
    #[serde(default)]
    pub id: i64,
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

/// The process group a step runs in, as recorded for whoever takes its execution over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProcess {
    /// The host it runs on.
    pub host: String,
    /// The process group id (the leader's pid).
    pub pgid: i64,
    /// The leader's start time, in clock ticks since boot (`/proc/<pid>/stat` field 22): a pid reused by
    /// another process has another start time.
    pub started: i64,
}

/// What a person decided for a waiting node: an approval's answer, an intervention's choice, or runtime
/// inputs given. Stored by its name; a name the store does not know is unreadable data, never a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionAction {
    /// Approve an approval step.
    Approve,
    /// Reject an approval step.
    Reject,
    /// Run a failed step again.
    Retry,
    /// Ignore the failure (`IgnoreFailed`).
    Ignore,
    /// Abort the execution.
    Abort,
    /// Mark the failed step `Success`.
    MarkSuccess,
    /// Mark the failed step `Failed`.
    MarkFailure,
    /// Runtime inputs given (`.executionInput()`).
    Provide,
}

/// Which wait a decision answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    /// An approval step.
    Approval,
    /// A failed step waiting for a person (`ManualIntervention`).
    Intervention,
    /// A node waiting for runtime inputs.
    Input,
}

impl DecisionAction {
    /// Every action.
    pub const ALL: [DecisionAction; 8] = [
        DecisionAction::Approve,
        DecisionAction::Reject,
        DecisionAction::Retry,
        DecisionAction::Ignore,
        DecisionAction::Abort,
        DecisionAction::MarkSuccess,
        DecisionAction::MarkFailure,
        DecisionAction::Provide,
    ];

    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionAction::Approve => "approve",
            DecisionAction::Reject => "reject",
            DecisionAction::Retry => "retry",
            DecisionAction::Ignore => "ignore",
            DecisionAction::Abort => "abort",
            DecisionAction::MarkSuccess => "mark-success",
            DecisionAction::MarkFailure => "mark-failure",
            DecisionAction::Provide => "provide",
        }
    }

    /// The wait it answers.
    pub fn kind(self) -> DecisionKind {
        match self {
            DecisionAction::Approve | DecisionAction::Reject => DecisionKind::Approval,
            DecisionAction::Provide => DecisionKind::Input,
            _ => DecisionKind::Intervention,
        }
    }
}

impl DecisionKind {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Approval => "approval",
            DecisionKind::Intervention => "intervention",
            DecisionKind::Input => "input",
        }
    }
}

impl fmt::Display for DecisionAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DecisionAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DecisionAction::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| {
            format!(
                "unknown decision `{s}`; expected one of {}",
                DecisionAction::ALL.map(DecisionAction::as_str).join(", ")
            )
        })
    }
}

/// A person's decision for a waiting node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// Execution.
    pub execution_id: String,
    /// Node.
    pub node_id: String,
    /// What was decided (which wait it answers is `action.kind()`).
    pub action: DecisionAction,
    /// Who decided.
    pub by: String,
    /// Comment.
    pub comment: Option<String>,
    /// Approver inputs.
    pub inputs: serde_json::Value,
    /// When (ms).
    pub at: i64,
}

/// A server record: an organization, project, pipeline head, input set, service, environment, infrastructure
/// definition, secret, user, service account, role, resource group or role binding. `org` and `project` are
/// empty when the record does not sit in one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// What it is (`org`, `project`, `pipeline`, `secret`, `user`, `role_binding`, …).
    pub kind: String,
    /// Organization ('' at account scope).
    pub org: String,
    /// Project ('' at account or organization scope).
    pub project: String,
    /// Identifier, unique per kind and scope.
    pub identifier: String,
    /// Its data.
    pub body: serde_json::Value,
    /// Created (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
}

/// Where a record is: its kind, scope and identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    /// Its kind.
    pub kind: String,
    /// Organization ('' at account scope).
    pub org: String,
    /// Project ('' at account or organization scope).
    pub project: String,
    /// Identifier.
    pub identifier: String,
}

impl RecordKey {
    /// The key of `r`.
    pub fn of(r: &Record) -> RecordKey {
        RecordKey {
            kind: r.kind.clone(),
            org: r.org.clone(),
            project: r.project.clone(),
            identifier: r.identifier.clone(),
        }
    }
}

/// Records a change must leave at least one of: those of `kind` at account scope whose body's top-level
/// string `field` is `value` (the Account Admin bindings: `role_binding`, `role`, `_account_admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// Their kind.
    pub kind: String,
    /// The body field.
    pub field: String,
    /// Its value.
    pub value: String,
}

/// An API token: a random secret shown once, kept as its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Token {
    /// Its id (not secret).
    pub id: String,
    /// A name to recognise it by.
    pub name: String,
    /// `user` or `service_account`.
    pub principal_kind: String,
    /// The user name or service account identifier.
    pub principal_id: String,
    /// The service account's organization ('' for users and account-level service accounts).
    pub principal_org: String,
    /// The service account's project ('' unless project-level).
    pub principal_project: String,
    /// SHA-256 of the secret, hex.
    #[serde(skip_serializing, default)]
    pub hash: String,
    /// Created (ms).
    pub created_at: i64,
    /// Expires (ms), if ever.
    pub expires_at: Option<i64>,
    /// Revoked (ms).
    pub revoked_at: Option<i64>,
    /// The internal id of the principal it was issued to (a principal re-created with the same identifier
    /// is another principal).
    #[serde(skip_serializing, default)]
    pub principal_uid: Option<String>,
}

/// One audited action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    /// Position (assigned by the store).
    #[serde(default)]
    pub id: i64,
    /// When (ms).
    pub at: i64,
    /// Who (`user:alice`, `service_account:ci`).
    pub principal: String,
    /// What (`create`, `update`, `delete`, `execute`, `abort`, `rerun`, `retry`, `approve`, `login`, …).
    pub action: String,
    /// The kind of resource.
    pub resource_type: String,
    /// The resource (identifier or execution id).
    pub resource: String,
    /// Its organization.
    pub org: String,
    /// Its project.
    pub project: String,
    /// The client address.
    pub address: String,
    /// More about it.
    pub detail: serde_json::Value,
}

/// Filters for [`crate::Store::audit_events`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this resource type.
    pub resource_type: Option<String>,
    /// Only events older than this id.
    pub before: Option<i64>,
    /// At most this many (default 100).
    pub limit: Option<i64>,
}

/// A step attempt handed to agents: the engine's task, sealed, with what decides who may take it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewTask {
    /// The task's id: the attempt's node id.
    pub id: String,
    /// The execution.
    pub execution_id: String,
    /// The stage (iteration) it belongs to, `<execution>/<stage>`: a stage's tasks go to one agent.
    pub stage_key: String,
    /// Tags an agent must have all of (`delegateSelectors`).
    pub selectors: Vec<String>,
    /// The task as the server sealed it.
    pub payload: String,
    /// The organization of the execution's project: only an agent registered at the account, this
    /// organization or the project takes it.
    #[serde(default)]
    pub org: String,
    /// The execution's project.
    #[serde(default)]
    pub project: String,
}

/// Who may act on a claimed task: the agent that claimed it, with the lease token its claim was given
/// (kept as its SHA-256 hash), so that neither another agent nor an earlier claim of the same agent can
/// renew, write to or report the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder<'a> {
    /// The agent's name.
    pub agent: &'a str,
    /// The hash of the claim's lease token.
    pub lease: &'a str,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for an agent.
    Queued,
    /// An agent holds it (under a lease it renews).
    Claimed,
    /// The agent reported how it ended.
    Done,
    /// Its agent stopped renewing the lease after it started; the step gets a new attempt.
    Lost,
    /// Nobody needs it any more (aborted, or its attempt was closed).
    Cancelled,
}

impl TaskState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Claimed => "claimed",
            TaskState::Done => "done",
            TaskState::Lost => "lost",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => TaskState::Queued,
            "claimed" => TaskState::Claimed,
            "done" => TaskState::Done,
            "lost" => TaskState::Lost,
            "cancelled" => TaskState::Cancelled,
            other => return Err(format!("unknown task state `{other}`")),
        })
    }
}

/// A task as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskRecord {
    /// The task's id (the attempt's node id).
    pub id: String,
    /// The execution.
    pub execution_id: String,
    /// `<execution>/<stage>`.
    pub stage_key: String,
    /// Tags an agent must have.
    pub selectors: Vec<String>,
    /// The sealed task ('' once it ended).
    pub payload: String,
    /// Where it is.
    pub state: TaskState,
    /// The agent holding it, or that last held it.
    pub agent: Option<String>,
    /// Until when the agent's lease holds (ms).
    pub lease_until: Option<i64>,
    /// The agent's report (JSON), once done.
    pub report: Option<String>,
    /// Asked to stop (an abort, or its attempt closed).
    pub cancel: bool,
    /// The agent confirmed it starts the task (its first heartbeat): from then on a lost lease loses the
    /// attempt; before, the task only goes back to the queue (it never ran).
    pub acked: bool,
    /// When it was queued, claimed and ended (ms).
    pub created_at: i64,
    /// See `created_at`.
    pub claimed_at: Option<i64>,
    /// See `created_at`.
    pub ended_at: Option<i64>,
}

/// A remote agent as the servers know it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentRecord {
    /// Its name (unique).
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// The pipewright version it runs.
    pub version: String,
    /// `active`, `draining` (finishes what it runs, takes nothing new) or `revoked` (refused).
    pub state: String,
    /// When it last asked for work or renewed a lease (ms).
    pub last_seen: i64,
    /// Who registered it (`alice`, `sa:ci`); the agent itself authenticates with its own credential.
    pub principal: String,
    /// The organization it was registered in ('' at the account): it takes tasks of that scope only.
    #[serde(default)]
    pub org: String,
    /// The project it was registered in ('' at the account or an organization).
    #[serde(default)]
    pub project: String,
    /// Tasks it holds now.
    #[serde(default)]
    pub running: i64,
}

#[cfg(test)]
mod fence_tests {
    use super::{DecisionAction, DecisionKind};

    #[test]
    fn decisions_are_named_and_know_the_wait_they_answer() {
        for a in DecisionAction::ALL {
            assert_eq!(a.as_str().parse::<DecisionAction>(), Ok(a));
        }
        let cases = [
            ("approve", DecisionKind::Approval),
            ("reject", DecisionKind::Approval),
            ("mark-success", DecisionKind::Intervention),
            ("retry", DecisionKind::Intervention),
            ("provide", DecisionKind::Input),
        ];
        for (name, kind) in cases {
            assert_eq!(name.parse::<DecisionAction>().map(DecisionAction::kind), Ok(kind), "{name}");
        }
        // No default for a name nobody wrote: it is an error naming the known ones.
        let e = "skip".parse::<DecisionAction>().unwrap_err();
        assert!(e.contains("unknown decision `skip`") && e.contains("mark-failure"), "{e}");
    }

    use super::Fence;

    #[test]
    fn a_write_is_admitted_only_under_the_executions_current_hold() {
        let (me, epoch) = (Fence::owner("a", 3), 3);
        // fence, the execution's owner, its epoch, its lease's end, admitted (at 1000)
        type Row<'a> = (&'a Fence, Option<&'a str>, i64, Option<i64>, bool);
        let table: [Row<'_>; 9] = [
            (&me, Some("a"), epoch, Some(2000), true),
            (&me, Some("a"), epoch, Some(500), true), // its own lease ran out, nobody took over: still its
            (&me, Some("a"), 4, Some(2000), false),   // taken over by another claim of the same name? never
            (&me, Some("b"), 4, Some(2000), false),   // taken over
            (&me, None, 0, None, false),              // never claimed
            (&Fence::unowned(), None, 0, None, true),
            (&Fence::unowned(), Some("b"), 1, Some(500), true), // b's lease ran out
            (&Fence::unowned(), Some("b"), 1, Some(2000), false),
            (&Fence::unowned(), Some("b"), 1, None, true),
        ];
        for (fence, owner, e, until, want) in table {
            assert_eq!(fence.admits(owner, e, until, 1000), want, "{fence:?} on {owner:?}@{e} until {until:?}");
        }
        let lost = Fence::owner("a", 3);
        lost.clone().lose();
        assert!(!lost.admits(Some("a"), 3, Some(2000), 1000), "a lost hold admits nothing, in any clone");
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The hold an execution's journal write is made under: every write of the journal takes one, and the store
/// refuses a write whose hold is no longer the execution's, so an owner that lost its lease — stalled,
/// partitioned, or cut off from the database longer than the lease — can never write over the owner that
/// took the execution over.
#[derive(Debug, Clone)]
pub struct Fence {
    hold: Hold,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Whose a write is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The execution's owner, at the epoch its claim was given (each change of owner raises the epoch).
    Owner {
        /// The owner's id.
        owner: String,
        /// The epoch of its claim.
        epoch: i64,
    },
    /// Nobody holds the execution (before its first claim, or a write by a process that does not run it):
    /// refused while anyone holds a lease on it that has not run out.
    Unowned,
}

impl Fence {
    /// The hold of an owner whose claim was given `epoch`.
    pub fn owner(owner: &str, epoch: i64) -> Fence {
        Fence { hold: Hold::Owner { owner: owner.into(), epoch }, lost: Default::default() }
    }

    /// A write by a process that does not hold the execution.
    pub fn unowned() -> Fence {
        Fence { hold: Hold::Unowned, lost: Default::default() }
    }

    /// Whose the writes are.
    pub fn hold(&self) -> &Hold {
        &self.hold
    }

    /// The owner gave up its hold (it could not renew its lease in time, or another owner took over): every
    /// write under this fence (and its clones) is refused from now on, before it reaches the database.
    pub fn lose(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`Fence::lose`] was called.
    pub fn is_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a write under this fence may be made to an execution that `owner` holds (if anyone) at
    /// `epoch`, its lease running until `lease_until`, at `now`: the owner's own writes at its epoch, or,
    /// unowned, writes while no lease is live.
    pub fn admits(&self, owner: Option<&str>, epoch: i64, lease_until: Option<i64>, now: i64) -> bool {
        if self.is_lost() {
            return false;
        }
        match &self.hold {
            Hold::Owner { owner: me, epoch: mine } => owner == Some(me.as_str()) && epoch == *mine,
            Hold::Unowned => owner.is_none() || lease_until.is_none_or(|u| u < now),
        }
    }

    /// The SQL parameters of the hold: mode (`o` owner, `u` unowned), owner and epoch.
    pub fn params(&self) -> (&'static str, &str, i64) {
        match &self.hold {
            Hold::Owner { owner, epoch } => ("o", owner, *epoch),
            Hold::Unowned => ("u", "", 0),
        }
    }
}
