//! The service layer: the use cases of the server as typed functions that take the caller and return typed
//! results or an [`crate::error::ApiError`], with RBAC checked inside them. Transports (the JSON API, the web
//! pages) are thin adapters over these functions.

pub mod access;
pub mod agents;
pub mod executions;
pub mod pipelines;
pub mod scopes;

use crate::App;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, identifier};
use crate::rbac::Scope;
use store::{Record, now_ms};

/// A new record.
pub(crate) fn record(kind: &str, scope: &Scope, id: &str, body: serde_json::Value) -> Record {
    let now = now_ms();
    Record {
        kind: kind.into(),
        org: scope.org.clone(),
        project: scope.project.clone(),
        identifier: id.into(),
        body,
        created_at: now,
        updated_at: now,
    }
}

/// The scope `org` / `project` name: the account (both empty), an organization or a project, each of
/// which must exist (404 to those who may see it, 403 to the others).
pub(crate) async fn scope_named(app: &App, p: &Principal, org: &str, project: &str) -> ApiResult<Scope> {
    if !project.is_empty() {
        if org.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "project `{project}` needs its organization: give orgIdentifier too"
            )));
        }
        return project_scope(app, p, org, project).await;
    }
    if org.is_empty() {
        return Ok(Scope::account());
    }
    identifier("organization", org)?;
    let scope = Scope::org(org);
    if app.store.record("org", "", "", org).await?.is_none() {
        return Err(app.not_found(p, &scope, format!("no organization `{org}`")).await);
    }
    Ok(scope)
}

/// Check a project path: valid identifiers, and the org and project exist (404 to those who may see the
/// scope, 403 to the others).
pub(crate) async fn project_scope(app: &App, p: &Principal, org: &str, project: &str) -> ApiResult<Scope> {
    identifier("organization", org)?;
    identifier("project", project)?;
    let scope = Scope::project(org, project);
    if app.store.record("project", org, "", project).await?.is_none() {
        return Err(app.not_found(p, &scope, format!("no project `{project}` in organization `{org}`")).await);
    }
    Ok(scope)
}
