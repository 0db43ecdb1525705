//! Remote agents (`pipewright agent`): the use cases an agent calls — claim a task (long poll), renew its
//! lease, send output, report how it ended — and those people call to list, drain and revoke agents; and
//! [`RemoteExecutor`], the engine's executor on a server that runs no steps itself: it queues each task in
//! the store, sealed, relays what the agent sends back into the step's log, and returns the agent's report.
//!
//! An agent authenticates as a service account (or user) holding `agent:connect`; an agent name belongs to
//! the principal that first used it. Every call about a task is refused (409) once the agent no longer
//! holds it — its lease ran out and the step got a new attempt, or the task was cancelled — so a late report
//! never overrides the new attempt's outcome.

use crate::App;
use crate::auth::Principal;
use crate::crypto::Keyring;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Resource, Scope};
use engine::executor::{End, Executor, Feedback, Report, Task};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{AgentRecord, NewTask, Store, TaskState, now_ms};
use tokio::sync::watch;
use utoipa::ToSchema;

/// The longest an agent's claim waits for a task, seconds.
pub const MAX_WAIT: u64 = 5;

/// What an agent sends when it asks for work.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// The agent's name (letters, digits, `-`, `_`, `.`; at most 64).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Its tags: it takes steps whose `delegateSelectors` it has all of.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The pipewright version it runs.
    #[serde(default)]
    pub version: String,
    /// How long to wait for a task, seconds (0 to 5; default 0: answer at once).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 5)]
    pub wait_seconds: u64,
}

/// A task handed to an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct Claimed {
    /// The task (the engine's `Task`: the script or request, its environment, timeout and secret values).
    #[schema(value_type = Object)]
    pub task: serde_json::Value,
    /// Renew the lease (heartbeat) at least this often, ms.
    pub heartbeat_ms: u64,
    /// The lease, ms: a task not renewed for this long is given to another agent.
    pub lease_ms: u64,
}

/// What a claim answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimAnswer {
    /// The task, if there was one.
    pub claimed: Option<Claimed>,
    /// The agent is draining: it finishes what it runs and takes nothing new.
    pub draining: bool,
}

/// Which agent a call about a task comes from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRef {
    /// The agent's name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
}

/// Output an agent sends for a task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputBody {
    /// The agent's name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Lines, each `[stream, text]` (`stdout`, `stderr` or `pipewright`), already masked.
    #[schema(value_type = Vec<Vec<String>>)]
    pub lines: Vec<(String, String)>,
}

/// How a task ended, as the agent reports it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The agent's name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// The last lines of output, not sent yet (as in an output call).
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
    pub lines: Vec<(String, String)>,
    /// The engine's `Report`.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

/// A heartbeat's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Beat {
    /// Stop the task (the execution was aborted, or the attempt closed) and report it.
    pub cancel: bool,
}

/// The context a task's payload is sealed with.
fn context(id: &str) -> String {
    format!("task/{id}")
}

fn check_task(id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::BadRequest(format!("`{}` is not a task id", id.chars().take(64).collect::<String>())));
    }
    Ok(())
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::BadRequest(format!(
            "agent name `{}`: use 1 to 64 letters, digits, `-`, `_` or `.`",
            name.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// The lease agents hold tasks under (the server's execution lease), and how often they renew it.
fn lease(app: &App) -> Duration {
    app.runner.lease()
}

/// An agent seen within this many leases counts as alive (its stages wait for it).
pub(crate) const ALIVE_LEASES: u32 = 3;

/// Check the caller may act as agent `name` (`agent:connect`, and the name is its own or new); records that it
/// was seen. Refused for a revoked agent.
async fn as_agent(app: &App, p: &Principal, name: &str, tags: &[String], version: &str) -> ApiResult<AgentRecord> {
    check_name(name)?;
    app.require(p, "agent:connect", &Resource::new("agent", name, Scope::account())).await?;
    let me = p.display();
    // An agent asking again within a tenth of a lease, with the same tags, was seen just now: its record is
    // not written again (a busy agent asks after every task).
    let recent = lease(app) / 10;
    if let Some((at, a)) = app.agents_seen.lock().unwrap_or_else(|e| e.into_inner()).get(name)
        && at.elapsed() < recent
        && a.principal == me
        && a.tags == tags
        && a.state == "active"
    {
        return Ok(a.clone());
    }
    // Seen (created, or its tags and version updated) only when the name is new or the caller's own.
    let a = app.store.agent_seen(name, tags, version, &me, now_ms()).await?;
    if a.principal != me {
        return Err(ApiError::Conflict(format!(
            "agent name `{name}` is used by {}; give this agent another --name",
            a.principal
        )));
    }
    if a.state == "revoked" {
        return Err(ApiError::Forbidden {
            permission: "agent:connect".into(),
            message: format!("agent `{name}` was revoked; an administrator may allow it again"),
        });
    }
    let mut seen = app.agents_seen.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() > 10_000 {
        seen.clear();
    }
    seen.insert(name.to_string(), (Instant::now(), a.clone()));
    Ok(a)
}

/// Check the caller may act as agent `name` about a task (`agent:connect`, and the name is its own), without
/// writing anything: the task's own statement says whether the agent still holds it.
async fn as_holder(app: &App, p: &Principal, name: &str) -> ApiResult<()> {
    check_name(name)?;
    app.require(p, "agent:connect", &Resource::new("agent", name, Scope::account())).await?;
    let me = p.display();
    // An agent name never changes hands, so the principal this server last saw it with is still its own.
    let known = app.agents_seen.lock().unwrap_or_else(|e| e.into_inner()).get(name).map(|(_, a)| a.principal.clone());
    let owner = match known {
        Some(o) => Some(o),
        None => app.store.agents().await?.into_iter().find(|a| a.name == name).map(|a| a.principal),
    };
    match owner {
        Some(o) if o == me => Ok(()),
        Some(o) => Err(ApiError::Conflict(format!("agent name `{name}` is used by {o}"))),
        None => Err(ApiError::Conflict(format!("no agent `{name}` has asked for work; it holds no task"))),
    }
}

/// Refuse a caller whose token was revoked (or ran out) while its request waited.
async fn token_alive(app: &App, p: &Principal) -> ApiResult<()> {
    let now = now_ms();
    let tokens = app.store.tokens(Some((&p.who.kind, &p.who.id))).await?;
    match tokens.iter().find(|t| t.id == p.token_id) {
        Some(t) if t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now) => Ok(()),
        _ => Err(ApiError::Unauthorized("the token was revoked or has expired".into())),
    }
}

/// Give the calling agent a task it may run, waiting up to `wait_seconds` for one.
pub async fn claim(app: &Arc<App>, p: &Principal, b: ClaimBody) -> ApiResult<ClaimAnswer> {
    if b.wait_seconds > MAX_WAIT {
        return Err(ApiError::BadRequest(format!("wait_seconds is at most {MAX_WAIT}")));
    }
    if b.tags.len() > 64 || b.tags.iter().any(|t| t.is_empty() || t.len() > 128) {
        return Err(ApiError::BadRequest("at most 64 tags of 1 to 128 characters".into()));
    }
    let deadline = Instant::now() + Duration::from_secs(b.wait_seconds);
    let lease = lease(app);
    let mut seen = Instant::now();
    let mut agent = as_agent(app, p, &b.name, &b.tags, &b.version).await?;
    // Woken when a task of a stage this agent holds is queued, or (one claimer for each) any other task.
    let mine = app.store.signals().agent(&b.name);
    loop {
        if agent.state == "draining" {
            return Ok(ClaimAnswer { claimed: None, draining: true });
        }
        let signals = app.store.signals();
        let any = signals.any().notified();
        let own = mine.notified();
        tokio::pin!(any, own);
        any.as_mut().enable();
        own.as_mut().enable();
        let now = now_ms();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4);
        let alive_after = now - lease_ms * i64::from(ALIVE_LEASES);
        if let Some(t) = app.store.claim_task(&b.name, &b.tags, now, now + lease_ms, alive_after).await? {
            let plain = app.keys.open(&context(&t.id), &t.payload).map_err(|e| ApiError::Internal(e.to_string()))?;
            let task: serde_json::Value =
                serde_json::from_str(&plain).map_err(|e| ApiError::Internal(format!("task {}: {e}", t.id)))?;
            let lease_ms = u64::try_from(lease_ms).unwrap_or(u64::MAX);
            return Ok(ClaimAnswer {
                claimed: Some(Claimed { task, heartbeat_ms: (lease_ms / 3).max(50), lease_ms }),
                draining: false,
            });
        }
        if Instant::now() >= deadline || app.runner.stopping() {
            return Ok(ClaimAnswer { claimed: None, draining: false });
        }
        // A wake-up, or a look again every quarter second (a task with tags another claimer was woken for).
        tokio::select! {
            _ = any => {}
            _ = own => {}
            _ = tokio::time::sleep(Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now()))) => {}
        }
        // A waiting agent counts as seen (its stages keep waiting for it), and a drain or revocation made
        // meanwhile applies.
        if seen.elapsed() >= lease / 2 {
            token_alive(app, p).await?;
            agent = as_agent(app, p, &b.name, &b.tags, &b.version).await?;
            seen = Instant::now();
        }
    }
}

fn gone(id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "task `{id}` is no longer this agent's: its lease ran out and the step got a new attempt, or it was \
         cancelled; drop it"
    ))
}

/// Renew the calling agent's lease on a task.
pub async fn heartbeat(app: &App, p: &Principal, id: &str, a: AgentRef) -> ApiResult<Beat> {
    check_task(id)?;
    as_holder(app, p, &a.name).await?;
    let until = now_ms() + i64::try_from(lease(app).as_millis()).unwrap_or(i64::MAX / 4);
    match app.store.renew_task(id, &a.name, until).await? {
        Some(cancel) => Ok(Beat { cancel }),
        None => Err(gone(id)),
    }
}

/// Take output the calling agent sends for a task it holds.
pub async fn output(app: &App, p: &Principal, id: &str, b: OutputBody) -> ApiResult<()> {
    check_task(id)?;
    as_holder(app, p, &b.name).await?;
    let data = lines_text(&b.lines)?;
    if data.is_empty() {
        return Ok(());
    }
    if app.store.append_task_output(id, &b.name, &data).await? { Ok(()) } else { Err(gone(id)) }
}

/// Output lines as stored: `stream\ttext` a line.
fn lines_text(lines: &[(String, String)]) -> ApiResult<String> {
    if lines.len() > 10_000 {
        return Err(ApiError::TooLarge("at most 10000 lines at once".into()));
    }
    let mut data = String::new();
    for (stream, text) in lines {
        let stream = match stream.as_str() {
            "stderr" => "stderr",
            "pipewright" => "pipewright",
            _ => "stdout",
        };
        data.push_str(stream);
        data.push('\t');
        data.push_str(&text.trim_end_matches(['\n', '\r']).replace('\n', " "));
        data.push('\n');
    }
    Ok(data)
}

/// Record how a task the calling agent holds ended.
pub async fn report(app: &App, p: &Principal, id: &str, b: ReportBody) -> ApiResult<()> {
    check_task(id)?;
    as_holder(app, p, &b.name).await?;
    let report: Report = serde_json::from_value(b.report)
        .map_err(|e| ApiError::BadRequest(format!("the report is not one pipewright understands: {e}")))?;
    let text = serde_json::to_string(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
    let data = lines_text(&b.lines)?;
    if !data.is_empty() && !app.store.append_task_output(id, &b.name, &data).await? {
        return Err(gone(id));
    }
    if app.store.finish_task(id, &b.name, &text, now_ms()).await? { Ok(()) } else { Err(gone(id)) }
}

/// The agents, with their last heartbeat, version, tags and running tasks.
pub async fn list(app: &App, p: &Principal) -> ApiResult<Vec<AgentRecord>> {
    app.require(p, "agent:view", &Resource::new("agent", "", Scope::account())).await?;
    Ok(app.store.agents().await?)
}

/// Drain an agent (it finishes what it runs, takes nothing new), revoke it (refused from now on; its tasks
/// go to other agents), or make it active again.
pub async fn set_state(app: &App, p: &Principal, name: &str, state: &str) -> ApiResult<AgentRecord> {
    check_name(name)?;
    app.require(p, "agent:manage", &Resource::new("agent", name, Scope::account())).await?;
    if !["active", "draining", "revoked"].contains(&state) {
        return Err(ApiError::BadRequest(format!("an agent is `active`, `draining` or `revoked`, not `{state}`")));
    }
    if !app.store.set_agent_state(name, state).await? {
        return Err(ApiError::NotFound(format!("no agent `{name}`; `pipewright agents list` lists them")));
    }
    if state == "revoked" {
        // Its tasks go to other agents now, not when their leases run out.
        app.store.expire_tasks(now_ms()).await?;
    }
    let action = match state {
        "draining" => "drain",
        "revoked" => "revoke",
        _ => "activate",
    };
    app.audit(&p.display(), &p.address, action, "agent", name, &Scope::account(), serde_json::json!({})).await?;
    app.store
        .agents()
        .await?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no agent `{name}`")))
}

/// What a plan says about agents on a server that runs no steps itself: for each stage that runs, the tags
/// its steps need (`Pipeline::delegate_selectors`; a list with expressions is known only at run time and
/// not checked) and whether an agent that is online (`active`, seen after `alive_after`) has them; without
/// one, its steps will wait.
pub fn agent_warnings(
    pipeline: &spec::Pipeline,
    run: &[String],
    agents: &[AgentRecord],
    alive_after: i64,
) -> Vec<String> {
    fn steps<'a>(els: &'a [spec::ExecutionElement], out: &mut Vec<&'a spec::Step>) {
        for e in els {
            match e {
                spec::ExecutionElement::Step(s) => out.push(s),
                spec::ExecutionElement::StepGroup(g) => steps(&g.steps, out),
                spec::ExecutionElement::Parallel(p) => steps(p, out),
            }
        }
    }
    let online: Vec<&AgentRecord> =
        agents.iter().filter(|a| a.state == "active" && a.last_seen > alive_after).collect();
    let mut out = Vec::new();
    if online.is_empty() {
        out.push(
            "no agent is online: this server runs no steps itself (--no-local-executor), so every step waits \
             for a `pipewright agent`"
                .to_string(),
        );
        return out;
    }
    for stage in pipeline.all_stages().into_iter().filter(|s| run.contains(&s.identifier.value)) {
        let mut all = Vec::new();
        steps(&stage.spec.execution.steps, &mut all);
        let mut needs: Vec<Vec<String>> = Vec::new();
        for step in all {
            let list = pipeline.delegate_selectors(stage, step);
            if list.iter().any(|v| v.value.contains("<+")) {
                continue;
            }
            let mut want: Vec<String> =
                list.iter().map(|v| v.value.trim().to_string()).filter(|v| !v.is_empty()).collect();
            want.sort();
            want.dedup();
            if !needs.contains(&want) {
                needs.push(want);
            }
        }
        for want in needs {
            if !online.iter().any(|a| want.iter().all(|t| a.tags.contains(t))) {
                out.push(format!(
                    "stage `{}`: no online agent has the tags {}; its steps will wait for one",
                    stage.identifier.value,
                    want.join(", ")
                ));
            }
        }
    }
    out
}

/// The engine's executor on a server that runs no steps itself: every task goes to the agents.
pub struct RemoteExecutor {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    poll: Duration,
}

impl std::fmt::Debug for RemoteExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteExecutor").finish_non_exhaustive()
    }
}

impl RemoteExecutor {
    /// An executor queueing tasks in `store`, sealed with `keys`.
    pub fn new(store: Arc<dyn Store>, keys: Arc<Keyring>) -> RemoteExecutor {
        RemoteExecutor { store, keys, poll: Duration::from_millis(250) }
    }

    /// Relay the output an agent sent after `cursor` into the step's log.
    async fn relay(&self, id: &str, cursor: &mut i64, feedback: &dyn Feedback) {
        loop {
            let Ok(chunks) = self.store.task_output_after(id, *cursor, 200).await else { return };
            if chunks.is_empty() {
                return;
            }
            for (c, data) in chunks {
                *cursor = c;
                for line in data.lines() {
                    let (stream, text) = line.split_once('\t').unwrap_or(("stdout", line));
                    let stream = match stream {
                        "stderr" => "stderr",
                        "pipewright" => "pipewright",
                        _ => "stdout",
                    };
                    feedback.line(stream, text).await;
                }
            }
        }
    }
}

fn tags(selectors: &[String]) -> String {
    if selectors.is_empty() { String::new() } else { format!(" with tags {}", selectors.join(", ")) }
}

#[async_trait::async_trait]
impl Executor for RemoteExecutor {
    async fn run(&self, task: &Task, feedback: &dyn Feedback, mut abort: watch::Receiver<bool>) -> Report {
        let id = task.node_id.clone();
        let sealed = serde_json::to_string(task)
            .map_err(|e| e.to_string())
            .and_then(|plain| self.keys.seal(&context(&id), &plain).map_err(|e| e.to_string()));
        let payload = match sealed {
            Ok(p) => p,
            Err(e) => return Report::ended(End::NotStarted(format!("cannot queue the step for an agent: {e}"))),
        };
        let queued = NewTask {
            id: id.clone(),
            execution_id: task.execution_id.clone(),
            stage_key: format!("{}/{}", task.execution_id, task.stage),
            selectors: task.selectors.clone(),
            payload,
        };
        if let Err(e) = self.store.enqueue_task(&queued).await {
            return Report::ended(End::NotStarted(format!("cannot queue the step for an agent: {e}")));
        }
        let start = Instant::now();
        let ended = self.store.signals().task(&id);
        let (mut cursor, mut said_waiting, mut aborting) = (0, false, false);
        // Just queued: wait for news before the first look.
        let mut first = true;
        // The agent last said to hold the task.
        let mut announced: Option<String> = None;
        loop {
            let woken = ended.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if !aborting && *abort.borrow_and_update() {
                aborting = true;
                let _ = self.store.cancel_task(&id, now_ms()).await;
            }
            if std::mem::take(&mut first) {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(self.poll) => {}
                    Ok(()) = abort.changed() => {}
                }
                continue;
            }
            let t = match self.store.task(&id).await {
                Ok(Some(t)) => t,
                Ok(None) => return Report::ended(End::NotStarted("the step's task is gone from the store".into())),
                // The store retries while the database is away; anything else is looked at again.
                Err(_) => {
                    tokio::time::sleep(self.poll).await;
                    continue;
                }
            };
            let agent = t.agent.clone().unwrap_or_default();
            match t.state {
                TaskState::Queued => {
                    if let Some(a) = announced.take() {
                        feedback
                            .line(
                                "pipewright",
                                &format!("agent `{a}` did not confirm it started the step; it goes back to the queue"),
                            )
                            .await;
                    }
                    if let Some(limit) = task.timeout()
                        && start.elapsed() >= limit
                    {
                        let _ = self.store.cancel_task(&id, now_ms()).await;
                        if matches!(self.store.task(&id).await, Ok(Some(t)) if t.state == TaskState::Cancelled) {
                            return Report::ended(End::TimedOut);
                        }
                    }
                    if !said_waiting && start.elapsed() >= Duration::from_secs(3) {
                        said_waiting = true;
                        feedback
                            .line(
                                "pipewright",
                                &format!(
                                    "no agent{} has taken the step yet; it waits for one (`pipewright agents list`)",
                                    tags(&task.selectors)
                                ),
                            )
                            .await;
                    }
                }
                TaskState::Claimed => {
                    if announced.as_deref() != Some(agent.as_str()) {
                        feedback.line("pipewright", &format!("running on agent `{agent}`")).await;
                        announced = Some(agent.clone());
                    }
                    self.relay(&id, &mut cursor, feedback).await;
                }
                TaskState::Done => {
                    if announced.as_deref() != Some(agent.as_str()) {
                        feedback.line("pipewright", &format!("ran on agent `{agent}`")).await;
                    }
                    self.relay(&id, &mut cursor, feedback).await;
                    return t
                        .report
                        .as_deref()
                        .and_then(|r| serde_json::from_str(r).ok())
                        .unwrap_or_else(|| Report::ended(End::NotStarted("the agent's report is unreadable".into())));
                }
                TaskState::Lost if aborting => return Report::ended(End::Aborted),
                TaskState::Lost => {
                    self.relay(&id, &mut cursor, feedback).await;
                    return Report::ended(End::Lost(format!(
                        "agent `{agent}` stopped renewing its lease on the step (it died, was revoked or lost the \
                         network)"
                    )));
                }
                TaskState::Cancelled => return Report::ended(End::Aborted),
            }
            feedback.tick().await;
            // Woken when the task ends; between, its output is relayed every `poll`.
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(self.poll) => {}
                Ok(()) = abort.changed(), if !aborting => {}
            }
        }
    }

    async fn forget(&self, _execution_id: &str, node_id: &str) {
        let _ = self.store.cancel_task(node_id, now_ms()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, tags: &[&str], state: &str, seen: i64) -> AgentRecord {
        AgentRecord {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            version: "1".into(),
            state: state.into(),
            last_seen: seen,
            principal: "service_account:a".into(),
            running: 0,
        }
    }

    const YAML: &str = "pipeline:
  name: p
  identifier: p
  delegateSelectors: [linux]
  stages:
    - stage:
        name: build
        identifier: build
        type: Custom
        spec:
          execution:
            steps:
              - step: {type: ShellScript, name: s, identifier: s, spec: {shell: Bash, source: {type: Inline, spec: {script: make}}}}
    - stage:
        name: train
        identifier: train
        type: Custom
        delegateSelectors: [gpu, linux]
        spec:
          execution:
            steps:
              - step: {type: ShellScript, name: s, identifier: s, spec: {shell: Bash, source: {type: Inline, spec: {script: train}}}}
              - step: {type: ShellScript, name: t, identifier: t, spec: {shell: Bash, delegateSelectors: ['<+input>'], source: {type: Inline, spec: {script: t}}}}
";

    #[test]
    fn the_plan_says_which_stages_no_online_agent_can_run() {
        let doc = spec::parse_document("p.yaml", YAML.into());
        let p = doc.pipeline().expect("a pipeline");
        let run = vec!["build".to_string(), "train".to_string()];
        let table: Vec<(Vec<AgentRecord>, Vec<&str>)> = vec![
            (vec![], vec!["no agent is online"]),
            (
                vec![agent("a", &["linux"], "active", 100)],
                vec!["stage `train`: no online agent has the tags gpu, linux"],
            ),
            (vec![agent("a", &["linux", "gpu"], "active", 100)], vec![]),
            (vec![agent("a", &["linux", "gpu"], "draining", 100)], vec!["no agent is online"]),
            (vec![agent("a", &["linux", "gpu"], "active", 10)], vec!["no agent is online"]),
            (
                vec![agent("a", &["gpu"], "active", 100), agent("b", &["linux"], "active", 100)],
                vec!["stage `train`: no online agent has the tags gpu, linux"],
            ),
        ];
        for (agents, want) in table {
            let got = agent_warnings(p, &run, &agents, 50);
            assert_eq!(got.len(), want.len(), "{agents:?}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.starts_with(w), "{g} / {w}");
            }
        }
        // Only the stages that run are looked at.
        assert!(agent_warnings(p, &["build".into()], &[agent("a", &["linux"], "active", 100)], 50).is_empty());
    }
}
