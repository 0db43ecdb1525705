//! The step executors. ShellScript and Run write the (rendered) script to a file and run it with bash or sh;
//! output variables are captured after the script ends from the shell variables they name (ShellScript) or
//! the environment variables of the same name (Run). Http sends a real request and checks its assertion; Wait
//! waits; HarnessApproval waits for `pipewright approve` / `reject` (or its timeout).

use crate::logs::LogSink;
use crate::process::{self, Exit, PASSED_ENV};
use crate::sandbox::{self, Isolation};
use crate::tree::NodeCtx;
use expr::Value;
use spec::{ErrorType, OutputVariable, Shell, Step, StepSpec};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use store::{Status, Store};
use tokio::sync::watch;

/// How a step attempt ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Final status of the attempt.
    pub status: Status,
    /// Why it failed.
    pub failure: Option<String>,
    /// The failure type, for matching failure strategies.
    pub error: ErrorType,
    /// Output variables.
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

impl Outcome {
    fn ok(outputs: serde_json::Map<String, serde_json::Value>) -> Self {
        Outcome { status: Status::Success, failure: None, error: ErrorType::Unknown, outputs }
    }

    /// A failure of type `error`.
    pub fn failed(error: ErrorType, msg: impl Into<String>) -> Self {
        let status = match error {
            ErrorType::Timeout => Status::Expired,
            ErrorType::ApprovalRejection => Status::ApprovalRejected,
            _ => Status::Failed,
        };
        Outcome { status, failure: Some(msg.into()), error, outputs: serde_json::Map::new() }
    }

    fn aborted() -> Self {
        Outcome {
            status: Status::Aborted,
            failure: Some("the execution was aborted".into()),
            error: ErrorType::Unknown,
            outputs: serde_json::Map::new(),
        }
    }
}

/// What an executor may use.
pub struct StepEnv<'a> {
    /// Expression context.
    pub ctx: &'a NodeCtx<'a>,
    /// The step's log.
    pub log: &'a LogSink,
    /// The execution's working directory.
    pub workdir: &'a Path,
    /// The step's timeout.
    pub timeout: Option<Duration>,
    /// Becomes true on abort.
    pub abort: watch::Receiver<bool>,
    /// SIGTERM → SIGKILL grace.
    pub grace: Duration,
    /// Execution id.
    pub execution_id: &'a str,
    /// Node id of this attempt.
    pub node_id: &'a str,
    /// Stage identifier (iteration).
    pub stage: &'a str,
    /// The store, for decisions.
    pub store: &'a Arc<dyn Store>,
    /// How often to look for decisions.
    pub poll: Duration,
    /// The attempt's node record (approval steps mark it `ApprovalWaiting`).
    pub node: &'a store::Node,
    /// Who started the execution (`disallowPipelineExecutor`).
    pub triggered_by: &'a str,
    /// How step processes are confined.
    pub isolation: &'a Isolation,
    /// Where attempts get their private directories.
    pub control_root: &'a Path,
}

/// Run one attempt of a step.
pub async fn execute(env: &StepEnv<'_>, step: &Step) -> Outcome {
    match &step.spec {
        StepSpec::ShellScript(s) => {
            let script = match env.ctx.render(&s.script) {
                Ok(v) => v,
                Err(e) => return Outcome::failed(ErrorType::Unknown, e),
            };
            let mut vars = Vec::new();
            for v in &s.environment_variables {
                match env.ctx.render(&v.value) {
                    Ok(x) => vars.push((v.name.value.clone(), x)),
                    Err(e) => {
                        return Outcome::failed(
                            ErrorType::Unknown,
                            format!("environment variable `{}`: {e}", v.name.value),
                        );
                    }
                }
            }
            let captured: Vec<(&str, &str)> = s
                .output_variables
                .iter()
                .map(|o| (o.name.as_str(), o.value.as_ref().map_or(o.name.as_str(), |v| v.as_str())))
                .collect();
            shell(env, s.shell, &script, vars, &captured).await
        }
        StepSpec::Run(r) => {
            if let Some(image) = &r.image {
                env.log
                    .line(
                        "pipewright",
                        &format!("image `{}` is ignored: this step runs as a local process", image.value),
                    )
                    .await;
            }
            let command = match env.ctx.render(&r.command) {
                Ok(v) => v,
                Err(e) => return Outcome::failed(ErrorType::Unknown, e),
            };
            let mut vars = Vec::new();
            for (k, v) in r.env_variables.iter().flatten() {
                let raw = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match env.ctx.render(&raw) {
                    Ok(x) => vars.push((k.clone(), x)),
                    Err(e) => return Outcome::failed(ErrorType::Unknown, format!("envVariables `{k}`: {e}")),
                }
            }
            let captured: Vec<(&str, &str)> =
                r.output_variables.iter().map(|o| (o.name.as_str(), o.name.as_str())).collect();
            shell(env, r.shell.unwrap_or(Shell::Sh), &command, vars, &captured).await
        }
        StepSpec::Wait(w) => {
            let Some(d) = w.duration.as_std().or_else(|| {
                env.ctx
                    .render(&w.duration.text)
                    .ok()
                    .and_then(|t| spec::duration::parse_millis(&t).ok())
                    .map(Duration::from_millis)
            }) else {
                return Outcome::failed(ErrorType::Unknown, format!("`{}` is not a duration", w.duration.text));
            };
            env.log.line("pipewright", &format!("waiting {}", w.duration.text)).await;
            let mut abort = env.abort.clone();
            tokio::select! {
                _ = tokio::time::sleep(d) => Outcome::ok(Default::default()),
                _ = wait_abort(&mut abort) => Outcome::aborted(),
            }
        }
        StepSpec::Http(h) => http(env, h).await,
        StepSpec::HarnessApproval(a) => approval(env, a).await,
    }
}

/// Resolve once the execution is aborted (never, if the sender is gone).
pub(crate) async fn wait_abort(abort: &mut watch::Receiver<bool>) {
    loop {
        if *abort.borrow() {
            return;
        }
        if abort.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn is_shell_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The largest output variable value kept, bytes.
const OUTPUT_LIMIT: u64 = 1024 * 1024;

async fn shell(
    env: &StepEnv<'_>,
    sh: Shell,
    script: &str,
    vars: Vec<(String, String)>,
    captured: &[(&str, &str)],
) -> Outcome {
    for (name, var) in captured {
        if !is_shell_name(var) {
            return Outcome::failed(
                ErrorType::Unknown,
                format!("output variable `{name}` names `{var}`, which is not a shell variable name"),
            );
        }
    }
    // Per attempt: the script (`<control>/<node>.sh`) and, when outputs are captured, a fresh directory for them.
    let out_dir = if captured.is_empty() {
        None
    } else {
        match sandbox::output_dir(env.control_root, env.node_id, env.isolation) {
            Ok(d) => Some(d),
            Err(e) => {
                return Outcome::failed(
                    ErrorType::Unknown,
                    format!("cannot create the step's output directory in {}: {e}", env.control_root.display()),
                );
            }
        }
    };
    let names: Vec<&str> = captured.iter().map(|(_, v)| *v).collect();
    let mut body = String::new();
    if let Some(dir) = &out_dir {
        body.push_str(&format!(
            "__pw_out={}\n__pw_capture() {{\n  for __pw_n in {}; do\n    if eval \"[ \\\"\\${{$__pw_n+set}}\\\" = set ]\"; then eval \"printf '%s' \\\"\\${{$__pw_n}}\\\"\" > \"$__pw_out/$__pw_n\"; fi\n  done\n}}\ntrap __pw_capture EXIT\n",
            quote(&dir.display().to_string()),
            names.join(" ")
        ));
    }
    body.push_str(script);
    body.push('\n');
    let file = match sandbox::write_script(env.control_root, env.node_id, &body, env.isolation) {
        Ok(f) => f,
        Err(e) => {
            if let Some(d) = &out_dir {
                let _ = std::fs::remove_dir_all(d);
            }
            return Outcome::failed(
                ErrorType::Unknown,
                format!("cannot write the step's script in {}: {e}", env.control_root.display()),
            );
        }
    };
    let mut envs: Vec<(String, String)> =
        PASSED_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect();
    if let Isolation::Landlock(sb) = env.isolation {
        // The server's home and temporary directory are out of reach: the step gets its own.
        envs.retain(|(k, _)| !matches!(k.as_str(), "HOME" | "TMPDIR" | "USER" | "LOGNAME"));
        envs.push(("HOME".into(), env.workdir.join(".pipewright").join("home").display().to_string()));
        envs.push(("TMPDIR".into(), env.workdir.join(".pipewright").join("tmp").display().to_string()));
        if let Some(u) = &sb.user {
            envs.push(("USER".into(), u.name.clone()));
            envs.push(("LOGNAME".into(), u.name.clone()));
        }
    }
    envs.push(("PIPEWRIGHT_EXECUTION_ID".into(), env.execution_id.into()));
    envs.push(("PIPEWRIGHT_STAGE".into(), env.stage.into()));
    envs.push(("PIPEWRIGHT_WORKDIR".into(), env.workdir.display().to_string()));
    envs.extend(vars);
    let shell = match sh {
        Shell::Bash => "bash",
        Shell::Sh => "sh",
    };
    let script_arg = file.display().to_string();
    let (program, args) = match env.isolation {
        Isolation::Landlock(sb) => {
            let writable: Vec<&Path> = std::iter::once(env.workdir).chain(out_dir.as_deref()).collect();
            // The shell by absolute path: the launcher execs it without searching PATH.
            let shell = process::resolve(shell.as_ref(), &envs).to_string_lossy().into_owned();
            let (p, a) = sb.command(&writable, &[&file], &shell, std::slice::from_ref(&script_arg));
            (p.into_os_string(), a)
        }
        Isolation::None => (shell.into(), vec![script_arg.into()]),
    };
    let spec = process::Spec { program, args, cwd: env.workdir, env: envs };
    let track = (env.store, env.execution_id, env.node_id);
    let exit = process::run(spec, env.log, env.timeout, env.abort.clone(), env.grace, Some(track)).await;
    let mut outputs = serde_json::Map::new();
    if let Some(dir) = &out_dir {
        for (name, var) in captured {
            if let Some(v) = sandbox::read_step_file(&dir.join(var), OUTPUT_LIMIT) {
                let text = String::from_utf8_lossy(&v).into_owned();
                outputs.insert((*name).to_string(), serde_json::Value::String(text));
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_file(&file);
    match exit {
        Exit::Code(0) => Outcome::ok(outputs),
        Exit::Code(c) => {
            Outcome { outputs, ..Outcome::failed(ErrorType::Unknown, format!("the script exited with status {c}")) }
        }
        Exit::TimedOut => Outcome::failed(
            ErrorType::Timeout,
            format!("timed out after {}", env.timeout.map(|t| format!("{t:?}")).unwrap_or_default()),
        ),
        Exit::Aborted => Outcome::aborted(),
        Exit::SpawnFailed(m) => Outcome::failed(ErrorType::Unknown, m),
    }
}

async fn http(env: &StepEnv<'_>, h: &spec::HttpSpec) -> Outcome {
    let render = |s: &str| env.ctx.render(s);
    let (url, method) = match (render(&h.url), render(&h.method)) {
        (Ok(u), Ok(m)) => (u, m),
        (Err(e), _) | (_, Err(e)) => return Outcome::failed(ErrorType::Unknown, e),
    };
    let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return Outcome::failed(ErrorType::Unknown, format!("`{method}` is not an HTTP method"));
    };
    let client = match reqwest::Client::builder().timeout(env.timeout.unwrap_or(Duration::from_secs(600))).build() {
        Ok(c) => c,
        Err(e) => return Outcome::failed(ErrorType::Unknown, e.to_string()),
    };
    let mut req = client.request(method.clone(), &url);
    for hd in &h.headers {
        match render(&hd.value) {
            Ok(v) => req = req.header(hd.key.as_str(), v),
            Err(e) => return Outcome::failed(ErrorType::Unknown, e),
        }
    }
    if let Some(b) = &h.request_body {
        match render(b) {
            Ok(v) => req = req.body(v),
            Err(e) => return Outcome::failed(ErrorType::Unknown, e),
        }
    }
    env.log.line("pipewright", &format!("{method} {url}")).await;
    let mut abort = env.abort.clone();
    let resp = tokio::select! {
        r = req.send() => r,
        _ = wait_abort(&mut abort) => return Outcome::aborted(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::failed(ErrorType::Timeout, format!("{method} {url}: timed out")),
        Err(e) => return Outcome::failed(ErrorType::Connectivity, format!("{method} {url}: {e}")),
    };
    let code = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    env.log.line("pipewright", &format!("HTTP {code}, {} bytes", body.len())).await;
    let mut local = env.ctx.local.clone();
    local.insert("httpResponseCode".into(), Value::Int(i64::from(code)));
    local.insert("httpResponseBody".into(), Value::String(body));
    local.insert("httpUrl".into(), Value::String(url.clone()));
    local.insert("httpMethod".into(), Value::String(method.to_string()));
    let ctx = NodeCtx { local: &local, ..*env.ctx };
    let mut outputs = serde_json::Map::new();
    for OutputVariable { name, value, .. } in &h.output_variables {
        let Some(v) = value else { continue };
        match ctx.render(v) {
            Ok(x) => {
                outputs.insert(name.value.clone(), serde_json::Value::String(x));
            }
            Err(e) => return Outcome::failed(ErrorType::Unknown, format!("output variable `{}`: {e}", name.value)),
        }
    }
    let ok = match &h.assertion {
        Some(a) => match ctx.condition(a) {
            Ok(b) => b,
            Err(e) => return Outcome { outputs, ..Outcome::failed(ErrorType::Unknown, e) },
        },
        None => (200..300).contains(&code),
    };
    if ok {
        Outcome::ok(outputs)
    } else {
        let what = h.assertion.as_ref().map_or("a 2xx status".to_string(), |a| format!("assertion `{}`", a.value));
        Outcome { outputs, ..Outcome::failed(ErrorType::Unknown, format!("{what} failed: HTTP {code}")) }
    }
}

async fn approval(env: &StepEnv<'_>, a: &spec::ApprovalSpec) -> Outcome {
    let message = a.approval_message.as_ref().map(|m| env.ctx.render(m).unwrap_or_else(|_| m.value.clone()));
    env.log
        .line(
            "pipewright",
            &format!(
                "waiting for approval{}: run `pipewright approve {}` or `pipewright reject {}`",
                message.map(|m| format!(" ({m})")).unwrap_or_default(),
                env.execution_id,
                env.execution_id
            ),
        )
        .await;
    let mut waiting = env.node.clone();
    waiting.status = Status::ApprovalWaiting;
    if let Err(e) = env.store.put_node(&waiting).await {
        return Outcome::failed(ErrorType::Unknown, e.to_string());
    }
    let deadline = env.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut abort = env.abort.clone();
    // Distinct approvers so far (`minimumCount`), and the approver inputs they gave.
    let mut approvers = std::collections::BTreeSet::new();
    let mut given = serde_json::Map::new();
    loop {
        match env.store.take_decision(env.execution_id, env.node_id).await {
            Ok(Some(d)) => {
                let by = format!(
                    "{} by {}{}",
                    d.action,
                    d.by,
                    d.comment.clone().map(|c| format!(": {c}")).unwrap_or_default()
                );
                if d.action != "approve" {
                    env.log.line("pipewright", &by).await;
                    return Outcome::failed(ErrorType::ApprovalRejection, format!("rejected by {}", d.by));
                }
                if a.approvers.disallow_pipeline_executor && d.by == env.triggered_by {
                    env.log
                        .line(
                            "pipewright",
                            &format!("{by}: not counted, the person who ran the pipeline may not approve it"),
                        )
                        .await;
                    continue;
                }
                env.log.line("pipewright", &by).await;
                given.extend(d.inputs.as_object().cloned().unwrap_or_default());
                approvers.insert(d.by);
                if approvers.len() < a.approvers.minimum_count.max(1) as usize {
                    env.log
                        .line("pipewright", &format!("{} of {} approvals", approvers.len(), a.approvers.minimum_count))
                        .await;
                    continue;
                }
                let mut outputs = serde_json::Map::new();
                for i in &a.approver_inputs {
                    let v = given
                        .get(i.name.as_str())
                        .cloned()
                        .or_else(|| i.default_value.as_ref().map(|d| serde_json::Value::String(d.value.clone())));
                    if let Some(v) = v {
                        outputs.insert(i.name.value.clone(), v);
                    }
                }
                return Outcome::ok(outputs);
            }
            Ok(None) => {}
            Err(e) => return Outcome::failed(ErrorType::Unknown, e.to_string()),
        }
        let sleep = tokio::time::sleep(env.poll);
        tokio::select! {
            _ = sleep => {}
            _ = wait_abort(&mut abort) => return Outcome::aborted(),
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Outcome::failed(ErrorType::Timeout, "no approval before the step's timeout");
        }
    }
}
