//! The CLI as a client of `pipewright serve` (`--server URL --token-file FILE`): a [`Store`] over the REST API so
//! `history`, `show`, `logs`, `abort`, `approve`, `reject` and `intervene` print exactly what they print
//! locally, and `run`, `plan`, `rerun` and `retry` that send the request to the server and then follow the
//! execution's live event stream with the same display and summary as a local run.

use super::run::{RunArgs, finish, observer, supplied_inputs};
use crate::{Output, StateArgs};
use anyhow::{Context, bail};
use async_trait::async_trait;
use engine::Event;
use reqwest::{Method, StatusCode};
use std::collections::BTreeMap;
use std::process::ExitCode;
use store::{Decision, Execution, ExecutionQuery, History, LogChunk, Node, Requests, Status, StoreError, Transition};

/// A server connection.
#[derive(Clone)]
pub struct Remote {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
    org: String,
    project: String,
}

/// Why a request failed: the HTTP status and the server's message (and body).
#[derive(Debug)]
pub struct Failure {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl Failure {
    fn message(&self) -> String {
        let m = self.body["message"].as_str().map(String::from).unwrap_or_else(|| self.body.to_string());
        match self.status {
            StatusCode::UNAUTHORIZED => format!("{m} (give a token with --token-file FILE or PIPEWRIGHT_TOKEN)"),
            StatusCode::FORBIDDEN => format!("forbidden: {m}"),
            _ => m,
        }
    }
}

fn enc(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

impl Remote {
    /// The server the arguments name, if any.
    pub fn from_state(state: &StateArgs) -> anyhow::Result<Option<Remote>> {
        let Some(server) = &state.server else { return Ok(None) };
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server `{server}`: expected a URL such as http://127.0.0.1:8080");
        }
        let client = reqwest::Client::builder().build().context("cannot create the HTTP client")?;
        Ok(Some(Remote {
            base,
            token: state.token.get().map(String::from),
            client,
            org: state.org.clone(),
            project: state.project.clone(),
        }))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<Result<serde_json::Value, Failure>> {
        let resp = r.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        Ok(if status.is_success() { Ok(body) } else { Err(Failure { status, body }) })
    }

    /// A JSON request whose failure is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.send(r).await?.map_err(|f| anyhow::anyhow!(f.message()))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> store::Result<T> {
        match self.send(self.request(Method::GET, path)).await {
            Ok(Ok(v)) => serde_json::from_value(v)
                .map_err(|e| StoreError::Remote(format!("unexpected answer from the server: {e}"))),
            Ok(Err(f)) if f.status == StatusCode::NOT_FOUND => Err(StoreError::NotFound(f.message())),
            Ok(Err(f)) => Err(StoreError::Remote(f.message())),
            Err(e) => Err(StoreError::Remote(format!("{e:#}"))),
        }
    }

    /// Follow an execution's live events with the display of a local run, then print its summary.
    async fn follow(&self, exec: &Execution, output: Output) -> anyhow::Result<ExitCode> {
        if output == Output::Text {
            println!("execution {} (#{} of {})", exec.id, exec.sequence_id, exec.pipeline);
        }
        let ctrl_c = {
            let me = self.clone();
            let id = exec.id.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("\naborting {id}…");
                    let _ = me.call(Method::POST, &format!("/api/v1/executions/{id}/abort"), None).await;
                }
            })
        };
        let display = observer(output);
        let mut last_id: Option<String> = None;
        let mut ended = false;
        // A dropped connection resumes where it stopped (Last-Event-ID).
        for _ in 0..100 {
            let mut r = self.request(Method::GET, &format!("/api/v1/executions/{}/logs/stream", exec.id));
            if let Some(id) = &last_id {
                r = r.header("last-event-id", id);
            }
            let Ok(mut resp) = r.send().await else { continue };
            if !resp.status().is_success() {
                bail!("cannot follow execution {}: {}", exec.id, resp.status());
            }
            let mut buf = String::new();
            let (mut event, mut data, mut id) = (String::new(), String::new(), None::<String>);
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(nl) = buf.find('\n') {
                    let line = buf[..nl].trim_end_matches('\r').to_string();
                    buf.drain(..=nl);
                    if line.is_empty() {
                        if id.is_some() {
                            last_id = id.take();
                        }
                        match event.as_str() {
                            "node" => {
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data)
                                    && let Ok(n) = serde_json::from_value::<Node>(v["node"].clone())
                                    && let Some(ev) =
                                        Event::of_change(n, v["from"].as_str().and_then(|f| f.parse().ok()))
                                {
                                    display.event(&ev);
                                }
                            }
                            "log" => {
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
                                    let path = v["path"].as_str().unwrap_or("?").to_string();
                                    for l in v["lines"].as_array().into_iter().flatten() {
                                        let stream = if l["stream"] == "stderr" { "stderr" } else { "stdout" };
                                        display.event(&Event::Log {
                                            path: path.clone(),
                                            stream,
                                            line: l["text"].as_str().unwrap_or_default().to_string(),
                                        });
                                    }
                                }
                            }
                            "end" => ended = true,
                            _ => {}
                        }
                        event.clear();
                        data.clear();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    }
                }
            }
            if ended {
                break;
            }
        }
        ctrl_c.abort();
        let store = RemoteStore(self.clone());
        let exec = store.execution(&exec.id).await?;
        let nodes = store.nodes(&exec.id).await?;
        display.event(&Event::Finished(exec.status));
        let status = if exec.status.is_final() { exec.status } else { Status::Failed };
        finish(&exec, &nodes, status, output)
    }

    /// Print a refused launch as the local CLI does; give its exit status.
    fn refused(&self, f: Failure) -> anyhow::Result<ExitCode> {
        match f.body["error"].as_str() {
            Some("unsatisfiable") => {
                eprint!("{}", launch::explain_unmet(&f.body));
                eprintln!("nothing was run (`pipewright plan` shows the whole plan)");
                Ok(ExitCode::from(3))
            }
            Some("bad_selection") => {
                eprintln!("error: {}", f.body["message"].as_str().unwrap_or_default());
                Ok(ExitCode::from(2))
            }
            Some("invalid_inputs") => {
                eprintln!("error: runtime inputs are missing or invalid; nothing runs:");
                for p in f.body["problems"].as_array().into_iter().flatten() {
                    eprintln!(
                        "  {}: {}",
                        p["path"].as_str().unwrap_or_default(),
                        p["message"].as_str().unwrap_or_default()
                    );
                }
                eprintln!("give them with --input PATH=VALUE or --inputs-file FILE");
                Ok(ExitCode::from(1))
            }
            Some("invalid_yaml") => {
                eprintln!("error: {}", f.body["message"].as_str().unwrap_or_default());
                for d in f.body["diagnostics"].as_array().into_iter().flatten() {
                    eprintln!("  {}:{}: {}", d["line"], d["column"], d["message"].as_str().unwrap_or_default());
                }
                Ok(ExitCode::from(1))
            }
            _ => Err(anyhow::anyhow!(f.message())),
        }
    }

    fn inputs_json(inputs: BTreeMap<String, (String, spec::inputs::InputSource)>) -> serde_json::Value {
        serde_json::Value::Object(inputs.into_iter().map(|(k, (v, _))| (k, serde_json::Value::String(v))).collect())
    }

    async fn local_pipeline(
        &self,
        file: &std::path::Path,
        templates: Option<&std::path::Path>,
    ) -> anyhow::Result<Result<(spec::Document, String, String, String), ExitCode>> {
        // Templates found locally are resolved here: the server is sent the pipeline they make.
        let doc = match super::plan::load(file, templates)? {
            Ok(d) => d,
            Err(code) => return Ok(Err(code)),
        };
        let p = doc.pipeline().context("not a pipeline")?;
        let (org, project) = launch::scope_of(p);
        let id = p.identifier.value.clone();
        Ok(Ok((doc, org, project, id)))
    }

    /// `run --server`: save the pipeline on the server, start it, follow it.
    pub async fn run(&self, a: &RunArgs) -> anyhow::Result<ExitCode> {
        if a.steps.given() {
            bail!("{STEP_FLAGS}");
        }
        if a.entities.is_some() || a.secrets_file.is_some() || a.settings.is_some() {
            bail!(
                "--entities, --secrets-file and --settings are local: with --server, store services, environments, infrastructure definitions and secrets on the server (POST /api/v1/orgs/ORG/projects/PROJECT/{{services,environments,infrastructures,secrets}}); step handlers are the server's (`pipewright serve --settings FILE`)"
            );
        }
        let (doc, org, project, id) = match self.local_pipeline(&a.file, a.templates.as_deref()).await? {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
        let base = format!("/api/v1/orgs/{}/projects/{}/pipelines/{}", enc(&org), enc(&project), enc(&id));
        let put = self
            .request(Method::PUT, &base)
            .header("content-type", "application/yaml")
            .body(doc.run_source().to_string());
        if let Err(f) = self.send(put).await? {
            return self.refused(f);
        }
        let sel = a.selection.to_launch()?;
        let body = serde_json::json!({
            "stage_identifiers": sel.stages, "inputs": Self::inputs_json(supplied_inputs(&a.inputs, &a.inputs_files)?),
            "expressions": sel.exprs, "with_deps": sel.with_deps, "from_execution": sel.from_execution,
        });
        match self.send(self.request(Method::POST, &format!("{base}/execute")).json(&body)).await? {
            Ok(v) => {
                let exec: Execution = serde_json::from_value(v).context("unexpected answer from the server")?;
                self.follow(&exec, a.output).await
            }
            Err(f) => self.refused(f),
        }
    }

    /// `plan --server`: the server plans the local file (nothing is saved).
    pub async fn plan(&self, a: &super::plan::PlanArgs) -> anyhow::Result<ExitCode> {
        let (doc, org, project, id) = match self.local_pipeline(&a.file, a.templates.as_deref()).await? {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
        let sel = a.selection.to_launch()?;
        let body = serde_json::json!({
            "stage_identifiers": sel.stages, "inputs": Self::inputs_json(supplied_inputs(&a.inputs, &a.inputs_files)?),
            "expressions": sel.exprs, "with_deps": sel.with_deps, "from_execution": sel.from_execution,
            "pipeline_yaml": doc.run_source(),
        });
        let path = format!("/api/v1/orgs/{}/projects/{}/pipelines/{}/plan", enc(&org), enc(&project), enc(&id));
        match self.send(self.request(Method::POST, &path).json(&body)).await? {
            Ok(plan) => {
                super::plan::show(&plan, a.output)?;
                Ok(if plan["satisfiable"] == true { ExitCode::SUCCESS } else { ExitCode::from(3) })
            }
            Err(f) => self.refused(f),
        }
    }

    /// `rerun --server`.
    pub async fn rerun(&self, a: &super::rerun::RerunArgs) -> anyhow::Result<ExitCode> {
        let c = &a.common;
        if c.steps.given() {
            bail!("{STEP_FLAGS}");
        }
        if c.latest || c.entities.is_some() || c.secrets_file.is_some() {
            bail!(
                "--latest, --entities and --secrets-file are local; with --server, update the pipeline and entities on the server"
            );
        }
        let body = serde_json::json!({
            "stage_identifiers": a.stages, "inputs": Self::inputs_json(supplied_inputs(&c.inputs, &c.inputs_files)?),
        });
        self.derive(&c.execution, "rerun", body, c.output).await
    }

    /// `retry --server`.
    pub async fn retry(&self, a: &super::rerun::RetryArgs) -> anyhow::Result<ExitCode> {
        let c = &a.common;
        if c.steps.given() {
            bail!("{STEP_FLAGS}");
        }
        if c.latest || c.entities.is_some() || c.secrets_file.is_some() {
            bail!(
                "--latest, --entities and --secrets-file are local; with --server, update the pipeline and entities on the server"
            );
        }
        let body = serde_json::json!({
            "stage": a.stage, "only_failed": a.only_failed,
            "inputs": Self::inputs_json(supplied_inputs(&c.inputs, &c.inputs_files)?),
        });
        self.derive(&c.execution, "retry", body, c.output).await
    }

    async fn derive(
        &self,
        execution: &str,
        what: &str,
        body: serde_json::Value,
        output: Output,
    ) -> anyhow::Result<ExitCode> {
        let path = format!("/api/v1/executions/{}/{what}", enc(execution));
        match self.send(self.request(Method::POST, &path).json(&body)).await? {
            Ok(v) => {
                let exec: Execution = serde_json::from_value(v).context("unexpected answer from the server")?;
                self.follow(&exec, output).await
            }
            Err(f) if f.body["error"] == "bad_request" => bail!("{}", f.message()),
            Err(f) => self.refused(f),
        }
    }
}

/// The store of a server, for the CLI's read commands and decisions.
pub struct RemoteStore(pub Remote);

#[async_trait]
impl History for RemoteStore {
    async fn pipeline_yaml(&self, org: &str, project: &str, identifier: &str, version: i64) -> store::Result<String> {
        let v: serde_json::Value = self
            .0
            .get(&format!(
                "/api/v1/orgs/{}/projects/{}/pipelines/{}/versions/{version}",
                enc(org),
                enc(project),
                enc(identifier)
            ))
            .await?;
        Ok(v["yaml"].as_str().unwrap_or_default().to_string())
    }
    async fn execution(&self, id: &str) -> store::Result<Execution> {
        let v: serde_json::Value = self.0.get(&format!("/api/v1/executions/{}", enc(id))).await?;
        serde_json::from_value(v["execution"].clone()).map_err(|e| StoreError::Remote(e.to_string()))
    }
    async fn executions(&self, q: &ExecutionQuery) -> store::Result<Vec<Execution>> {
        if let Some(root) = &q.chain_of {
            let v: serde_json::Value = self.0.get(&format!("/api/v1/executions/{}", enc(root))).await?;
            let mut chain: Vec<Execution> =
                serde_json::from_value(v["chain"].clone()).map_err(|e| StoreError::Remote(e.to_string()))?;
            chain.reverse();
            return Ok(chain);
        }
        let org = q.org.clone().unwrap_or_else(|| self.0.org.clone());
        let project = q.project.clone().unwrap_or_else(|| self.0.project.clone());
        let mut path = format!(
            "/api/v1/orgs/{}/projects/{}/executions?limit={}",
            enc(&org),
            enc(&project),
            q.limit.unwrap_or(50).clamp(1, 200)
        );
        if let Some(p) = &q.pipeline {
            path.push_str(&format!("&pipeline={}", enc(p)));
        }
        if let Some(s) = q.status {
            path.push_str(&format!("&status={s}"));
        }
        let v: serde_json::Value = self.0.get(&path).await?;
        serde_json::from_value(v["items"].clone()).map_err(|e| StoreError::Remote(e.to_string()))
    }
    async fn nodes(&self, execution_id: &str) -> store::Result<Vec<Node>> {
        self.0.get(&format!("/api/v1/executions/{}/nodes", enc(execution_id))).await
    }
    async fn logs(&self, execution_id: &str, node_ids: Option<&[String]>) -> store::Result<Vec<LogChunk>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let v: serde_json::Value =
                self.0.get(&format!("/api/v1/executions/{}/logs?after={after}&limit=1000", enc(execution_id))).await?;
            let page: Vec<LogChunk> =
                serde_json::from_value(v["items"].clone()).map_err(|e| StoreError::Remote(e.to_string()))?;
            out.extend(page.into_iter().filter(|c| node_ids.is_none_or(|ids| ids.contains(&c.node_id))));
            match v["next_cursor"].as_i64() {
                Some(n) => after = n,
                None => break,
            }
        }
        // The local order: by node, then chunk.
        let nodes = self.nodes(execution_id).await?;
        let pos: std::collections::HashMap<&str, i64> = nodes.iter().map(|n| (n.id.as_str(), n.position)).collect();
        out.sort_by_key(|c| (pos.get(c.node_id.as_str()).copied().unwrap_or(i64::MAX), c.seq));
        Ok(out)
    }
    async fn transitions(&self, execution_id: &str) -> store::Result<Vec<Transition>> {
        self.0.get(&format!("/api/v1/executions/{}/transitions", enc(execution_id))).await
    }
}

#[async_trait]
impl Requests for RemoteStore {
    async fn request_abort(&self, id: &str) -> store::Result<bool> {
        match self.0.send(self.0.request(Method::POST, &format!("/api/v1/executions/{}/abort", enc(id)))).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(f)) if f.status == StatusCode::CONFLICT => Ok(false),
            Ok(Err(f)) if f.status == StatusCode::NOT_FOUND => Err(StoreError::NotFound(f.message())),
            Ok(Err(f)) => Err(StoreError::Remote(f.message())),
            Err(e) => Err(StoreError::Remote(format!("{e:#}"))),
        }
    }
    async fn put_decision(&self, d: &Decision) -> store::Result<()> {
        let (what, body) = match d.action.kind() {
            store::DecisionKind::Approval => {
                (d.action.as_str(), serde_json::json!({"node": d.node_id, "comment": d.comment, "inputs": d.inputs}))
            }
            store::DecisionKind::Input => ("input", serde_json::json!({"inputs": d.inputs})),
            store::DecisionKind::Intervention => {
                ("intervene", serde_json::json!({"node": d.node_id, "action": d.action.as_str()}))
            }
        };
        let r =
            self.0.request(Method::POST, &format!("/api/v1/executions/{}/{what}", enc(&d.execution_id))).json(&body);
        match self.0.send(r).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(f)) => Err(StoreError::Remote(f.message())),
            Err(e) => Err(StoreError::Remote(format!("{e:#}"))),
        }
    }
}

/// Why step flags are refused with `--server`.
const STEP_FLAGS: &str = "--step-isolation, --step-user and --step-read-path (or PIPEWRIGHT_STEP_*) apply to steps run on this machine; with --server, steps run under the server's own settings (pipewright serve --step-…)";
