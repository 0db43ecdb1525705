//! The *Run Pipeline* dialog and the *Re-run* dialog. The user chooses *All Stages* or *Stages* (one checkbox
//! per stage, marked independent or dependent); for every dependency of a ticked stage on a stage that does
//! not run, the dialog says exactly what is needed and offers: also run that stage, reuse it from an earlier
//! execution, or give the values. The runtime inputs form shows only what the chosen stages need. A plan
//! panel — the server's own plan, re-rendered as the choice changes — says per stage *run*, *skip* or *reuse*
//! and why, before *Run Pipeline* is pressed. [`Choice`] turns the form into the service layer's request.

use super::pages::{crumbs, stage_graph};
use super::{Web, WebError, WebResult, csrf_field, launch_message, ok, page};
use crate::App;
use crate::error::ApiError;
use crate::rbac::Permission;
use crate::rbac::{Resource, Scope};
use crate::service::{executions as exsvc, pipelines as plsvc};
use axum::body::Bytes;
use axum::extract::{Path, State};
use maud::{Markup, html};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use store::{ExecutionQuery, Status};

/// What the dialog's form says.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Choice {
    /// *All Stages* (or *Stages*).
    pub all: bool,
    /// The ticked stages.
    pub stages: Vec<String>,
    /// Per stage that a ticked stage needs: `run`, `reuse` or `values`.
    pub needs: BTreeMap<String, String>,
    /// The execution to reuse from.
    pub from_execution: Option<String>,
    /// Values given for expression paths.
    pub exprs: BTreeMap<String, String>,
    /// Runtime inputs by path.
    pub inputs: BTreeMap<String, String>,
    /// What the dialog filled each input with (a default, or an input set's value): an input still holding it
    /// is not sent as given, so input sets and defaults apply on the server as they would without the form.
    pub auto: BTreeMap<String, String>,
    /// Input sets to apply.
    pub input_sets: Vec<String>,
}

impl Choice {
    /// Read the form.
    pub fn parse(fields: &[(String, String)]) -> Choice {
        let mut c = Choice { all: true, ..Choice::default() };
        for (k, v) in fields {
            match k.as_str() {
                "scope" => c.all = v != "stages",
                "stage" if !v.is_empty() && !c.stages.contains(v) => c.stages.push(v.clone()),
                "from_execution" if !v.is_empty() => c.from_execution = Some(v.clone()),
                "input_set" if !v.is_empty() && !c.input_sets.contains(v) => c.input_sets.push(v.clone()),
                _ => {
                    if let Some(stage) = k.strip_prefix("need.") {
                        c.needs.insert(stage.to_string(), v.clone());
                    } else if let Some(path) = k.strip_prefix("expr.") {
                        c.exprs.insert(path.to_string(), v.clone());
                    } else if let Some(path) = k.strip_prefix("input.") {
                        c.inputs.insert(path.to_string(), v.clone());
                    } else if let Some(path) = k.strip_prefix("auto.") {
                        c.auto.insert(path.to_string(), v.clone());
                    }
                }
            }
        }
        c
    }

    /// The stages that run at the user's choice: the ticked ones and those a need says to run too (with
    /// *All Stages*, none: everything runs).
    pub fn run_set(&self, g: &plan::Graph) -> Vec<String> {
        if self.all {
            return Vec::new();
        }
        let mut set: BTreeSet<String> = self.stages.iter().cloned().collect();
        // A stage run to meet a need may need others in turn: follow the choices until nothing changes.
        loop {
            let add: Vec<String> = g
                .edges
                .iter()
                .filter(|e| set.contains(&e.stage) && !set.contains(&e.depends_on))
                .filter(|e| self.needs.get(&e.depends_on).map(String::as_str) == Some("run"))
                .map(|e| e.depends_on.clone())
                .collect();
            if add.is_empty() {
                break;
            }
            set.extend(add);
        }
        g.stages.iter().filter(|s| set.contains(*s)).cloned().collect()
    }

    /// The needs to show: every dependency of a stage that runs on a stage the user did not tick — including
    /// those met by running that stage too, so the choice stays on screen and can be changed.
    pub fn needs<'g>(&self, g: &'g plan::Graph) -> Vec<&'g plan::Edge> {
        if self.all {
            return Vec::new();
        }
        let run: BTreeSet<String> = self.run_set(g).into_iter().collect();
        let ticked: BTreeSet<&str> = self.stages.iter().map(String::as_str).collect();
        g.edges.iter().filter(|e| run.contains(&e.stage) && !ticked.contains(e.depends_on.as_str())).collect()
    }

    /// *Stages* with none ticked is not a choice (it would run everything).
    pub fn check(&self) -> Result<(), ApiError> {
        if !self.all && self.stages.is_empty() {
            return Err(ApiError::BadRequest("tick at least one stage, or choose All Stages".into()));
        }
        Ok(())
    }

    /// The inputs the user gave: typed in, not left as the dialog filled them.
    pub fn given(&self) -> BTreeMap<String, String> {
        self.inputs
            .iter()
            .filter(|(k, v)| !v.is_empty() && self.auto.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The request to the service layer.
    pub fn body(&self, g: &plan::Graph) -> exsvc::ExecuteBody {
        let run = self.run_set(g);
        let chosen = |e: &plan::Edge| self.needs.get(&e.depends_on).map(String::as_str);
        let open: Vec<&plan::Edge> = self.needs(g).into_iter().filter(|e| !run.contains(&e.depends_on)).collect();
        let reuse = open.iter().any(|e| chosen(e) == Some("reuse"));
        let exprs = open
            .iter()
            .filter(|e| chosen(e) == Some("values") && e.via == plan::Via::Expression)
            .flat_map(|e| e.paths.iter())
            .filter_map(|p| self.exprs.get(p).map(|v| (p.clone(), v.clone())))
            .collect();
        exsvc::ExecuteBody {
            stage_identifiers: run,
            inputs: self.given(),
            input_set_refs: self.input_sets.clone(),
            expressions: exprs,
            with_deps: false,
            from_execution: if reuse { self.from_execution.clone() } else { None },
            pipeline_yaml: None,
        }
    }
}

/// What the dialog is for.
pub enum Target<'a> {
    /// Run a pipeline.
    Pipeline { org: &'a str, project: &'a str, id: &'a str },
    /// Re-run an execution (`ran`: the stages it selected; empty for all).
    Rerun { id: &'a str, ran: &'a [String] },
}

impl Target<'_> {
    fn action(&self) -> String {
        match self {
            Target::Pipeline { org, project, id } => format!("/orgs/{org}/projects/{project}/pipelines/{id}/run"),
            Target::Rerun { id, .. } => format!("/executions/{id}/rerun"),
        }
    }
    fn plan_url(&self) -> String {
        match self {
            Target::Pipeline { org, project, id } => format!("/orgs/{org}/projects/{project}/pipelines/{id}/plan"),
            Target::Rerun { id, .. } => format!("/executions/{id}/rerun/plan"),
        }
    }
}

/// Everything the dialog shows.
pub struct Dialog<'a> {
    /// Run or re-run.
    pub target: Target<'a>,
    /// The pipeline as the dialog needs it.
    pub cx: &'a Context,
    /// The form's state.
    pub choice: &'a Choice,
    /// The plan (as the API gives it), or why there is none.
    pub plan: Result<serde_json::Value, String>,
}

/// The whole dialog (also used by the render benchmark).
pub fn render_dialog(w: &Web, d: &Dialog<'_>) -> Markup {
    let rerun = matches!(d.target, Target::Rerun { .. });
    let ticked: BTreeSet<&str> = d.choice.stages.iter().map(String::as_str).collect();
    html! {
        form #run-form.run-dialog method="post" action=(d.target.action()) data-plan-url=(d.target.plan_url()) novalidate {
            (csrf_field(w))
            fieldset.scope {
                legend { "Stages" }
                label { input type="radio" name="scope" value="all" checked[d.choice.all || !d.cx.allow];
                    @match &d.target {
                        Target::Rerun { ran, .. } if !ran.is_empty() => { " The same stages (Re-run): " (ran.join(", ")) },
                        Target::Rerun { .. } => { " All Stages (Re-run)" },
                        Target::Pipeline { .. } => { " All Stages" },
                    } }
                label { input type="radio" name="scope" value="stages" checked[!d.choice.all && d.cx.allow] disabled[!d.cx.allow]
                    aria-describedby=[(!d.cx.allow).then_some("stages-off")];
                    @if rerun { " Stages (Re-run Stage)" } @else { " Stages" } }
                @if !d.cx.allow {
                    p #stages-off.hint { "“Stages” is off: this pipeline does not allow selective stage executions. Turn it on in the pipeline's "
                        em { "Advanced Options → Allow selective stage(s) executions" } "." }
                }
                fieldset #stage-list.stage-list hidden[d.choice.all || !d.cx.allow] {
                    legend.visually-hidden { "Choose the stages to run" }
                    @for (i, grp) in d.cx.groups.iter().enumerate() {
                        @for (id, name) in grp {
                            @let deps: Vec<&plan::Edge> = d.cx.graph.deps(id).collect();
                            div.stage-choice {
                                label {
                                    input type="checkbox" name="stage" value=(id) checked[ticked.contains(id.as_str())];
                                    " " (name)
                                }
                                " "
                                @if deps.is_empty() { span.independent { "independent" } }
                                @else { span.dependent title=(deps.iter().map(|e| e.depends_on.as_str()).collect::<Vec<_>>().join(", ")) { "dependent" }
                                    span.small { " on " (deps.iter().map(|e| e.depends_on.as_str()).collect::<Vec<_>>().join(", ")) } }
                                @if grp.len() > 1 { span.small { " · parallel block " (i + 1) } }
                            }
                        }
                    }
                }
            }
            @if !d.cx.input_sets.is_empty() {
                fieldset {
                    legend { "Input Sets" }
                    @for (id, name) in &d.cx.input_sets {
                        label { input type="checkbox" name="input_set" value=(id) checked[d.choice.input_sets.contains(id)]; " " (name) }
                    }
                }
            }
            div #dynamic aria-live="polite" { (render_dynamic(d)) }
            div.buttons {
                button.primary type="submit" { @if rerun { "Re-run" } @else { "Run Pipeline" } }
            }
        }
    }
}

/// The part of the dialog that follows the choice: needs, runtime inputs, plan.
pub fn render_dynamic(d: &Dialog<'_>) -> Markup {
    let needs = d.choice.needs(&d.cx.graph);
    let mut by_dep: BTreeMap<&str, Vec<&plan::Edge>> = BTreeMap::new();
    for e in &needs {
        by_dep.entry(e.depends_on.as_str()).or_default().push(e);
    }
    let rerun = matches!(d.target, Target::Rerun { .. });
    let plan = d.plan.as_ref().ok();
    html! {
        @if !by_dep.is_empty() && !rerun {
            section.needs aria-labelledby="needs-h" {
                h3 #needs-h { "What the chosen stages need" }
                @for (dep, edges) in &by_dep {
                    @let choice = d.choice.needs.get(*dep).map(String::as_str).unwrap_or("");
                    @let only_propagation = edges.iter().all(|e| e.via == plan::Via::Propagation);
                    fieldset.need data-need=(dep) {
                        legend { "Stage " code { (dep) } " is needed" }
                        ul {
                            @for e in edges {
                                li { code { (e.stage) } @if e.via == plan::Via::Propagation { " propagates (useFromStage) " } @else { " reads " }
                                    @for (i, p) in e.paths.iter().enumerate() { @if i > 0 { ", " } code { (p) } } }
                            }
                        }
                        div.radios {
                            label { input type="radio" name=(format!("need.{dep}")) value="run" checked[choice == "run"]; " Also run " code { (dep) } }
                            label { input type="radio" name=(format!("need.{dep}")) value="reuse" checked[choice == "reuse"] disabled[d.cx.sources.is_empty()];
                                " Reuse it from an earlier execution" @if d.cx.sources.is_empty() { span.small { " (no successful execution yet)" } } }
                            @if !only_propagation {
                                label { input type="radio" name=(format!("need.{dep}")) value="values" checked[choice == "values"]; " Give the values" }
                            }
                        }
                        @if choice == "values" {
                            @for e in edges.iter().filter(|e| e.via == plan::Via::Expression) {
                                @for p in &e.paths {
                                    @let id = format!("expr-{}", p.replace('.', "-"));
                                    div.field {
                                        label for=(id) { code { (p) } }
                                        input id=(id) type="text" name=(format!("expr.{p}")) required value=(d.choice.exprs.get(p).map_or("", String::as_str));
                                    }
                                }
                            }
                        }
                    }
                }
                @if by_dep.keys().any(|k| d.choice.needs.get(*k).map(String::as_str) == Some("reuse")) {
                    div.field {
                        label for="from_execution" { "Reuse from execution" }
                        select id="from_execution" name="from_execution" {
                            @for (id, seq, at) in &d.cx.sources {
                                option value=(id) selected[d.choice.from_execution.as_deref() == Some(id.as_str())] {
                                    "#" (seq) " · " (super::when(*at)) " · " (id)
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(plan) = plan {
            @let inputs = plan["required_inputs"].as_array().cloned().unwrap_or_default();
            section.inputs aria-labelledby="inputs-h" {
                h3 #inputs-h { "Runtime inputs" }
                @if inputs.is_empty() { p.small { "The stages that run need no runtime inputs." } }
                @for f in &inputs {
                    @let path = f["path"].as_str().unwrap_or_default();
                    @let id = format!("input-{}", path.replace('.', "-"));
                    @let filled = d.cx.preset.get(path).cloned().or_else(|| f["default"].as_str().map(String::from)).unwrap_or_default();
                    @let typed = d.choice.inputs.get(path).filter(|v| d.choice.auto.get(path) != Some(*v));
                    @let value = typed.cloned().unwrap_or_else(|| filled.clone());
                    @let from = if typed.is_some() { "" } else if d.cx.preset.contains_key(path) { if rerun { "as it ran" } else { "from the input set" } } else if f["default"].is_string() { "default" } else { "" };
                    @let problem = plan["input_problems"][path].as_str();
                    @if f["execution_input"] == true {
                        // Asked while the run goes, when it reaches the field's stage or step: nothing to give now.
                        div.field.asked-later {
                            strong { (path.rsplit('.').next().unwrap_or(path)) } " " code.small { (path) }
                            span.small { " — asked while the run goes, when it reaches its stage or step" }
                        }
                    } @else {
                    div.field {
                        input type="hidden" name=(format!("auto.{path}")) value=(filled);
                        label for=(id) { strong { (path.rsplit('.').next().unwrap_or(path)) } " " code.small { (path) }
                            @if !from.is_empty() { span.small { " (" (from) ")" } } }
                        @if let Some(allowed) = f["allowed_values"].as_array() {
                            select id=(id) name=(format!("input.{path}")) {
                                @for a in allowed { @let a = a.as_str().unwrap_or_default(); option value=(a) selected[a == value] { (a) } }
                            }
                        } @else {
                            input id=(id) type="text" name=(format!("input.{path}")) value=(value) required
                                data-regex=[f["regex"].as_str()] aria-describedby=(format!("{id}-help {id}-problem"))
                                aria-invalid=[problem.map(|_| "true")];
                            @if let Some(r) = f["regex"].as_str() { span.small id=(format!("{id}-help")) { "Must match " code { (r) } } }
                        }
                        @if let Some(pr) = problem { span.error id=(format!("{id}-problem")) { (pr) } }
                    }
                    }
                }
            }
        }
        section.plan #plan aria-labelledby="plan-h" {
            h3 #plan-h { "Plan" }
            @match &d.plan {
                Err(e) => { p.error role="alert" { (e) } },
                Ok(plan) => {
                    @if plan["satisfiable"] == false {
                        p.error role="alert" { "Not ready: the chosen stages need values nothing provides yet. Choose for each need above how to meet it." }
                    }
                    table {
                        thead { tr { th scope="col" { "Stage" } th scope="col" { "Will" } th scope="col" { "Why" } } }
                        tbody {
                            @for s in plan["stages"].as_array().into_iter().flatten() {
                                @let action = s["action"].as_str().unwrap_or_default();
                                tr class=(format!("plan-{action}")) data-stage=(s["identifier"].as_str().unwrap_or_default()) data-action=(action) {
                                    td { code { (s["identifier"].as_str().unwrap_or_default()) } }
                                    td { strong { (match action { "run" => "Run", "skip" => "Skip", "reuse" => "Reuse", other => other }) } }
                                    td { (s["reason"].as_str().unwrap_or_default())
                                        @if let Some(from) = s["reused_from"].as_str() { " — from " a href=(format!("/executions/{from}")) { (from) } } }
                                }
                            }
                        }
                    }
                    @for w in plan["warnings"].as_array().into_iter().flatten() { p.warning { (w.as_str().unwrap_or_default()) } }
                },
            }
        }
    }
}

/// The message of a planning failure.
fn plan_error(e: ApiError) -> Result<String, WebError> {
    match e {
        ApiError::Launch(l) => Ok(launch_message(&l)),
        ApiError::BadRequest(m) | ApiError::Conflict(m) => Ok(m),
        ApiError::TooManyRequests(m) => Ok(m),
        other => Err(other.into()),
    }
}

/// A plan with the problems of the inputs given, by path.
fn with_problems(mut v: serde_json::Value, problems: &[spec::inputs::InputProblem]) -> serde_json::Value {
    v["input_problems"] = problems
        .iter()
        .map(|p| (p.path.clone(), serde_json::Value::String(p.message.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    v
}

/// The pipeline as the dialog needs it.
pub struct Context {
    /// Display name.
    pub name: String,
    /// Selective execution allowed.
    pub allow: bool,
    /// Stage groups in order.
    pub groups: Vec<Vec<(String, String)>>,
    /// The dependency graph.
    pub graph: plan::Graph,
    /// Recent successful executions to reuse from: id, sequence number, when.
    pub sources: Vec<(String, i64, i64)>,
    /// Input sets of this pipeline: id, name.
    pub input_sets: Vec<(String, String)>,
    /// Values the chosen input sets (or, for a re-run, the execution) give, by path.
    pub preset: BTreeMap<String, String>,
}

async fn context(app: &App, w: &Web, org: &str, project: &str, pipeline: &str) -> WebResult<Context> {
    let view = plsvc::get_pipeline(app, &w.p, org, project, pipeline).await?;
    let templates = plsvc::templates(app, &crate::rbac::Scope::project(org, project)).await?;
    let doc = spec::parse_document_with("pipeline.yaml", view.yaml.clone().unwrap_or_default(), Some(&templates));
    let (groups, graph) = stage_graph(&doc).unwrap_or_default();
    let allow = doc.pipeline().is_some_and(|p| p.allow_stage_executions);
    let sources = app
        .store
        .executions(&ExecutionQuery {
            org: Some(org.into()),
            project: Some(project.into()),
            pipeline: Some(pipeline.into()),
            status: Some(Status::Success),
            limit: Some(20),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|e| (e.id, e.sequence_id, e.created_at))
        .collect();
    let input_sets = plsvc::list_entities(app, &w.p, org, project, plsvc::EntityKind::InputSets)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|v| {
            let doc = spec::parse_document("input set", v.yaml.clone().unwrap_or_default());
            doc.body().and_then(|b| b.get("pipeline")).and_then(|p| p.get("identifier")).and_then(|i| i.as_scalar())
                == Some(pipeline)
        })
        .map(|v| (v.identifier, v.name))
        .collect();
    Ok(Context { name: view.name, allow, groups, graph, sources, input_sets, preset: BTreeMap::new() })
}

async fn pipeline_dialog(
    app: &Arc<App>,
    w: &Web,
    org: &str,
    project: &str,
    pipeline: &str,
    choice: &Choice,
) -> WebResult<(Context, Result<serde_json::Value, String>)> {
    app.require(&w.p, Permission::PIPELINE_EXECUTE, &Resource::new("pipeline", pipeline, Scope::project(org, project)))
        .await?;
    let mut cx = context(app, w, org, project, pipeline).await?;
    cx.preset = match exsvc::input_set_preview(app, &w.p, org, project, &choice.input_sets).await {
        Ok(v) => v,
        Err(e @ (ApiError::Forbidden { .. } | ApiError::Internal(_))) => return Err(e.into()),
        Err(e) => return Ok((cx, Err(plan_error(e)?))),
    };
    let plan = match choice.check().err().map(|e| e.to_string()) {
        Some(e) => Err(e),
        None => match exsvc::plan(app, &w.p, org, project, pipeline, choice.body(&cx.graph)).await {
            Ok(v) => Ok(v),
            // Inputs that do not pass are shown at their fields, under the plan made without them.
            Err(ApiError::Launch(launch::LaunchError::Inputs(problems))) => {
                let mut b = choice.body(&cx.graph);
                b.inputs.clear();
                b.input_set_refs.clear();
                match exsvc::plan(app, &w.p, org, project, pipeline, b).await {
                    Ok(v) => Ok(with_problems(v, &problems)),
                    Err(e) => Err(plan_error(e)?),
                }
            }
            Err(e) => Err(plan_error(e)?),
        },
    };
    Ok((cx, plan))
}

fn dialog_page(w: &Web, c: &[super::Crumb], title: &str, d: &Dialog<'_>) -> Markup {
    page(
        w,
        title,
        c,
        html! {
            h1 { (title) }
            (render_dialog(w, d))
        },
    )
}

async fn run_crumbs(app: &App, w: &Web, org: &str, project: &str, pipeline: &str, name: &str) -> Vec<super::Crumb> {
    let mut c = crumbs(app, w, org, Some(project)).await;
    c.push((name.to_string(), Some(format!("/orgs/{org}/projects/{project}/pipelines/{pipeline}"))));
    c.push(("Run".into(), None));
    c
}

/// *Run Pipeline*: the dialog.
pub async fn dialog(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, pipeline)): Path<(String, String, String)>,
) -> WebResult {
    let choice = Choice { all: true, ..Choice::default() };
    let (cx, plan) = pipeline_dialog(&app, &w, &org, &project, &pipeline, &choice).await?;
    let c = run_crumbs(&app, &w, &org, &project, &pipeline, &cx.name).await;
    let d = Dialog {
        target: Target::Pipeline { org: &org, project: &project, id: &pipeline },
        cx: &cx,
        choice: &choice,
        plan,
    };
    Ok(ok(dialog_page(&w, &c, &format!("Run Pipeline: {}", cx.name), &d)))
}

/// The dialog's changing part for the form as it stands (fetched by the script on every change).
pub async fn plan_panel(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    body: Bytes,
) -> WebResult {
    let choice = Choice::parse(&super::form(&body));
    let (cx, plan) = pipeline_dialog(&app, &w, &org, &project, &pipeline, &choice).await?;
    let d = Dialog {
        target: Target::Pipeline { org: &org, project: &project, id: &pipeline },
        cx: &cx,
        choice: &choice,
        plan,
    };
    Ok(ok(render_dynamic(&d)))
}

/// *Run Pipeline*: start the execution and open it; a refusal shows the dialog again with the reason.
pub async fn start(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    body: Bytes,
) -> WebResult {
    let choice = Choice::parse(&super::form(&body));
    let cx = context(&app, &w, &org, &project, &pipeline).await?;
    let started = match choice.check() {
        Ok(()) => exsvc::execute(&app, &w.p, &org, &project, &pipeline, choice.body(&cx.graph)).await,
        Err(e) => Err(e),
    };
    let (a, ww, o, pr, pl, ch) = (&app, &w, &org, &project, &pipeline, &choice);
    super::settle(
        started,
        |e| format!("/executions/{}", e.id),
        move |e| async move {
            let message = plan_error(e)?;
            let (app, w, org, project, pipeline, choice) = (a, ww, o, pr, pl, ch);
            let (cx, plan) = pipeline_dialog(app, w, org, project, pipeline, choice).await?;
            let c = run_crumbs(app, w, org, project, pipeline, &cx.name).await;
            let d = Dialog { target: Target::Pipeline { org, project, id: pipeline }, cx: &cx, choice, plan };
            let m = page(
                w,
                "Run Pipeline",
                &c,
                html! {
                h1 { "Run Pipeline: " (cx.name) }
                p.error role="alert" { "Nothing was started: " (message) }
                (render_dialog(w, &d))
                    },
            );
            Ok(m)
        },
    )
    .await
}

fn rerun_body(choice: &Choice) -> exsvc::RerunBody {
    exsvc::RerunBody {
        stage_identifiers: if choice.all { Vec::new() } else { choice.stages.clone() },
        inputs: choice.given(),
        input_set_refs: choice.input_sets.clone(),
    }
}

async fn rerun_context(
    app: &Arc<App>,
    w: &Web,
    id: &str,
    choice: &Choice,
) -> WebResult<(store::Execution, Context, Result<serde_json::Value, String>)> {
    let (e, _) = exsvc::execution_for(app, &w.p, id, Permission::PIPELINE_EXECUTE).await?;
    let doc = launch::recorded_document(app.store.as_ref(), &e).await?;
    let (groups, graph) = stage_graph(&doc).unwrap_or_default();
    let cx = Context {
        name: doc.pipeline().map_or(e.pipeline.clone(), |p| p.name.value.clone()),
        // Re-running chosen stages of an execution reuses the rest of it: always allowed, as retry is.
        allow: true,
        groups,
        graph,
        sources: Vec::new(),
        input_sets: Vec::new(),
        preset: launch::original_inputs(&e).into_iter().map(|(k, (v, _))| (k, v)).collect(),
    };
    let planned = match choice.check() {
        Ok(()) => exsvc::plan_rerun(app, &w.p, &e.id, rerun_body(choice)).await,
        Err(e) => Err(e),
    };
    let plan = match planned {
        Ok(v) => Ok(v),
        Err(ApiError::Launch(launch::LaunchError::Inputs(problems))) => {
            let mut b = rerun_body(choice);
            b.inputs.clear();
            b.input_set_refs.clear();
            match exsvc::plan_rerun(app, &w.p, &e.id, b).await {
                Ok(v) => Ok(with_problems(v, &problems)),
                Err(err) => Err(plan_error(err)?),
            }
        }
        Err(err) => Err(plan_error(err)?),
    };
    Ok((e, cx, plan))
}

fn rerun_page(
    w: &Web,
    c: &[super::Crumb],
    e: &store::Execution,
    cx: &Context,
    choice: &Choice,
    plan: Result<serde_json::Value, String>,
    error: Option<&str>,
) -> Markup {
    let d = Dialog { target: Target::Rerun { id: &e.id, ran: &e.selected_stages }, cx, choice, plan };
    page(
        w,
        "Re-run",
        c,
        html! {
            h1 { "Re-run execution #" (e.sequence_id) " of " (cx.name) }
            p { "With " em { "All Stages" } ", the execution runs again with its inputs and selection. With "
                em { "Stages" } ", only the ticked stages run; everything they need is reused from execution "
                a href=(format!("/executions/{}", e.id)) { "#" (e.sequence_id) } "." }
            @if let Some(err) = error { p.error role="alert" { "Nothing was started: " (err) } }
            (render_dialog(w, &d))
        },
    )
}

async fn rerun_crumbs(app: &App, w: &Web, e: &store::Execution) -> Vec<super::Crumb> {
    let mut c = crumbs(app, w, &e.org, Some(&e.project)).await;
    c.push((e.pipeline.clone(), Some(format!("/orgs/{}/projects/{}/pipelines/{}", e.org, e.project, e.pipeline))));
    c.push((format!("#{}", e.sequence_id), Some(format!("/executions/{}", e.id))));
    c.push(("Re-run".into(), None));
    c
}

/// *Re-run* / *Re-run Stage*: the dialog, with the execution's inputs filled in (`?stage=` ticks stages).
pub async fn rerun_dialog(
    State(app): State<Arc<App>>,
    w: Web,
    Path(id): Path<String>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> WebResult {
    let fields = super::form(q.unwrap_or_default().as_bytes());
    let (e, _) = exsvc::execution_for(&app, &w.p, &id, Permission::PIPELINE_EXECUTE).await?;
    let mut choice = Choice::parse(&fields);
    if choice.stages.is_empty() && fields.iter().all(|(k, _)| k != "scope") {
        choice.all = true;
    } else if !choice.stages.is_empty() {
        choice.all = false;
    }
    let (e, cx, plan) = rerun_context(&app, &w, &e.id, &choice).await?;
    let c = rerun_crumbs(&app, &w, &e).await;
    Ok(ok(rerun_page(&w, &c, &e, &cx, &choice, plan, None)))
}

/// The re-run dialog's changing part.
pub async fn rerun_plan(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>, body: Bytes) -> WebResult {
    let choice = Choice::parse(&super::form(&body));
    let (e, cx, plan) = rerun_context(&app, &w, &id, &choice).await?;
    let d = Dialog { target: Target::Rerun { id: &e.id, ran: &e.selected_stages }, cx: &cx, choice: &choice, plan };
    Ok(ok(render_dynamic(&d)))
}

/// Start the re-run and open it.
pub async fn rerun(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>, body: Bytes) -> WebResult {
    let choice = Choice::parse(&super::form(&body));
    let started = match choice.check() {
        Ok(()) => exsvc::rerun(&app, &w.p, &id, rerun_body(&choice)).await,
        Err(e) => Err(e),
    };
    let (app, w, id, choice) = (&app, &w, &id, &choice);
    super::settle(
        started,
        |e| format!("/executions/{}", e.id),
        move |err| async move {
            let message = plan_error(err)?;
            let (e, cx, plan) = rerun_context(app, w, id, choice).await?;
            let c = rerun_crumbs(app, w, &e).await;
            Ok(rerun_page(w, &c, &e, &cx, choice, plan, Some(&message)))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(stage: &str, on: &str, via: plan::Via, paths: &[&str]) -> plan::Edge {
        plan::Edge {
            stage: stage.into(),
            depends_on: on.into(),
            via,
            paths: paths.iter().map(|s| s.to_string()).collect(),
            at: vec![],
            templates: vec![],
        }
    }

    fn graph() -> plan::Graph {
        // build → deploy_dev → smoke; deploy_prod reads build and propagates from deploy_dev.
        let p = "pipeline.stages";
        let mut g = plan::Graph::default();
        g.stages = ["build", "unit", "deploy_dev", "smoke", "deploy_prod"].map(String::from).to_vec();
        g.edges = vec![
            edge(
                "deploy_dev",
                "build",
                plan::Via::Expression,
                &[&format!("{p}.build.spec.execution.steps.c.output.outputVariables.artifact")],
            ),
            edge("smoke", "deploy_dev", plan::Via::Expression, &[&format!("{p}.deploy_dev.variables.url")]),
            edge(
                "deploy_prod",
                "build",
                plan::Via::Expression,
                &[&format!("{p}.build.spec.execution.steps.c.output.outputVariables.artifact")],
            ),
            edge("deploy_prod", "deploy_dev", plan::Via::Propagation, &[&format!("{p}.deploy_dev.service")]),
        ];
        g
    }

    fn form(pairs: &[(&str, &str)]) -> Choice {
        Choice::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
    }

    /// A form, and the stages, source execution and expression paths it asks for.
    type Case<'a> = (Choice, Vec<&'a str>, Option<&'a str>, Vec<&'a str>);

    #[test]
    fn the_form_becomes_the_request() {
        let g = graph();
        let art = "pipeline.stages.build.spec.execution.steps.c.output.outputVariables.artifact";
        let cases: Vec<Case> = vec![
            // All Stages: no selection, ticks are ignored.
            (form(&[("scope", "all"), ("stage", "unit")]), vec![], None, vec![]),
            // An independent stage alone.
            (form(&[("scope", "stages"), ("stage", "unit")]), vec!["unit"], None, vec![]),
            // A dependent stage with its need unanswered: the plan will say what is missing.
            (form(&[("scope", "stages"), ("stage", "smoke")]), vec!["smoke"], None, vec![]),
            // Run the needed stage too — and, transitively, what that one needs when told to.
            (
                form(&[("scope", "stages"), ("stage", "smoke"), ("need.deploy_dev", "run"), ("need.build", "run")]),
                vec!["build", "deploy_dev", "smoke"],
                None,
                vec![],
            ),
            // Reuse from an execution.
            (
                form(&[
                    ("scope", "stages"),
                    ("stage", "deploy_dev"),
                    ("need.build", "reuse"),
                    ("from_execution", "01ABC"),
                ]),
                vec!["deploy_dev"],
                Some("01ABC"),
                vec![],
            ),
            // Give the values (only the paths of needs answered so).
            (
                form(&[
                    ("scope", "stages"),
                    ("stage", "deploy_dev"),
                    ("need.build", "values"),
                    (&format!("expr.{art}"), "a.tgz"),
                    ("expr.pipeline.stages.x.y", "stale"),
                    ("from_execution", "01ABC"),
                ]),
                vec!["deploy_dev"],
                None,
                vec![art],
            ),
        ];
        for (choice, stages, from, exprs) in cases {
            let b = choice.body(&g);
            assert_eq!(b.stage_identifiers, stages, "{choice:?}");
            assert_eq!(b.from_execution.as_deref(), from, "{choice:?}");
            assert_eq!(b.expressions.keys().map(String::as_str).collect::<Vec<_>>(), exprs, "{choice:?}");
            assert!(!b.with_deps);
        }
    }

    #[test]
    fn needs_are_the_direct_dependencies_outside_the_run() {
        let g = graph();
        let c = form(&[("scope", "stages"), ("stage", "deploy_prod"), ("need.deploy_dev", "run")]);
        let needs: Vec<(&str, &str)> = c.needs(&g).iter().map(|e| (e.stage.as_str(), e.depends_on.as_str())).collect();
        // The need met by running deploy_dev too stays listed (its choice can be changed); deploy_dev's own
        // need of build appears.
        assert_eq!(needs, [("deploy_dev", "build"), ("deploy_prod", "build"), ("deploy_prod", "deploy_dev")]);
        // Ticking a stage makes it no longer a need.
        let c = form(&[("scope", "stages"), ("stage", "deploy_prod"), ("stage", "build"), ("stage", "deploy_dev")]);
        assert!(c.needs(&g).is_empty());
    }

    #[test]
    fn stages_with_none_ticked_is_refused() {
        assert!(form(&[("scope", "stages")]).check().is_err());
        assert!(form(&[("scope", "stages"), ("stage", "unit")]).check().is_ok());
        assert!(form(&[("scope", "all")]).check().is_ok());
        assert!(form(&[]).check().is_ok());
    }

    #[test]
    fn inputs_left_as_filled_in_are_not_given() {
        let c = form(&[
            ("input.pipeline.variables.version", "1.0.0"),
            ("auto.pipeline.variables.version", "1.0.0"),
            ("input.pipeline.variables.region", "eu"),
            ("auto.pipeline.variables.region", "us"),
            ("input.pipeline.variables.note", "typed"),
        ]);
        let given = c.given();
        assert_eq!(given.len(), 2);
        assert_eq!(given["pipeline.variables.region"], "eu");
        assert_eq!(given["pipeline.variables.note"], "typed");
    }

    #[test]
    fn inputs_and_input_sets_are_read() {
        let c = form(&[
            ("input.pipeline.variables.version", "2.0.0"),
            ("input.pipeline.variables.empty", ""),
            ("input_set", "nightly"),
            ("input_set", "nightly"),
        ]);
        let b = c.body(&graph());
        assert_eq!(b.inputs.len(), 1);
        assert_eq!(b.input_set_refs, ["nightly"]);
    }
}
