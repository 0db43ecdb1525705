//! What each step type does with one attempt. ShellScript, Run and Http are rendered into a [`Task`] — the
//! script or request with every expression evaluated, the environment, the variables to capture — and handed
//! to the engine's [`Executor`]; its [`Report`] becomes the attempt's outcome: output variables from the
//! shell variables they name (ShellScript) or the environment variables of the same name (Run), an Http
//! step's outputs and assertion evaluated against the answer. Wait waits; HarnessApproval waits for
//! `pipewright approve` / `reject` (or its timeout) — the engine marks the node waiting before it starts.

use crate::executor::{Capture, End, Executor, Feedback, Report, ShellKind, Task, Work};
use crate::logs::{LogSink, Masker};
use crate::tree::NodeCtx;
use expr::Value;
use spec::{ErrorType, OutputVariable, Shell, Step, StepSpec};
use std::sync::Arc;
use std::time::Duration;
use store::{DecisionAction, Status, StepProcess, Store};
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
    /// Whoever ran it went away (`End::Lost`): the step runs again as a new attempt.
    pub lost: bool,
}

impl Outcome {
    /// A success with these outputs.
    pub fn ok(outputs: serde_json::Map<String, serde_json::Value>) -> Self {
        Outcome { status: Status::Success, failure: None, error: ErrorType::Unknown, outputs, lost: false }
    }

    /// A failure of type `error`.
    pub fn failed(error: ErrorType, msg: impl Into<String>) -> Self {
        let status = match error {
            ErrorType::Timeout => Status::Expired,
            ErrorType::ApprovalRejection => Status::ApprovalRejected,
            _ => Status::Failed,
        };
        Outcome { status, failure: Some(msg.into()), error, outputs: serde_json::Map::new(), lost: false }
    }

    fn aborted() -> Self {
        Outcome {
            status: Status::Aborted,
            failure: Some("the execution was aborted".into()),
            error: ErrorType::Unknown,
            outputs: serde_json::Map::new(),
            lost: false,
        }
    }

    /// Whoever ran the attempt went away.
    fn lost(why: String) -> Self {
        Outcome { lost: true, ..Outcome::failed(ErrorType::Unknown, format!("interrupted: {why}")) }
    }
}

/// What a step attempt may use.
pub struct StepEnv<'a> {
    /// Expression context.
    pub ctx: &'a NodeCtx<'a>,
    /// The step's log.
    pub log: &'a LogSink,
    /// The step's timeout.
    pub timeout: Option<Duration>,
    /// Becomes true on abort.
    pub abort: watch::Receiver<bool>,
    /// Execution id.
    pub execution_id: &'a str,
    /// Node id of this attempt.
    pub node_id: &'a str,
    /// Stage identifier (iteration).
    pub stage: &'a str,
    /// The store, for decisions and the process groups tasks run in.
    pub store: &'a Arc<dyn Store>,
    /// The hold the execution's writes are made under.
    pub fence: &'a store::Fence,
    /// The runtime inputs given so far, as environment variables (`spec::inputs::input_env_name`): what a
    /// script reads instead of pasting a value into its text.
    pub inputs: &'a [(String, String)],
    /// How often to look for decisions.
    pub poll: Duration,
    /// Who started the execution (`disallowPipelineExecutor`).
    pub triggered_by: &'a str,
    /// Where tasks run.
    pub executor: &'a dyn Executor,
    /// The execution's secrets (a task lists those it carries).
    pub masker: &'a Masker,
    /// Scripts for the step types pipewright does not run itself.
    pub handlers: &'a std::collections::BTreeMap<String, spec::StepHandler>,
    /// The folder of the settings file the handlers come from.
    pub handlers_dir: Option<&'a std::path::Path>,
    /// Git connector → URL.
    pub connectors: &'a std::collections::BTreeMap<String, String>,
    /// Tags an agent must have to run this step's tasks (`delegateSelectors`, rendered).
    pub selectors: Vec<String>,
}

/// The engine's end of a running task: lines go to the step's log (masked there), the process group it runs in
/// to the store.
struct Sink<'a> {
    env: &'a StepEnv<'a>,
}

#[async_trait::async_trait]
impl Feedback for Sink<'_> {
    async fn line(&self, stream: &'static str, text: &str) {
        self.env.log.line(stream, text).await;
    }
    async fn tick(&self) {
        self.env.log.flush_if_idle().await;
    }
    async fn started(&self, p: StepProcess) {
        let _ = self.env.store.put_step_process(self.env.execution_id, self.env.node_id, &p, self.env.fence).await;
    }
}

/// Hand `work` to the executor as this attempt's task.
async fn run_task(env: &StepEnv<'_>, work: Work) -> Report {
    let carried: Vec<&str> = match &work {
        Work::Shell { script, env, .. } => {
            std::iter::once(script.as_str()).chain(env.iter().map(|(_, v)| v.as_str())).collect()
        }
        Work::Http { url, headers, body, .. } => std::iter::once(url.as_str())
            .chain(headers.iter().map(|(_, v)| v.as_str()))
            .chain(body.as_deref())
            .collect(),
    };
    let task = Task {
        execution_id: env.execution_id.to_string(),
        node_id: env.node_id.to_string(),
        stage: env.stage.to_string(),
        timeout_ms: env.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        secrets: env.masker.found_in(&carried),
        selectors: env.selectors.clone(),
        work,
    };
    env.executor.run(&task, &Sink { env }, env.abort.clone()).await
}

/// Run one attempt of a step.
pub async fn execute(env: &StepEnv<'_>, step: &Step) -> Outcome {
    match &step.spec {
        StepSpec::ShellScript(s) => shell_script(env, s).await,
        StepSpec::Run(r) => run_step(env, r).await,
        StepSpec::Wait(w) => wait(env, w).await,
        StepSpec::Http(h) => http(env, h).await,
        StepSpec::HarnessApproval(a) => approval(env, a).await,
        StepSpec::Harness(spec) => match env.handlers.get(step.step_type.name()) {
            Some(h) => handled(env, step, spec, h).await,
            // Built in where the local equivalent is plain: a GitClone is `git`.
            None if step.step_type == spec::StepType::GitClone => git_clone(env, spec).await,
            None => Outcome::failed(
                ErrorType::Unknown,
                format!(
                    "pipewright does not run `{t}` steps itself; map the type to a script of yours in `.harness/pipewright.yaml` (`stepHandlers: {{{t}: {{script: …}}}}`), give the step a failure strategy (Ignore, MarkAsSuccess) to go on, or replace it with a ShellScript or Run step",
                    t = step.step_type.name()
                ),
            ),
        },
    }
}

/// A ShellScript step: its script and environment variables rendered, its output variables captured from
/// the shell variables they name.
async fn shell_script(env: &StepEnv<'_>, s: &spec::ShellScriptSpec) -> Outcome {
    let script = match env.ctx.render(&s.script) {
        Ok(v) => v,
        Err(e) => return Outcome::failed(ErrorType::Unknown, e),
    };
    let mut vars = Vec::new();
    for v in &s.environment_variables {
        match env.ctx.render(&v.value) {
            Ok(x) => vars.push((v.name.value.clone(), x)),
            Err(e) => {
                return Outcome::failed(ErrorType::Unknown, format!("environment variable `{}`: {e}", v.name.value));
            }
        }
    }
    let captured: Vec<(&str, &str)> = s
        .output_variables
        .iter()
        .map(|o| (o.name.as_str(), o.value.as_ref().map_or(o.name.as_str(), |v| v.as_str())))
        .collect();
    shell(env, s.shell, script, vars, &captured).await
}

/// A Run step: its command and `envVariables` rendered, its output variables captured from the environment
/// variables of the same name.
async fn run_step(env: &StepEnv<'_>, r: &spec::RunSpec) -> Outcome {
    if let Some(image) = &r.image {
        env.log
            .line("pipewright", &format!("image `{}` is ignored: this step runs as a local process", image.value))
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
    let captured: Vec<(&str, &str)> = r.output_variables.iter().map(|o| (o.name.as_str(), o.name.as_str())).collect();
    shell(env, r.shell.unwrap_or(Shell::Sh), command, vars, &captured).await
}

/// A Wait step: its duration, or the abort.
async fn wait(env: &StepEnv<'_>, w: &spec::WaitSpec) -> Outcome {
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

/// The fetch of a `GitClone` step (or a stage's `cloneCodebase`): the repository's URL, the ref, the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitFetch {
    /// Where the repository is (a URL or a local path).
    pub url: String,
    /// `refs/heads/B`, `refs/tags/T`, `refs/pull/N/head`, a commit, or `HEAD`.
    pub git_ref: String,
    /// The folder in the workspace.
    pub dir: String,
    /// `--depth`, when given.
    pub depth: Option<u64>,
}

/// Read a `GitClone` spec (expressions resolved): where from (`repoName` as a URL or path, or joined to the
/// URL of its `connectorRef`), which ref (`build: {type: branch|tag|PR|commitSha, spec: …}`), into which folder.
pub fn clone_of(
    spec: &serde_json::Value,
    connectors: &std::collections::BTreeMap<String, String>,
) -> Result<GitFetch, String> {
    let s = |v: &serde_json::Value| {
        match v {
            serde_json::Value::String(s) => Some(s.trim().to_string()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
        .filter(|s| !s.is_empty())
    };
    let repo = s(&spec["repoName"]);
    let connector = s(&spec["connectorRef"]);
    let is_location = |r: &str| r.contains("://") || r.starts_with("git@") || r.starts_with('/') || r.starts_with("./");
    let url = match (&repo, &connector) {
        (Some(r), _) if is_location(r) => r.clone(),
        (r, Some(c)) => {
            let base = connectors.get(c).ok_or_else(|| {
                format!(
                    "connector `{c}` has no URL here: map it in `.harness/pipewright.yaml` (`connectors: {{{c}: https://github.com/ORG}}`), or give `repoName` as a URL or path"
                )
            })?;
            match r {
                Some(r) => format!("{base}/{r}"),
                None => base.clone(),
            }
        }
        (Some(r), None) => {
            return Err(format!("`repoName: {r}` is neither a URL nor a path, and no `connectorRef` says where it is"));
        }
        (None, None) => return Err("a GitClone step needs `repoName` (a URL or path) or a `connectorRef`".into()),
    };
    let build = &spec["build"];
    let value = |k: &str| s(&build["spec"][k]);
    let git_ref = match s(&build["type"]).as_deref() {
        None => "HEAD".to_string(),
        Some("branch") => format!("refs/heads/{}", value("branch").ok_or("`build.spec.branch` is missing")?),
        Some("tag") => format!("refs/tags/{}", value("tag").ok_or("`build.spec.tag` is missing")?),
        Some("PR") => format!("refs/pull/{}/head", value("number").ok_or("`build.spec.number` is missing")?),
        Some("commitSha") => value("commitSha").ok_or("`build.spec.commitSha` is missing")?,
        Some(other) => return Err(format!("build type `{other}` is not one of branch, tag, PR, commitSha")),
    };
    let dir = s(&spec["cloneDirectory"]).unwrap_or_else(|| {
        let last = url.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or("repo");
        last.trim_end_matches(".git").to_string()
    });
    let depth = spec["depth"].as_u64().or_else(|| s(&spec["depth"]).and_then(|d| d.parse().ok())).filter(|d| *d > 0);
    Ok(GitFetch { url, git_ref, dir, depth })
}

/// Fetch a repository into the workspace with `git`, as a ShellScript step runs (confined, timed out): into
/// a folder that may already hold files (a `git init` there, then a fetch of the one ref and a checkout).
async fn git_clone(env: &StepEnv<'_>, spec: &serde_json::Value) -> Outcome {
    let resolved = match env.ctx.render_json(spec, "spec") {
        Ok(v) => v,
        Err(e) => return Outcome::failed(ErrorType::Unknown, e),
    };
    let c = match clone_of(&resolved, env.connectors) {
        Ok(c) => c,
        Err(e) => return Outcome::failed(ErrorType::Unknown, e),
    };
    // Steps may run as another user than the one owning a local source repository (root running steps as
    // `nobody`): reading it is all a fetch does, so git's ownership check is waived in a config of the step's
    // own (the one git's local transport passes on to the process that reads the source).
    let script = r#"set -eu
GIT_CONFIG_GLOBAL=$(mktemp)
export GIT_CONFIG_GLOBAL
git config --file "$GIT_CONFIG_GLOBAL" safe.directory '*'
mkdir -p "$PW_GIT_DIR"
cd "$PW_GIT_DIR"
[ -d .git ] || git init -q .
git remote remove origin 2>/dev/null || true
git remote add origin "$PW_GIT_URL"
if [ -n "$PW_GIT_DEPTH" ]; then git fetch -q --depth "$PW_GIT_DEPTH" origin "$PW_GIT_REF"; else git fetch -q origin "$PW_GIT_REF"; fi
git checkout -q -f FETCH_HEAD
echo "checked out $PW_GIT_REF of $PW_GIT_URL at $(git rev-parse HEAD) into $PW_GIT_DIR"
rm -f "$GIT_CONFIG_GLOBAL"
"#;
    let vars = vec![
        ("PW_GIT_URL".to_string(), c.url.clone()),
        ("PW_GIT_REF".to_string(), c.git_ref.clone()),
        ("PW_GIT_DIR".to_string(), c.dir.clone()),
        ("PW_GIT_DEPTH".to_string(), c.depth.map(|d| d.to_string()).unwrap_or_default()),
        ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
    ];
    shell(env, spec::Shell::Sh, script.to_string(), vars, &[]).await
}

/// The task of a `Background` step: its `command` with its `shell` and `envVariables`, expressions resolved,
/// with no timeout (it runs until its stage ends).
pub fn background_task(env: &StepEnv<'_>, step: &Step) -> Result<Task, String> {
    let StepSpec::Harness(spec) = &step.spec else { return Err("not a Background step".into()) };
    let resolved = env.ctx.render_json(spec, "spec")?;
    let Some(command) = resolved["command"].as_str().filter(|c| !c.trim().is_empty()) else {
        return Err("a Background step runs its `command` here (an image's entrypoint is not run: steps run as local processes); add `command`".into());
    };
    let shell = match resolved["shell"].as_str().map(str::to_ascii_lowercase).as_deref() {
        None | Some("sh") => ShellKind::Sh,
        Some("bash") => ShellKind::Bash,
        Some(other) => return Err(format!("shell `{other}` is not available here; use Sh or Bash")),
    };
    let mut vars = vec![
        ("PIPEWRIGHT_EXECUTION_ID".to_string(), env.execution_id.to_string()),
        ("PIPEWRIGHT_STAGE".to_string(), env.stage.to_string()),
    ];
    for (k, v) in resolved["envVariables"].as_object().into_iter().flatten() {
        vars.push((k.clone(), v.as_str().map_or_else(|| v.to_string(), String::from)));
    }
    let work = Work::Shell { shell, script: command.to_string(), env: vars, capture: Vec::new() };
    let carried: Vec<&str> = match &work {
        Work::Shell { script, env, .. } => {
            std::iter::once(script.as_str()).chain(env.iter().map(|(_, v)| v.as_str())).collect()
        }
        Work::Http { .. } => Vec::new(),
    };
    Ok(Task {
        execution_id: env.execution_id.to_string(),
        node_id: env.node_id.to_string(),
        stage: env.stage.to_string(),
        timeout_ms: None,
        secrets: env.masker.found_in(&carried),
        selectors: env.selectors.clone(),
        work,
    })
}

/// Run a step of a type pipewright does not run itself with the user's handler script: the step (type,
/// identifier, name, spec with its expressions resolved) is in `PIPEWRIGHT_STEP_JSON`; the script runs as a
/// ShellScript step does (process group, timeout, masking) and its output variables are captured the same way.
async fn handled(env: &StepEnv<'_>, step: &Step, spec: &serde_json::Value, h: &spec::StepHandler) -> Outcome {
    let resolved = match env.ctx.render_json(spec, "spec") {
        Ok(v) => v,
        Err(e) => return Outcome::failed(ErrorType::Unknown, e),
    };
    let t = step.step_type.name();
    let json = serde_json::json!({
        "type": t, "identifier": step.identifier.value, "name": step.name.value, "spec": resolved,
        "timeout": step.timeout.as_ref().map(|d| d.text.clone()),
    });
    env.log.line("pipewright", &format!("`{t}` runs with the handler from pipewright.yaml")).await;
    let mut vars = vec![
        ("PIPEWRIGHT_STEP_JSON".to_string(), json.to_string()),
        ("PIPEWRIGHT_STEP_TYPE".to_string(), t.to_string()),
    ];
    if let Some(d) = env.handlers_dir {
        vars.push(("PIPEWRIGHT_HANDLERS_DIR".to_string(), d.display().to_string()));
    }
    let captured: Vec<(&str, &str)> = h
        .output_variables
        .iter()
        .map(|o| (o.name.as_str(), o.value.as_ref().map_or(o.name.as_str(), |v| v.as_str())))
        .collect();
    shell(env, h.shell, h.script.value.clone(), vars, &captured).await
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

async fn shell(
    env: &StepEnv<'_>,
    sh: Shell,
    script: String,
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
    let mut all = vec![
        ("PIPEWRIGHT_EXECUTION_ID".to_string(), env.execution_id.to_string()),
        ("PIPEWRIGHT_STAGE".to_string(), env.stage.to_string()),
    ];
    all.extend(env.inputs.iter().cloned());
    // The step's own variables come last: they win over an input's of the same name.
    all.extend(vars);
    let work = Work::Shell {
        shell: match sh {
            Shell::Bash => ShellKind::Bash,
            Shell::Sh => ShellKind::Sh,
        },
        script,
        env: all,
        capture: captured.iter().map(|(n, v)| Capture { name: n.to_string(), var: v.to_string() }).collect(),
    };
    let report = run_task(env, work).await;
    let outputs: serde_json::Map<String, serde_json::Value> =
        report.outputs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    match report.end {
        End::Exited(0) => Outcome::ok(outputs),
        End::Exited(c) => {
            Outcome { outputs, ..Outcome::failed(ErrorType::Unknown, format!("the script exited with status {c}")) }
        }
        End::TimedOut => Outcome::failed(
            ErrorType::Timeout,
            format!("timed out after {}", env.timeout.map(|t| format!("{t:?}")).unwrap_or_default()),
        ),
        End::Aborted => Outcome::aborted(),
        End::NotStarted(m) | End::Unreachable(m) => Outcome::failed(ErrorType::Unknown, m),
        End::Lost(why) => Outcome::lost(why),
        End::Answered => Outcome::failed(ErrorType::Unknown, "the executor answered a script with an HTTP response"),
    }
}

async fn http(env: &StepEnv<'_>, h: &spec::HttpSpec) -> Outcome {
    let render = |s: &str| env.ctx.render(s);
    let (url, method) = match (render(&h.url), render(&h.method)) {
        (Ok(u), Ok(m)) => (u, m),
        (Err(e), _) | (_, Err(e)) => return Outcome::failed(ErrorType::Unknown, e),
    };
    let mut headers = Vec::new();
    for hd in &h.headers {
        match render(&hd.value) {
            Ok(v) => headers.push((hd.key.value.clone(), v)),
            Err(e) => return Outcome::failed(ErrorType::Unknown, e),
        }
    }
    let body = match h.request_body.as_ref().map(|b| render(b)).transpose() {
        Ok(b) => b,
        Err(e) => return Outcome::failed(ErrorType::Unknown, e),
    };
    let report = run_task(env, Work::Http { method: method.clone(), url: url.clone(), headers, body }).await;
    let (code, body) = match report.end {
        End::Answered => match report.response {
            Some(r) => (r.code, r.body),
            None => return Outcome::failed(ErrorType::Unknown, "the executor reported an answer without one"),
        },
        End::TimedOut => return Outcome::failed(ErrorType::Timeout, format!("{method} {url}: timed out")),
        End::Aborted => return Outcome::aborted(),
        End::Unreachable(m) => return Outcome::failed(ErrorType::Connectivity, m),
        End::NotStarted(m) => return Outcome::failed(ErrorType::Unknown, m),
        End::Lost(why) => return Outcome::lost(why),
        End::Exited(c) => {
            return Outcome::failed(ErrorType::Unknown, format!("the executor ran a request as a script ({c})"));
        }
    };
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

/// An approval's outputs: each approver input as given, or its default.
fn approver_outputs(
    a: &spec::ApprovalSpec,
    given: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
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
    outputs
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
    let deadline = env.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut abort = env.abort.clone();
    // Distinct approvers so far (`minimumCount`), and the approver inputs they gave.
    let mut approvers = std::collections::BTreeSet::new();
    let mut given = serde_json::Map::new();
    loop {
        match env.store.take_decision(env.execution_id, env.node_id, env.fence).await {
            Ok(Some(d)) => {
                let by = format!(
                    "{} by {}{}",
                    d.action,
                    d.by,
                    d.comment.clone().map(|c| format!(": {c}")).unwrap_or_default()
                );
                match d.action {
                    DecisionAction::Approve => {}
                    DecisionAction::Reject => {
                        env.log.line("pipewright", &by).await;
                        return Outcome::failed(ErrorType::ApprovalRejection, format!("rejected by {}", d.by));
                    }
                    // Not an answer to an approval: said, and the wait goes on.
                    other => {
                        let line = format!("`{other}` does not answer an approval; still waiting");
                        env.log.line("pipewright", &line).await;
                        continue;
                    }
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
                return Outcome::ok(approver_outputs(a, &given));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_git_clone_spec_says_where_which_ref_and_which_folder() {
        let connectors =
            std::collections::BTreeMap::from([("gh".to_string(), "https://github.example/acme".to_string())]);
        let cases = [
            (serde_json::json!({"repoName": "/srv/git/app.git"}), Ok(("/srv/git/app.git", "HEAD", "app"))),
            (
                serde_json::json!({"connectorRef": "gh", "repoName": "shop", "build": {"type": "branch", "spec": {"branch": "main"}}}),
                Ok(("https://github.example/acme/shop", "refs/heads/main", "shop")),
            ),
            (
                serde_json::json!({"connectorRef": "gh", "repoName": "shop", "cloneDirectory": "src", "build": {"type": "tag", "spec": {"tag": "v2"}}}),
                Ok(("https://github.example/acme/shop", "refs/tags/v2", "src")),
            ),
            (
                serde_json::json!({"connectorRef": "gh", "repoName": "shop", "build": {"type": "PR", "spec": {"number": 42}}}),
                Ok(("https://github.example/acme/shop", "refs/pull/42/head", "shop")),
            ),
            (
                serde_json::json!({"connectorRef": "gitlab", "repoName": "shop"}),
                Err("connector `gitlab` has no URL here"),
            ),
            (serde_json::json!({"repoName": "shop"}), Err("neither a URL nor a path")),
            (
                serde_json::json!({"repoName": "/r", "build": {"type": "branch", "spec": {}}}),
                Err("`build.spec.branch` is missing"),
            ),
        ];
        for (spec, want) in cases {
            let got = clone_of(&spec, &connectors);
            match (got, want) {
                (Ok(g), Ok((url, r, dir))) => {
                    assert_eq!((g.url.as_str(), g.git_ref.as_str(), g.dir.as_str()), (url, r, dir), "{spec}")
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{spec}: {e}"),
                (g, w) => panic!("{spec}: got {g:?}, want {w:?}"),
            }
        }
    }
}
