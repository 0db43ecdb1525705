//! Access over the JSON API: thin adapters over the use cases in `service::access`.

use super::Items;
use crate::App;
use crate::auth::{ClientAddr, Principal};
use crate::error::{ApiResult, Body, Path, Query};
use crate::rbac::Binding;
use crate::service::access::{
    self as svc, AuditParams, BindingBody, GroupBody, LoginBody, MembersBody, RoleBody, ScopeQuery, ServiceAccountBody,
    TokenBody, UserBody, UserGroupBody,
};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use std::sync::Arc;

/// Exchange a user name and password for a token (12 hours unless asked otherwise). Five failures a minute from
/// one address lock that address out for that name.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "access", request_body = LoginBody, security(()), responses((status = 200, description = "A token"), (status = 401, description = "Wrong credentials"), (status = 429, description = "Too many failures")))]
pub async fn login(
    State(app): State<Arc<App>>,
    Extension(addr): Extension<ClientAddr>,
    Body(b): Body<LoginBody>,
) -> ApiResult<Json<svc::LoginView>> {
    Ok(Json(svc::login(&app, &addr, b).await?))
}

/// The caller, and its role bindings.
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "access", responses((status = 200, description = "The caller")))]
pub async fn whoami(State(app): State<Arc<App>>, Extension(p): Extension<Principal>) -> ApiResult<Json<svc::WhoAmI>> {
    Ok(Json(svc::whoami(&app, &p).await?))
}

/// List users.
#[utoipa::path(get, path = "/api/v1/users", tag = "access", responses((status = 200, description = "Users")))]
pub async fn list_users(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Items<svc::UserView>>> {
    Ok(Json(Items { items: svc::list_users(&app, &p).await? }))
}

/// Create a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "access", request_body = UserBody, responses((status = 201, description = "Created"), (status = 409, description = "Exists")))]
pub async fn create_user(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<UserBody>,
) -> ApiResult<(StatusCode, Json<svc::UserView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_user(&app, &p, b).await?)))
}

/// Delete a user, their tokens and bindings.
#[utoipa::path(delete, path = "/api/v1/users/{user}", tag = "access", params(("user" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_user(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(user): Path<String>,
) -> ApiResult<StatusCode> {
    svc::delete_user(&app, &p, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List service accounts of a scope.
#[utoipa::path(get, path = "/api/v1/service-accounts", tag = "access", params(ScopeQuery), responses((status = 200, description = "Service accounts")))]
pub async fn list_service_accounts(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Json<Items<svc::MemberView>>> {
    Ok(Json(Items { items: svc::list_service_accounts(&app, &p, q).await? }))
}

/// Create a service account.
#[utoipa::path(post, path = "/api/v1/service-accounts", tag = "access", request_body = ServiceAccountBody, responses((status = 201, description = "Created")))]
pub async fn create_service_account(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<ServiceAccountBody>,
) -> ApiResult<(StatusCode, Json<svc::MemberView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_service_account(&app, &p, b).await?)))
}

/// Delete a service account, its tokens and bindings.
#[utoipa::path(delete, path = "/api/v1/service-accounts/{identifier}", tag = "access", params(("identifier" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_service_account(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    svc::delete_service_account(&app, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List tokens: the caller's own, or all with `user:manage`.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "access", responses((status = 200, description = "Tokens (never their secrets)")))]
pub async fn list_tokens(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Items<store::Token>>> {
    Ok(Json(Items { items: svc::list_tokens(&app, &p).await? }))
}

/// Create a token; its secret is in the response, once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "access", request_body = TokenBody, responses((status = 201, description = "The token and its secret")))]
pub async fn create_token(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<TokenBody>,
) -> ApiResult<(StatusCode, Json<svc::CreatedToken>)> {
    Ok((StatusCode::CREATED, Json(svc::create_token(&app, &p, b).await?)))
}

/// Revoke a token (one's own, or any with `user:manage`).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "access", params(("id" = String, Path)), responses((status = 204, description = "Revoked")))]
pub async fn revoke_token(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    svc::revoke_token(&app, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Built-in roles and the custom roles of a scope.
#[utoipa::path(get, path = "/api/v1/roles", tag = "access", params(ScopeQuery), responses((status = 200, description = "Roles")))]
pub async fn list_roles(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Json<Items<svc::RoleView>>> {
    Ok(Json(Items { items: svc::list_roles(&app, &p, q).await? }))
}

/// Create a custom role.
#[utoipa::path(post, path = "/api/v1/roles", tag = "access", request_body = RoleBody, responses((status = 201, description = "Created")))]
pub async fn create_role(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<RoleBody>,
) -> ApiResult<(StatusCode, Json<svc::RoleView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_role(&app, &p, b).await?)))
}

/// Delete a custom role.
#[utoipa::path(delete, path = "/api/v1/roles/{identifier}", tag = "access", params(("identifier" = String, Path), ScopeQuery), responses((status = 204, description = "Deleted")))]
pub async fn delete_role(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<StatusCode> {
    svc::delete_role(&app, &p, id, q).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Built-in resource groups and the custom ones of a scope.
#[utoipa::path(get, path = "/api/v1/resource-groups", tag = "access", params(ScopeQuery), responses((status = 200, description = "Resource groups")))]
pub async fn list_resource_groups(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Json<Items<svc::ResourceGroupView>>> {
    Ok(Json(Items { items: svc::list_resource_groups(&app, &p, q).await? }))
}

/// Create a resource group.
#[utoipa::path(post, path = "/api/v1/resource-groups", tag = "access", request_body = GroupBody, responses((status = 201, description = "Created")))]
pub async fn create_resource_group(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<GroupBody>,
) -> ApiResult<(StatusCode, Json<svc::ResourceGroupView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_resource_group(&app, &p, b).await?)))
}

/// Delete a resource group.
#[utoipa::path(delete, path = "/api/v1/resource-groups/{identifier}", tag = "access", params(("identifier" = String, Path), ScopeQuery), responses((status = 204, description = "Deleted")))]
pub async fn delete_resource_group(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<StatusCode> {
    svc::delete_resource_group(&app, &p, id, q).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Role bindings of a scope.
#[utoipa::path(get, path = "/api/v1/role-bindings", tag = "access", params(ScopeQuery), responses((status = 200, description = "Bindings")))]
pub async fn list_bindings(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Json<Items<Binding>>> {
    Ok(Json(Items { items: svc::list_bindings(&app, &p, q).await? }))
}

/// Bind a role and a resource group to a principal at a scope.
#[utoipa::path(post, path = "/api/v1/role-bindings", tag = "access", request_body = BindingBody, responses((status = 201, description = "Created")))]
pub async fn create_binding(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<BindingBody>,
) -> ApiResult<(StatusCode, Json<Binding>)> {
    Ok((StatusCode::CREATED, Json(svc::create_binding(&app, &p, b).await?)))
}

/// Delete a role binding.
#[utoipa::path(delete, path = "/api/v1/role-bindings/{identifier}", tag = "access", params(("identifier" = String, Path)), responses((status = 204, description = "Deleted")))]
pub async fn delete_binding(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    svc::delete_binding(&app, &p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who did what, from where; newest first (admins).
#[utoipa::path(get, path = "/api/v1/audit", tag = "access", params(AuditParams), responses((status = 200, description = "Audit events")))]
pub async fn audit(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<AuditParams>,
) -> ApiResult<Json<Items<store::AuditEvent>>> {
    Ok(Json(Items { items: svc::audit(&app, &p, q).await? }))
}

/// User groups of a scope.
#[utoipa::path(get, path = "/api/v1/user-groups", tag = "access", params(ScopeQuery), responses((status = 200, description = "User groups")))]
pub async fn list_user_groups(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<Json<Items<svc::MemberView>>> {
    Ok(Json(Items { items: svc::list_user_groups(&app, &p, q).await? }))
}

/// Create a user group.
#[utoipa::path(post, path = "/api/v1/user-groups", tag = "access", request_body = UserGroupBody, responses((status = 201, description = "Created"), (status = 409, description = "Exists")))]
pub async fn create_user_group(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Body(b): Body<UserGroupBody>,
) -> ApiResult<(StatusCode, Json<svc::MemberView>)> {
    Ok((StatusCode::CREATED, Json(svc::create_user_group(&app, &p, b).await?)))
}

/// Set a user group's members.
#[utoipa::path(put, path = "/api/v1/user-groups/{identifier}", tag = "access", params(("identifier" = String, Path), ScopeQuery), request_body = MembersBody, responses((status = 200, description = "Updated")))]
pub async fn update_user_group(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<ScopeQuery>,
    Body(b): Body<MembersBody>,
) -> ApiResult<Json<svc::MemberView>> {
    Ok(Json(svc::update_user_group(&app, &p, id, q, b).await?))
}

/// Delete a user group.
#[utoipa::path(delete, path = "/api/v1/user-groups/{identifier}", tag = "access", params(("identifier" = String, Path), ScopeQuery), responses((status = 204, description = "Deleted")))]
pub async fn delete_user_group(
    State(app): State<Arc<App>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> ApiResult<StatusCode> {
    svc::delete_user_group(&app, &p, id, q).await?;
    Ok(StatusCode::NO_CONTENT)
}
