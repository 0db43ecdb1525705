//! Organizations and projects over the JSON API: thin adapters over the use cases in `service::scopes`.

use super::Items;
use crate::App;
use crate::auth::Principal;
use crate::error::{ApiResult, Body, Path};
use crate::service::scopes::{self as svc, ScopeBody, ScopeUpdate};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use std::sync::Arc;

/// List the organizations the caller may see.
#[utoipa::path(get, path = "/api/v1/orgs", tag = "scopes", responses((status = 200, description = "Organizations")))]
pub async fn list_orgs(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Items<svc::ScopeView>>> {
    Ok(Json(Items { items: svc::list_orgs(&app, &p).await? }))
}

/// Create an organization.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "scopes", request_body = ScopeBody, responses((status = 201, description = "Created"), (status = 409, description = "Exists")))]
pub async fn create_org(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<ScopeBody>,
) -> ApiResult<(StatusCode, Json<svc::ScopeView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_org(&app, &p, b).await?)))
}

/// One organization.
#[utoipa::path(get, path = "/api/v1/orgs/{org}", tag = "scopes", params(("org" = String, Path)), responses((status = 200, description = "The organization")))]
pub async fn get_org(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
) -> ApiResult<Json<svc::ScopeView>> {
    Ok(Json(svc::get_org(&app, &p, &org).await?))
}

/// Change an organization's name or description.
#[utoipa::path(put, path = "/api/v1/orgs/{org}", tag = "scopes", params(("org" = String, Path)), request_body = ScopeUpdate, responses((status = 200, description = "Updated")))]
pub async fn update_org(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
    Body(b): Body<ScopeUpdate>,
) -> ApiResult<Json<svc::ScopeView>> {
    Ok(Json(svc::update_org(&app, &p, &org, b).await?))
}

/// Delete an organization and everything in it.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}", tag = "scopes", params(("org" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_org(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
) -> ApiResult<StatusCode> {
    svc::delete_org(&app, &p, &org).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List an organization's projects the caller may see.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects", tag = "scopes", params(("org" = String, Path)), responses((status = 200, description = "Projects")))]
pub async fn list_projects(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
) -> ApiResult<Json<Items<svc::ScopeView>>> {
    Ok(Json(Items { items: svc::list_projects(&app, &p, &org).await? }))
}

/// Create a project.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/projects", tag = "scopes", params(("org" = String, Path)), request_body = ScopeBody, responses((status = 201, description = "Created"), (status = 409, description = "Exists")))]
pub async fn create_project(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
    Body(b): Body<ScopeBody>,
) -> ApiResult<(StatusCode, Json<svc::ScopeView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_project(&app, &p, &org, b).await?)))
}

/// One project.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}", tag = "scopes", params(("org" = String, Path), ("project" = String, Path)), responses((status = 200, description = "The project")))]
pub async fn get_project(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
) -> ApiResult<Json<svc::ScopeView>> {
    Ok(Json(svc::get_project(&app, &p, &org, &project).await?))
}

/// Change a project's name or description.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/projects/{project}", tag = "scopes", params(("org" = String, Path), ("project" = String, Path)), request_body = ScopeUpdate, responses((status = 200, description = "Updated")))]
pub async fn update_project(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
    Body(b): Body<ScopeUpdate>,
) -> ApiResult<Json<svc::ScopeView>> {
    Ok(Json(svc::update_project(&app, &p, &org, &project, b).await?))
}

/// Delete a project and everything in it.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/projects/{project}", tag = "scopes", params(("org" = String, Path), ("project" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_project(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    svc::delete_project(&app, &p, &org, &project).await?;
    Ok(StatusCode::NO_CONTENT)
}
