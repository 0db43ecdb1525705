//! Organizations and projects as typed use cases with RBAC inside: list (only what the caller may see),
//! create, get, update, delete. Deleting a scope deletes everything in it: records (pipelines, entities,
//! secrets, roles, bindings), service accounts with their tokens, and the execution history.

use crate::App;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, identifier};
use crate::rbac::Permission;
use crate::rbac::{Resource, Scope};
use crate::service::record;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An organization or project as the API shows it.
#[derive(Debug, Serialize)]
pub struct ScopeView {
    /// Identifier.
    pub identifier: String,
    /// The organization a project belongs to (empty for an organization).
    pub org: String,
    /// Always empty (kept for the shape every record has).
    pub project: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Created (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
}

impl ScopeView {
    fn of(r: &store::Record) -> Self {
        ScopeView {
            identifier: r.identifier.clone(),
            org: r.org.clone(),
            project: r.project.clone(),
            name: r.body["name"].as_str().unwrap_or(&r.identifier).to_string(),
            description: r.body["description"].as_str().unwrap_or_default().to_string(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

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
pub async fn list_orgs(app: &App, p: &Principal) -> ApiResult<Vec<ScopeView>> {
    let policy = app.policy().await?;
    let items: Vec<_> = app
        .store
        .records("org", None, None)
        .await?
        .iter()
        .filter(|r| has_project_in(&policy, p, &r.identifier))
        .map(ScopeView::of)
        .collect();
    Ok(items)
}

fn has_project_in(policy: &crate::rbac::Policy, p: &Principal, org: &str) -> bool {
    policy.bindings.iter().any(|b| b.principal == p.who && (b.scope.org.is_empty() || b.scope.org == org))
}

/// Create an organization.
pub async fn create_org(app: &App, p: &Principal, b: ScopeBody) -> ApiResult<ScopeView> {
    app.require(p, Permission::ORG_CREATE_EDIT, &Resource::new("org", &b.identifier, Scope::account())).await?;
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
    Ok(ScopeView::of(&r))
}

async fn org_record(app: &App, p: &Principal, org: &str) -> ApiResult<store::Record> {
    identifier("organization", org)?;
    match app.store.record("org", "", "", org).await? {
        Some(r) => Ok(r),
        None => Err(app.not_found(p, &Scope::org(org), format!("no organization `{org}`")).await),
    }
}

/// One organization.
pub async fn get_org(app: &App, p: &Principal, org: &str) -> ApiResult<ScopeView> {
    let r = org_record(app, p, org).await?;
    app.require(p, Permission::ORG_VIEW, &Resource::new("org", org, Scope::org(org))).await?;
    Ok(ScopeView::of(&r))
}

/// Change an organization's name or description.
pub async fn update_org(app: &App, p: &Principal, org: &str, b: ScopeUpdate) -> ApiResult<ScopeView> {
    let mut r = org_record(app, p, org).await?;
    app.require(p, Permission::ORG_CREATE_EDIT, &Resource::new("org", org, Scope::org(org))).await?;
    r.body = body_of(org, &b.name, &b.description);
    r.updated_at = store::now_ms();
    app.store.put_record(&r, true).await?;
    app.audit(&p.display(), &p.address, "update", "org", org, &Scope::org(org), serde_json::json!({})).await?;
    Ok(ScopeView::of(&r))
}

/// Delete an organization and everything in it.
pub async fn delete_org(app: &App, p: &Principal, org: &str) -> ApiResult<()> {
    org_record(app, p, org).await?;
    app.require(p, Permission::ORG_DELETE, &Resource::new("org", org, Scope::org(org))).await?;
    forget_scope(app, org, None).await?;
    app.store.delete_record("org", "", "", org).await?;
    app.policy_changed().await;
    app.audit(&p.display(), &p.address, "delete", "org", org, &Scope::org(org), serde_json::json!({})).await?;
    Ok(())
}

/// Everything in an organization or project goes with it: the service accounts (their tokens revoked, their
/// bindings anywhere removed), the records, and the execution history with its logs and pipeline versions —
/// a new scope with the same identifier starts empty.
async fn forget_scope(app: &App, org: &str, project: Option<&str>) -> ApiResult<()> {
    for sa in app.store.records("service_account", Some(org), project).await? {
        crate::service::access::forget_principal(
            app,
            "service_account",
            &sa.identifier,
            Some(store::RecordKey::of(&sa)),
        )
        .await?;
    }
    app.store.delete_scope(org, project).await?;
    app.store.delete_history(org, project).await?;
    Ok(())
}

/// List an organization's projects the caller may see.
pub async fn list_projects(app: &App, p: &Principal, org: &str) -> ApiResult<Vec<ScopeView>> {
    // Whether the organization exists is only told to those who may see into it.
    identifier("organization", org)?;
    let policy = app.policy().await?;
    if !has_project_in(&policy, p, org) {
        return Err(ApiError::forbidden(Permission::ORG_VIEW, &format!("organization `{org}`")));
    }
    org_record(app, p, org).await?;
    let items: Vec<_> = app
        .store
        .records("project", Some(org), None)
        .await?
        .iter()
        .filter(|r| {
            policy.allows(
                &p.who,
                Permission::PROJECT_VIEW,
                &Resource::new("project", &r.identifier, Scope::project(org, &r.identifier)),
            )
        })
        .map(ScopeView::of)
        .collect();
    Ok(items)
}

/// Create a project.
pub async fn create_project(app: &App, p: &Principal, org: &str, b: ScopeBody) -> ApiResult<ScopeView> {
    org_record(app, p, org).await?;
    app.require(
        p,
        Permission::PROJECT_CREATE_EDIT,
        &Resource::new("project", &b.identifier, Scope::project(org, &b.identifier)),
    )
    .await?;
    identifier("project", &b.identifier)?;
    let r = record("project", &Scope::org(org), &b.identifier, body_of(&b.identifier, &b.name, &b.description));
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!("project `{}` exists in organization `{org}`", b.identifier)));
    }
    app.audit(
        &p.display(),
        &p.address,
        "create",
        "project",
        &b.identifier,
        &Scope::project(org, &b.identifier),
        serde_json::json!({}),
    )
    .await?;
    Ok(ScopeView::of(&r))
}

async fn project_record(app: &App, p: &Principal, org: &str, project: &str) -> ApiResult<store::Record> {
    let scope = crate::service::project_scope(app, p, org, project).await?;
    app.store
        .record("project", &scope.org, "", &scope.project)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no project `{project}`")))
}

/// One project.
pub async fn get_project(app: &App, p: &Principal, org: &str, project: &str) -> ApiResult<ScopeView> {
    let r = project_record(app, p, org, project).await?;
    app.require(p, Permission::PROJECT_VIEW, &Resource::new("project", project, Scope::project(org, project))).await?;
    Ok(ScopeView::of(&r))
}

/// Change a project's name or description.
pub async fn update_project(
    app: &App,
    p: &Principal,
    org: &str,
    project: &str,
    b: ScopeUpdate,
) -> ApiResult<ScopeView> {
    let mut r = project_record(app, p, org, project).await?;
    let scope = Scope::project(org, project);
    app.require(p, Permission::PROJECT_CREATE_EDIT, &Resource::new("project", project, scope.clone())).await?;
    r.body = body_of(project, &b.name, &b.description);
    r.updated_at = store::now_ms();
    app.store.put_record(&r, true).await?;
    app.audit(&p.display(), &p.address, "update", "project", project, &scope, serde_json::json!({})).await?;
    Ok(ScopeView::of(&r))
}

/// Delete a project and everything in it.
pub async fn delete_project(app: &App, p: &Principal, org: &str, project: &str) -> ApiResult<()> {
    project_record(app, p, org, project).await?;
    let scope = Scope::project(org, project);
    app.require(p, Permission::PROJECT_DELETE, &Resource::new("project", project, scope.clone())).await?;
    forget_scope(app, org, Some(project)).await?;
    app.store.delete_record("project", org, "", project).await?;
    app.policy_changed().await;
    app.audit(&p.display(), &p.address, "delete", "project", project, &scope, serde_json::json!({})).await?;
    Ok(())
}
