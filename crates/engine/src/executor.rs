//! The seam between the engine and wherever a step's work runs. The engine renders a step into a [`Task`] —
//! self-contained, serialisable data: the shell and script or the HTTP request, the environment, the secret
//! values it carries, its timeout, the variables to capture — and hands it to an [`Executor`], which reports
//! back a [`Report`] (how it ended, what it captured, when) and streams what the work prints through
//! [`Feedback`]. The engine never starts a process or sends a request itself; a remote agent is one more
//! `Executor`.
//!
//! Masking happens at the sink: every line goes through the engine's log sink, which masks every secret of the
//! execution before a line is shown or stored. A task lists the secret values it carries (`secrets`) so that
//! an executor running elsewhere can mask before its lines leave the machine.
//!
//! [`LocalExecutor`] runs tasks on this host: a shell script through the step sandbox launcher (or bare, with
//! isolation off), its captured variables read back from a private directory; an HTTP request with reqwest.

use crate::process::{self, Exit, PASSED_ENV};
use crate::sandbox::{self, Isolation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{StepProcess, now_ms};
use tokio::sync::watch;

/// One step attempt's work, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The execution.
    pub execution_id: String,
    /// The attempt's node.
    pub node_id: String,
    /// The stage (iteration) it runs in.
    pub stage: String,
    /// Stop the work after this long (ms).
    pub timeout_ms: Option<u64>,
    /// Secret values the task carries (in its script, environment, URL, headers or body).
    pub secrets: Vec<String>,
    /// Tags a remote agent must have to run it (`delegateSelectors`); a local executor ignores them.
    #[serde(default)]
    pub selectors: Vec<String>,
    /// What to do.
    pub work: Work,
}

impl Task {
    /// The timeout as a duration.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// The shell a script runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShellKind {
    /// `bash`.
    Bash,
    /// `sh`.
    Sh,
}

impl ShellKind {
    /// The program's name.
    pub fn program(self) -> &'static str {
        match self {
            ShellKind::Bash => "bash",
            ShellKind::Sh => "sh",
        }
    }
}

/// A variable the script leaves behind, captured when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// The output variable's name.
    pub name: String,
    /// The shell (or environment) variable whose final value it takes.
    pub var: String,
}

/// The work of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Run a script (ShellScript, Run).
    Shell {
        /// The shell.
        shell: ShellKind,
        /// The rendered script.
        script: String,
        /// The step's environment variables (on top of the executor's base environment).
        env: Vec<(String, String)>,
        /// Variables to capture when the script ends.
        capture: Vec<Capture>,
    },
    /// Send a request (Http).
    Http {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// Headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: Option<String>,
    },
}

/// How the work ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "end", content = "detail", rename_all = "snake_case")]
pub enum End {
    /// The script exited with this status (signals: 128 + number).
    Exited(i32),
    /// The request got an answer.
    Answered,
    /// It ran past its timeout and was stopped.
    TimedOut,
    /// The execution was aborted and it was stopped.
    Aborted,
    /// It could not be started (a missing shell, an unwritable directory, a malformed request).
    NotStarted(String),
    /// The request's host could not be reached.
    Unreachable(String),
    /// Whoever ran it went away before it ended (a remote agent stopped renewing its lease): the attempt
    /// is closed as interrupted and the step runs again.
    Lost(String),
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The status code.
    pub code: u16,
    /// The body, as text.
    pub body: String,
}

/// What an executor reports when a task ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// How it ended.
    pub end: End,
    /// Captured variables by output variable name.
    pub outputs: BTreeMap<String, String>,
    /// The HTTP answer.
    pub response: Option<Response>,
    /// When the work started and ended (ms since the epoch).
    pub started_at: i64,
    /// See `started_at`.
    pub ended_at: i64,
}

impl Report {
    /// A task that ended as `end` at once, with nothing captured.
    pub fn ended(end: End) -> Report {
        let now = now_ms();
        Report { end, outputs: BTreeMap::new(), response: None, started_at: now, ended_at: now }
    }
}

/// What an executor tells the engine while a task runs.
#[async_trait::async_trait]
pub trait Feedback: Send + Sync {
    /// A line the work printed (`stdout`, `stderr`, or `pipewright` for the executor's own notes).
    async fn line(&self, stream: &'static str, text: &str);
    /// Store what is buffered unless a writer is at it (called about once a second while the work runs).
    async fn tick(&self);
    /// The work runs in this process group (so that whoever takes the execution over can stop it).
    async fn started(&self, process: StepProcess);
}

/// Runs tasks.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Run a task to its end, its timeout, or an abort (`abort` becomes true).
    async fn run(&self, task: &Task, feedback: &dyn Feedback, abort: watch::Receiver<bool>) -> Report;
    /// An attempt the engine closed without this executor's report (its execution was taken over): stop
    /// whatever still runs it. Local processes are stopped through their recorded process group instead.
    async fn forget(&self, _execution_id: &str, _node_id: &str) {}
}

/// Runs tasks on this host.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// How step processes are confined.
    pub isolation: Isolation,
    /// Executions get `<work_root>/<execution id>/` as their working directory.
    pub work_root: PathBuf,
    /// SIGTERM → SIGKILL grace.
    pub grace: Duration,
    /// The network namespaces of the stages with steps running here, by (execution, stage), with how many
    /// steps use each: made for the first, ended after the last (nothing then runs in it, so a later step
    /// of the stage loses nothing with a new one).
    nets: StageNets,
}

/// The network namespaces of stages, by (execution, stage), with how many steps hold each.
type StageNets = Arc<Mutex<HashMap<(String, String), (usize, Arc<sandbox::StageNet>)>>>;

/// A step's hold on its stage's network namespace; the last one to go ends it.
struct NetUse {
    key: (String, String),
    net: Arc<sandbox::StageNet>,
    nets: StageNets,
}

impl Drop for NetUse {
    fn drop(&mut self) {
        let mut nets = self.nets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, _)) = nets.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                nets.remove(&self.key);
            }
        }
    }
}

impl LocalExecutor {
    /// An executor confining steps as `isolation` says, their workspaces under `work_root`.
    pub fn new(isolation: Isolation, work_root: PathBuf, grace: Duration) -> LocalExecutor {
        LocalExecutor { isolation, work_root, grace, nets: Arc::default() }
    }

    /// The network namespace of `task`'s stage, made when it is the stage's first running step.
    async fn stage_net(&self, task: &Task) -> Result<Option<NetUse>, String> {
        let Isolation::Landlock(sb) = &self.isolation else { return Ok(None) };
        if self.isolation.network() == sandbox::Network::Host {
            return Ok(None);
        }
        let key = (task.execution_id.clone(), task.stage.clone());
        let existing = {
            let mut nets = self.nets.lock().unwrap_or_else(|e| e.into_inner());
            nets.get_mut(&key).map(|(n, net)| {
                *n += 1;
                net.clone()
            })
        };
        let net = match existing {
            Some(net) => net,
            None => {
                let sb = sb.clone();
                let made = tokio::task::spawn_blocking(move || sandbox::StageNet::open(&sb))
                    .await
                    .map_err(|e| format!("cannot make the stage's network: {e}"))??;
                let made = Arc::new(made);
                let mut nets = self.nets.lock().unwrap_or_else(|e| e.into_inner());
                // Another step of the stage may have made one meanwhile: use that one, drop this.
                let (n, net) = nets.entry(key.clone()).or_insert((0, made));
                *n += 1;
                net.clone()
            }
        };
        Ok(Some(NetUse { key, net, nets: self.nets.clone() }))
    }
}

/// The largest output variable value kept, bytes.
const OUTPUT_LIMIT: u64 = 1024 * 1024;

/// The script a step runs: `script`, after a trap that writes the captured variables into `out_dir` when
/// the shell exits.
fn script_body(out_dir: Option<&Path>, capture: &[Capture], script: &str) -> String {
    let mut body = String::new();
    if let Some(dir) = out_dir {
        let names: Vec<&str> = capture.iter().map(|c| c.var.as_str()).collect();
        body.push_str(&format!(
            "__pw_out={}\n__pw_capture() {{\n  for __pw_n in {}; do\n    if eval \"[ \\\"\\${{$__pw_n+set}}\\\" = set ]\"; then eval \"printf '%s' \\\"\\${{$__pw_n}}\\\"\" > \"$__pw_out/$__pw_n\"; fi\n  done\n}}\ntrap __pw_capture EXIT\n",
            quote(&dir.display().to_string()),
            names.join(" ")
        ));
    }
    body.push_str(script);
    body.push('\n');
    body
}

/// The captured output variables a step left in `out_dir` (bounded, regular files only), read and removed.
fn read_outputs(out_dir: Option<&Path>, capture: &[Capture]) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    if let Some(dir) = out_dir {
        for c in capture {
            if let Some(v) = sandbox::read_step_file(&dir.join(&c.var), OUTPUT_LIMIT) {
                outputs.insert(c.name.clone(), String::from_utf8_lossy(&v).into_owned());
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    outputs
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[async_trait::async_trait]
impl Executor for LocalExecutor {
    async fn run(&self, task: &Task, feedback: &dyn Feedback, abort: watch::Receiver<bool>) -> Report {
        match &task.work {
            Work::Shell { shell, script, env, capture } => {
                self.shell(task, *shell, script, env, capture, feedback, abort).await
            }
            Work::Http { method, url, headers, body } => {
                http(task, self.isolation.network(), method, url, headers, body.as_deref(), feedback, abort).await
            }
        }
    }
}

impl LocalExecutor {
    /// A step's environment: the few variables passed through, its own home and temporary directory when
    /// confined, its working directory, and `vars`.
    fn step_env(&self, workdir: &Path, vars: &[(String, String)]) -> Vec<(String, String)> {
        let mut envs: Vec<(String, String)> =
            PASSED_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect();
        if let Isolation::Landlock(sb) = &self.isolation {
            // The server's home and temporary directory are out of reach: the step gets its own.
            envs.retain(|(k, _)| !matches!(k.as_str(), "HOME" | "TMPDIR" | "USER" | "LOGNAME"));
            envs.push(("HOME".into(), workdir.join(".pipewright").join("home").display().to_string()));
            envs.push(("TMPDIR".into(), workdir.join(".pipewright").join("tmp").display().to_string()));
            if let Some(u) = &sb.user {
                envs.push(("USER".into(), u.name.clone()));
                envs.push(("LOGNAME".into(), u.name.clone()));
            }
        }
        envs.push(("PIPEWRIGHT_WORKDIR".into(), workdir.display().to_string()));
        envs.extend(vars.iter().cloned());
        envs
    }

    #[allow(clippy::too_many_arguments)]
    async fn shell(
        &self,
        task: &Task,
        sh: ShellKind,
        script: &str,
        vars: &[(String, String)],
        capture: &[Capture],
        feedback: &dyn Feedback,
        abort: watch::Receiver<bool>,
    ) -> Report {
        let started_at = now_ms();
        let workdir = self.work_root.join(&task.execution_id);
        let control = sandbox::control_dir(&self.work_root, &workdir);
        let not_started = |m: String| Report::ended(End::NotStarted(m));
        // Per attempt: the script (`<control>/<node>.sh`) and, when variables are captured, a fresh directory.
        let out_dir = if capture.is_empty() {
            None
        } else {
            match sandbox::output_dir(&control, &task.node_id, &self.isolation) {
                Ok(d) => Some(d),
                Err(e) => {
                    return not_started(format!(
                        "cannot create the step's output directory in {}: {e}",
                        control.display()
                    ));
                }
            }
        };
        let body = script_body(out_dir.as_deref(), capture, script);
        let file = match sandbox::write_script(&control, &task.node_id, &body, &self.isolation) {
            Ok(f) => f,
            Err(e) => {
                if let Some(d) = &out_dir {
                    let _ = std::fs::remove_dir_all(d);
                }
                return not_started(format!("cannot write the step's script in {}: {e}", control.display()));
            }
        };
        let envs = self.step_env(&workdir, vars);
        let script_arg = file.display().to_string();
        // What the attempt made before it could start is removed when it cannot.
        let unmade = |m: String| {
            let _ = std::fs::remove_file(&file);
            if let Some(d) = &out_dir {
                let _ = std::fs::remove_dir_all(d);
            }
            not_started(m)
        };
        let net = match self.stage_net(task).await {
            Ok(n) => n,
            Err(e) => return unmade(e),
        };
        // The step's own root is built in a fresh directory beside its script.
        let root = match &self.isolation {
            Isolation::Landlock(_) => match sandbox::root_dir(&control, &task.node_id) {
                Ok(d) => Some(d),
                Err(e) => {
                    return unmade(format!("cannot create the step's root directory in {}: {e}", control.display()));
                }
            },
            Isolation::None => None,
        };
        let (program, args) = match &self.isolation {
            Isolation::Landlock(sb) => {
                let writable: Vec<&Path> = std::iter::once(workdir.as_path()).chain(out_dir.as_deref()).collect();
                // The shell by absolute path: the launcher execs it without searching PATH.
                let shell = process::resolve(sh.program().as_ref(), &envs).to_string_lossy().into_owned();
                let net = net.as_ref().map(|n| n.net.as_ref());
                let root = root.as_deref();
                let (p, a) = sb.command_in(net, root, &writable, &[&file], &shell, std::slice::from_ref(&script_arg));
                (p.into_os_string(), a)
            }
            Isolation::None => (sh.program().into(), vec![script_arg.into()]),
        };
        let spec = process::Spec { program, args, cwd: &workdir, env: envs };
        let exit = process::run(spec, feedback, task.timeout(), abort, self.grace).await;
        drop(net);
        let outputs = read_outputs(out_dir.as_deref(), capture);
        let _ = std::fs::remove_file(&file);
        if let Some(r) = &root {
            let _ = std::fs::remove_dir(r);
        }
        let end = match exit {
            Exit::Code(c) => End::Exited(c),
            Exit::TimedOut => End::TimedOut,
            Exit::Aborted => End::Aborted,
            Exit::SpawnFailed(m) => End::NotStarted(m),
        };
        Report { end, outputs, response: None, started_at, ended_at: now_ms() }
    }
}

/// Whether a step network refuses `ip`: one of this host's addresses (`own`), loopback, unspecified or
/// link-local (the cloud metadata address among them).
pub fn refused_address(ip: std::net::IpAddr, own: &[std::net::IpAddr]) -> bool {
    use std::net::IpAddr;
    // An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address, under every rule.
    let ip = ip.to_canonical();
    let special = match ip {
        // 0.0.0.0/8 reaches this host's listeners too.
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0 || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.is_unicast_link_local(),
    };
    special || own.iter().any(|o| o.to_canonical() == ip)
}

/// Where an `Http` step may connect under `network`: `Ok(None)` as it likes (`host`), `Ok(Some((host,
/// addresses)))` only to these addresses, checked (so that a name resolving to this host is refused and a
/// second lookup cannot change the answer), or why not at all.
async fn http_target(
    network: sandbox::Network,
    url: &str,
) -> Result<Option<(String, Vec<std::net::SocketAddr>)>, String> {
    match network {
        sandbox::Network::Host => return Ok(None),
        sandbox::Network::None => {
            return Err("Http steps cannot connect anywhere with --step-network none".into());
        }
        sandbox::Network::Isolated => {}
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let host = parsed.host_str().ok_or_else(|| format!("`{url}` names no host"))?.to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    let own = sandbox::host_addresses();
    if let Some(bad) = addrs.iter().find(|a| refused_address(a.ip(), &own)) {
        return Err(format!(
            "`{host}` is {}, an address of this host, which steps may not reach with --step-network isolated",
            bad.ip()
        ));
    }
    Ok(Some((bare, addrs)))
}

#[allow(clippy::too_many_arguments)]
async fn http(
    task: &Task,
    network: sandbox::Network,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<&str>,
    feedback: &dyn Feedback,
    abort: watch::Receiver<bool>,
) -> Report {
    let started_at = now_ms();
    let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return Report::ended(End::NotStarted(format!("`{method}` is not an HTTP method")));
    };
    feedback.line("pipewright", &format!("{method} {url}")).await;
    let mut builder = reqwest::Client::builder().timeout(task.timeout().unwrap_or(Duration::from_secs(600)));
    match http_target(network, url).await {
        Ok(None) => {}
        // Only the checked addresses, and no redirect (its target would not be checked).
        Ok(Some((host, addrs))) => {
            builder = builder.resolve_to_addrs(&host, &addrs).redirect(reqwest::redirect::Policy::none());
        }
        Err(e) => return Report::ended(End::NotStarted(e)),
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return Report::ended(End::NotStarted(e.to_string())),
    };
    let mut req = client.request(method.clone(), url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let mut abort = abort;
    let resp = tokio::select! {
        r = req.send() => r,
        _ = crate::steps::wait_abort(&mut abort) => return Report::ended(End::Aborted),
    };
    let done = |end: End, response: Option<Response>| Report {
        end,
        outputs: BTreeMap::new(),
        response,
        started_at,
        ended_at: now_ms(),
    };
    match resp {
        Ok(r) => {
            let code = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            feedback.line("pipewright", &format!("HTTP {code}, {} bytes", body.len())).await;
            done(End::Answered, Some(Response { code, body }))
        }
        Err(e) if e.is_timeout() => done(End::TimedOut, None),
        Err(e) => done(End::Unreachable(format!("{method} {url}: {e}")), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_network_refuses_the_hosts_addresses() {
        let own: Vec<std::net::IpAddr> = vec!["192.0.2.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        for (ip, refused) in [
            ("127.0.0.1", true),
            ("127.8.9.1", true),
            ("0.0.0.0", true),
            ("169.254.169.254", true),
            ("192.0.2.2", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("fe80::1", true),
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("::ffff:0.0.0.0", true),
            ("::ffff:0:0", true),
            ("::ffff:192.0.2.2", true),
            ("::ffff:c000:202", true),
            ("fd00::2", true),
            ("192.0.2.3", false),
            ("203.0.113.7", false),
            ("2001:db8::1", false),
        ] {
            assert_eq!(refused_address(ip.parse().unwrap(), &own), refused, "{ip}");
        }
    }
}
