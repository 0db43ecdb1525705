//! Remote agents over the JSON API: what `pipewright agent` calls with its own credential (claim,
//! heartbeat, output, report) and what administrators call (register, new credential, list, drain, revoke);
//! thin adapters over `service::agents`.

use super::Items;
use crate::App;
use crate::auth::{AgentCaller, Principal};
use crate::error::{ApiResult, Body, Path};
use crate::service::agents::{
    self as svc, Beat, ClaimAnswer, ClaimBody, LeaseRef, OutputBody, RegisterBody, Registered, ReportBody,
};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// Ask for a task (long poll up to `wait_seconds`): the oldest queued step of the agent's scope that its
/// assigned tags cover, whose stage no other live agent holds. Only an agent's own credential.
#[utoipa::path(post, path = "/api/v1/agent/claim", tag = "agents", request_body = ClaimBody, responses((status = 200, description = "A task, or none", body = ClaimAnswer)))]
pub async fn claim(
    State(app): State<Arc<App>>,
    Extension(a): Extension<AgentCaller>,
    Body(b): Body<ClaimBody>,
) -> ApiResult<Json<ClaimAnswer>> {
    Ok(Json(svc::claim(&app, &a, b).await?))
}

/// Renew the agent's lease on a task; says whether to stop it. 409 once the task is not held under this
/// lease.
#[utoipa::path(post, path = "/api/v1/agent/tasks/{id}/heartbeat", tag = "agents", params(("id" = String, Path)), request_body = LeaseRef, responses((status = 200, description = "Renewed", body = Beat), (status = 409, description = "No longer this agent's")))]
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    Extension(a): Extension<AgentCaller>,
    Path(id): Path<String>,
    Body(b): Body<LeaseRef>,
) -> ApiResult<Json<Beat>> {
    Ok(Json(svc::heartbeat(&app, &a, &id, b).await?))
}

/// Send a task's output (masked by the agent; masked again by the engine).
#[utoipa::path(post, path = "/api/v1/agent/tasks/{id}/output", tag = "agents", params(("id" = String, Path)), request_body = OutputBody, responses((status = 204, description = "Taken"), (status = 409, description = "No longer this agent's")))]
pub async fn output(
    State(app): State<Arc<App>>,
    Extension(a): Extension<AgentCaller>,
    Path(id): Path<String>,
    Body(b): Body<OutputBody>,
) -> ApiResult<StatusCode> {
    svc::output(&app, &a, &id, b).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Report how a task ended. 409 (and nothing recorded) once the task is no longer the agent's.
#[utoipa::path(post, path = "/api/v1/agent/tasks/{id}/report", tag = "agents", params(("id" = String, Path)), request_body = ReportBody, responses((status = 204, description = "Recorded"), (status = 409, description = "No longer this agent's")))]
pub async fn report(
    State(app): State<Arc<App>>,
    Extension(a): Extension<AgentCaller>,
    Path(id): Path<String>,
    Body(b): Body<ReportBody>,
) -> ApiResult<StatusCode> {
    svc::report(&app, &a, &id, b).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Register an agent at the account, in an organization or in a project, with its tags; answers with its
/// credential (shown once). Needs `agent:manage` in that scope.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = RegisterBody, responses((status = 201, description = "Registered", body = Registered), (status = 409, description = "The name is taken")))]
pub async fn register(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<RegisterBody>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    Ok((StatusCode::CREATED, Json(svc::register(&app, &p, b).await?)))
}

/// Give an agent a new credential (the old one stops working at once). Needs `agent:manage` in its scope.
#[utoipa::path(post, path = "/api/v1/agents/{name}/credential", tag = "agents", params(("name" = String, Path)), responses((status = 200, description = "The new credential", body = Registered)))]
pub async fn credential(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<Registered>> {
    Ok(Json(svc::new_credential(&app, &p, &name).await?))
}

/// The agents the caller may view (`agent:view` in each one's scope): name, scope, tags, version, state,
/// last heartbeat, running tasks.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", responses((status = 200, description = "Agents")))]
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Items<store::AgentRecord>>> {
    Ok(Json(Items { items: svc::list(&app, &p).await? }))
}

/// An agent's new state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateBody {
    /// `draining` (finish what it runs, take nothing new), `revoked` (refused; its tasks go to other
    /// agents) or `active`.
    #[schema(pattern = "^(active|draining|revoked)$")]
    pub state: String,
}

/// Drain, revoke or re-activate an agent. Needs `agent:manage` in its scope.
#[utoipa::path(post, path = "/api/v1/agents/{name}/state", tag = "agents", params(("name" = String, Path)), request_body = StateBody, responses((status = 200, description = "The agent")))]
pub async fn set_state(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    Body(b): Body<StateBody>,
) -> ApiResult<Json<store::AgentRecord>> {
    Ok(Json(svc::set_state(&app, &p, &name, &b.state).await?))
}
