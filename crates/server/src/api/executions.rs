//! Executions over the JSON API: thin adapters over the use cases in `service::executions` (plan, run,
//! history, one execution, nodes, transitions, logs, abort, approvals, intervention, re-run, retry), and the
//! live logs as server-sent events resumable with `Last-Event-ID`, which only this transport has.

use crate::App;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Body, Path, Query};
use crate::rbac::Permission;
use crate::service::executions::{
    self as svc, ApprovalBody, ExecuteBody, InputBody, InterveneBody, ListQuery, LogQuery, RerunBody, RetryBody,
};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use store::Execution;

/// What a run would do, as `pipewright plan --output json` prints it; with inputs, they are checked too.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}/plan", tag = "executions", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path)), request_body = ExecuteBody, responses((status = 200, description = "The plan (satisfiable or not)"), (status = 422, description = "Bad selection or inputs")))]
pub async fn plan(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    Body(b): Body<ExecuteBody>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(svc::plan(&app, &p, &org, &project, &pipeline, b).await?))
}

/// Run a pipeline: every stage, or the selected ones.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}/execute", tag = "executions", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path)), request_body = ExecuteBody, responses((status = 201, description = "Started"), (status = 409, description = "Unmet dependencies"), (status = 422, description = "Bad selection or inputs")))]
pub async fn execute(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    Body(b): Body<ExecuteBody>,
) -> ApiResult<(StatusCode, Json<Execution>)> {
    Ok((StatusCode::CREATED, Json(svc::execute(&app, &p, &org, &project, &pipeline, b).await?)))
}

/// Execution history of a project, newest first, with cursor pagination.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/executions", tag = "executions", params(("org" = String, Path), ("project" = String, Path), ListQuery), responses((status = 200, description = "A page of executions and the cursor of the next")))]
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<svc::HistoryPage>> {
    Ok(Json(svc::history(&app, &p, &org, &project, &q).await?))
}

/// One execution: its record, nodes (stages, steps, attempts, outputs, provenance) and retry chain.
#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions", params(("id" = String, Path, description = "Execution id or unique prefix")), responses((status = 200, description = "The execution")))]
pub async fn get(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<svc::ExecutionView>> {
    Ok(Json(svc::execution(&app, &p, &id).await?))
}

/// The nodes of an execution, in creation order.
#[utoipa::path(get, path = "/api/v1/executions/{id}/nodes", tag = "executions", params(("id" = String, Path)), responses((status = 200, description = "Nodes")))]
pub async fn nodes(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<store::Node>>> {
    Ok(Json(svc::nodes(&app, &p, &id).await?))
}

/// The status transitions of an execution and its nodes.
#[utoipa::path(get, path = "/api/v1/executions/{id}/transitions", tag = "executions", params(("id" = String, Path)), responses((status = 200, description = "Transitions")))]
pub async fn transitions(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<store::Transition>>> {
    Ok(Json(svc::transitions(&app, &p, &id).await?))
}

/// Stored logs, paged, in the order they were written (each chunk: lines of `time\tstream\ttext`).
#[utoipa::path(get, path = "/api/v1/executions/{id}/logs", tag = "executions", params(("id" = String, Path), LogQuery), responses((status = 200, description = "Log chunks")))]
pub async fn logs(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<svc::LogPage>> {
    Ok(Json(svc::logs(&app, &p, &id, &q).await?))
}

/// Where a live stream resumes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this event id (as `Last-Event-ID` does).
    pub after: Option<String>,
}

struct Tail {
    /// This stream's slot among those open (per principal and in total), given back when it ends.
    _slot: crate::listen::Slot<String>,
    app: Arc<App>,
    id: String,
    transitions: i64,
    logs: i64,
    pending: VecDeque<Event>,
    done: bool,
}

impl Tail {
    fn event_id(&self) -> String {
        format!("{}:{}", self.transitions, self.logs)
    }

    /// Read what is new; false when nothing was.
    async fn fill(&mut self) -> ApiResult<bool> {
        let store = &self.app.store;
        let ts = store.transitions_after(&self.id, self.transitions, 500).await?;
        let chunks = store.logs_after(&self.id, self.logs, 100).await?;
        if ts.is_empty() && chunks.is_empty() {
            return Ok(false);
        }
        let nodes: HashMap<String, store::Node> =
            store.nodes(&self.id).await?.into_iter().map(|n| (n.id.clone(), n)).collect();
        // One time line: status changes and log chunks merged by time (a step's lines before its end), each
        // sequence keeping its own order, so both cursors only move forward.
        let mut ts: VecDeque<store::Transition> = ts.into();
        let mut chunks: VecDeque<store::LogChunk> = chunks.into();
        let chunk_at = |c: &store::LogChunk| c.data.split('\t').next().and_then(|s| s.parse().ok()).unwrap_or(i64::MAX);
        loop {
            let take_status = match (ts.front(), chunks.front()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                // A node ends after its own lines (they are stored before its end is), whatever the clocks say;
                // otherwise a node starting comes before its first line, and any other change after lines of
                // the same instant.
                (Some(t), Some(_))
                    if t.to != "Running"
                        && t.node_id.as_ref().is_some_and(|n| chunks.iter().any(|c| &c.node_id == n)) =>
                {
                    false
                }
                (Some(t), Some(c)) => (t.at, u8::from(t.to != "Running") * 2) < (chunk_at(c), 1),
            };
            if take_status {
                let Some(t) = ts.pop_front() else { break };
                self.transitions = t.id;
                let ev = match t.node_id.as_ref().and_then(|n| nodes.get(n)) {
                    Some(n) => {
                        let mut n = n.clone();
                        n.status = t.to.parse().unwrap_or(n.status);
                        // What the change is, classified as the engine classifies its own events.
                        let from = t.from.as_deref().and_then(|f| f.parse().ok());
                        let kind = engine::Event::of_change(n.clone(), from).map(|e| e.kind());
                        Event::default().event("node").json_data(
                            serde_json::json!({"node": n, "from": t.from, "to": t.to, "reason": t.reason, "kind": kind}),
                        )
                    }
                    None => Event::default()
                        .event("execution")
                        .json_data(serde_json::json!({"from": t.from, "to": t.to, "reason": t.reason})),
                };
                if let Ok(ev) = ev {
                    self.pending.push_back(ev.id(self.event_id()));
                }
            } else {
                let Some(c) = chunks.pop_front() else { break };
                self.logs = c.cursor;
                let lines: Vec<serde_json::Value> = c
                    .data
                    .lines()
                    .map(|l| {
                        let mut parts = l.splitn(3, '\t');
                        let at = parts.next().and_then(|s| s.parse::<i64>().ok());
                        let stream = parts.next().unwrap_or_default();
                        serde_json::json!({"at": at, "stream": stream, "text": parts.next().unwrap_or_default()})
                    })
                    .collect();
                let path = nodes.get(&c.node_id).map(|n| n.path.clone()).unwrap_or_default();
                if let Ok(ev) = Event::default()
                    .event("log")
                    .json_data(serde_json::json!({"node_id": c.node_id, "path": path, "seq": c.seq, "lines": lines}))
                {
                    self.pending.push_back(ev.id(self.event_id()));
                }
            }
        }
        Ok(true)
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Tail)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done {
                return None;
            }
            // Registered before reading, so news written meanwhile wakes us.
            let news = self.app.runner.news(&self.id).unwrap_or_default();
            let notified = news.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // The end state is read before the data: nothing written before the end is missed.
            let exec = match self.app.store.execution(&self.id).await {
                Ok(e) => e,
                Err(_) => return None,
            };
            match self.fill().await {
                Ok(true) => continue,
                Ok(false) if exec.status.is_final() => {
                    self.done = true;
                    let ev = Event::default()
                        .event("end")
                        .json_data(serde_json::json!({"status": exec.status, "failure": exec.failure}))
                        .ok()?;
                    return Some((Ok(ev.id(self.event_id())), self));
                }
                Ok(false) => {}
                Err(_) => return None,
            }
            let app = self.app.clone();
            tokio::select! {
                _ = &mut notified => {}
                // Logs are stored in chunks (at least every second) and other servers write too: look again.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = app.runner.stopped() => {
                    self.done = true;
                    let ev = Event::default().event("shutdown").data("the server is shutting down; reconnect with Last-Event-ID");
                    return Some((Ok(ev.id(self.event_id())), self));
                }
            }
        }
    }
}

/// Live logs and status changes as server-sent events (`node`, `execution`, `log`, then `end`), resumable
/// with `Last-Event-ID`.
#[utoipa::path(get, path = "/api/v1/executions/{id}/logs/stream", tag = "executions", params(("id" = String, Path), StreamQuery), responses((status = 200, description = "text/event-stream", content_type = "text/event-stream")))]
pub async fn stream(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    live(app, &p, &id, &headers, q).await
}

/// The live stream of an execution the caller may view (the API and the web pages both serve it).
pub(crate) async fn live(
    app: Arc<App>,
    p: &Principal,
    id: &str,
    headers: &HeaderMap,
    q: StreamQuery,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>> {
    let (e, _) = svc::execution_for(&app, p, id, Permission::EXECUTION_VIEW).await?;
    let slot = app.streams.take(p.display()).ok_or_else(|| {
        ApiError::TooManyRequests(format!(
            "too many live-log streams are open (at most {} per user, {} in all); close one, or page with GET …/logs",
            app.config.max_streams_per_user, app.config.max_streams
        ))
    })?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(String::from).or(q.after);
    let (transitions, logs) = match resume {
        Some(r) => {
            let (t, l) = r
                .split_once(':')
                .ok_or_else(|| ApiError::BadRequest("malformed Last-Event-ID; expected `T:L`".into()))?;
            (
                t.parse().map_err(|_| ApiError::BadRequest("malformed Last-Event-ID".into()))?,
                l.parse().map_err(|_| ApiError::BadRequest("malformed Last-Event-ID".into()))?,
            )
        }
        None => (0, 0),
    };
    let tail =
        Tail { _slot: slot, app: app.clone(), id: e.id, transitions, logs, pending: VecDeque::new(), done: false };
    Ok(Sse::new(futures::stream::unfold(tail, Tail::next)).keep_alive(KeepAlive::default()))
}

/// Abort a running execution.
#[utoipa::path(post, path = "/api/v1/executions/{id}/abort", tag = "executions", params(("id" = String, Path)), responses((status = 202, description = "Abort requested"), (status = 409, description = "Already ended")))]
pub async fn abort(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let e = svc::abort(&app, &p, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"execution_id": e.id, "aborted": true}))))
}

/// Approve a waiting HarnessApproval step.
#[utoipa::path(post, path = "/api/v1/executions/{id}/approve", tag = "executions", params(("id" = String, Path)), request_body = ApprovalBody, responses((status = 200, description = "Recorded"), (status = 409, description = "Nothing waits")))]
pub async fn approve(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<ApprovalBody>,
) -> ApiResult<Json<svc::Decided>> {
    Ok(Json(svc::approval(&app, &p, &id, true, b).await?))
}

/// Reject a waiting HarnessApproval step.
#[utoipa::path(post, path = "/api/v1/executions/{id}/reject", tag = "executions", params(("id" = String, Path)), request_body = ApprovalBody, responses((status = 200, description = "Recorded"), (status = 409, description = "Nothing waits")))]
pub async fn reject(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<ApprovalBody>,
) -> ApiResult<Json<svc::Decided>> {
    Ok(Json(svc::approval(&app, &p, &id, false, b).await?))
}

/// Decide for a step waiting in InterventionWaiting.
#[utoipa::path(post, path = "/api/v1/executions/{id}/intervene", tag = "executions", params(("id" = String, Path)), request_body = InterveneBody, responses((status = 200, description = "Recorded"), (status = 409, description = "Nothing waits")))]
pub async fn intervene(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<InterveneBody>,
) -> ApiResult<Json<svc::Decided>> {
    Ok(Json(svc::intervene(&app, &p, &id, b).await?))
}

/// Give values for the runtime inputs an execution waits for (`<+input>.executionInput()`), checked as at start.
#[utoipa::path(post, path = "/api/v1/executions/{id}/input", tag = "executions", params(("id" = String, Path)), request_body = InputBody, responses((status = 200, description = "Recorded", body = serde_json::Value), (status = 409, description = "The execution ended"), (status = 422, description = "Not what it waits for, or a value breaks its constraints")))]
pub async fn input(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<InputBody>,
) -> ApiResult<Json<launch::Given>> {
    Ok(Json(svc::give_inputs(&app, &p, &id, b).await?))
}

/// Run an execution again (the YAML it ran, its inputs and selection), or only some of its stages.
#[utoipa::path(post, path = "/api/v1/executions/{id}/rerun", tag = "executions", params(("id" = String, Path)), request_body = RerunBody, responses((status = 201, description = "Started")))]
pub async fn rerun(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<RerunBody>,
) -> ApiResult<(StatusCode, Json<Execution>)> {
    Ok((StatusCode::CREATED, Json(svc::rerun(&app, &p, &id, b).await?)))
}

/// Resume a failed or aborted execution from its failed stage, reusing what succeeded.
#[utoipa::path(post, path = "/api/v1/executions/{id}/retry", tag = "executions", params(("id" = String, Path)), request_body = RetryBody, responses((status = 201, description = "Started"), (status = 422, description = "Nothing to retry")))]
pub async fn retry(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Body(b): Body<RetryBody>,
) -> ApiResult<(StatusCode, Json<Execution>)> {
    Ok((StatusCode::CREATED, Json(svc::retry(&app, &p, &id, b).await?)))
}
