//! The `/api/v1` routes, one module per area — scopes (organizations, projects), pipelines and the entities a
//! project holds, executions (plus live logs over SSE), and access — each handler a thin adapter over the
//! service layer (`crate::service`): it extracts the request, calls the use case, and shapes the answer.

mod access;
mod agents;
pub(crate) mod executions;
mod pipelines;
mod scopes;

pub use crate::service::pipelines::EntityKind;

use crate::App;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Every API route.
pub fn routes(r: OpenApiRouter<Arc<App>>) -> OpenApiRouter<Arc<App>> {
    r.routes(routes!(scopes::list_orgs, scopes::create_org))
        .routes(routes!(scopes::get_org, scopes::update_org, scopes::delete_org))
        .routes(routes!(scopes::list_projects, scopes::create_project))
        .routes(routes!(scopes::get_project, scopes::update_project, scopes::delete_project))
        .routes(routes!(pipelines::list_pipelines, pipelines::create_pipeline))
        .routes(routes!(pipelines::get_pipeline, pipelines::put_pipeline, pipelines::delete_pipeline))
        .routes(routes!(pipelines::pipeline_version))
        .routes(routes!(pipelines::list_entities, pipelines::create_entity))
        .routes(routes!(pipelines::get_entity, pipelines::put_entity, pipelines::delete_entity))
        .routes(routes!(pipelines::create_account_template))
        .routes(routes!(
            pipelines::get_account_template,
            pipelines::put_account_template,
            pipelines::delete_account_template
        ))
        .routes(routes!(pipelines::stable_account_template))
        .routes(routes!(pipelines::stable_org_template))
        .routes(routes!(pipelines::create_org_template))
        .routes(routes!(pipelines::get_org_template, pipelines::put_org_template, pipelines::delete_org_template))
        .routes(routes!(executions::plan))
        .routes(routes!(executions::execute))
        .routes(routes!(executions::list))
        .routes(routes!(executions::get))
        .routes(routes!(executions::nodes))
        .routes(routes!(executions::transitions))
        .routes(routes!(executions::logs))
        .routes(routes!(executions::stream))
        .routes(routes!(executions::abort))
        .routes(routes!(executions::approve))
        .routes(routes!(executions::reject))
        .routes(routes!(executions::intervene))
        .routes(routes!(executions::input))
        .routes(routes!(executions::rerun))
        .routes(routes!(executions::retry))
        .routes(routes!(access::login))
        .routes(routes!(access::whoami))
        .routes(routes!(access::list_users, access::create_user))
        .routes(routes!(access::delete_user))
        .routes(routes!(access::list_service_accounts, access::create_service_account))
        .routes(routes!(access::delete_service_account))
        .routes(routes!(access::list_tokens, access::create_token))
        .routes(routes!(access::revoke_token))
        .routes(routes!(access::list_roles, access::create_role))
        .routes(routes!(access::delete_role))
        .routes(routes!(access::list_resource_groups, access::create_resource_group))
        .routes(routes!(access::delete_resource_group))
        .routes(routes!(access::list_bindings, access::create_binding))
        .routes(routes!(access::delete_binding))
        .routes(routes!(access::list_user_groups, access::create_user_group))
        .routes(routes!(access::update_user_group, access::delete_user_group))
        .routes(routes!(access::audit))
        .routes(routes!(agents::claim))
        .routes(routes!(agents::heartbeat))
        .routes(routes!(agents::output))
        .routes(routes!(agents::report))
        .routes(routes!(agents::list, agents::register))
        .routes(routes!(agents::credential))
        .routes(routes!(agents::set_state))
}

/// A list answer: `{"items": [...]}`.
#[derive(serde::Serialize)]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}
