//! Pipelines and the entities a project holds. Pipelines are created and updated from YAML (as
//! `application/yaml`, or JSON `{"yaml": "…"}`) with full validation — errors come back as JSON with line and
//! column — and every change is a new version, so executions keep the YAML they ran. Input sets, services,
//! environments and infrastructure definitions are YAML entity files; secrets are JSON and their values are
//! write-only.

use super::{project_scope, record, view};
use crate::App;
use crate::auth::Principal;
use crate::error::Path;
use crate::error::{ApiError, ApiResult, identifier};
use crate::rbac::{Resource, Scope};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use spec::Entity;
use std::sync::Arc;
use store::now_ms;

/// A YAML document from the body: `application/yaml` (also `application/x-yaml`, `text/yaml`) or JSON
/// `{"yaml": "…"}`. Secrets are JSON objects, kept as such.
pub enum Upload {
    /// YAML text.
    Yaml(String),
    /// A JSON object (secrets).
    Json(serde_json::Value),
}

impl<S: Send + Sync> FromRequest<S> for Upload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ctype = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let bytes =
            Bytes::from_request(req, state).await.map_err(|e| ApiError::body_unreadable(e.status(), e.body_text()))?;
        match ctype.as_str() {
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                String::from_utf8(bytes.to_vec())
                    .map(Upload::Yaml)
                    .map_err(|_| ApiError::BadRequest("the YAML is not UTF-8".into()))
            }
            "application/json" => {
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
                match v.get("yaml") {
                    Some(serde_json::Value::String(y)) => Ok(Upload::Yaml(y.clone())),
                    _ => Ok(Upload::Json(v)),
                }
            }
            other => Err(ApiError::UnsupportedMediaType(format!(
                "content type `{other}` is not accepted: send YAML as `application/yaml`, or JSON `{{\"yaml\": \"…\"}}` as `application/json`"
            ))),
        }
    }
}

impl Upload {
    fn yaml(self) -> ApiResult<String> {
        match self {
            Upload::Yaml(y) => Ok(y),
            Upload::Json(_) => Err(ApiError::BadRequest("expected YAML, or JSON with a `yaml` string field".into())),
        }
    }
}

fn check_scope(
    meta_org: Option<&spec::Str>,
    meta_project: Option<&spec::Str>,
    scope: &Scope,
    what: &str,
) -> ApiResult<()> {
    let org = meta_org.map_or("default", |s| s.as_str());
    let project = meta_project.map_or("default", |s| s.as_str());
    if org != scope.org || project != scope.project {
        return Err(ApiError::BadRequest(format!(
            "the {what} says orgIdentifier `{org}` / projectIdentifier `{project}` but was sent to `{}/{}`; set `orgIdentifier: {}` and `projectIdentifier: {}`",
            scope.org, scope.project, scope.org, scope.project
        )));
    }
    Ok(())
}

async fn save_pipeline(
    app: &App,
    p: &Principal,
    scope: &Scope,
    yaml: String,
    expect: Option<&str>,
    create: bool,
) -> ApiResult<(StatusCode, serde_json::Value)> {
    app.check_pipeline_size(&yaml)?;
    let doc = launch::pipeline_document("pipeline.yaml", yaml)?;
    let Some(Entity::Pipeline(pl)) = &doc.entity else { return Err(ApiError::BadRequest("not a pipeline".into())) };
    check_scope(pl.org_identifier.as_ref(), pl.project_identifier.as_ref(), scope, "pipeline")?;
    let id = pl.identifier.value.clone();
    if let Some(e) = expect
        && e != id
    {
        return Err(ApiError::BadRequest(format!(
            "the YAML's identifier is `{id}`, the path names `{e}`; they must match"
        )));
    }
    let perm = "pipeline:create_edit";
    app.require(p, perm, &Resource::new("pipeline", &id, scope.clone())).await?;
    let existing = app.store.record("pipeline", &scope.org, &scope.project, &id).await?;
    if create && existing.is_some() {
        return Err(ApiError::Conflict(format!("pipeline `{id}` exists; PUT …/pipelines/{id} changes it")));
    }
    let version = app.store.save_pipeline(&scope.org, &scope.project, &id, &doc.source).await?;
    let mut r = record("pipeline", scope, &id, serde_json::json!({"name": pl.name.value, "version": version}));
    if let Some(e) = &existing {
        r.created_at = e.created_at;
    }
    app.store.put_record(&r, true).await?;
    let warnings: Vec<_> = doc
        .warnings()
        .map(|d| {
            let mut v = serde_json::to_value(d.to_json()).unwrap_or_default();
            v["severity"] = "warning".into();
            v
        })
        .collect();
    app.audit(
        &p.display(),
        &p.address,
        if existing.is_some() { "update" } else { "create" },
        "pipeline",
        &id,
        scope,
        serde_json::json!({"version": version}),
    )
    .await?;
    let mut v = view(&r);
    v["warnings"] = serde_json::Value::Array(warnings);
    Ok((if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED }, v))
}

/// List a project's pipelines.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/pipelines", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path)), responses((status = 200, description = "Pipelines")))]
pub async fn list_pipelines(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    app.require_some(&p, "pipeline:view", "pipeline", &scope).await?;
    let policy = app.policy().await?;
    let items: Vec<_> = app
        .store
        .records("pipeline", Some(&org), Some(&project))
        .await?
        .iter()
        .filter(|r| policy.allows(&p.who, "pipeline:view", &Resource::new("pipeline", &r.identifier, scope.clone())))
        .map(view)
        .collect();
    Ok(Json(serde_json::json!({"items": items})))
}

/// Create a pipeline from YAML.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/projects/{project}/pipelines", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 201, description = "Created"), (status = 422, description = "Invalid YAML, with line and column"), (status = 409, description = "Exists")))]
pub async fn create_pipeline(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
    body: Upload,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    app.require_some(&p, "pipeline:create_edit", "pipeline", &scope).await?;
    let (status, v) = save_pipeline(&app, &p, &scope, body.yaml()?, None, true).await?;
    Ok((status, Json(v)))
}

async fn pipeline_record(app: &App, p: &Principal, scope: &Scope, id: &str) -> ApiResult<store::Record> {
    identifier("pipeline", id)?;
    match app.store.record("pipeline", &scope.org, &scope.project, id).await? {
        Some(r) => Ok(r),
        None => Err(app.not_found(p, scope, format!("no pipeline `{id}` in {}", scope.describe())).await),
    }
}

/// One pipeline with its current YAML.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path)), responses((status = 200, description = "The pipeline")))]
pub async fn get_pipeline(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline)): Path<(String, String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    let r = pipeline_record(&app, &p, &scope, &pipeline).await?;
    app.require(&p, "pipeline:view", &Resource::new("pipeline", &pipeline, scope.clone())).await?;
    let version = r.body["version"].as_i64().unwrap_or(1);
    let mut v = view(&r);
    v["yaml"] = app.store.pipeline_yaml(&org, &project, &pipeline, version).await?.into();
    Ok(Json(v))
}

/// Create or change a pipeline from YAML (a new version).
#[utoipa::path(put, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 200, description = "Updated"), (status = 201, description = "Created"), (status = 422, description = "Invalid YAML")))]
pub async fn put_pipeline(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    body: Upload,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    identifier("pipeline", &pipeline)?;
    app.require(&p, "pipeline:create_edit", &Resource::new("pipeline", &pipeline, scope.clone())).await?;
    let (status, v) = save_pipeline(&app, &p, &scope, body.yaml()?, Some(&pipeline), false).await?;
    Ok((status, Json(v)))
}

/// Delete a pipeline (its executions stay in the history).
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_pipeline(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    pipeline_record(&app, &p, &scope, &pipeline).await?;
    app.require(&p, "pipeline:delete", &Resource::new("pipeline", &pipeline, scope.clone())).await?;
    app.store.delete_record("pipeline", &org, &project, &pipeline).await?;
    app.audit(&p.display(), &p.address, "delete", "pipeline", &pipeline, &scope, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The YAML of one version of a pipeline (what an execution ran).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}/versions/{version}", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path), ("version" = i64, Path)), responses((status = 200, description = "The YAML")))]
pub async fn pipeline_version(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline, version)): Path<(String, String, String, i64)>,
) -> ApiResult<Json<serde_json::Value>> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    identifier("pipeline", &pipeline)?;
    app.require(&p, "pipeline:view", &Resource::new("pipeline", &pipeline, scope.clone())).await?;
    let yaml = app.store.pipeline_yaml(&org, &project, &pipeline, version).await?;
    Ok(Json(serde_json::json!({"identifier": pipeline, "version": version, "yaml": yaml})))
}

/// The kinds of entities a project holds, by their path segment.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EntityKind {
    /// `inputSet:` / `overlayInputSet:` files.
    InputSets,
    /// `service:` files.
    Services,
    /// `environment:` files.
    Environments,
    /// `infrastructureDefinition:` files.
    Infrastructures,
    /// Secrets (JSON `{identifier, name, value}`).
    Secrets,
}

impl EntityKind {
    /// The record kind.
    pub fn kind(self) -> &'static str {
        match self {
            EntityKind::InputSets => "input_set",
            EntityKind::Services => "service",
            EntityKind::Environments => "environment",
            EntityKind::Infrastructures => "infrastructure",
            EntityKind::Secrets => "secret",
        }
    }

    /// The resource type permissions name (infrastructure definitions are environments').
    pub fn rtype(self) -> &'static str {
        match self {
            EntityKind::Infrastructures => "environment",
            other => other.kind(),
        }
    }
}

async fn entity_body(
    app: &App,
    kind: EntityKind,
    scope: &Scope,
    body: Upload,
) -> ApiResult<(String, serde_json::Value)> {
    if let EntityKind::Secrets = kind {
        let Upload::Json(v) = body else {
            return Err(ApiError::UnsupportedMediaType(
                "secrets are JSON: {\"identifier\", \"name\", \"value\"}".into(),
            ));
        };
        let id = v["identifier"]
            .as_str()
            .ok_or_else(|| ApiError::BadRequest("a secret needs an `identifier` string".into()))?
            .to_string();
        let value =
            v["value"].as_str().ok_or_else(|| ApiError::BadRequest("a secret needs a `value` string".into()))?;
        identifier("secret", &id)?;
        let name = v["name"].as_str().unwrap_or(&id).to_string();
        // Sealed at rest; the value itself is never stored or returned.
        let sealed = app
            .keys
            .seal(&crate::secret_context(&scope.org, &scope.project, &id), value)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok((id, serde_json::json!({"name": name, "sealed": sealed})));
    }
    let yaml = body.yaml()?;
    app.check_pipeline_size(&yaml)?;
    let doc = spec::parse_document(&format!("{}.yaml", kind.kind()), yaml);
    if !doc.is_valid() {
        return Err(launch::LaunchError::Invalid {
            label: doc.path.clone(),
            diagnostics: doc.diagnostics.clone(),
            text: doc.source.clone(),
        }
        .into());
    }
    let meta = match (&doc.entity, kind) {
        (Some(Entity::InputSet(s)), EntityKind::InputSets) => &s.meta,
        (Some(Entity::OverlayInputSet(s)), EntityKind::InputSets) => &s.meta,
        (Some(Entity::Service(s)), EntityKind::Services) => &s.meta,
        (Some(Entity::Environment(s)), EntityKind::Environments) => &s.meta,
        (Some(Entity::Infrastructure(s)), EntityKind::Infrastructures) => &s.meta,
        (other, _) => {
            return Err(ApiError::BadRequest(format!(
                "expected a {} file, found a {}",
                kind.kind(),
                other.as_ref().map_or("?", Entity::kind)
            )));
        }
    };
    if meta.org_identifier.is_some() || meta.project_identifier.is_some() {
        check_scope(meta.org_identifier.as_ref(), meta.project_identifier.as_ref(), scope, kind.kind())?;
    }
    Ok((meta.identifier.value.clone(), serde_json::json!({"name": meta.name.value, "yaml": doc.source})))
}

/// List a project's input sets, services, environments, infrastructure definitions or secrets (no values).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/{kind}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path)), responses((status = 200, description = "Entities")))]
pub async fn list_entities(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind)): Path<(String, String, EntityKind)>,
) -> ApiResult<Json<serde_json::Value>> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    let perm = format!("{}:view", kind.rtype());
    app.require_some(&p, &perm, kind.rtype(), &scope).await?;
    let policy = app.policy().await?;
    let items: Vec<_> = app
        .store
        .records(kind.kind(), Some(&org), Some(&project))
        .await?
        .iter()
        .filter(|r| policy.allows(&p.who, &perm, &Resource::new(kind.rtype(), &r.identifier, scope.clone())))
        .map(view)
        .collect();
    Ok(Json(serde_json::json!({"items": items})))
}

/// Create an entity (YAML; secrets as JSON).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/projects/{project}/{kind}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 201, description = "Created"), (status = 409, description = "Exists")))]
pub async fn create_entity(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind)): Path<(String, String, EntityKind)>,
    body: Upload,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    app.require_some(&p, &format!("{}:create_edit", kind.rtype()), kind.rtype(), &scope).await?;
    let (id, b) = entity_body(&app, kind, &scope, body).await?;
    app.require(&p, &format!("{}:create_edit", kind.rtype()), &Resource::new(kind.rtype(), &id, scope.clone())).await?;
    let r = record(kind.kind(), &scope, &id, b);
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!("{} `{id}` exists in {}", kind.kind(), scope.describe())));
    }
    app.audit(&p.display(), &p.address, "create", kind.kind(), &id, &scope, serde_json::json!({})).await?;
    Ok((StatusCode::CREATED, Json(view(&r))))
}

async fn entity_record(
    app: &App,
    p: &Principal,
    scope: &Scope,
    kind: EntityKind,
    id: &str,
) -> ApiResult<store::Record> {
    identifier(kind.kind(), id)?;
    match app.store.record(kind.kind(), &scope.org, &scope.project, id).await? {
        Some(r) => Ok(r),
        None => Err(app.not_found(p, scope, format!("no {} `{id}` in {}", kind.kind(), scope.describe())).await),
    }
}

/// One entity (a secret without its value).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path), ("identifier" = String, Path)), responses((status = 200, description = "The entity")))]
pub async fn get_entity(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind, id)): Path<(String, String, EntityKind, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    let r = entity_record(&app, &p, &scope, kind, &id).await?;
    app.require(&p, &format!("{}:view", kind.rtype()), &Resource::new(kind.rtype(), &id, scope)).await?;
    Ok(Json(view(&r)))
}

/// Create or replace an entity.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path), ("identifier" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 200, description = "Updated")))]
pub async fn put_entity(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind, id)): Path<(String, String, EntityKind, String)>,
    body: Upload,
) -> ApiResult<Json<serde_json::Value>> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    identifier(kind.kind(), &id)?;
    app.require(&p, &format!("{}:create_edit", kind.rtype()), &Resource::new(kind.rtype(), &id, scope.clone())).await?;
    let (got, b) = entity_body(&app, kind, &scope, body).await?;
    if got != id {
        return Err(ApiError::BadRequest(format!(
            "the body's identifier is `{got}`, the path names `{id}`; they must match"
        )));
    }
    let mut r = record(kind.kind(), &scope, &id, b);
    if let Some(old) = app.store.record(kind.kind(), &org, &project, &id).await? {
        r.created_at = old.created_at;
    }
    r.updated_at = now_ms();
    app.store.put_record(&r, true).await?;
    app.audit(&p.display(), &p.address, "update", kind.kind(), &id, &scope, serde_json::json!({})).await?;
    Ok(Json(view(&r)))
}

/// Delete an entity.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path), ("identifier" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_entity(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind, id)): Path<(String, String, EntityKind, String)>,
) -> ApiResult<StatusCode> {
    let scope = project_scope(&app, &p, &org, &project).await?;
    entity_record(&app, &p, &scope, kind, &id).await?;
    app.require(&p, &format!("{}:delete", kind.rtype()), &Resource::new(kind.rtype(), &id, scope.clone())).await?;
    app.store.delete_record(kind.kind(), &org, &project, &id).await?;
    app.audit(&p.display(), &p.address, "delete", kind.kind(), &id, &scope, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}
