//! `pipewright agent`: a remote worker. It long-polls a server for tasks (never the database), runs each with
//! the local executor — confined as `pipewright run` confines steps — streams the output back masked,
//! renews its lease by heartbeat, and reports how the task ended. A task the server took back (the lease ran
//! out, it was cancelled) is stopped and its late report is refused by the server; the agent says so and
//! goes on. An agent that cannot renew a task's lease for two thirds of it stops the step itself (its whole
//! process tree, which dies with the launcher), before the server can give the task to another agent, so a
//! step never runs twice at once. Also `pipewright agents register|credential|list|drain|revoke|activate`,
//! to manage agents.

use crate::StepArgs;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use engine::executor::{Executor, Feedback, LocalExecutor, Report, Task};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::StepProcess;
use tokio::sync::{Semaphore, watch};

/// Arguments of `agent`.
#[derive(Args)]
pub struct AgentArgs {
    /// The server to take tasks from (any server of the installation).
    #[arg(long, env = "PIPEWRIGHT_SERVER", value_name = "URL")]
    pub server: String,
    /// `--token-file FILE` (or `PIPEWRIGHT_TOKEN`): the agent's own credential (`pwa_…`), which
    /// `pipewright agents register` printed.
    #[command(flatten)]
    pub token: crate::credentials::Secret<crate::credentials::Token>,
    /// The name the agent was registered under, checked by the server (default: whatever its credential
    /// says).
    #[arg(long)]
    pub name: Option<String>,
    /// Take steps by fewer tags than it was given, comma-separated (each must be one of its assigned tags;
    /// default: all of them). Tags are assigned when the agent is registered.
    #[arg(long, value_delimiter = ',')]
    pub tags: Option<Vec<String>>,
    /// Tasks run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Where workspaces live (`<state-dir>/work/<execution>`).
    #[arg(long, env = "PIPEWRIGHT_AGENT_STATE_DIR", default_value = ".pipewright-agent")]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub steps: StepArgs,
}

/// Manage agents on a server.
#[derive(Subcommand)]
pub enum AgentsCmd {
    /// Register an agent at the account, in an organization or in a project, with its tags; prints its
    /// credential (alone, on standard output: redirect it to a file readable only by the agent's user).
    Register {
        /// The agent's name (unique in the installation).
        name: String,
        /// Its tags, comma-separated: it takes the steps whose `delegateSelectors` it has all of.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Where it takes steps: `account` (every project), an organization `ORG`, or a project
        /// `ORG/PROJECT`.
        #[arg(long, default_value = "account", value_name = "account|ORG|ORG/PROJECT")]
        scope: String,
        #[command(flatten)]
        server: super::admin::ServerArgs,
    },
    /// Give an agent a new credential (the old one stops working at once); prints it as `register` does.
    Credential {
        /// The agent's name.
        name: String,
        #[command(flatten)]
        server: super::admin::ServerArgs,
    },
    /// List agents: scope, state, last heartbeat, version, tags, running tasks.
    List {
        #[command(flatten)]
        server: super::admin::ServerArgs,
    },
    /// Let an agent finish what it runs and take nothing new.
    Drain {
        /// The agent's name.
        name: String,
        #[command(flatten)]
        server: super::admin::ServerArgs,
    },
    /// Refuse an agent from now on; its tasks go to other agents.
    Revoke {
        /// The agent's name.
        name: String,
        #[command(flatten)]
        server: super::admin::ServerArgs,
    },
    /// Let a drained or revoked agent take tasks again.
    Activate {
        /// The agent's name.
        name: String,
        #[command(flatten)]
        server: super::admin::ServerArgs,
    },
}

/// Run an `agents` command.
pub async fn manage(c: AgentsCmd) -> anyhow::Result<ExitCode> {
    let (name, state, server) = match c {
        AgentsCmd::Register { name, tags, scope, server } => {
            let (org, project) = match scope.as_str() {
                "account" => ("", ""),
                s => s.split_once('/').unwrap_or((s, "")),
            };
            if org.is_empty() && scope != "account" || (scope.contains('/') && project.is_empty()) {
                bail!("--scope `{scope}`: expected `account`, an organization `ORG` or a project `ORG/PROJECT`");
            }
            let body = json!({"name": name, "tags": tags, "orgIdentifier": org, "projectIdentifier": project});
            let v = super::admin::remote(&server)?.call(Method::POST, "/api/v1/agents", Some(body)).await?;
            return Ok(print_credential(&v));
        }
        AgentsCmd::Credential { name, server } => {
            let path = format!("/api/v1/agents/{}/credential", urlencoding::encode(&name));
            let v = super::admin::remote(&server)?.call(Method::POST, &path, None).await?;
            return Ok(print_credential(&v));
        }
        AgentsCmd::List { server } => {
            let v = super::admin::remote(&server)?.call(Method::GET, "/api/v1/agents", None).await?;
            let mut rows = v["items"].as_array().cloned().unwrap_or_default();
            for r in &mut rows {
                let seen = r["last_seen"].as_i64().unwrap_or(0);
                r["last_seen"] = json!(format!("{:.1}s ago", (store::now_ms() - seen) as f64 / 1000.0));
                if seen == 0 {
                    r["last_seen"] = json!("never");
                }
                r["tags"] = json!(
                    r["tags"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                );
                r["scope"] = json!(scope_text(r));
            }
            super::admin::table(
                &json!({"items": rows}),
                &["name", "scope", "state", "last_seen", "version", "tags", "running"],
            );
            return Ok(ExitCode::SUCCESS);
        }
        AgentsCmd::Drain { name, server } => (name, "draining", server),
        AgentsCmd::Revoke { name, server } => (name, "revoked", server),
        AgentsCmd::Activate { name, server } => (name, "active", server),
    };
    let a = super::admin::remote(&server)?
        .call(
            Method::POST,
            &format!("/api/v1/agents/{}/state", urlencoding::encode(&name)),
            Some(json!({"state": state})),
        )
        .await?;
    println!("agent {} is {}", name, a["state"].as_str().unwrap_or(state));
    Ok(ExitCode::SUCCESS)
}

/// `account`, `org/<org>` or `<org>/<project>`: an agent's scope as listed.
fn scope_text(a: &Value) -> String {
    match (a["org"].as_str().unwrap_or_default(), a["project"].as_str().unwrap_or_default()) {
        ("", _) => "account".into(),
        (org, "") => format!("org/{org}"),
        (org, project) => format!("{org}/{project}"),
    }
}

/// Print a new agent credential alone on standard output (what it is for on standard error).
fn print_credential(v: &Value) -> ExitCode {
    let a = &v["agent"];
    eprintln!(
        "agent {} ({}; tags: {}): its credential, shown once, follows; start it with \
         `pipewright agent --server URL --token-file FILE`",
        a["name"].as_str().unwrap_or_default(),
        scope_text(a),
        a["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    );
    println!("{}", v["credential"].as_str().unwrap_or_default());
    ExitCode::SUCCESS
}

/// The agent's connection to its server.
#[derive(Clone)]
struct Link {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// What a call to the server came to.
enum Answer {
    Ok(Value),
    /// The server no longer gives this agent the task (409).
    Gone,
    /// The token or agent was refused (401, 403): stop.
    Refused(String),
    /// Anything else (the server is away, restarting): try again.
    Retry(String),
}

impl Link {
    /// [`Link::post`] again while the server cannot answer, pausing `pauses` (ms) between tries; the first
    /// answer that is not a retry, or the last retry.
    async fn post_retrying(&self, path: &str, body: &Value, timeout: Duration, pauses: &[u64]) -> Answer {
        let mut answer = self.post(path, body.clone(), timeout).await;
        for pause in pauses {
            if !matches!(answer, Answer::Retry(_)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(*pause)).await;
            answer = self.post(path, body.clone(), timeout).await;
        }
        answer
    }

    async fn post(&self, path: &str, body: Value, timeout: Duration) -> Answer {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout)
            .json(&body)
            .send()
            .await;
        let resp = match r {
            Ok(r) => r,
            Err(e) => return Answer::Retry(format!("cannot reach {}: {e}", self.base)),
        };
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let msg = v["message"].as_str().unwrap_or_default().to_string();
        match status {
            s if s.is_success() => Answer::Ok(v),
            StatusCode::CONFLICT => Answer::Gone,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Answer::Refused(format!("{status}: {msg}")),
            s => Answer::Retry(format!("{s}: {msg}")),
        }
    }
}

/// Output of a running task, masked, sent in batches.
struct Relay {
    link: Link,
    id: String,
    /// The claim's lease token.
    lease: String,
    masker: engine::Masker,
    buffer: Mutex<Vec<(String, String)>>,
    /// The server no longer gives this agent the task.
    gone: watch::Sender<bool>,
}

impl Relay {
    async fn flush(&self) {
        let lines = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()));
        if lines.is_empty() {
            return;
        }
        let body = json!({"lease": self.lease, "lines": lines});
        // Output is kept until the server has it (or no longer wants it).
        let path = format!("/api/v1/agent/tasks/{}/output", self.id);
        let answer = self.link.post_retrying(&path, &body, Duration::from_secs(30), &[50, 200, 500, 1000, 2000]).await;
        if matches!(answer, Answer::Gone) {
            let _ = self.gone.send(true);
        }
    }
}

#[async_trait::async_trait]
impl Feedback for Relay {
    async fn line(&self, stream: &'static str, text: &str) {
        let full = {
            let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            b.push((stream.to_string(), self.masker.mask(text)));
            b.len() >= 500
        };
        if full {
            self.flush().await;
        }
    }
    async fn tick(&self) {
        self.flush().await;
    }
    async fn started(&self, _process: StepProcess) {}
}

/// Run `pipewright agent`.
pub async fn run(a: AgentArgs) -> anyhow::Result<ExitCode> {
    let base = a.server.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--server `{}`: expected a URL such as http://127.0.0.1:8080", a.server);
    }
    let token = a
        .token
        .get()
        .context("give the agent its credential with --token-file FILE or PIPEWRIGHT_TOKEN (`pipewright agents register` prints one)")?
        .to_string();
    if !token.starts_with("pwa_") {
        bail!(
            "the token given is not an agent credential (`pwa_…`): agents no longer connect with user or \
             service-account tokens; an administrator registers the agent with `pipewright agents register NAME \
             --tags …` (or gives an agent that connected before its own with `pipewright agents credential NAME`)"
        );
    }
    let tags: Option<Vec<String>> =
        a.tags.map(|t| t.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect());
    let (isolation, work_root) = super::isolation(&a.steps, &a.state_dir, crate::NetworkMode::Isolated)?;
    // Workspaces are made as the engine makes them for a local run (`<work root>/<execution>`, owned by the
    // step user), once per execution.
    let mut layout = engine::EngineConfig::new(&a.state_dir);
    layout.isolation = isolation.clone();
    layout.work_root = work_root.clone();
    let layout = Arc::new(layout);
    // Made at the first claim, when the lease is known: a step stopped because the lease could not be
    // renewed gets a grace (SIGTERM → SIGKILL) short enough to end within the lease.
    let executor: Arc<tokio::sync::OnceCell<Arc<LocalExecutor>>> = Arc::default();
    let link = Link { base, token, http: reqwest::Client::new() };
    let slots = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut pause = Duration::from_millis(100);
    let (mut said_draining, mut said_hello) = (false, false);
    let mut name = a.name.clone().unwrap_or_else(|| "agent".into());
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let mut body = json!({"version": env!("CARGO_PKG_VERSION"), "wait_seconds": 5});
        if let Some(n) = &a.name {
            body["name"] = json!(n);
        }
        if let Some(t) = &tags {
            body["tags"] = json!(t);
        }
        let answer = tokio::select! {
            a = link.post("/api/v1/agent/claim", body, Duration::from_secs(30)) => a,
            _ = tokio::signal::ctrl_c() => break,
        };
        match answer {
            Answer::Ok(v) => {
                pause = Duration::from_millis(100);
                if !said_hello {
                    said_hello = true;
                    name = v["agent"].as_str().unwrap_or("agent").to_string();
                    let tags: Vec<&str> =
                        v["tags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    println!(
                        "agent {name} taking tasks from {} (tags: {})",
                        link.base,
                        if tags.is_empty() { "none".into() } else { tags.join(",") }
                    );
                }
                if v["draining"] == true {
                    if !said_draining {
                        eprintln!("agent {name} is draining: it takes no new tasks");
                        said_draining = true;
                    }
                    drop(slot);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                said_draining = false;
                let Some(claimed) = v.get("claimed").filter(|c| !c.is_null()) else { continue };
                let task: Task = serde_json::from_value(claimed["task"].clone())
                    .context("the server sent a task this agent cannot read")?;
                let lease = Lease {
                    token: claimed["lease"].as_str().unwrap_or_default().to_string(),
                    beat: Duration::from_millis(claimed["heartbeat_ms"].as_u64().unwrap_or(1000)),
                    length: Duration::from_millis(claimed["lease_ms"].as_u64().unwrap_or(3000)),
                };
                let executor = executor
                    .get_or_init(|| async {
                        Arc::new(LocalExecutor::new(isolation.clone(), work_root.clone(), grace(lease.length)))
                    })
                    .await
                    .clone();
                let (link, layout) = (link.clone(), layout.clone());
                tokio::spawn(async move {
                    let workdir = layout.work_root.join(&task.execution_id);
                    if let Err(e) = engine::sandbox::prepare_workspace(&layout, &workdir) {
                        eprintln!("task {}: cannot prepare the workspace {}: {e}", task.node_id, workdir.display());
                    }
                    run_task(&link, executor.as_ref(), task, lease).await;
                    drop(slot);
                });
            }
            Answer::Refused(m) => {
                eprintln!("agent {name}: the server refused it: {m}");
                return Ok(ExitCode::FAILURE);
            }
            Answer::Retry(m) => {
                drop(slot);
                if pause == Duration::from_millis(100) {
                    eprintln!("agent {name}: {m}; trying again with backoff");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Answer::Gone => {
                drop(slot);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    // Ctrl-C: running tasks are left to their leases (they go to other agents).
    Ok(ExitCode::SUCCESS)
}

/// The lease a claim gave: its token, how often to renew it, and how long it lasts.
struct Lease {
    token: String,
    beat: Duration,
    length: Duration,
}

/// What the heartbeat loop does after a renewal did not go through: keep trying, or stop the step because
/// the lease may be running out on the server. A pure function of how long ago the last renewal went
/// through: after two thirds of the lease the agent can no longer be sure it holds the task (the server
/// gives it to another agent once the whole lease has passed since its last renewal, and this agent's clock
/// started later than the server's), so it stops the step.
fn fenced(since_renewed: Duration, lease: Duration) -> bool {
    since_renewed >= lease * 2 / 3
}

/// How long a stopped step has between SIGTERM and SIGKILL: 10 s, or a sixth of the lease when that is
/// shorter, so that a step stopped by [`fenced`] is gone by five sixths of the lease.
fn grace(lease: Duration) -> Duration {
    (lease / 6).min(Duration::from_secs(10))
}

/// Run one task: confirmed first (a task the server no longer gives this agent is dropped unrun), then
/// heartbeats while it runs, output relayed, the report sent.
async fn run_task(link: &Link, executor: &dyn Executor, task: Task, lease: Lease) {
    let id = task.node_id.clone();
    let beat = lease.beat;
    let confirmed = match link
        .post_retrying(
            &format!("/api/v1/agent/tasks/{id}/heartbeat"),
            &json!({"lease": lease.token}),
            beat,
            &[100, 300],
        )
        .await
    {
        Answer::Ok(v) => Some(v["cancel"] == true),
        _ => None,
    };
    match confirmed {
        None => {
            eprintln!("task {id} could not be confirmed with the server; it goes back to the queue unrun");
            return;
        }
        Some(true) => {
            // Cancelled before it started: reported as aborted without running.
            let report = Report::ended(engine::executor::End::Aborted);
            let _ = link
                .post(
                    &format!("/api/v1/agent/tasks/{id}/report"),
                    json!({"lease": lease.token, "report": report}),
                    Duration::from_secs(30),
                )
                .await;
            return;
        }
        Some(false) => {}
    }
    let renewed = tokio::time::Instant::now();
    let (gone_tx, mut gone_rx) = watch::channel(false);
    // Lines are masked here, before they leave this machine (and again by the engine).
    let masker = engine::Masker::default();
    for s in &task.secrets {
        masker.add(s);
    }
    let relay = Relay {
        link: link.clone(),
        id: id.clone(),
        lease: lease.token.clone(),
        masker,
        buffer: Mutex::default(),
        gone: gone_tx,
    };
    let (abort_tx, abort_rx) = watch::channel(false);
    let heart = {
        let (link, id, token, length) = (link.clone(), id.clone(), lease.token.clone(), lease.length);
        let gone = relay.gone.clone();
        tokio::spawn(async move {
            let mut renewed = renewed;
            loop {
                tokio::time::sleep(beat).await;
                // Each try gives up in time for the agent to stop the step before its lease can run out.
                let left = (length * 2 / 3).saturating_sub(renewed.elapsed()).max(Duration::from_millis(50));
                let body = json!({"lease": token});
                match link.post(&format!("/api/v1/agent/tasks/{id}/heartbeat"), body, left.min(beat * 2)).await {
                    Answer::Ok(v) => {
                        renewed = tokio::time::Instant::now();
                        if v["cancel"] == true {
                            let _ = abort_tx.send(true);
                        }
                    }
                    Answer::Retry(m) if fenced(renewed.elapsed(), length) => {
                        eprintln!(
                            "task {id}: the lease could not be renewed for {:.1}s ({m}); the step is stopped so \
                             that it never runs beside a new attempt",
                            renewed.elapsed().as_secs_f64()
                        );
                        let _ = gone.send(true);
                        let _ = abort_tx.send(true);
                        return;
                    }
                    Answer::Retry(_) => {}
                    Answer::Gone | Answer::Refused(_) => {
                        let _ = gone.send(true);
                        let _ = abort_tx.send(true);
                        return;
                    }
                }
            }
        })
    };
    let report: Report = executor.run(&task, &relay, abort_rx).await;
    heart.abort();
    if *gone_rx.borrow_and_update() {
        eprintln!(
            "task {id}: this agent no longer holds it (it was given to another agent, or its lease could not be renewed); its outcome is dropped"
        );
        return;
    }
    // The last lines go with the report.
    let lines = std::mem::take(&mut *relay.buffer.lock().unwrap_or_else(|e| e.into_inner()));
    let body = json!({"lease": lease.token, "report": report, "lines": lines});
    let path = format!("/api/v1/agent/tasks/{id}/report");
    match link.post_retrying(&path, &body, Duration::from_secs(30), &[100, 500, 1000, 2000, 5000]).await {
        Answer::Ok(_) => return,
        Answer::Gone => {
            eprintln!("task {id} was given to another agent; the server refused this agent's late report");
            return;
        }
        Answer::Refused(m) => {
            eprintln!("task {id}: the report was refused: {m}");
            return;
        }
        Answer::Retry(_) => {}
    }
    eprintln!(
        "task {id}: the server could not be reached to report; the step gets a new attempt when the lease runs out"
    );
}

#[cfg(test)]
mod tests {
    use super::{fenced, grace};
    use std::time::Duration;

    #[test]
    fn an_agent_stops_its_step_before_the_server_can_give_it_away() {
        let lease = Duration::from_secs(3);
        let table = [(0, false), (1000, false), (1999, false), (2000, true), (2999, true), (5000, true)];
        for (ms, want) in table {
            assert_eq!(fenced(Duration::from_millis(ms), lease), want, "{ms} ms since the last renewal");
        }
        // Stopped, and killed after the grace, before the lease can run out.
        for lease in
            [Duration::from_millis(600), Duration::from_secs(3), Duration::from_secs(30), Duration::from_secs(600)]
        {
            assert!(lease * 2 / 3 + grace(lease) < lease, "{lease:?}");
        }
        assert_eq!(grace(Duration::from_secs(600)), Duration::from_secs(10));
    }
}
