//! The execution view: the stage graph coloured by status (and saying it in words), per stage its steps with
//! attempts, durations, failures, output variables and logs; reused stages marked and linked to the execution
//! they came from, with every reused or supplied value and its source; the re-run / retry chain; and the
//! actions the caller may take — *Re-run*, *Re-run Stage*, *Retry*, *Abort*, *Approve* / *Reject*, the
//! ManualIntervention choices. While it runs, the page follows the live event stream (the same one the API
//! serves) and updates statuses and logs in place.

use super::graph;
use super::pages::{crumbs, mode_label, stage_graph};
use super::{Web, WebResult, csrf_field, duration, ok, page, status_badge, time_el};
use crate::App;
use crate::error::ApiError;
use crate::rbac::Permission;
use crate::rbac::{Resource, Scope};
use crate::service::executions as exsvc;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use std::collections::HashMap;
use std::sync::Arc;
use store::{Execution, Node, NodeKind, Status};

/// How an intervention choice reads on its button.
fn action_label(a: engine::InterventionAction) -> &'static str {
    match a {
        engine::InterventionAction::Retry => "Retry",
        engine::InterventionAction::Ignore => "Ignore",
        engine::InterventionAction::Abort => "Abort",
        engine::InterventionAction::MarkSuccess => "Mark as Success",
        engine::InterventionAction::MarkFailure => "Mark as Failure",
    }
}

/// What the caller may do with an execution.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowed {
    /// Re-run, Re-run Stage, Retry, Approve/Reject, interventions.
    pub execute: bool,
    /// Abort.
    pub abort: bool,
}

/// Where an input came from, in words: `given`, `default`, `input set nightly`.
fn source_text(v: &serde_json::Value) -> String {
    let words = |k: &str| match k {
        "Given" => "given".to_string(),
        "Default" => "default".to_string(),
        "InputSet" => "input set".to_string(),
        other => other.replace('_', " ").to_lowercase(),
    };
    match v {
        serde_json::Value::String(s) => words(s),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{} {}", words(k), v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn stage_nodes(nodes: &[Node]) -> HashMap<&str, &Node> {
    // The latest node per stage identifier (a looping stage shows its last iteration's status here).
    let mut m: HashMap<&str, &Node> = HashMap::new();
    for n in nodes.iter().filter(|n| n.kind == NodeKind::Stage) {
        m.insert(n.identifier.as_str(), n);
    }
    m
}

fn took(n: &Node) -> Markup {
    html! {
        @match (n.started_at, n.ended_at) {
            (Some(s), Some(e)) => (duration(e - s)),
            (Some(_), None) => "running",
            _ => "—",
        }
    }
}

fn outputs(n: &Node) -> Markup {
    html! {
        @if !n.outputs.is_empty() {
            dl.outputs {
                @for (k, v) in &n.outputs {
                    @if k == "childExecutionId" && let Some(child) = v.as_str() {
                        dt { "Chained pipeline" } dd { a href=(format!("/executions/{child}")) { "child execution " code { (child) } } }
                    } @else {
                        dt { code { (k) } } dd { code { (v.as_str().map_or_else(|| v.to_string(), String::from)) } }
                    }
                }
            }
        }
    }
}

fn log_lines(chunks: &[&str]) -> Markup {
    html! {
        @for c in chunks {
            @for line in c.lines() {
                @let mut parts = line.splitn(3, '\t');
                @let _at = parts.next();
                @let stream = parts.next().unwrap_or_default();
                @let text = parts.next().unwrap_or_default();
                span class=(if stream == "stderr" { "line err" } else { "line" }) { (text) "\n" }
            }
        }
    }
}

/// Render the execution view.
#[allow(clippy::too_many_arguments)]
pub fn render(
    w: &Web,
    v: &exsvc::ExecutionView,
    doc: Option<&spec::Document>,
    logs: &HashMap<String, Vec<String>>,
    resume: &str,
    allowed: Allowed,
) -> Markup {
    let e = &v.execution;
    let stages = stage_nodes(&v.nodes);
    let children =
        |parent: &str| -> Vec<&Node> { v.nodes.iter().filter(|n| n.parent_id.as_deref() == Some(parent)).collect() };
    let final_ = e.status.is_final();
    // Re-run Stage is offered for the pipeline's own stages (not a pipeline rollback's node).
    let stage_ids: Option<Vec<String>> =
        doc.and_then(|d| d.pipeline()).map(|p| p.all_stages().iter().map(|s| s.identifier.value.clone()).collect());
    let rerunnable = |n: &Node| stage_ids.as_ref().is_none_or(|ids| ids.contains(&n.identifier));
    let waiting: Vec<&Node> =
        v.nodes.iter().filter(|n| matches!(n.status, Status::ApprovalWaiting | Status::InterventionWaiting)).collect();
    let inputs = e.inputs.as_object().cloned().unwrap_or_default();
    // Runtime inputs the run asks for now (`.executionInput()`), by the node asking.
    let mut asked: Vec<(String, String, Vec<engine::asked::Waiting>)> = Vec::new();
    for w in engine::asked::waiting(&e.inputs) {
        match asked.iter_mut().find(|(id, _, _)| *id == w.node_id) {
            Some((_, _, ws)) => ws.push(w),
            None => {
                let title = v
                    .nodes
                    .iter()
                    .find(|n| n.id == w.node_id)
                    .map_or_else(|| "the pipeline".to_string(), |n| n.name.clone());
                asked.push((w.node_id.clone(), title, vec![w]));
            }
        }
    }
    let deps = inputs.get("__dependencies").and_then(|d| d.as_array()).cloned().unwrap_or_default();
    let retryable = matches!(e.status, Status::Failed | Status::Aborted | Status::Expired | Status::ApprovalRejected);
    let name = doc.and_then(|d| d.pipeline()).map_or(e.pipeline.as_str(), |p| p.name.value.as_str());
    // A stage with a step waiting for a person says so on the graph.
    let waiting_in = |stage: &Node| {
        let mut todo = vec![stage.id.as_str()];
        while let Some(id) = todo.pop() {
            for n in v.nodes.iter().filter(|n| n.parent_id.as_deref() == Some(id)) {
                match n.status {
                    Status::ApprovalWaiting => return Some("waiting for approval"),
                    Status::InterventionWaiting => return Some("waiting for a decision"),
                    Status::InputWaiting => return Some("waiting for inputs"),
                    _ => todo.push(n.id.as_str()),
                }
            }
        }
        None
    };
    html! {
        div #execution data-execution=(e.id) data-resume=(resume) data-final=(final_) {
            div.titlebar {
                h1 { "Execution #" (e.sequence_id) " of " (name) " " span #exec-status { (status_badge(e.status)) } }
                div.actions {
                    @if allowed.execute && final_ {
                        a.button href=(format!("/executions/{}/rerun", e.id)) { "Re-run" }
                        a.button href=(format!("/executions/{}/rerun?scope=stages", e.id)) { "Re-run Stage" }
                    }
                    @if allowed.abort && !final_ {
                        form method="post" action=(format!("/executions/{}/abort", e.id)) {
                            (csrf_field(w)) button.danger type="submit" { "Abort" }
                        }
                    }
                }
            }
            p.meta {
                (mode_label(e.mode)) " · started by " strong { (e.triggered_by) }
                @if let Some(t) = e.started_at { " · " (time_el(t)) }
                @if let (Some(s), Some(x)) = (e.started_at, e.ended_at) { " · took " (duration(x - s)) }
                " · stages: " @if e.selected_stages.is_empty() { "all" } @else { (e.selected_stages.join(", ")) }
                " · " a href=(format!("/orgs/{}/projects/{}/pipelines/{}", e.org, e.project, e.pipeline)) { "pipeline" }
                " · " a href=(format!("/orgs/{}/projects/{}/executions?pipeline={}", e.org, e.project, e.pipeline)) { "Execution History" }
            }
            @if let Some((parent, stage)) = launch::chained_from(e) {
                p.meta { "Chained pipeline, run by stage " code { (stage) } " of " a href=(format!("/executions/{parent}")) { "execution " code { (parent) } } }
            }
            @if let Some(f) = &e.failure { p.error { (f) } }
            @if allowed.execute && final_ && retryable {
                form.retry method="post" action=(format!("/executions/{}/retry", e.id)) {
                    (csrf_field(w))
                    label { "Retry from stage "
                        select name="stage" {
                            option value="" { "the failed stage" }
                            @for (id, n) in &stages { @if !matches!(n.status, Status::Success | Status::Skipped) { option value=(id) { (id) } } }
                        }
                    }
                    label { input type="checkbox" name="only_failed" value="true"; " Only failed stages of a parallel block" }
                    button type="submit" { "Retry" }
                }
            }
            @for n in &waiting {
                section.waiting aria-labelledby=(format!("wait-{}", n.id)) data-node=(n.id) {
                    @if n.status == Status::ApprovalWaiting {
                        h2 id=(format!("wait-{}", n.id)) { "Approval waiting: " (n.name) }
                        @if allowed.execute {
                            form method="post" action=(format!("/executions/{}/approval", e.id)) {
                                (csrf_field(w))
                                input type="hidden" name="node" value=(n.path);
                                label for=(format!("comment-{}", n.id)) { "Comment" }
                                input id=(format!("comment-{}", n.id)) type="text" name="comment";
                                button.primary type="submit" name="decision" value="approve" { "Approve" }
                                button.danger type="submit" name="decision" value="reject" { "Reject" }
                            }
                        }
                    } @else {
                        h2 id=(format!("wait-{}", n.id)) { "Manual intervention: " (n.name) " failed" }
                        @if let Some(f) = &n.failure { p.error { (f) } }
                        @if allowed.execute {
                            form method="post" action=(format!("/executions/{}/intervene", e.id)) {
                                (csrf_field(w))
                                input type="hidden" name="node" value=(n.path);
                                @for a in engine::InterventionAction::ALL {
                                    button type="submit" name="action" value=(a.as_str()) { (action_label(a)) }
                                }
                            }
                        }
                    }
                }
            }
            @if !final_ {
                @for (node_id, title, ws) in &asked {
                    section.waiting.asked aria-labelledby=(format!("ask-{node_id}")) data-node=(node_id) {
                        h2 id=(format!("ask-{node_id}")) { "Runtime inputs needed: " (title) }
                        p.small { "The run waits here until these are given; values are checked as at start." }
                        @if allowed.execute {
                            form.ask method="post" action=(format!("/executions/{}/input", e.id)) {
                                (csrf_field(w))
                                @for (i, a) in ws.iter().enumerate() {
                                    @let id = format!("ask-{node_id}-{i}");
                                    div.field {
                                        label for=(id) { code { (a.path) } }
                                        @if let Some(allowed) = &a.input.allowed_values {
                                            select id=(id) name=(format!("input.{}", a.path)) required {
                                                @if a.input.default.is_none() { option value="" { "Choose…" } }
                                                @for o in allowed { option value=(o) selected[a.input.default.as_deref() == Some(o.as_str())] { (o) } }
                                            }
                                        } @else {
                                            input id=(id) type="text" name=(format!("input.{}", a.path)) required
                                                value=(a.input.default.clone().unwrap_or_default())
                                                pattern=[a.input.regex.as_ref().map(|r| format!("(?:{r})"))]
                                                aria-describedby=[a.input.regex.as_ref().map(|_| format!("{id}-hint"))];
                                            @if let Some(r) = &a.input.regex { span.small id=(format!("{id}-hint")) { "must match " code { (r) } } }
                                        }
                                    }
                                }
                                button.primary type="submit" { "Submit" }
                            }
                        } @else {
                            p { "Waiting for someone allowed to run this pipeline to give: "
                                @for (i, a) in ws.iter().enumerate() { @if i > 0 { ", " } code { (a.path) } } }
                        }
                    }
                }
            }
            @if let Some((groups, g)) = doc.and_then(stage_graph) {
                @let l = graph::layout(&groups, &g.edges);
                div.graph-scroll tabindex="0" aria-label="Stage graph (scrolls sideways)" {
                    (graph::svg(&l, &format!("Stages of execution #{}", e.sequence_id), &|id| {
                        let n = stages.get(id);
                        graph::Look {
                            status: n.map(|n| (n.status.to_string(), format!("st-{}", n.status))),
                            href: Some(format!("#stage-{id}")),
                            note: n.and_then(|n| {
                                n.reused_from.as_ref().map(|_| "reused".to_string()).or_else(|| waiting_in(n).map(String::from))
                            }),
                        }
                    }))
                }
            }
            @if v.chain.len() > 1 {
                section aria-labelledby="chain-h" {
                    h2 #chain-h { "Re-run and retry chain" }
                    ol.chain {
                        @for c in &v.chain {
                            li { @if c.id == e.id { strong aria-current="page" { "#" (c.sequence_id) } } @else { a href=(format!("/executions/{}", c.id)) { "#" (c.sequence_id) } }
                                " " (mode_label(c.mode)) " " (status_badge(c.status)) }
                        }
                    }
                }
            }
            @if !deps.is_empty() {
                section aria-labelledby="prov-h" {
                    h2 #prov-h { "Values from stages that did not run" }
                    table {
                        thead { tr { th scope="col" { "Path" } th scope="col" { "Came from" } } }
                        tbody {
                            @for d in &deps {
                                tr { td { code { (d["path"].as_str().unwrap_or_default()) } }
                                    td { @match d["source"]["execution_id"].as_str() {
                                        Some(src) => { "execution " a.reused-link href=(format!("/executions/{src}")) { (src) } ", stage " code { (d["source"]["stage"].as_str().unwrap_or_default()) } },
                                        None => { "given when it started: " code { (d["value"].as_str().map_or_else(|| d["value"].to_string(), String::from)) } },
                                    } } }
                            }
                        }
                    }
                }
            }
            @let plain: Vec<(&String, &serde_json::Value)> = inputs.iter().filter(|(k, _)| *k != "__dependencies" && *k != launch::CHAINED_FROM).collect();
            @if !plain.is_empty() {
                section aria-labelledby="inputs-h" {
                    h2 #inputs-h { "Runtime inputs" }
                    table {
                        thead { tr { th scope="col" { "Input" } th scope="col" { "Value" } th scope="col" { "Source" } } }
                        tbody { @for (k, v) in plain { tr { td { code { (k) } }
                            td { @match v["value"].as_str() {
                                Some(x) => code { (x) },
                                None if v["value"].is_object() || v["value"].is_array() => code { (v["value"].to_string()) },
                                None => em { "asked while it runs" },
                            } }
                            td { @if v["source"] == engine::asked::SOURCE {
                                    @match (v["by"].as_str(), v["node"].as_str(), v["owner"].as_str()) {
                                        (Some(by), Some(at), _) => { "given by " (by) " at " code { (at) } },
                                        (None, Some(at), _) => { "waiting at " code { (at) } },
                                        (_, _, owner) => { "asked when the run reaches " code { (owner.unwrap_or("its stage")) } },
                                    }
                                } @else { (source_text(&v["source"])) } } } } }
                    }
                }
            }
            section aria-labelledby="stages-h" {
                h2 #stages-h { "Stages" }
                // Each stage once: its iterations are shown inside it, labelled by their values.
                @for n in v.nodes.iter().filter(|n| n.kind == NodeKind::Stage && n.parent_id.is_none()) {
                    section.stage-detail id=(format!("stage-{}", n.identifier)) data-node=(n.id) {
                        h3 { (n.name) " " span.node-status { (status_badge(n.status)) } " " span.small { (took(n)) }
                            @if allowed.execute && final_ && rerunnable(n) { " " a.small href=(format!("/executions/{}/rerun?scope=stages&stage={}", e.id, n.identifier)) { "Re-run Stage" } } }
                        @if let Some(src) = &n.reused_from { p.reused { "Reused from execution " a.reused-link href=(format!("/executions/{src}")) { (src) } } }
                        @if let (Some(r), None) = (&n.skip_reason, &n.reused_from) { p.small { "Skipped: " (r) } }
                        @if let Some(f) = &n.failure { p.error { (f) } }
                        (outputs(n))
                        (steps(&children, &n.id, logs))
                    }
                }
                div #live-nodes {}
            }
        }
    }
}

fn steps<'a>(children: &dyn Fn(&str) -> Vec<&'a Node>, parent: &str, logs: &HashMap<String, Vec<String>>) -> Markup {
    let kids = children(parent);
    html! {
        @if !kids.is_empty() {
            ul.steps {
                @for s in kids {
                    li.step data-node=(s.id) {
                        div.step-head {
                            strong { (s.name) } " " span.node-status { (status_badge(s.status)) }
                            @if s.attempt > 1 { " " span.small { "attempt " (s.attempt) } }
                            " " span.small { (took(s)) }
                        }
                        @if let Some(f) = &s.failure { p.error { (f) } }
                        @if let Some(r) = &s.skip_reason { p.small { "Skipped: " (r) } }
                        (outputs(s))
                        @if s.kind == NodeKind::Step && (logs.contains_key(&s.id) || matches!(s.status, Status::Running | Status::Queued)) {
                            @let chunks: Vec<&str> = logs.get(&s.id).map(|v| v.iter().map(String::as_str).collect()).unwrap_or_default();
                            details.log open[!s.status.is_final() || s.status == Status::Failed] {
                                summary { "Log of " (s.name) }
                                pre data-log-node=(s.id) tabindex="0" { (log_lines(&chunks)) }
                            }
                        }
                        (steps(children, &s.id, logs))
                    }
                }
            }
        }
    }
}

async fn allowed(app: &App, w: &Web, e: &Execution) -> Result<Allowed, ApiError> {
    let r = Resource::new("pipeline", &e.pipeline, Scope::project(&e.org, &e.project));
    Ok(Allowed {
        execute: app.may(&w.p, Permission::PIPELINE_EXECUTE, &r).await?,
        abort: app.may(&w.p, Permission::EXECUTION_ABORT, &r).await?,
    })
}

/// The execution page.
pub async fn view(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>) -> WebResult {
    // Where the live stream resumes: status changes after the last one read *before* the nodes are (a change
    // in between is sent again, harmlessly), log chunks after the last one shown.
    let transitions = exsvc::transitions(&app, &w.p, &id).await?;
    let v = exsvc::execution(&app, &w.p, &id).await?;
    let e = &v.execution;
    let mut logs: HashMap<String, Vec<String>> = HashMap::new();
    let mut after = 0;
    loop {
        let page_ = exsvc::logs(&app, &w.p, &e.id, &exsvc::LogQuery { after: Some(after), limit: Some(1000) }).await?;
        for c in page_.items {
            after = c.cursor;
            logs.entry(c.node_id).or_default().push(c.data);
        }
        match page_.next_cursor {
            Some(n) if n > 0 => after = n,
            _ => break,
        }
    }
    let resume = format!("{}:{after}", transitions.last().map_or(0, |t| t.id));
    let doc = launch::recorded_document(app.store.as_ref(), e).await.ok();
    let allowed = allowed(&app, &w, e).await?;
    let name = doc.as_ref().and_then(|d| d.pipeline()).map_or_else(|| e.pipeline.clone(), |p| p.name.value.clone());
    let mut c = crumbs(&app, &w, &e.org, Some(&e.project)).await;
    c.push((name.clone(), Some(format!("/orgs/{}/projects/{}/pipelines/{}", e.org, e.project, e.pipeline))));
    c.push((format!("Execution #{}", e.sequence_id), None));
    Ok(ok(page(
        &w,
        &format!("Execution #{} of {}", e.sequence_id, name),
        &c,
        render(&w, &v, doc.as_ref(), &logs, &resume, allowed),
    )))
}

/// The live stream for the page: the API's event stream, authenticated by the session.
pub async fn events(
    State(app): State<Arc<App>>,
    w: Web,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<crate::api::executions::StreamQuery>,
) -> Response {
    match crate::api::executions::live(app, &w.p, &id, &headers, q).await {
        Ok(s) => s.into_response(),
        Err(e) => e.into_response(),
    }
}

fn field(f: &[(String, String)], k: &str) -> Option<String> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
}

/// *Retry*: from the failed stage (or the chosen one), only the failed stages of a parallel block if asked.
pub async fn retry(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>, body: Bytes) -> WebResult {
    let f = super::form(&body);
    let b = exsvc::RetryBody {
        stage: field(&f, "stage"),
        only_failed: field(&f, "only_failed").as_deref() == Some("true"),
        inputs: Default::default(),
    };
    let e = exsvc::retry(&app, &w.p, &id, b).await?;
    Ok(Redirect::to(&format!("/executions/{}", e.id)).into_response())
}

/// *Abort*.
pub async fn abort(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>) -> WebResult {
    let e = exsvc::abort(&app, &w.p, &id).await?;
    Ok(Redirect::to(&format!("/executions/{}", e.id)).into_response())
}

/// *Approve* / *Reject*.
pub async fn approval(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>, body: Bytes) -> WebResult {
    let f = super::form(&body);
    let approve = match field(&f, "decision").as_deref() {
        Some("approve") => true,
        Some("reject") => false,
        _ => return Err(ApiError::BadRequest("choose Approve or Reject".into()).into()),
    };
    let b = exsvc::ApprovalBody { node: field(&f, "node"), comment: field(&f, "comment"), inputs: Default::default() };
    let d = exsvc::approval(&app, &w.p, &id, approve, b).await?;
    Ok(Redirect::to(&format!("/executions/{}", d.execution_id)).into_response())
}

/// *Submit* of the runtime inputs a running execution asks for.
pub async fn input(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>, body: Bytes) -> WebResult {
    let f = super::form(&body);
    let inputs = f.iter().filter_map(|(k, v)| Some((k.strip_prefix("input.")?.to_string(), v.clone()))).collect();
    let g = exsvc::give_inputs(&app, &w.p, &id, exsvc::InputBody { inputs }).await?;
    Ok(Redirect::to(&format!("/executions/{}", g.execution_id)).into_response())
}

/// A ManualIntervention choice.
pub async fn intervene(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>, body: Bytes) -> WebResult {
    let f = super::form(&body);
    let action: exsvc::InterventionAction = field(&f, "action")
        .unwrap_or_default()
        .parse()
        .map_err(|_| ApiError::BadRequest("choose one of the intervention actions".into()))?;
    let d = exsvc::intervene(&app, &w.p, &id, exsvc::InterveneBody { node: field(&f, "node"), action }).await?;
    Ok(Redirect::to(&format!("/executions/{}", d.execution_id)).into_response())
}
