//! The browsing pages: organizations → projects → pipelines (only what the caller may view), the pipeline
//! page (stage graph, YAML editor with diagnostics at their line and column, *Advanced Options* → *Allow
//! selective stage(s) executions*), and the *Execution History* table with its filters and paging. Each
//! handler calls the service layer, which checks RBAC, and renders what it returns.

use super::graph;
use super::{Crumb, Web, WebResult, csrf_field, duration, ok, page, status_badge, time_el, urlencode, with_status};
use crate::App;
use crate::error::ApiError;
use crate::rbac::Permission;
use crate::rbac::{Resource, Scope};
use crate::service::{executions as exsvc, pipelines as plsvc, scopes as scsvc};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use std::sync::Arc;
use store::{Execution, Mode, Status};

/// Breadcrumbs down to a project.
pub async fn crumbs(app: &App, w: &Web, org: &str, project: Option<&str>) -> Vec<Crumb> {
    let mut c: Vec<Crumb> = vec![("Organizations".into(), Some("/".into()))];
    let org_name = org_name(app, w, org).await;
    c.push((org_name, Some(format!("/orgs/{org}"))));
    if let Some(project) = project {
        let name = scsvc::get_project(app, &w.p, org, project).await.map_or_else(|_| project.to_string(), |v| v.name);
        c.push((name, Some(format!("/orgs/{org}/projects/{project}"))));
    }
    c
}

/// An organization's display name, for anyone who sees into it (a project's members see its organization's
/// name without holding `org:view`).
async fn org_name(app: &App, w: &Web, org: &str) -> String {
    let orgs = scsvc::list_orgs(app, &w.p).await.unwrap_or_default();
    orgs.into_iter().find(|o| o.identifier == org).map_or_else(|| org.to_string(), |o| o.name)
}

/// The start page: the organizations the caller may view.
pub async fn home(State(app): State<Arc<App>>, w: Web) -> WebResult {
    let orgs = scsvc::list_orgs(&app, &w.p).await?;
    Ok(ok(page(
        &w,
        "Organizations",
        &[("Organizations".into(), None)],
        html! {
            h1 { "Organizations" }
            @if orgs.is_empty() { p { "You may not view any organization yet. Ask an administrator for a role." } }
            ul.cards {
                @for o in &orgs {
                    li { a href=(format!("/orgs/{}", o.identifier)) { strong { (o.name) } } span.id { (o.identifier) }
                        @if !o.description.is_empty() { p { (o.description) } } }
                }
            }
        },
    )))
}

/// An organization: its projects.
pub async fn org(State(app): State<Arc<App>>, w: Web, Path(org): Path<String>) -> WebResult {
    let projects = scsvc::list_projects(&app, &w.p, &org).await?;
    let name = org_name(&app, &w, &org).await;
    let mut c = crumbs(&app, &w, &org, None).await;
    if let Some(last) = c.last_mut() {
        last.1 = None;
    }
    Ok(ok(page(
        &w,
        &name,
        &c,
        html! {
            h1 { (name) }
            h2 { "Projects" }
            @if projects.is_empty() { p { "No projects you may view." } }
            ul.cards {
                @for pr in &projects {
                    li { a href=(format!("/orgs/{org}/projects/{}", pr.identifier)) { strong { (pr.name) } }
                        span.id { (pr.identifier) } @if !pr.description.is_empty() { p { (pr.description) } } }
                }
            }
        },
    )))
}

/// A project: its pipelines.
pub async fn project(State(app): State<Arc<App>>, w: Web, Path((org, project)): Path<(String, String)>) -> WebResult {
    let pr = scsvc::get_project(&app, &w.p, &org, &project).await?;
    let pipelines = match plsvc::list_pipelines(&app, &w.p, &org, &project).await {
        Ok(v) => v,
        Err(ApiError::Forbidden { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let c = crumbs(&app, &w, &org, Some(&project)).await;
    let base = format!("/orgs/{org}/projects/{project}");
    Ok(ok(page(
        &w,
        &pr.name,
        &c,
        html! {
            h1 { (pr.name) }
            p.links { a href=(format!("{base}/executions")) { "Execution History" } " · " a href=(format!("{base}/settings/input-sets")) { "Project Settings" } }
            h2 { "Pipelines" }
            @if pipelines.is_empty() { p { "No pipelines you may view. Create one with " code { "pipewright push" } " or the API." } }
            @else {
                table {
                    thead { tr { th scope="col" { "Pipeline" } th scope="col" { "Identifier" } th scope="col" { "Version" } th scope="col" { "Last changed" } } }
                    tbody {
                        @for pl in &pipelines {
                            tr {
                                td { a href=(format!("{base}/pipelines/{}", pl.identifier)) { (pl.name) } }
                                td { code { (pl.identifier) } }
                                td { (pl.version) }
                                td { (time_el(pl.updated_at)) }
                            }
                        }
                    }
                }
            }
        },
    )))
}

/// Stages grouped in running order (one entry per stage or parallel block), each `(identifier, name)`.
pub type Groups = Vec<Vec<(String, String)>>;

/// The stages of a pipeline document grouped in running order, and its dependency graph.
pub fn stage_graph(doc: &spec::Document) -> Option<(Groups, plan::Graph)> {
    let groups = doc
        .pipeline()?
        .stage_groups()
        .iter()
        .map(|g| g.iter().map(|s| (s.identifier.value.clone(), s.name.value.clone())).collect())
        .collect();
    Some((groups, launch::stage_graph(doc)?))
}

/// A validation problem of the YAML in the editor.
pub struct Problem {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    /// `error` or `warning`.
    pub severity: &'static str,
}

fn problems(diagnostics: &[spec::Diagnostic]) -> Vec<Problem> {
    diagnostics
        .iter()
        .map(|d| Problem {
            line: d.span.start.line,
            col: d.span.start.col,
            message: d.message.clone(),
            help: d.help.clone(),
            severity: if d.severity == spec::Severity::Error { "error" } else { "warning" },
        })
        .collect()
}

/// Everything the pipeline page shows.
pub struct PipelinePage<'a> {
    /// Organization.
    pub org: &'a str,
    /// Project.
    pub project: &'a str,
    /// The pipeline.
    pub view: &'a plsvc::PipelineView,
    /// The YAML in the editor (the stored one, or what was submitted).
    pub yaml: &'a str,
    /// Its problems.
    pub problems: Vec<Problem>,
    /// A message after a save.
    pub notice: Option<String>,
    /// The caller may run it.
    pub can_run: bool,
    /// The caller may edit it.
    pub can_edit: bool,
    /// The templates the pipeline may use.
    pub templates: &'a spec::template::Library,
}

/// Render the pipeline page (also used by the render benchmark).
pub fn render_pipeline(w: &Web, pp: &PipelinePage<'_>) -> Markup {
    let stored_yaml = pp.view.yaml.as_deref().unwrap_or_default();
    let stored = spec::parse_document_with("pipeline.yaml", stored_yaml.to_string(), Some(pp.templates));
    // The editor's text is parsed again only when it is not what is stored (a refused save).
    let edited = (pp.yaml != stored_yaml)
        .then(|| spec::parse_document_with("pipeline.yaml", pp.yaml.to_string(), Some(pp.templates)));
    let shown = edited.as_ref().filter(|d| d.pipeline().is_some()).unwrap_or(&stored);
    let allow = stored.pipeline().is_some_and(|p| p.allow_stage_executions);
    let base = format!("/orgs/{}/projects/{}/pipelines/{}", pp.org, pp.project, pp.view.identifier);
    let history = format!("/orgs/{}/projects/{}/executions?pipeline={}", pp.org, pp.project, pp.view.identifier);
    let lines: Vec<&str> = pp.yaml.lines().collect();
    html! {
        div.titlebar {
            h1 { (pp.view.name) }
            div.actions {
                @if pp.can_run { a.button.primary href=(format!("{base}/run")) { "Run" } }
                a.button href=(history) { "Execution History" }
            }
        }
        p.meta { "Identifier " code { (pp.view.identifier) } " · version " (pp.view.version) " · selective stage execution "
            strong { @if allow { "allowed" } @else { "not allowed" } } }
        @if let Some(n) = &pp.notice { p.notice role="status" { (n) } }
        section aria-labelledby="stages-h" {
            h2 id="stages-h" { "Stages" }
            @if let Some((groups, g)) = stage_graph(shown) {
                @let l = graph::layout(&groups, &g.edges);
                div.graph-scroll tabindex="0" aria-label="Stage graph (scrolls sideways)" {
                    (graph::svg(&l, &format!("Stages of {}", pp.view.name), &|_| graph::Look { status: None, href: None, note: None }))
                }
                p.legend { "Arrows show the order stages run in. Arcs above show what a stage depends on and what it carries: "
                    span.key.expression { "solid: read through an expression" } ", " span.key.propagation { "dashed: propagated with useFromStage" } "." }
                (stage_table(&groups, &g))
            }
        }
        section aria-labelledby="yaml-h" {
            h2 id="yaml-h" { "YAML" }
            @if !pp.problems.is_empty() {
                div.problems role="alert" {
                    p { strong { @if pp.problems.iter().any(|p| p.severity == "error") { "The YAML was not saved:" } @else { "Saved, with warnings:" } } }
                    ol {
                        @for pr in &pp.problems {
                            li class=(pr.severity) {
                                a href="#yaml" data-line=(pr.line) data-col=(pr.col) { "Line " (pr.line) ", column " (pr.col) }
                                ": " (pr.message)
                                @if let Some(h) = &pr.help { " — " (h) }
                                @if let Some(text) = lines.get(pr.line as usize - 1) {
                                    pre.excerpt { span.ln { (pr.line) } mark { (text) } }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action=(format!("{base}/yaml")) {
                (csrf_field(w))
                label for="yaml" { "Pipeline YAML" }
                textarea id="yaml" name="yaml" rows="24" spellcheck="false" readonly[!pp.can_edit] { (pp.yaml) }
                @if pp.can_edit { button type="submit" { "Save" } span.hint { " Saving creates a new version." } }
            }
        }
        @if pp.can_edit {
            details.advanced {
                summary { "Advanced Options" }
                form method="post" action=(format!("{base}/settings")) {
                    (csrf_field(w))
                    fieldset {
                        legend { "Stage Execution Settings" }
                        p id="allow-help" { "Allow selective stage(s) executions? With Yes, Run offers “Stages” and you can run chosen stages only." }
                        div.radios role="radiogroup" aria-describedby="allow-help" {
                            label { input type="radio" name="allowStageExecutions" value="true" checked[allow]; " Yes" }
                            label { input type="radio" name="allowStageExecutions" value="false" checked[!allow]; " No" }
                        }
                    }
                    button type="submit" { "Save" }
                }
            }
        }
    }
}

fn stage_table(groups: &[Vec<(String, String)>], g: &plan::Graph) -> Markup {
    html! {
        table.stages {
            caption { "Stages and their dependencies" }
            thead { tr { th scope="col" { "#" } th scope="col" { "Stage" } th scope="col" { "Depends on" } } }
            tbody {
                @for (i, grp) in groups.iter().enumerate() {
                    @for (id, name) in grp {
                        tr {
                            td { (i + 1) @if grp.len() > 1 { " (parallel)" } }
                            td { (name) " " code { (id) } }
                            td {
                                @let deps: Vec<&plan::Edge> = g.deps(id).collect();
                                @if deps.is_empty() { span.independent { "independent" } }
                                @for e in deps {
                                    div { span.dependent { "dependent" } " on " code { (e.depends_on) } ": " (graph::carries(e))
                                        @if e.via == plan::Via::Propagation { " (useFromStage)" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn pipeline_page(
    app: &App,
    w: &Web,
    org: &str,
    project: &str,
    pipeline: &str,
    yaml: Option<String>,
    problems: Vec<Problem>,
    notice: Option<String>,
) -> WebResult<Markup> {
    let view = plsvc::get_pipeline(app, &w.p, org, project, pipeline).await?;
    let scope = Scope::project(org, project);
    let r = Resource::new("pipeline", pipeline, scope);
    let can_run = app.may(&w.p, Permission::PIPELINE_EXECUTE, &r).await?;
    let can_edit = app.may(&w.p, Permission::PIPELINE_CREATE_EDIT, &r).await?;
    let mut c = crumbs(app, w, org, Some(project)).await;
    c.push((view.name.clone(), None));
    let yaml = yaml.unwrap_or_else(|| view.yaml.clone().unwrap_or_default());
    let templates = plsvc::templates(app, &Scope::project(org, project)).await?;
    let pp = PipelinePage {
        org,
        project,
        view: &view,
        yaml: &yaml,
        problems,
        notice,
        can_run,
        can_edit,
        templates: &templates,
    };
    Ok(page(w, &view.name, &c, render_pipeline(w, &pp)))
}

/// The pipeline page.
pub async fn pipeline(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> WebResult {
    let notice = q.get("saved").map(|v| format!("Saved as version {v}."));
    Ok(ok(pipeline_page(&app, &w, &org, &project, &pipeline, None, Vec::new(), notice).await?))
}

/// Save the YAML from the editor as a new version; problems are shown at their line and column.
pub async fn save_yaml(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    body: Bytes,
) -> WebResult {
    let f = super::form(&body);
    let yaml = f.iter().find(|(k, _)| k == "yaml").map(|(_, v)| v.replace("\r\n", "\n")).unwrap_or_default();
    match plsvc::put_pipeline(&app, &w.p, &org, &project, &pipeline, yaml.clone()).await {
        Ok((_, v)) => {
            Ok(Redirect::to(&format!("/orgs/{org}/projects/{project}/pipelines/{pipeline}?saved={}", v.version))
                .into_response())
        }
        Err(e @ (ApiError::Launch(launch::LaunchError::Invalid { .. }) | ApiError::BadRequest(_))) => {
            let problems = match e {
                // The diagnostics the save found, at their line and column.
                ApiError::Launch(launch::LaunchError::Invalid { diagnostics, .. }) => problems(&diagnostics),
                // Valid YAML the server still refused (another identifier, another project): say why.
                other => {
                    vec![Problem { line: 1, col: 1, message: other.to_string(), help: None, severity: "error" }]
                }
            };
            let m = pipeline_page(&app, &w, &org, &project, &pipeline, Some(yaml), problems, None).await?;
            Ok(with_status(StatusCode::UNPROCESSABLE_ENTITY, m))
        }
        Err(e) => Err(e.into()),
    }
}

/// *Advanced Options* → *Allow selective stage(s) executions*: writes `allowStageExecutions` into the YAML
/// (a new version).
pub async fn save_settings(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    body: Bytes,
) -> WebResult {
    let f = super::form(&body);
    let allow = match f.iter().find(|(k, _)| k == "allowStageExecutions").map(|(_, v)| v.as_str()) {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return Err(
                ApiError::BadRequest("choose Yes or No for “Allow selective stage(s) executions”".into()).into()
            );
        }
    };
    let scope = Scope::project(&org, &project);
    app.require(&w.p, Permission::PIPELINE_CREATE_EDIT, &Resource::new("pipeline", &pipeline, scope)).await?;
    let view = plsvc::get_pipeline(&app, &w.p, &org, &project, &pipeline).await?;
    let yaml = view.yaml.unwrap_or_default();
    let edited = spec::edit::set_pipeline_flag(&yaml, "allowStageExecutions", allow)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if edited == yaml {
        return Ok(Redirect::to(&format!("/orgs/{org}/projects/{project}/pipelines/{pipeline}")).into_response());
    }
    let (_, v) = plsvc::put_pipeline(&app, &w.p, &org, &project, &pipeline, edited).await?;
    Ok(Redirect::to(&format!("/orgs/{org}/projects/{project}/pipelines/{pipeline}?saved={}", v.version))
        .into_response())
}

/// History filters as the page's query string has them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct HistoryQuery {
    pipeline: Option<String>,
    status: Option<String>,
    mode: Option<String>,
    cursor: Option<String>,
}

const MODES: [(Mode, &str); 5] = [
    (Mode::Full, "Full"),
    (Mode::Selective, "Selected stages"),
    (Mode::Rerun, "Re-run"),
    (Mode::RerunStage, "Re-run Stage"),
    (Mode::Retry, "Retry"),
];

/// How a mode reads.
pub fn mode_label(m: Mode) -> &'static str {
    MODES.iter().find(|(x, _)| *x == m).map_or("", |(_, l)| l)
}

/// The rows of a history table (also used by the render benchmark).
pub fn history_table(items: &[Execution], show_pipeline: bool) -> Markup {
    html! {
        table.history {
            caption.visually-hidden { "Executions, newest first" }
            thead { tr {
                th scope="col" { "#" }
                @if show_pipeline { th scope="col" { "Pipeline" } }
                th scope="col" { "Status" } th scope="col" { "Mode" } th scope="col" { "Stages run" }
                th scope="col" { "Who" } th scope="col" { "Started" } th scope="col" { "Duration" }
            } }
            tbody {
                @for e in items {
                    tr {
                        td { a href=(format!("/executions/{}", e.id)) aria-label=(format!("Execution {} of {}", e.sequence_id, e.pipeline)) { (e.sequence_id) } }
                        @if show_pipeline { td { (e.pipeline) } }
                        td { (status_badge(e.status)) }
                        td { (mode_label(e.mode)) }
                        td { @if e.selected_stages.is_empty() { "All" } @else { (e.selected_stages.join(", ")) } }
                        td { (e.triggered_by) }
                        td { @match e.started_at { Some(t) => (time_el(t)), None => "—" } }
                        td { @match (e.started_at, e.ended_at) { (Some(s), Some(x)) => (duration(x - s)), (Some(_), None) => "running", _ => "—" } }
                    }
                }
            }
        }
    }
}

/// *Execution History* of a project (or, filtered, of one pipeline), newest first.
pub async fn history(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> WebResult {
    let empty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
    let lq = exsvc::ListQuery {
        pipeline: empty(&q.pipeline),
        status: empty(&q.status),
        mode: empty(&q.mode),
        cursor: empty(&q.cursor),
        limit: Some(50),
        ..Default::default()
    };
    let page_ = exsvc::history(&app, &w.p, &org, &project, &lq).await?;
    let pipelines = plsvc::list_pipelines(&app, &w.p, &org, &project).await.unwrap_or_default();
    let mut c = crumbs(&app, &w, &org, Some(&project)).await;
    if let Some(pl) = &lq.pipeline {
        let name = pipelines.iter().find(|v| &v.identifier == pl).map_or(pl.clone(), |v| v.name.clone());
        c.push((name, Some(format!("/orgs/{org}/projects/{project}/pipelines/{pl}"))));
    }
    c.push(("Execution History".into(), None));
    let base = format!("/orgs/{org}/projects/{project}/executions");
    let keep = |cursor: &str| {
        let mut qs = vec![];
        for (k, v) in [("pipeline", &lq.pipeline), ("status", &lq.status), ("mode", &lq.mode)] {
            if let Some(v) = v {
                qs.push(format!("{k}={}", urlencode(v)));
            }
        }
        if !cursor.is_empty() {
            qs.push(format!("cursor={}", urlencode(cursor)));
        }
        if qs.is_empty() { base.clone() } else { format!("{base}?{}", qs.join("&")) }
    };
    Ok(ok(page(
        &w,
        "Execution History",
        &c,
        html! {
            h1 { "Execution History" }
            form.filters method="get" action=(base) {
                label { "Pipeline "
                    select name="pipeline" {
                        option value="" { "All pipelines" }
                        @for pl in &pipelines { option value=(pl.identifier) selected[lq.pipeline.as_deref() == Some(&pl.identifier)] { (pl.name) } }
                    } }
                label { "Status "
                    select name="status" {
                        option value="" { "Any status" }
                        @for s in Status::ALL { option value=(s.as_str()) selected[lq.status.as_deref() == Some(s.as_str())] { (s.as_str()) } }
                    } }
                label { "Mode "
                    select name="mode" {
                        option value="" { "Any mode" }
                        @for (m, l) in MODES { option value=(m.as_str()) selected[lq.mode.as_deref() == Some(m.as_str())] { (l) } }
                    } }
                button type="submit" { "Apply filters" }
            }
            @if page_.items.is_empty() { p { "No executions match." } }
            @else { (history_table(&page_.items, lq.pipeline.is_none())) }
            nav.paging aria-label="Pages" {
                @if lq.cursor.is_some() { a href=(keep("")) { "First page" } }
                @if let Some(next) = &page_.next_cursor { a rel="next" href=(keep(next)) { "Next page" } }
            }
        },
    )))
}
