//! `pipewright agent`: a remote worker. It long-polls a server for tasks (never the database), runs each with
//! the local executor — confined as `pipewright run` confines steps — streams the output back masked,
//! renews its lease by heartbeat, and reports how the task ended. A task the server took back (the lease ran
//! out, it was cancelled) is stopped and its late report is refused by the server; the agent says so and
//! goes on. Also `pipewright agents list|drain|revoke|activate`, to manage agents.

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
    /// `--token-file FILE` (or `PIPEWRIGHT_TOKEN`): a token of a service account holding `agent:connect` (the
    /// built-in role `_agent`).
    #[command(flatten)]
    pub token: crate::credentials::Secret<crate::credentials::Token>,
    /// This agent's name (unique; default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Tags, comma-separated: the agent takes steps whose `delegateSelectors` it has all of.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
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
    /// List agents: state, last heartbeat, version, tags, running tasks.
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
        AgentsCmd::List { server } => {
            let v = super::admin::remote(&server)?.call(Method::GET, "/api/v1/agents", None).await?;
            let mut rows = v["items"].as_array().cloned().unwrap_or_default();
            for r in &mut rows {
                let seen = r["last_seen"].as_i64().unwrap_or(0);
                r["last_seen"] = json!(format!("{:.1}s ago", (store::now_ms() - seen) as f64 / 1000.0));
                r["tags"] = json!(
                    r["tags"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                );
            }
            super::admin::table(&json!({"items": rows}), &["name", "state", "last_seen", "version", "tags", "running"]);
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

/// The agent's connection to its server.
#[derive(Clone)]
struct Link {
    base: String,
    token: String,
    name: String,
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
        let body = json!({"name": self.link.name, "lines": lines});
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
    let token =
        a.token.get().context("give the agent its token with --token-file FILE or PIPEWRIGHT_TOKEN")?.to_string();
    let name = match a.name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .context("cannot read the host name; give the agent a --name")?,
    };
    let tags: Vec<String> = a.tags.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    let (isolation, work_root) = super::isolation(&a.steps, &a.state_dir, crate::NetworkMode::Isolated)?;
    // Workspaces are made as the engine makes them for a local run (`<work root>/<execution>`, owned by the
    // step user), once per execution.
    let mut layout = engine::EngineConfig::new(&a.state_dir);
    layout.isolation = isolation.clone();
    layout.work_root = work_root.clone();
    let layout = Arc::new(layout);
    let executor = Arc::new(LocalExecutor::new(isolation, work_root, Duration::from_secs(10)));
    let link = Link { base, token, name: name.clone(), http: reqwest::Client::new() };
    let slots = Arc::new(Semaphore::new(a.concurrency.max(1)));
    println!(
        "agent {name} taking tasks from {} (tags: {})",
        link.base,
        if tags.is_empty() { "none".into() } else { tags.join(",") }
    );
    let mut pause = Duration::from_millis(100);
    let mut said_draining = false;
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let body = json!({"name": name, "tags": tags, "version": env!("CARGO_PKG_VERSION"), "wait_seconds": 5});
        let answer = tokio::select! {
            a = link.post("/api/v1/agent/claim", body, Duration::from_secs(30)) => a,
            _ = tokio::signal::ctrl_c() => break,
        };
        match answer {
            Answer::Ok(v) => {
                pause = Duration::from_millis(100);
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
                let beat = Duration::from_millis(claimed["heartbeat_ms"].as_u64().unwrap_or(1000));
                let (link, executor, layout) = (link.clone(), executor.clone(), layout.clone());
                tokio::spawn(async move {
                    let workdir = layout.work_root.join(&task.execution_id);
                    if let Err(e) = engine::sandbox::prepare_workspace(&layout, &workdir) {
                        eprintln!("task {}: cannot prepare the workspace {}: {e}", task.node_id, workdir.display());
                    }
                    run_task(&link, executor.as_ref(), task, beat).await;
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

/// Run one task: confirmed first (a task the server no longer gives this agent is dropped unrun), then
/// heartbeats while it runs, output relayed, the report sent.
async fn run_task(link: &Link, executor: &dyn Executor, task: Task, beat: Duration) {
    let id = task.node_id.clone();
    let confirmed = match link
        .post_retrying(&format!("/api/v1/agent/tasks/{id}/heartbeat"), &json!({"name": link.name}), beat, &[100, 300])
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
                    json!({"name": link.name, "report": report}),
                    Duration::from_secs(30),
                )
                .await;
            return;
        }
        Some(false) => {}
    }
    let (gone_tx, mut gone_rx) = watch::channel(false);
    // Lines are masked here, before they leave this machine (and again by the engine).
    let masker = engine::Masker::default();
    for s in &task.secrets {
        masker.add(s);
    }
    let relay = Relay { link: link.clone(), id: id.clone(), masker, buffer: Mutex::default(), gone: gone_tx };
    let (abort_tx, abort_rx) = watch::channel(false);
    let heart = {
        let (link, id) = (link.clone(), id.clone());
        let gone = relay.gone.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(beat).await;
                match link
                    .post(&format!("/api/v1/agent/tasks/{id}/heartbeat"), json!({"name": link.name}), beat * 2)
                    .await
                {
                    Answer::Ok(v) if v["cancel"] == true => {
                        let _ = abort_tx.send(true);
                    }
                    Answer::Ok(_) | Answer::Retry(_) => {}
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
        eprintln!("task {id} was given to another agent (this agent's lease on it ran out); its outcome is dropped");
        return;
    }
    // The last lines go with the report.
    let lines = std::mem::take(&mut *relay.buffer.lock().unwrap_or_else(|e| e.into_inner()));
    let body = json!({"name": link.name, "report": report, "lines": lines});
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
