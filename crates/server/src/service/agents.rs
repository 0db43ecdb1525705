//! Remote agents (`pipewright agent`): the use cases an agent calls — claim a task (long poll), renew its
//! lease, send output, report how it ended — and those people call to register agents, give them a new
//! credential, list, drain and revoke them; and [`RemoteExecutor`], the engine's executor on a server that
//! runs no steps itself: it queues each task in the store, sealed, with its project's scope, relays what the
//! agent sends back into the step's log, and returns the agent's report.
//!
//! Agents are scoped like Harness delegates. An administrator registers each one (`agent:manage` at the
//! account, an organization or a project) with the tags it is given; registration mints the agent's own
//! credential (`pwa_…`, shown once, kept as SHA-256), which is all an agent authenticates with — no user or
//! service-account token reaches the agent protocol. A task is offered only to an active agent whose scope
//! contains the task's project and whose assigned tags hold every `delegateSelectors` entry; an agent may
//! narrow its tags, never widen them. Each claim mints a lease token (`pwl_…`) that every later call about
//! the task must present: a heartbeat, output or report is taken only from the agent that holds the task's
//! current lease, so a late report never overrides a new attempt and no other agent can speak for a task.

use crate::App;
use crate::auth::{AgentCaller, Principal, hash_secret, new_secret_with};
use crate::crypto::Keyring;
use crate::error::{ApiError, ApiResult};
use crate::rbac::Permission;
use crate::rbac::{Resource, Scope};
use engine::executor::{End, Executor, Feedback, Report, Task};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{AgentRecord, Holder, NewTask, Store, TaskState, now_ms};
use tokio::sync::watch;
use utoipa::ToSchema;

/// The longest an agent's claim waits for a task, seconds.
pub const MAX_WAIT: u64 = 5;

/// What an agent sends when it asks for work.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// The agent's name, if it says it: it must be the name its credential was registered under.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: Option<String>,
    /// Tags to take steps by, if fewer than it was given: each must be one an administrator assigned to it.
    /// Without them, the agent takes steps by all of its assigned tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
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
    /// This claim's lease token (`pwl_…`): every heartbeat, output and report about the task carries it.
    pub lease: String,
    /// Renew the lease (heartbeat) at least this often, ms.
    pub heartbeat_ms: u64,
    /// The lease, ms: a task not renewed for this long is given to another agent, so an agent that cannot
    /// renew it for most of this long stops the step.
    pub lease_ms: u64,
}

/// What a claim answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimAnswer {
    /// The agent's name (the one its credential was registered under).
    pub agent: String,
    /// The tags it takes steps by.
    pub tags: Vec<String>,
    /// The task, if there was one.
    pub claimed: Option<Claimed>,
    /// The agent is draining: it finishes what it runs and takes nothing new.
    pub draining: bool,
}

/// The lease a call about a task is made under.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRef {
    /// The lease token the claim gave.
    pub lease: String,
}

/// Output an agent sends for a task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputBody {
    /// The lease token the claim gave.
    pub lease: String,
    /// Lines, each `[stream, text]` (`stdout`, `stderr` or `pipewright`), already masked.
    #[schema(value_type = Vec<Vec<String>>)]
    pub lines: Vec<(String, String)>,
}

/// How a task ended, as the agent reports it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The lease token the claim gave.
    pub lease: String,
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

/// An agent to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Its name (letters, digits, `-`, `_`, `.`; at most 64; unique in the installation).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// The tags it is given: it takes steps whose `delegateSelectors` it has all of.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Its organization (none: the account's agent, for every project).
    #[serde(default, rename = "orgIdentifier")]
    pub org: String,
    /// Its project (with `orgIdentifier`: the project's own agent).
    #[serde(default, rename = "projectIdentifier")]
    pub project: String,
}

/// A registered agent and its credential (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// The agent.
    #[schema(value_type = Object)]
    pub agent: AgentRecord,
    /// Its credential (`pwa_…`): give it to `pipewright agent` with `--token-file` or `PIPEWRIGHT_TOKEN`.
    pub credential: String,
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

fn check_tags(tags: &[String]) -> ApiResult<()> {
    if tags.len() > 64 || tags.iter().any(|t| t.trim().is_empty() || t.len() > 128) {
        return Err(ApiError::BadRequest("at most 64 tags of 1 to 128 characters".into()));
    }
    Ok(())
}

/// The lease agents hold tasks under (the server's execution lease), and how often they renew it.
fn lease(app: &App) -> Duration {
    app.runner.lease()
}

/// An agent seen within this many leases counts as alive (its stages wait for it).
pub(crate) const ALIVE_LEASES: u32 = 3;

/// The scope an agent was registered in.
fn scope_of(a: &AgentRecord) -> Scope {
    Scope { org: a.org.clone(), project: a.project.clone() }
}

/// Whether an agent's scope holds a project (an account's agent serves every project, an organization's
/// the organization's projects, a project's that project).
pub fn serves(agent: &AgentRecord, org: &str, project: &str) -> bool {
    (agent.org.is_empty() || agent.org == org) && (agent.project.is_empty() || agent.project == project)
}

/// The tags a claim takes steps by: the agent's assigned ones, or fewer of them (a tag it was not given is
/// refused, naming it).
pub fn claim_tags(agent: &AgentRecord, asked: Option<&[String]>) -> ApiResult<Vec<String>> {
    let Some(asked) = asked else { return Ok(agent.tags.clone()) };
    check_tags(asked)?;
    let mut tags = Vec::new();
    for t in asked.iter().map(|t| t.trim()) {
        if !agent.tags.iter().any(|a| a == t) {
            return Err(ApiError::Forbidden {
                permission: Permission::AGENT_MANAGE.as_str().into(),
                message: format!(
                    "agent `{}` was not given the tag `{t}`; an administrator assigns an agent's tags when it is                      registered (`pipewright agents register {} --tags …`)",
                    agent.name, agent.name
                ),
            });
        }
        tags.push(t.to_string());
    }
    Ok(tags)
}

/// Record that the agent was seen, at most once a tenth of a lease (a busy agent asks after every task).
async fn seen(app: &App, agent: &AgentRecord, version: &str) -> ApiResult<()> {
    let recent = lease(app) / 10;
    {
        let mut map = app.agents_seen.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&agent.name).is_some_and(|at| at.elapsed() < recent) {
            return Ok(());
        }
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(agent.name.clone(), Instant::now());
    }
    app.store.agent_seen(&agent.name, version, now_ms()).await?;
    Ok(())
}

/// Give the calling agent a task it may run, waiting up to `wait_seconds` for one.
pub async fn claim(app: &Arc<App>, caller: &AgentCaller, b: ClaimBody) -> ApiResult<ClaimAnswer> {
    let agent = &caller.agent;
    if b.wait_seconds > MAX_WAIT {
        return Err(ApiError::BadRequest(format!("wait_seconds is at most {MAX_WAIT}")));
    }
    if let Some(name) = b.name.as_deref()
        && name != agent.name
    {
        check_name(name)?;
        return Err(ApiError::BadRequest(format!(
            "this credential belongs to agent `{}`, not `{name}`; drop --name or give the agent its own credential",
            agent.name
        )));
    }
    let tags = claim_tags(agent, b.tags.as_deref())?;
    let answer = |claimed, draining| ClaimAnswer { agent: agent.name.clone(), tags: tags.clone(), claimed, draining };
    let deadline = Instant::now() + Duration::from_secs(b.wait_seconds);
    let lease = lease(app);
    let mut last_seen = Instant::now();
    seen(app, agent, &b.version).await?;
    if agent.state == "draining" {
        return Ok(answer(None, true));
    }
    // Woken when a task of a stage this agent holds is queued, or (one claimer for each) any other task.
    let mine = app.store.signals().agent(&agent.name);
    loop {
        let signals = app.store.signals();
        let any = signals.any().notified();
        let own = mine.notified();
        tokio::pin!(any, own);
        any.as_mut().enable();
        own.as_mut().enable();
        let now = now_ms();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4);
        let alive_after = now - lease_ms * i64::from(ALIVE_LEASES);
        let token = new_secret_with("pwl_");
        // The store claims only for an agent that is active at that moment (a revocation or drain made while
        // the claim waited applies), in its scope, by its tags.
        if let Some(t) =
            app.store.claim_task(agent, &tags, &hash_secret(&token), now, now + lease_ms, alive_after).await?
        {
            let plain = app.keys.open(&context(&t.id), &t.payload).map_err(|e| ApiError::Internal(e.to_string()))?;
            let task: serde_json::Value =
                serde_json::from_str(&plain).map_err(|e| ApiError::Internal(format!("task {}: {e}", t.id)))?;
            let lease_ms = u64::try_from(lease_ms).unwrap_or(u64::MAX);
            return Ok(answer(
                Some(Claimed { task, lease: token, heartbeat_ms: (lease_ms / 3).max(50), lease_ms }),
                false,
            ));
        }
        if Instant::now() >= deadline || app.runner.stopping() {
            return Ok(answer(None, false));
        }
        // A wake-up, or a look again every quarter second (a task with tags another claimer was woken for).
        tokio::select! {
            _ = any => {}
            _ = own => {}
            _ = tokio::time::sleep(Duration::from_millis(250).min(deadline.saturating_duration_since(Instant::now()))) => {}
        }
        // A waiting agent counts as seen (its stages keep waiting for it).
        if last_seen.elapsed() >= lease / 2 {
            app.store.agent_seen(&agent.name, &b.version, now_ms()).await?;
            last_seen = Instant::now();
        }
    }
}

fn gone(id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "task `{id}` is not held under this lease: its lease ran out and the step got a new attempt, it was          cancelled, or this agent never claimed it; drop it"
    ))
}

/// The hash of the lease token a call about a task sends (the store knows the claim's lease by it).
fn lease_hash(lease: &str) -> ApiResult<String> {
    if !lease.starts_with("pwl_") || lease.len() > 128 {
        return Err(ApiError::BadRequest("`lease` is the lease token the claim gave (`pwl_…`)".into()));
    }
    Ok(hash_secret(lease))
}

/// Renew the calling agent's lease on a task.
pub async fn heartbeat(app: &App, caller: &AgentCaller, id: &str, b: LeaseRef) -> ApiResult<Beat> {
    check_task(id)?;
    let hash = lease_hash(&b.lease)?;
    let h = Holder { agent: &caller.agent.name, lease: &hash };
    let until = now_ms() + i64::try_from(lease(app).as_millis()).unwrap_or(i64::MAX / 4);
    match app.store.renew_task(id, h, until).await? {
        Some(cancel) => Ok(Beat { cancel }),
        None => Err(gone(id)),
    }
}

/// Take output the calling agent sends for a task it holds.
pub async fn output(app: &App, caller: &AgentCaller, id: &str, b: OutputBody) -> ApiResult<()> {
    check_task(id)?;
    let hash = lease_hash(&b.lease)?;
    let h = Holder { agent: &caller.agent.name, lease: &hash };
    let data = lines_text(&b.lines)?;
    if data.is_empty() {
        return Ok(());
    }
    if app.store.append_task_output(id, h, &data).await? { Ok(()) } else { Err(gone(id)) }
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
pub async fn report(app: &App, caller: &AgentCaller, id: &str, b: ReportBody) -> ApiResult<()> {
    check_task(id)?;
    let hash = lease_hash(&b.lease)?;
    let h = Holder { agent: &caller.agent.name, lease: &hash };
    let report: Report = serde_json::from_value(b.report)
        .map_err(|e| ApiError::BadRequest(format!("the report is not one pipewright understands: {e}")))?;
    let text = serde_json::to_string(&report).map_err(|e| ApiError::Internal(e.to_string()))?;
    let data = lines_text(&b.lines)?;
    if !data.is_empty() && !app.store.append_task_output(id, h, &data).await? {
        return Err(gone(id));
    }
    if app.store.finish_task(id, h, &text, now_ms()).await? { Ok(()) } else { Err(gone(id)) }
}

/// Register an agent in a scope with its tags (`agent:manage` there); returns it with its credential.
pub async fn register(app: &App, p: &Principal, b: RegisterBody) -> ApiResult<Registered> {
    check_name(&b.name)?;
    check_tags(&b.tags)?;
    let scope = super::scope_named(app, p, &b.org, &b.project).await?;
    app.require(p, Permission::AGENT_MANAGE, &Resource::new("agent", &b.name, scope.clone())).await?;
    let mut tags: Vec<String> = b.tags.iter().map(|t| t.trim().to_string()).collect();
    tags.sort();
    tags.dedup();
    let agent = AgentRecord {
        name: b.name.clone(),
        tags,
        version: String::new(),
        state: "active".into(),
        last_seen: 0,
        principal: p.display(),
        org: scope.org.clone(),
        project: scope.project.clone(),
        running: 0,
    };
    let credential = new_secret_with("pwa_");
    if !app.store.register_agent(&agent, &hash_secret(&credential)).await? {
        // Names are the installation's: one taken in another scope is not this scope's agent, and giving it a
        // new credential would hand this machine to whoever registered it there.
        let same_scope = app
            .store
            .agents()
            .await?
            .into_iter()
            .find(|a| a.name == b.name)
            .is_some_and(|a| a.org == agent.org && a.project == agent.project);
        return Err(ApiError::Conflict(if same_scope {
            format!(
                "an agent named `{}` is registered already in {}; give this one another name, or give that one a \
                 new credential (`pipewright agents credential {}`)",
                b.name,
                scope.describe(),
                b.name
            )
        } else {
            format!(
                "the name `{}` is taken by an agent of another scope; give this one another name (do not give \
                 that agent a new credential: it would run that scope's tasks on this machine)",
                b.name
            )
        }));
    }
    app.audit(&p.display(), &p.address, "register", "agent", &b.name, &scope, serde_json::json!({"tags": agent.tags}))
        .await?;
    Ok(Registered { agent, credential })
}

/// The agent named `name`, if the caller may see it (`agent:view` in its scope) and holds `permission` there.
/// An agent the caller may not see is refused as one that does not exist is (403 naming `agent:view`), so
/// nobody learns which names exist elsewhere; only those who view the account's agents get a 404.
async fn visible(app: &App, p: &Principal, name: &str, permission: Permission) -> ApiResult<AgentRecord> {
    check_name(name)?;
    let found = app.store.agents().await?.into_iter().find(|a| a.name == name);
    match found {
        Some(a) if app.may(p, Permission::AGENT_VIEW, &Resource::new("agent", name, scope_of(&a))).await? => {
            app.require(p, permission, &Resource::new("agent", name, scope_of(&a))).await?;
            Ok(a)
        }
        _ if app.may(p, Permission::AGENT_VIEW, &Resource::new("agent", name, Scope::account())).await? => {
            Err(ApiError::NotFound(format!("no agent `{name}`; `pipewright agents list` lists them")))
        }
        _ => Err(ApiError::forbidden(Permission::AGENT_VIEW, &format!("agent `{name}`"))),
    }
}

/// Give an agent a new credential (`agent:manage` in its scope): the old one stops working at once. Also
/// how an agent that connected with a service-account token before agents were registered gets its own.
pub async fn new_credential(app: &App, p: &Principal, name: &str) -> ApiResult<Registered> {
    let agent = visible(app, p, name, Permission::AGENT_MANAGE).await?;
    let credential = new_secret_with("pwa_");
    if !app.store.set_agent_secret(name, &hash_secret(&credential)).await? {
        return Err(ApiError::NotFound(format!("no agent `{name}`")));
    }
    app.audit(&p.display(), &p.address, "credential", "agent", name, &scope_of(&agent), serde_json::json!({})).await?;
    Ok(Registered { agent, credential })
}

/// The agents the caller may view (`agent:view` in each one's scope), with their last heartbeat, version,
/// tags and running tasks.
pub async fn list(app: &App, p: &Principal) -> ApiResult<Vec<AgentRecord>> {
    let mut out = Vec::new();
    for a in app.store.agents().await? {
        if app.may(p, Permission::AGENT_VIEW, &Resource::new("agent", &a.name, scope_of(&a))).await? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Drain an agent (it finishes what it runs, takes nothing new), revoke it (refused from now on; its tasks
/// go to other agents), or make it active again (`agent:manage` in its scope).
pub async fn set_state(app: &App, p: &Principal, name: &str, state: &str) -> ApiResult<AgentRecord> {
    let agent = visible(app, p, name, Permission::AGENT_MANAGE).await?;
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
    app.audit(&p.display(), &p.address, action, "agent", name, &scope_of(&agent), serde_json::json!({})).await?;
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
            "no agent of this project's scope is online: this server runs no steps itself \
             (--no-local-executor), so every step waits for a `pipewright agent` registered at the account, \
             this organization or this project"
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
        // The task carries its project's scope: only an agent registered there (or above) takes it.
        let (org, project) = match self.store.execution(&task.execution_id).await {
            Ok(e) => (e.org, e.project),
            Err(e) => return Report::ended(End::NotStarted(format!("cannot queue the step for an agent: {e}"))),
        };
        let queued = NewTask {
            id: id.clone(),
            execution_id: task.execution_id.clone(),
            stage_key: format!("{}/{}", task.execution_id, task.stage),
            selectors: task.selectors.clone(),
            payload,
            org,
            project,
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
            principal: "admin".into(),
            org: String::new(),
            project: String::new(),
            running: 0,
        }
    }

    #[test]
    fn an_agent_serves_the_projects_of_its_scope() {
        let at = |org: &str, project: &str| AgentRecord {
            org: org.into(),
            project: project.into(),
            ..agent("a", &[], "active", 1)
        };
        let table = [
            (at("", ""), "default", "checkout", true),
            (at("default", ""), "default", "checkout", true),
            (at("default", ""), "other", "checkout", false),
            (at("default", "checkout"), "default", "checkout", true),
            (at("default", "checkout"), "default", "payments", false),
            (at("default", "checkout"), "other", "checkout", false),
        ];
        for (a, org, project, want) in table {
            assert_eq!(serves(&a, org, project), want, "{}/{} serving {org}/{project}", a.org, a.project);
        }
    }

    #[test]
    fn an_agent_narrows_its_tags_but_never_widens_them() {
        let a = agent("gpu-box", &["linux", "gpu"], "active", 1);
        assert_eq!(claim_tags(&a, None).unwrap(), ["linux", "gpu"]);
        assert_eq!(claim_tags(&a, Some(&["gpu".into()])).unwrap(), ["gpu"]);
        assert_eq!(claim_tags(&a, Some(&[])).unwrap(), Vec::<String>::new());
        let e = claim_tags(&a, Some(&["linux".into(), "prod".into()])).unwrap_err();
        assert!(e.to_string().contains("was not given the tag `prod`"), "{e}");
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
            (vec![], vec!["no agent of this project's scope is online"]),
            (
                vec![agent("a", &["linux"], "active", 100)],
                vec!["stage `train`: no online agent has the tags gpu, linux"],
            ),
            (vec![agent("a", &["linux", "gpu"], "active", 100)], vec![]),
            (vec![agent("a", &["linux", "gpu"], "draining", 100)], vec!["no agent of this project's scope is online"]),
            (vec![agent("a", &["linux", "gpu"], "active", 10)], vec!["no agent of this project's scope is online"]),
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
