//! The execution use cases, one typed function each — plan, run, history, one execution, its nodes,
//! transitions and logs, abort, approvals, manual intervention, re-run, retry — taking the caller and
//! returning typed results or an [`ApiError`]. RBAC is checked here, inside each function; the JSON API (and
//! the web pages) are thin adapters over them. The CLI's semantics hold because everything goes through the
//! `launch` crate. Running selected stages, re-running and retrying all need `pipeline:execute`, as in Harness.

use crate::App;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, identifier};
use crate::rbac::Permission;
use crate::rbac::{Resource, Scope};
use crate::runner::Job;
use crate::service::project_scope;
use engine::{Entities, Secrets};
use launch::{LaunchError, Planned, Selection};
use serde::{Deserialize, Serialize};
use spec::inputs::InputSource;
use spec::{Document, Entity};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use store::{
    Decision, DecisionAction, DecisionKind, Execution, ExecutionQuery, LogChunk, Mode, Node, Status, Transition, now_ms,
};
use utoipa::ToSchema;

/// What to run.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// Run only these stages (the pipeline must allow selective stage execution).
    #[serde(default)]
    pub stage_identifiers: Vec<String>,
    /// Runtime inputs by fully-qualified path.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Input sets (or overlays) of the project, applied in order before `inputs`.
    #[serde(default)]
    pub input_set_refs: Vec<String>,
    /// Values of paths the selected stages read from stages that do not run.
    #[serde(default)]
    pub expressions: BTreeMap<String, String>,
    /// Also run every stage the selected ones depend on.
    #[serde(default)]
    pub with_deps: bool,
    /// Reuse the values of stages that do not run from this execution.
    #[serde(default)]
    pub from_execution: Option<String>,
    /// Plan only: plan this YAML (of the pipeline the path names) instead of the stored one.
    #[serde(default)]
    pub pipeline_yaml: Option<String>,
}

/// A re-run.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunBody {
    /// Re-run only these stages, reusing their dependencies from the execution.
    #[serde(default)]
    pub stage_identifiers: Vec<String>,
    /// Override runtime inputs.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Input sets applied over the original inputs (before `inputs`).
    #[serde(default)]
    pub input_set_refs: Vec<String>,
}

/// A retry.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    /// Retry from this stage instead of the first failed one.
    #[serde(default)]
    pub stage: Option<String>,
    /// In a parallel block, only the stages that failed.
    #[serde(default)]
    pub only_failed: bool,
    /// Override runtime inputs.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

/// An approval decision.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBody {
    /// The waiting step's path, when several wait.
    #[serde(default)]
    pub node: Option<String>,
    /// A comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// Approver inputs.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

/// A manual intervention.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InterveneBody {
    /// The waiting step's path, when several wait.
    #[serde(default)]
    pub node: Option<String>,
    /// What to do with the failed step.
    pub action: InterventionAction,
}

/// The ManualIntervention choices (one type with the CLI and the engine).
pub use engine::InterventionAction;

async fn pipeline_document(app: &App, p: &Principal, scope: &Scope, pipeline: &str) -> ApiResult<Document> {
    identifier("pipeline", pipeline)?;
    let Some(r) = app.store.record("pipeline", &scope.org, &scope.project, pipeline).await? else {
        return Err(app.not_found(p, scope, format!("no pipeline `{pipeline}` in {}", scope.describe())).await);
    };
    let version = r.body["version"].as_i64().unwrap_or(1);
    let yaml = app.store.pipeline_yaml(&scope.org, &scope.project, pipeline, version).await?;
    let lib = super::pipelines::templates(app, scope).await?;
    Ok(launch::check_pipeline(spec::parse_document_with(&format!("{pipeline} (version {version})"), yaml, Some(&lib)))?)
}

async fn input_set_values(
    app: &App,
    scope: &Scope,
    refs: &[String],
) -> ApiResult<BTreeMap<String, (String, InputSource)>> {
    let mut out = BTreeMap::new();
    if refs.is_empty() {
        return Ok(out);
    }
    let docs: HashMap<String, Document> = app
        .store
        .records("input_set", Some(&scope.org), Some(&scope.project))
        .await?
        .into_iter()
        .map(|r| {
            let yaml = r.body["yaml"].as_str().unwrap_or_default().to_string();
            (r.identifier.clone(), spec::parse_document(&format!("input set {}", r.identifier), yaml))
        })
        .collect();
    let sets = |id: &str| docs.get(id).cloned();
    for r in refs {
        let doc =
            docs.get(r).ok_or_else(|| ApiError::BadRequest(format!("no input set `{r}` in {}", scope.describe())))?;
        launch::input_set_values(doc, &sets, &mut out)?;
    }
    Ok(out)
}

async fn entities(app: &App, scope: &Scope) -> ApiResult<Entities> {
    let mut out = Entities::default();
    for kind in ["service", "environment", "infrastructure"] {
        for r in app.store.records(kind, Some(&scope.org), Some(&scope.project)).await? {
            let yaml = r.body["yaml"].as_str().unwrap_or_default().to_string();
            let doc = spec::parse_document(&format!("{kind} {}", r.identifier), yaml);
            match doc.entity {
                Some(Entity::Service(s)) => {
                    out.services.insert(s.meta.identifier.value.clone(), *s);
                }
                Some(Entity::Environment(e)) => {
                    out.environments.insert(e.meta.identifier.value.clone(), *e);
                }
                Some(Entity::Infrastructure(i)) => {
                    out.infrastructures.insert(i.meta.identifier.value.clone(), *i);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The secret values a pipeline reads, opened; with a caller, its `secret:access` is checked for each (a
/// taken-over execution had its caller's checked when it started).
async fn secrets(app: &App, p: Option<&Principal>, scope: &Scope, doc: &Document) -> ApiResult<Secrets> {
    let mut secrets = Secrets { no_env: true, ..Secrets::default() };
    for id in launch::secret_refs(doc) {
        if let Some(p) = p {
            app.require(p, Permission::SECRET_ACCESS, &Resource::new("secret", &id, scope.clone())).await?;
        }
        if let Some(r) = app.store.record("secret", &scope.org, &scope.project, &id).await?
            && let Some(sealed) = r.body["sealed"].as_str()
        {
            let v = app
                .keys
                .open(&crate::secret_context(&scope.org, &scope.project, &id), sealed)
                .map_err(|e| ApiError::Internal(format!("secret `{id}`: {e}")))?;
            secrets.values.insert(id, v);
        }
    }
    Ok(secrets)
}

/// Take over the executions nobody runs any more — their owner's lease ran out (the process died) — and go
/// on with them here, from where they were. Executions another live process runs are never touched. Returns
/// the ids taken over.
pub async fn take_over(app: &Arc<App>) -> ApiResult<Vec<String>> {
    if app.runner.stopping() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let lease = i64::try_from(app.runner.lease().as_millis()).unwrap_or(i64::MAX / 2);
    let mut taken = Vec::new();
    // Every owned execution that has not ended is looked at; the claim decides whether its owner's hold is
    // over (its lease ran out, or it was a process of this host that is gone).
    for e in app.store.orphaned(i64::MAX, now.saturating_sub(lease)).await? {
        if app.runner.running(&e.id) {
            continue;
        }
        let Some(epoch) =
            engine::owner::claim(app.store.as_ref(), &e.id, app.runner.owner(), app.runner.lease()).await?
        else {
            continue;
        };
        let fence = store::Fence::owner(app.runner.owner(), epoch);
        let scope = Scope::project(&e.org, &e.project);
        let job = async {
            let (doc, pipeline, seed) = launch::resumable(app.store.as_ref(), &e).await?;
            ApiResult::Ok(Job {
                secrets: secrets(app, None, &scope, &doc).await?,
                entities: entities(app, &scope).await?,
                triggered_by: e.triggered_by.clone(),
                execution: e.clone(),
                pipeline,
                seed,
                resume: true,
                // Who started it is not known here: a `Pipeline` stage left running fails, saying so.
                children: None,
            })
        };
        match job.await {
            Ok(job) => {
                tracing::warn!("execution {} was left unfinished by a process that stopped; taking it over", e.id);
                app.audit("system", "local", "take_over", "execution", &e.id, &scope, serde_json::json!({})).await?;
                app.runner.start(job);
                taken.push(e.id.clone());
            }
            Err(err) => {
                // It cannot go on (its pipeline version is gone, say): it ends, saying why.
                let why = format!("could not be taken over after its process stopped: {err}");
                tracing::error!("execution {}: {why}", e.id);
                app.store.set_execution_status(&e.id, Status::Failed, Some(&why), &fence).await?;
            }
        }
    }
    Ok(taken)
}

/// Record and start a planned execution; the caller's `secret:access` is checked for every secret it reads.
/// Runs the child executions of `Pipeline` stages on a server: the chained pipeline is a stored one, which
/// the principal who started the parent must be allowed to execute; it runs with its own project's entities
/// and secrets.
pub struct ServerChildren {
    app: Arc<App>,
    principal: Principal,
}

impl std::fmt::Debug for ServerChildren {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerChildren").field("principal", &self.principal.display()).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl engine::chain::Children for ServerChildren {
    async fn run(&self, req: engine::chain::ChildRequest) -> Result<engine::chain::ChildRun, String> {
        let (app, p) = (&self.app, &self.principal);
        let said = |e: ApiError| e.to_string();
        let scope = Scope::project(&req.org, &req.project);
        identifier("pipeline", &req.pipeline).map_err(said)?;
        app.require(p, Permission::PIPELINE_EXECUTE, &Resource::new("pipeline", &req.pipeline, scope.clone()))
            .await
            .map_err(said)?;
        let doc = pipeline_document(app, p, &scope, &req.pipeline).await.map_err(said)?;
        let (exec, prepared) = launch::child(
            app.store.as_ref(),
            app.store.as_ref(),
            &doc,
            &req,
            &p.display(),
            None,
            None,
            &app.config.settings.connectors,
        )
        .await
        .map_err(|e| e.render().trim_end().to_string())?;
        let secrets = secrets(app, Some(p), &scope, &doc).await.map_err(said)?;
        let entities = entities(app, &scope).await.map_err(said)?;
        let job = Job {
            execution: exec.clone(),
            pipeline: prepared.pipeline,
            entities,
            secrets,
            seed: engine::Seed::default(),
            triggered_by: p.display(),
            resume: false,
            children: Some(Arc::new(ServerChildren { app: app.clone(), principal: p.clone() })),
        };
        let status = app.runner.run_child(job, req.depth).await?;
        Ok(engine::chain::ChildRun { execution_id: exec.id, status })
    }
}

#[allow(clippy::too_many_arguments)]
async fn launch_planned(
    app: &Arc<App>,
    p: &Principal,
    scope: &Scope,
    doc: &Document,
    planned: Planned,
    supplied: BTreeMap<String, (String, InputSource)>,
    mode: Mode,
    selective: bool,
    parent: Option<(String, String)>,
) -> ApiResult<Execution> {
    if !planned.plan.satisfiable {
        return Err(LaunchError::Unsatisfiable(Box::new(planned)).into());
    }
    if app.runner.stopping() {
        return Err(ApiError::Conflict("the server is shutting down; start the execution on another server".into()));
    }
    let run_stages = planned.plan.run_stages();
    let mut prepared = launch::prepare(doc, &supplied, selective.then_some(run_stages.as_slice()))?;
    // A CI stage's `cloneCodebase` fetches the codebase through the server's connectors.
    prepared.clone_codebase(None, &app.config.settings.connectors);
    let secrets = secrets(app, Some(p), scope, doc).await?;
    // Every secret the stages that run read must exist in the project before anything runs.
    let missing = launch::missing_secrets(doc, &run_stages, |id| secrets.get(id).is_some());
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
        return Err(LaunchError::BadRequest(format!(
            "the pipeline reads secrets project `{}` does not have: {}; nothing was run. Add them in the project's settings (Secrets) or with POST /api/v1/orgs/{}/projects/{}/secrets",
            scope.project,
            names.join(", "),
            scope.org,
            scope.project
        ))
        .into());
    }
    let entities = entities(app, scope).await?;
    let mut l = launch::Launch::of(&planned, mode, selective, &p.display());
    l.parent = parent;
    // Recording the execution and handing it to the runner is one unit that runs to its end even if the
    // client goes away: an execution is never recorded without an owner that starts it.
    let (app, p, scope) = (app.clone(), p.clone(), scope.clone());
    let seed = launch::seed(&planned.plan);
    tokio::spawn(async move {
        let exec = launch::record(app.store.as_ref(), &prepared, &l).await?;
        app.runner.start(Job {
            execution: exec.clone(),
            pipeline: prepared.pipeline,
            entities,
            secrets,
            seed,
            triggered_by: p.display(),
            resume: false,
            children: Some(Arc::new(ServerChildren { app: app.clone(), principal: p.clone() })),
        });
        app.audit(
            &p.display(),
            &p.address,
            match mode {
                Mode::Full | Mode::Selective => "execute",
                Mode::Rerun | Mode::RerunStage => "rerun",
                Mode::Retry => "retry",
            },
            "execution",
            &exec.id,
            &scope,
            serde_json::json!({"pipeline": exec.pipeline, "mode": mode, "stages": exec.selected_stages, "parent": exec.parent_id}),
        )
        .await?;
        ApiResult::Ok(exec)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("starting the execution failed: {e}")))?
}

fn selection(app: &App, b: &ExecuteBody) -> Selection {
    Selection {
        stages: b.stage_identifiers.clone(),
        with_deps: b.with_deps,
        from_execution: b.from_execution.clone(),
        exprs: b.expressions.clone(),
        any_stage: false,
        handled: app.config.settings.step_handlers.keys().cloned().collect(),
    }
}

fn given(inputs: &BTreeMap<String, String>) -> impl Iterator<Item = (String, (String, InputSource))> + '_ {
    inputs.iter().map(|(k, v)| (k.clone(), (v.clone(), InputSource::Given)))
}

/// Check that `from_execution` is one the caller may read (same project, `execution:view`).
async fn check_source(app: &App, p: &Principal, scope: &Scope, from: Option<&str>) -> ApiResult<()> {
    if let Some(id) = from {
        let (e, _) = execution_for(app, p, id, Permission::EXECUTION_VIEW).await?;
        if e.org != scope.org || e.project != scope.project {
            return Err(ApiError::BadRequest(format!("execution {} belongs to another project", e.id)));
        }
    }
    Ok(())
}

/// History filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only this status.
    #[param(schema_with = crate::contract::status_schema)]
    pub status: Option<String>,
    /// Only this mode (`full`, `selective`, `rerun`, `rerun_stage`, `retry`).
    #[param(schema_with = crate::contract::mode_schema)]
    pub mode: Option<String>,
    /// Only started by this principal.
    pub triggered_by: Option<String>,
    /// Created at or after (Unix ms).
    pub since: Option<i64>,
    /// Created before (Unix ms).
    pub until: Option<i64>,
    /// Only this execution and those derived from it.
    pub chain_of: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// Log paging.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Chunks after this cursor (the `next_cursor` of the previous page).
    pub after: Option<i64>,
    /// Page size (1–1000 chunks, default 200).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The most log text one page of `GET …/logs` holds.
const LOG_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// What a run would do, as `pipewright plan --output json` prints it; with inputs, they are checked too.
pub async fn plan(
    app: &Arc<App>,
    p: &Principal,
    org: &str,
    project: &str,
    pipeline: &str,
    b: ExecuteBody,
) -> ApiResult<serde_json::Value> {
    let scope = project_scope(app, p, org, project).await?;
    identifier("pipeline", pipeline)?;
    app.require(p, Permission::PIPELINE_VIEW, &Resource::new("pipeline", pipeline, scope.clone())).await?;
    let _admitted = app.planning(p).await?;
    let doc = match &b.pipeline_yaml {
        Some(y) => {
            app.check_pipeline_size(y)?;
            let lib = super::pipelines::templates(app, &scope).await?;
            let doc = launch::check_pipeline(spec::parse_document_with("pipeline.yaml", y.clone(), Some(&lib)))?;
            if doc.pipeline().is_none_or(|pl| pl.identifier.value != pipeline) {
                return Err(ApiError::BadRequest(format!("pipeline_yaml is not pipeline `{pipeline}`")));
            }
            doc
        }
        None => pipeline_document(app, p, &scope, pipeline).await?,
    };
    check_source(app, p, &scope, b.from_execution.as_deref()).await?;
    let planned = launch::plan(&doc, &selection(app, &b), Some(app.store.as_ref())).await?;
    let mut json = launch::plan_json(&planned);
    if app.config.no_local_executor
        && let Some(pl) = doc.pipeline()
    {
        // Where the steps would run: the agents online now.
        let lease = i64::try_from(app.runner.lease().as_millis()).unwrap_or(i64::MAX / 4);
        let agents: Vec<_> = app
            .store
            .agents()
            .await?
            .into_iter()
            .filter(|a| super::agents::serves(a, &scope.org, &scope.project))
            .collect();
        let notes = super::agents::agent_warnings(
            pl,
            &planned.plan.run_stages(),
            &agents,
            now_ms() - i64::from(super::agents::ALIVE_LEASES) * lease,
        );
        if let Some(w) = json.get_mut("warnings").and_then(|w| w.as_array_mut()) {
            w.extend(notes.into_iter().map(serde_json::Value::String));
        }
    }
    if planned.plan.satisfiable && (!b.inputs.is_empty() || !b.input_set_refs.is_empty()) {
        let mut supplied = input_set_values(app, &scope, &b.input_set_refs).await?;
        supplied.extend(given(&b.inputs));
        let run = planned.plan.run_stages();
        launch::prepare(&doc, &supplied, (!b.stage_identifiers.is_empty()).then_some(run.as_slice()))?;
    }
    Ok(json)
}

/// Run a pipeline: every stage, or the selected ones.
pub async fn execute(
    app: &Arc<App>,
    p: &Principal,
    org: &str,
    project: &str,
    pipeline: &str,
    b: ExecuteBody,
) -> ApiResult<Execution> {
    let scope = project_scope(app, p, org, project).await?;
    identifier("pipeline", pipeline)?;
    app.require(p, Permission::PIPELINE_EXECUTE, &Resource::new("pipeline", pipeline, scope.clone())).await?;
    let _admitted = app.planning(p).await?;
    if b.pipeline_yaml.is_some() {
        return Err(ApiError::BadRequest(
            "pipeline_yaml is for plans; save the pipeline (PUT …/pipelines/{id}) to run it".into(),
        ));
    }
    let doc = pipeline_document(app, p, &scope, pipeline).await?;
    check_source(app, p, &scope, b.from_execution.as_deref()).await?;
    let planned = launch::plan(&doc, &selection(app, &b), Some(app.store.as_ref())).await?;
    let mut supplied = input_set_values(app, &scope, &b.input_set_refs).await?;
    supplied.extend(given(&b.inputs));
    let selective = !b.stage_identifiers.is_empty();
    let mode = if selective { Mode::Selective } else { Mode::Full };
    launch_planned(app, p, &scope, &doc, planned, supplied, mode, selective, None).await
}

/// The values input sets give, by path, in the order applied (for the run dialog to show before running).
pub async fn input_set_preview(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    refs: &[String],
) -> ApiResult<BTreeMap<String, String>> {
    let scope = project_scope(app, p, org, project).await?;
    if refs.is_empty() {
        return Ok(BTreeMap::new());
    }
    app.require_some(p, Permission::INPUT_SET_VIEW, "input_set", &scope).await?;
    Ok(input_set_values(app, &scope, refs).await?.into_iter().map(|(k, (v, _))| (k, v)).collect())
}

/// A page of history: executions newest first, and the cursor of the next page.
#[derive(Debug, Serialize)]
pub struct HistoryPage {
    /// Executions the caller may view, newest first.
    pub items: Vec<Execution>,
    /// The cursor of the next page, if there may be one.
    pub next_cursor: Option<String>,
}

/// Execution history of a project, newest first, with cursor pagination.
pub async fn history(app: &App, p: &Principal, org: &str, project: &str, q: &ListQuery) -> ApiResult<HistoryPage> {
    let scope = project_scope(app, p, org, project).await?;
    app.require_some(p, Permission::EXECUTION_VIEW, "pipeline", &scope).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 200".into()));
    }
    let before = match &q.cursor {
        Some(c) => {
            let (at, id) = c.split_once(':').ok_or_else(|| ApiError::BadRequest("malformed cursor".into()))?;
            Some((at.parse::<i64>().map_err(|_| ApiError::BadRequest("malformed cursor".into()))?, id.to_string()))
        }
        None => None,
    };
    let status = q.status.as_deref().map(str::parse::<Status>).transpose().map_err(ApiError::BadRequest)?;
    let mode = q.mode.as_deref().map(str::parse::<Mode>).transpose().map_err(ApiError::BadRequest)?;
    let items = app
        .store
        .executions(&ExecutionQuery {
            org: Some(org.to_string()),
            project: Some(project.to_string()),
            pipeline: q.pipeline.clone(),
            status,
            mode,
            triggered_by: q.triggered_by.clone(),
            since: q.since,
            until: q.until,
            chain_of: q.chain_of.clone(),
            before,
            limit: Some(limit),
        })
        .await?;
    let next_cursor =
        (items.len() as i64 == limit).then(|| items.last().map(|e| format!("{}:{}", e.created_at, e.id))).flatten();
    let policy = app.policy().await?;
    let items = items
        .into_iter()
        .filter(|e| {
            policy.allows(&p.who, Permission::EXECUTION_VIEW, &Resource::new("pipeline", &e.pipeline, scope.clone()))
        })
        .collect();
    Ok(HistoryPage { items, next_cursor })
}

/// One execution with its nodes and its re-run / retry chain.
#[derive(Debug, Serialize)]
pub struct ExecutionView {
    /// The record.
    pub execution: Execution,
    /// Stages, step groups, steps and attempts, in creation order.
    pub nodes: Vec<Node>,
    /// The execution it derives from and those derived from it, oldest first.
    pub chain: Vec<Execution>,
}

/// One execution: its record, nodes (stages, steps, attempts, outputs, provenance) and retry chain.
pub async fn execution(app: &App, p: &Principal, id: &str) -> ApiResult<ExecutionView> {
    let (e, _) = execution_for(app, p, id, Permission::EXECUTION_VIEW).await?;
    let nodes = app.store.nodes(&e.id).await?;
    let root = e.original_id.clone().unwrap_or_else(|| e.id.clone());
    let mut chain =
        app.store.executions(&ExecutionQuery { chain_of: Some(root), limit: Some(1000), ..Default::default() }).await?;
    chain.reverse();
    Ok(ExecutionView { execution: e, nodes, chain })
}

/// The nodes of an execution, in creation order.
pub async fn nodes(app: &App, p: &Principal, id: &str) -> ApiResult<Vec<Node>> {
    let (e, _) = execution_for(app, p, id, Permission::EXECUTION_VIEW).await?;
    Ok(app.store.nodes(&e.id).await?)
}

/// The status transitions of an execution and its nodes.
pub async fn transitions(app: &App, p: &Principal, id: &str) -> ApiResult<Vec<Transition>> {
    let (e, _) = execution_for(app, p, id, Permission::EXECUTION_VIEW).await?;
    Ok(app.store.transitions(&e.id).await?)
}

/// A page of stored logs.
#[derive(Debug, Serialize)]
pub struct LogPage {
    /// Chunks in the order they were written (each: lines of `time\tstream\ttext`).
    pub items: Vec<LogChunk>,
    /// The cursor of the next page, if there may be one.
    pub next_cursor: Option<i64>,
}

/// Stored logs, paged: at most `limit` chunks and about 4 MiB of text a page.
pub async fn logs(app: &App, p: &Principal, id: &str, q: &LogQuery) -> ApiResult<LogPage> {
    let (e, _) = execution_for(app, p, id, Permission::EXECUTION_VIEW).await?;
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
    }
    let mut chunks = app.store.logs_after(&e.id, q.after.unwrap_or(0), limit).await?;
    let full = chunks.len() as i64 == limit;
    // A page holds at most LOG_PAGE_BYTES of text (and at least one chunk): the rest is on the next page.
    let mut bytes = 0;
    let keep = chunks
        .iter()
        .position(|c| {
            bytes += c.data.len();
            bytes > LOG_PAGE_BYTES
        })
        .map_or(chunks.len(), |i| i.max(1));
    let cut = keep < chunks.len();
    chunks.truncate(keep);
    let next_cursor = (full || cut).then(|| chunks.last().map(|c| c.cursor)).flatten();
    Ok(LogPage { items: chunks, next_cursor })
}

/// Abort an execution: a running one stops within a moment; a queued one that no engine here owns ends at once.
pub async fn abort(app: &App, p: &Principal, id: &str) -> ApiResult<Execution> {
    let (e, scope) = execution_for(app, p, id, Permission::EXECUTION_ABORT).await?;
    if !app.store.request_abort(&e.id).await? {
        return Err(ApiError::Conflict(format!(
            "execution {} already ended {}; there is nothing to abort",
            e.id, e.status
        )));
    }
    match app.runner.news(&e.id) {
        Some(n) => n.notify_waiters(),
        // Queued with no engine running it here: nothing will start it now, so it ends at once.
        None if e.status == Status::Queued => {
            app.store
                .set_execution_status(
                    &e.id,
                    Status::Aborted,
                    Some("aborted before it started"),
                    &store::Fence::unowned(),
                )
                .await?;
        }
        None => {}
    }
    app.audit(&p.display(), &p.address, "abort", "execution", &e.id, &scope, serde_json::json!({})).await?;
    Ok(e)
}

/// A recorded decision.
#[derive(Debug, Serialize)]
pub struct Decided {
    /// The execution.
    pub execution_id: String,
    /// The waiting step's path.
    pub node: String,
    /// `approve`, `reject`, or the intervention action.
    pub action: String,
}

/// Approve (or, with `approve` false, reject) a waiting HarnessApproval step.
pub async fn approval(app: &App, p: &Principal, id: &str, approve: bool, b: ApprovalBody) -> ApiResult<Decided> {
    let inputs = approver_inputs(&b);
    let action = if approve { DecisionAction::Approve } else { DecisionAction::Reject };
    decide(app, p, id, Status::ApprovalWaiting, action, b.node.as_deref(), b.comment, inputs).await
}

/// Decide for a step waiting in InterventionWaiting.
pub async fn intervene(app: &App, p: &Principal, id: &str, b: InterveneBody) -> ApiResult<Decided> {
    decide(app, p, id, Status::InterventionWaiting, b.action.decision(), b.node.as_deref(), None, serde_json::json!({}))
        .await
}

/// Values for runtime inputs a running execution asks for (`.executionInput()`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputBody {
    /// Values by the path the execution lists (`pipeline.stages.deploy.variables.region`).
    pub inputs: BTreeMap<String, String>,
}

/// Give values for the runtime inputs an execution waits for: checked as at start, all or nothing.
pub async fn give_inputs(app: &App, p: &Principal, id: &str, b: InputBody) -> ApiResult<launch::Given> {
    let (e, scope) = execution_for(app, p, id, Permission::PIPELINE_EXECUTE).await?;
    let given =
        launch::give_inputs(app.store.as_ref(), &e, &b.inputs, &p.display()).await.map_err(|err| match err {
            launch::LaunchError::BadRequest(m) => ApiError::Conflict(m),
            other => ApiError::Launch(other),
        })?;
    app.audit(&p.display(), &p.address, "input", "execution", &e.id, &scope, serde_json::json!({"paths": given.given}))
        .await?;
    Ok(given)
}

/// Run an execution again (the YAML it ran, its inputs and selection), or only some of its stages.
pub async fn rerun(app: &Arc<App>, p: &Principal, id: &str, b: RerunBody) -> ApiResult<Execution> {
    let (orig, scope) = execution_for(app, p, id, Permission::PIPELINE_EXECUTE).await?;
    let _admitted = app.planning(p).await?;
    let r = rerun_parts(app, &orig, &scope, &b).await?;
    let selective = !r.selection.stages.is_empty();
    let parent = Some(launch::derived_from(&orig));
    launch_planned(app, p, &scope, &r.doc, r.planned, r.supplied, r.mode, selective, parent).await
}

/// What a re-run would do, as [`plan`] gives it: the plan, and with inputs, those checked too.
pub async fn plan_rerun(app: &Arc<App>, p: &Principal, id: &str, b: RerunBody) -> ApiResult<serde_json::Value> {
    let (orig, scope) = execution_for(app, p, id, Permission::PIPELINE_EXECUTE).await?;
    let _admitted = app.planning(p).await?;
    let r = rerun_parts(app, &orig, &scope, &b).await?;
    let json = launch::plan_json(&r.planned);
    if r.planned.plan.satisfiable && (!b.inputs.is_empty() || !b.input_set_refs.is_empty()) {
        let run = r.planned.plan.run_stages();
        launch::prepare(&r.doc, &r.supplied, (!r.selection.stages.is_empty()).then_some(run.as_slice()))?;
    }
    Ok(json)
}

/// A re-run of `orig`, planned: the YAML it ran, the selection, and the inputs (its own, then input sets, then
/// those given).
struct RerunParts {
    doc: Document,
    selection: Selection,
    mode: Mode,
    planned: Planned,
    supplied: BTreeMap<String, (String, InputSource)>,
}

async fn rerun_parts(app: &App, orig: &Execution, scope: &Scope, b: &RerunBody) -> ApiResult<RerunParts> {
    let doc = launch::recorded_document(app.store.as_ref(), orig).await?;
    let (selection, mode) = launch::rerun_selection(orig, &b.stage_identifiers);
    let planned = launch::plan(&doc, &selection, Some(app.store.as_ref())).await?;
    let mut supplied = launch::original_inputs(orig);
    supplied.extend(input_set_values(app, scope, &b.input_set_refs).await?);
    supplied.extend(given(&b.inputs));
    Ok(RerunParts { doc, selection, mode, planned, supplied })
}

/// Resume a failed or aborted execution from its failed stage, reusing what succeeded.
pub async fn retry(app: &Arc<App>, p: &Principal, id: &str, b: RetryBody) -> ApiResult<Execution> {
    let (orig, scope) = execution_for(app, p, id, Permission::PIPELINE_EXECUTE).await?;
    let _admitted = app.planning(p).await?;
    let doc = launch::recorded_document(app.store.as_ref(), &orig).await?;
    let sel = launch::retry_selection(app.store.as_ref(), &orig, &doc, b.stage.as_deref(), b.only_failed).await?;
    let planned = launch::plan(&doc, &sel, Some(app.store.as_ref())).await?;
    let mut supplied = launch::original_inputs(&orig);
    supplied.extend(given(&b.inputs));
    launch_planned(app, p, &scope, &doc, planned, supplied, Mode::Retry, true, Some(launch::derived_from(&orig))).await
}

/// The execution `id` (or unique prefix), when the caller holds `permission` on its pipeline.
pub async fn execution_for(
    app: &App,
    p: &Principal,
    id: &str,
    permission: Permission,
) -> ApiResult<(Execution, Scope)> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::BadRequest(format!(
            "`{}` is not an execution id",
            id.chars().take(80).collect::<String>()
        )));
    }
    // Only executions the caller may view are looked at: one it may not see answers exactly like one that does
    // not exist, and a prefix only ever matches visible executions.
    let policy = app.policy().await?;
    let visible = |e: &Execution| {
        policy.allows(
            &p.who,
            Permission::EXECUTION_VIEW,
            &Resource::new("pipeline", &e.pipeline, Scope::project(&e.org, &e.project)),
        )
    };
    let missing = || ApiError::NotFound(format!("no execution `{id}`"));
    let mut found: Vec<Execution> = app.store.executions_by_prefix(id, 50).await?.into_iter().filter(visible).collect();
    let e = match found.iter().position(|e| e.id.eq_ignore_ascii_case(id)) {
        Some(i) => found.swap_remove(i),
        None if found.len() == 1 => found.swap_remove(0),
        None if found.is_empty() => return Err(missing()),
        None => return Err(ApiError::BadRequest(format!("`{id}` matches several executions; give more of the id"))),
    };
    let scope = Scope::project(&e.org, &e.project);
    app.require(p, permission, &Resource::new("pipeline", &e.pipeline, scope.clone())).await?;
    Ok((e, scope))
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    app: &App,
    p: &Principal,
    id: &str,
    status: Status,
    action: DecisionAction,
    node: Option<&str>,
    comment: Option<String>,
    inputs: serde_json::Value,
) -> ApiResult<Decided> {
    let (e, scope) = execution_for(app, p, id, Permission::PIPELINE_EXECUTE).await?;
    let n = launch::waiting_node(app.store.as_ref(), &e, node, status)
        .await
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    if action.kind() == DecisionKind::Approval {
        check_approver(app, p, &e, &scope, &n, action).await?;
    }
    app.store
        .put_decision(&Decision {
            execution_id: e.id.clone(),
            node_id: n.id.clone(),
            action,
            by: p.display(),
            comment,
            inputs,
            at: now_ms(),
        })
        .await?;
    app.audit(
        &p.display(),
        &p.address,
        action.as_str(),
        "execution",
        &e.id,
        &scope,
        serde_json::json!({"node": n.path}),
    )
    .await?;
    Ok(Decided { execution_id: e.id, node: n.path, action: action.as_str().to_string() })
}

/// Who may decide an approval: a member of one of its `userGroups` (when it names any); and under
/// `disallowPipelineExecutor`, an approval by whoever ran the execution is answered — and audited — as not
/// counted.
async fn check_approver(
    app: &App,
    p: &Principal,
    e: &Execution,
    scope: &Scope,
    n: &store::Node,
    action: DecisionAction,
) -> ApiResult<()> {
    let doc = launch::recorded_document(app.store.as_ref(), e).await?;
    let Some(spec::StepSpec::HarnessApproval(a)) =
        doc.pipeline().and_then(|pl| launch::step_of(pl, n)).map(|s| &s.spec)
    else {
        return Ok(());
    };
    let groups: Vec<String> = a.approvers.user_groups.iter().map(|g| g.value.clone()).collect();
    let member = p.who.kind == "user"
        && crate::service::access::in_user_groups(app, &p.who.id, &groups, &e.org, &e.project).await?;
    if !groups.is_empty() && !member {
        return Err(ApiError::Forbidden {
            permission: "approval".into(),
            message: format!("you are not in any of this approval's user groups ({})", groups.join(", ")),
        });
    }
    if action == DecisionAction::Approve && a.approvers.disallow_pipeline_executor && p.display() == e.triggered_by {
        app.audit(
            &p.display(),
            &p.address,
            "approve_not_counted",
            "execution",
            &e.id,
            scope,
            serde_json::json!({"node": n.path, "reason": "disallowPipelineExecutor"}),
        )
        .await?;
        return Err(ApiError::Forbidden {
            permission: "approval".into(),
            message: "your approval is not counted: you ran this execution and the approval disallows its executor (disallowPipelineExecutor); another approver must decide".into(),
        });
    }
    Ok(())
}

fn approver_inputs(b: &ApprovalBody) -> serde_json::Value {
    serde_json::Value::Object(b.inputs.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect())
}
