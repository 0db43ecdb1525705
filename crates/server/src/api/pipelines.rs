//! Pipelines and the entities a project holds over the JSON API: reading the YAML or JSON body, and thin
//! adapters over the use cases in `service::pipelines`.

use super::Items;
use crate::App;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Path};
use crate::service::pipelines::{self as svc, EntityKind, Upload};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Request, State};
use axum::http::StatusCode;
use std::sync::Arc;

/// Reads a YAML document from the body: `application/yaml` (also `application/x-yaml`, `text/yaml`) or JSON
/// `{"yaml": "…"}`; secrets come as JSON objects.
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

/// List a project's pipelines.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/pipelines", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path)), responses((status = 200, description = "Pipelines")))]
pub async fn list_pipelines(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
) -> ApiResult<Json<Items<svc::PipelineView>>> {
    Ok(Json(Items { items: svc::list_pipelines(&app, &p, &org, &project).await? }))
}

/// Create a pipeline from YAML.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/projects/{project}/pipelines", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 201, description = "Created"), (status = 422, description = "Invalid YAML, with line and column"), (status = 409, description = "Exists")))]
pub async fn create_pipeline(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
    body: Upload,
) -> ApiResult<(StatusCode, Json<svc::PipelineView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_pipeline(&app, &p, &org, &project, body.yaml()?).await?)))
}

/// One pipeline with its current YAML.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path)), responses((status = 200, description = "The pipeline")))]
pub async fn get_pipeline(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline)): Path<(String, String, String)>,
) -> ApiResult<Json<svc::PipelineView>> {
    Ok(Json(svc::get_pipeline(&app, &p, &org, &project, &pipeline).await?))
}

/// Create or change a pipeline from YAML (a new version).
#[utoipa::path(put, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 200, description = "Updated"), (status = 201, description = "Created"), (status = 422, description = "Invalid YAML")))]
pub async fn put_pipeline(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline)): Path<(String, String, String)>,
    body: Upload,
) -> ApiResult<(StatusCode, Json<svc::PipelineView>)> {
    let (created, v) = svc::put_pipeline(&app, &p, &org, &project, &pipeline, body.yaml()?).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(v)))
}

/// Delete a pipeline (its executions stay in the history).
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_pipeline(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    svc::delete_pipeline(&app, &p, &org, &project, &pipeline).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The YAML of one version of a pipeline (what an execution ran).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}/versions/{version}", tag = "pipelines", params(("org" = String, Path), ("project" = String, Path), ("pipeline" = String, Path), ("version" = i64, Path)), responses((status = 200, description = "The YAML")))]
pub async fn pipeline_version(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, pipeline, version)): Path<(String, String, String, i64)>,
) -> ApiResult<Json<svc::PipelineVersion>> {
    Ok(Json(svc::pipeline_version(&app, &p, &org, &project, &pipeline, version).await?))
}

/// List a project's input sets, services, environments, infrastructure definitions or secrets (no values).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/{kind}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path)), responses((status = 200, description = "Entities")))]
pub async fn list_entities(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind)): Path<(String, String, EntityKind)>,
) -> ApiResult<Json<Items<svc::EntityView>>> {
    Ok(Json(Items { items: svc::list_entities(&app, &p, &org, &project, kind).await? }))
}

/// Create an entity (YAML; secrets as JSON).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/projects/{project}/{kind}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 201, description = "Created"), (status = 409, description = "Exists")))]
pub async fn create_entity(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind)): Path<(String, String, EntityKind)>,
    body: Upload,
) -> ApiResult<(StatusCode, Json<svc::EntityView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_entity(&app, &p, &org, &project, kind, body).await?)))
}

/// One entity (a secret without its value).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path), ("identifier" = String, Path)), responses((status = 200, description = "The entity")))]
pub async fn get_entity(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind, id)): Path<(String, String, EntityKind, String)>,
) -> ApiResult<Json<svc::EntityView>> {
    Ok(Json(svc::get_entity(&app, &p, &org, &project, kind, &id).await?))
}

/// Create or replace an entity.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path), ("identifier" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 200, description = "Updated")))]
pub async fn put_entity(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind, id)): Path<(String, String, EntityKind, String)>,
    body: Upload,
) -> ApiResult<Json<svc::EntityView>> {
    Ok(Json(svc::put_entity(&app, &p, &org, &project, kind, &id, body).await?))
}

/// Delete an entity.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}", tag = "entities", params(("org" = String, Path), ("project" = String, Path), ("kind" = EntityKind, Path), ("identifier" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_entity(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project, kind, id)): Path<(String, String, EntityKind, String)>,
) -> ApiResult<StatusCode> {
    svc::delete_entity(&app, &p, &org, &project, kind, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Publish a version of a template at the account (needs `template:create_edit` at the account).
#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", request_body(content = String, content_type = "application/yaml"), responses((status = 201, description = "Created"), (status = 409, description = "This version exists")))]
pub async fn create_account_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    body: Upload,
) -> ApiResult<(StatusCode, Json<svc::EntityView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_shared_template(&app, &p, None, body).await?)))
}

/// One template of the account.
#[utoipa::path(get, path = "/api/v1/templates/{identifier}", tag = "templates", params(("identifier" = String, Path)), responses((status = 200, description = "The template")))]
pub async fn get_account_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<svc::EntityView>> {
    Ok(Json(svc::get_shared_template(&app, &p, None, &id).await?))
}

/// Add or replace a version of a template of the account.
#[utoipa::path(put, path = "/api/v1/templates/{identifier}", tag = "templates", params(("identifier" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 200, description = "Updated")))]
pub async fn put_account_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Upload,
) -> ApiResult<Json<svc::EntityView>> {
    Ok(Json(svc::put_shared_template(&app, &p, None, &id, body).await?))
}

/// Delete a template of the account.
#[utoipa::path(delete, path = "/api/v1/templates/{identifier}", tag = "templates", params(("identifier" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_account_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    svc::delete_shared_template(&app, &p, None, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Publish a version of a template in an organization (needs `template:create_edit` there).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/templates", tag = "templates", params(("org" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 201, description = "Created"), (status = 409, description = "This version exists")))]
pub async fn create_org_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
    body: Upload,
) -> ApiResult<(StatusCode, Json<svc::EntityView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_shared_template(&app, &p, Some(&org), body).await?)))
}

/// One template of an organization.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/templates/{identifier}", tag = "templates", params(("org" = String, Path), ("identifier" = String, Path)), responses((status = 200, description = "The template")))]
pub async fn get_org_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<Json<svc::EntityView>> {
    Ok(Json(svc::get_shared_template(&app, &p, Some(&org), &id).await?))
}

/// Add or replace a version of a template of an organization.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/templates/{identifier}", tag = "templates", params(("org" = String, Path), ("identifier" = String, Path)), request_body(content = String, content_type = "application/yaml"), responses((status = 200, description = "Updated")))]
pub async fn put_org_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, id)): Path<(String, String)>,
    body: Upload,
) -> ApiResult<Json<svc::EntityView>> {
    Ok(Json(svc::put_shared_template(&app, &p, Some(&org), &id, body).await?))
}

/// Delete a template of an organization.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/templates/{identifier}", tag = "templates", params(("org" = String, Path), ("identifier" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_org_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    svc::delete_shared_template(&app, &p, Some(&org), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which version of a template is stable.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StableBody {
    /// The version label to mark stable.
    #[serde(rename = "versionLabel")]
    pub version_label: String,
}

/// Mark a version of a template of the account stable (needs `template:create_edit` at the account).
#[utoipa::path(post, path = "/api/v1/templates/{identifier}/stable", tag = "templates", params(("identifier" = String, Path)), request_body = StableBody, responses((status = 200, description = "Marked")))]
pub async fn stable_account_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    crate::error::Body(b): crate::error::Body<StableBody>,
) -> ApiResult<Json<svc::EntityView>> {
    Ok(Json(svc::mark_stable(&app, &p, None, &id, &b.version_label).await?))
}

/// Mark a version of a template of an organization stable (needs `template:create_edit` there).
#[utoipa::path(post, path = "/api/v1/orgs/{org}/templates/{identifier}/stable", tag = "templates", params(("org" = String, Path), ("identifier" = String, Path)), request_body = StableBody, responses((status = 200, description = "Marked")))]
pub async fn stable_org_template(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, id)): Path<(String, String)>,
    crate::error::Body(b): crate::error::Body<StableBody>,
) -> ApiResult<Json<svc::EntityView>> {
    Ok(Json(svc::mark_stable(&app, &p, Some(&org), &id, &b.version_label).await?))
}
