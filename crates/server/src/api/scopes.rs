//! Organizations and projects: list (only what the caller may see), create, get, update, delete. Deleting a
//! scope deletes everything in it: records (pipelines, entities, secrets, roles, bindings), service accounts
//! with their tokens, and the execution history.

use super::{record, view};
use crate::App;
use crate::auth::Principal;
use crate::error::Path;
use crate::error::{ApiError, ApiResult, Body, identifier};
use crate::rbac::{Resource, Scope};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// An organization or project to create.
#[derive(Deserialize, ToSchema)]
pub struct ScopeBody {
    /// Identifier.
    #[schema(schema_with = crate::contract::identifier)]
    pub identifier: String,
    /// Display name (default: the identifier).
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// An organization's or project's new name and description (the path names which; other fields, such as an
/// `identifier`, are ignored).
#[derive(Deserialize, ToSchema)]
pub struct ScopeUpdate {
    /// Display name (default: the identifier).
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

fn body_of(identifier: &str, name: &str, description: &str) -> serde_json::Value {
    serde_json::json!({"name": if name.is_empty() { identifier } else { name }, "description": description})
}

/// List the organizations the caller may see.
#[utoipa::path(get, path = "/api/v1/orgs", tag = "scopes", responses((status = 200, description = "Organizations")))]
pub async fn list_orgs(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<serde_json::Value>> {
    let policy = app.policy().await?;
    let items: Vec<_> = app
        .store
        .records("org", None, None)
        .await?
        .iter()
        .filter(|r| has_project_in(&policy, &p, &r.identifier))
        .map(view)
        .collect();
    Ok(Json(serde_json::json!({"items": items})))
}

fn has_project_in(policy: &crate::rbac::Policy, p: &Principal, org: &str) -> bool {
    policy.bindings.iter().any(|b| b.principal == p.who && (b.scope.org.is_empty() || b.scope.org == org))
}

/// Create an organization.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "scopes", request_body = ScopeBody, responses((status = 201, description = "Created"), (status = 409, description = "Exists")))]
pub async fn create_org(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<ScopeBody>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    app.require(&p, "org:create_edit", &Resource::new("org", &b.identifier, Scope::account())).await?;
    identifier("organization", &b.identifier)?;
    let r = record("org", &Scope::account(), &b.identifier, body_of(&b.identifier, &b.name, &b.description));
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!("organization `{}` exists", b.identifier)));
    }
    app.audit(
        &p.display(),
        &p.address,
        "create",
        "org",
        &b.identifier,
        &Scope::org(&b.identifier),
        serde_json::json!({}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&r))))
}

async fn org_record(app: &App, p: &Principal, org: &str) -> ApiResult<store::Record> {
    identifier("organization", org)?;
    match app.store.record("org", "", "", org).await? {
        Some(r) => Ok(r),
        None => Err(app.not_found(p, &Scope::org(org), format!("no organization `{org}`")).await),
    }
}

/// One organization.
#[utoipa::path(get, path = "/api/v1/orgs/{org}", tag = "scopes", params(("org" = String, Path)), responses((status = 200, description = "The organization")))]
pub async fn get_org(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let r = org_record(&app, &p, &org).await?;
    app.require(&p, "org:view", &Resource::new("org", &org, Scope::org(&org))).await?;
    Ok(Json(view(&r)))
}

/// Change an organization's name or description.
#[utoipa::path(put, path = "/api/v1/orgs/{org}", tag = "scopes", params(("org" = String, Path)), request_body = ScopeUpdate, responses((status = 200, description = "Updated")))]
pub async fn update_org(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
    Body(b): Body<ScopeUpdate>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut r = org_record(&app, &p, &org).await?;
    app.require(&p, "org:create_edit", &Resource::new("org", &org, Scope::org(&org))).await?;
    r.body = body_of(&org, &b.name, &b.description);
    r.updated_at = store::now_ms();
    app.store.put_record(&r, true).await?;
    app.audit(&p.display(), &p.address, "update", "org", &org, &Scope::org(&org), serde_json::json!({})).await?;
    Ok(Json(view(&r)))
}

/// Delete an organization and everything in it.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}", tag = "scopes", params(("org" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_org(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
) -> ApiResult<StatusCode> {
    org_record(&app, &p, &org).await?;
    app.require(&p, "org:delete", &Resource::new("org", &org, Scope::org(&org))).await?;
    forget_scope(&app, &org, None).await?;
    app.store.delete_record("org", "", "", &org).await?;
    app.policy_changed().await;
    app.audit(&p.display(), &p.address, "delete", "org", &org, &Scope::org(&org), serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything in an organization or project goes with it: the service accounts (their tokens revoked, their
/// bindings anywhere removed), the records, and the execution history with its logs and pipeline versions —
/// a new scope with the same identifier starts empty.
async fn forget_scope(app: &App, org: &str, project: Option<&str>) -> ApiResult<()> {
    for sa in app.store.records("service_account", Some(org), project).await? {
        super::access::forget_principal(app, "service_account", &sa.identifier).await?;
    }
    app.store.delete_scope(org, project).await?;
    app.store.delete_history(org, project).await?;
    Ok(())
}

/// List an organization's projects the caller may see.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects", tag = "scopes", params(("org" = String, Path)), responses((status = 200, description = "Projects")))]
pub async fn list_projects(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    // Whether the organization exists is only told to those who may see into it.
    identifier("organization", &org)?;
    let policy = app.policy().await?;
    if !has_project_in(&policy, &p, &org) {
        return Err(ApiError::forbidden("org:view", &format!("organization `{org}`")));
    }
    org_record(&app, &p, &org).await?;
    let items: Vec<_> = app
        .store
        .records("project", Some(&org), None)
        .await?
        .iter()
        .filter(|r| {
            policy.allows(
                &p.who,
                "project:view",
                &Resource::new("project", &r.identifier, Scope::project(&org, &r.identifier)),
            )
        })
        .map(view)
        .collect();
    Ok(Json(serde_json::json!({"items": items})))
}

/// Create a project.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/projects", tag = "scopes", params(("org" = String, Path)), request_body = ScopeBody, responses((status = 201, description = "Created"), (status = 409, description = "Exists")))]
pub async fn create_project(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(org): Path<String>,
    Body(b): Body<ScopeBody>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    org_record(&app, &p, &org).await?;
    app.require(
        &p,
        "project:create_edit",
        &Resource::new("project", &b.identifier, Scope::project(&org, &b.identifier)),
    )
    .await?;
    identifier("project", &b.identifier)?;
    let r = record("project", &Scope::org(&org), &b.identifier, body_of(&b.identifier, &b.name, &b.description));
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!("project `{}` exists in organization `{org}`", b.identifier)));
    }
    app.audit(
        &p.display(),
        &p.address,
        "create",
        "project",
        &b.identifier,
        &Scope::project(&org, &b.identifier),
        serde_json::json!({}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view(&r))))
}

async fn project_record(app: &App, p: &Principal, org: &str, project: &str) -> ApiResult<store::Record> {
    let scope = super::project_scope(app, p, org, project).await?;
    app.store
        .record("project", &scope.org, "", &scope.project)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no project `{project}`")))
}

/// One project.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/projects/{project}", tag = "scopes", params(("org" = String, Path), ("project" = String, Path)), responses((status = 200, description = "The project")))]
pub async fn get_project(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let r = project_record(&app, &p, &org, &project).await?;
    app.require(&p, "project:view", &Resource::new("project", &project, Scope::project(&org, &project))).await?;
    Ok(Json(view(&r)))
}

/// Change a project's name or description.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/projects/{project}", tag = "scopes", params(("org" = String, Path), ("project" = String, Path)), request_body = ScopeUpdate, responses((status = 200, description = "Updated")))]
pub async fn update_project(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
    Body(b): Body<ScopeUpdate>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut r = project_record(&app, &p, &org, &project).await?;
    let scope = Scope::project(&org, &project);
    app.require(&p, "project:create_edit", &Resource::new("project", &project, scope.clone())).await?;
    r.body = body_of(&project, &b.name, &b.description);
    r.updated_at = store::now_ms();
    app.store.put_record(&r, true).await?;
    app.audit(&p.display(), &p.address, "update", "project", &project, &scope, serde_json::json!({})).await?;
    Ok(Json(view(&r)))
}

/// Delete a project and everything in it.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/projects/{project}", tag = "scopes", params(("org" = String, Path), ("project" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_project(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path((org, project)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    project_record(&app, &p, &org, &project).await?;
    let scope = Scope::project(&org, &project);
    app.require(&p, "project:delete", &Resource::new("project", &project, scope.clone())).await?;
    forget_scope(&app, &org, Some(&project)).await?;
    app.store.delete_record("project", &org, "", &project).await?;
    app.policy_changed().await;
    app.audit(&p.display(), &p.address, "delete", "project", &project, &scope, serde_json::json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}
