//! Access as typed use cases with RBAC inside: login (rate limited), who-am-I, users (account level, argon2
//! passwords), service accounts (at a scope), API tokens (shown once, hashed, expiring, revocable), custom
//! roles, resource groups, role bindings, user groups, and the audit trail. Managing users and tokens of
//! others needs `user:manage`; roles, groups and bindings need `role:manage` at their scope.

use crate::App;
use crate::auth::{
    BOOTSTRAP, ClientAddr, MAX_PASSWORD, Principal, dummy_hash, hash_password, issue_token, verify_password,
};
use crate::error::{ApiError, ApiResult, identifier};
use crate::rbac::Permission;
use crate::rbac::{Binding, PrincipalRef, Resource, ResourceGroup, Role, Scope, check_permissions};
use crate::service::record;
use serde::{Deserialize, Serialize};
use store::{AuditQuery, now_ms};
use utoipa::ToSchema;

/// A login.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// User name.
    pub username: String,
    /// Password.
    #[schema(max_length = 1024)]
    pub password: String,
    /// The token's lifetime in seconds (default 12 hours, at most a year).
    #[serde(default, deserialize_with = "crate::contract::whole_number")]
    #[schema(minimum = 1, maximum = 31536000)]
    pub expires_in_seconds: Option<i64>,
}

/// A new login's token (shown once).
#[derive(Debug, Serialize)]
pub struct LoginView {
    /// The token's secret.
    pub token: String,
    /// Its id (to revoke it).
    pub token_id: String,
    /// When it expires (ms).
    pub expires_at: i64,
}

/// The caller.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    /// `user` or `service_account`.
    pub kind: String,
    /// User name or service account identifier.
    pub id: String,
    /// A service account's scope (the account for users).
    pub scope: Scope,
    /// The token used.
    pub token_id: String,
    /// The caller's role bindings.
    pub bindings: Vec<Binding>,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize)]
pub struct UserView {
    /// User name.
    pub identifier: String,
    /// E-mail.
    pub email: Option<String>,
    /// Created (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
}

impl UserView {
    fn of(r: &store::Record) -> Self {
        UserView {
            identifier: r.identifier.clone(),
            email: r.body["email"].as_str().map(String::from),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A service account or user group's common fields, as the API shows them.
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// Identifier.
    pub identifier: String,
    /// Organization ('' at the account).
    pub org: String,
    /// Project ('' unless project-level).
    pub project: String,
    /// Display name.
    pub name: String,
    /// A user group's members (absent for a service account).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    /// Created (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
}

impl MemberView {
    fn of(r: &store::Record) -> Self {
        MemberView {
            identifier: r.identifier.clone(),
            org: r.org.clone(),
            project: r.project.clone(),
            name: r.body["name"].as_str().unwrap_or(&r.identifier).to_string(),
            users: r.body["users"]
                .as_array()
                .map(|us| us.iter().filter_map(|u| u.as_str().map(String::from)).collect()),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A role: built-in, or custom at a scope.
#[derive(Debug, Serialize)]
pub struct RoleView {
    /// The role.
    #[serde(flatten)]
    pub role: Role,
    /// Built in (`_account_admin`, `_pipeline_executor`, …).
    pub builtin: bool,
    /// The scope of a custom role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// A resource group: built-in, or custom at a scope.
#[derive(Debug, Serialize)]
pub struct ResourceGroupView {
    /// The group.
    #[serde(flatten)]
    pub group: ResourceGroup,
    /// Built in.
    pub builtin: bool,
    /// The scope of a custom group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// A token just created, with its secret (shown once).
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    /// The token's record.
    #[serde(flatten)]
    pub record: store::Token,
    /// Its secret.
    pub token: String,
}

fn parsed<T: serde::de::DeserializeOwned>(r: &store::Record) -> ApiResult<T> {
    serde_json::from_value(r.body.clone())
        .map_err(|e| ApiError::Internal(format!("{} `{}`: {e}", r.kind, r.identifier)))
}

/// Exchange a user name and password for a token (12 hours unless asked otherwise). Five failures a minute from
/// one address lock that address out for that name.
pub async fn login(app: &App, addr: &ClientAddr, b: LoginBody) -> ApiResult<LoginView> {
    login_as(app, addr, b, "login").await
}

/// A web session: a login whose token (named `web session`) lives in an HttpOnly cookie; logging out or
/// revoking the token ends it.
pub async fn login_session(app: &App, addr: &ClientAddr, username: String, password: String) -> ApiResult<LoginView> {
    login_as(app, addr, LoginBody { username, password, expires_in_seconds: None }, "web session").await
}

/// End the caller's session: its token is revoked.
pub async fn logout(app: &App, p: &Principal) -> ApiResult<()> {
    app.store.revoke_token(&p.token_id).await?;
    app.tokens_changed();
    app.audit(&p.display(), &p.address, "logout", "token", &p.token_id, &Scope::account(), serde_json::json!({})).await
}

async fn login_as(app: &App, addr: &ClientAddr, b: LoginBody, token_name: &str) -> ApiResult<LoginView> {
    if b.password.len() > MAX_PASSWORD {
        return Err(ApiError::BadRequest(format!("a password has at most {MAX_PASSWORD} bytes")));
    }
    let lifetime = b.expires_in_seconds.unwrap_or(12 * 3600);
    if !(1..=365 * 24 * 3600).contains(&lifetime) {
        return Err(ApiError::BadRequest("expires_in_seconds must be between 1 and 31536000 (a year)".into()));
    }
    let name: String = b.username.chars().take(128).collect();
    let key = format!("{name}@{}", addr.0);
    app.login_allowed(&key, &name).await?;
    let user = if identifier("user", &b.username).is_ok() {
        app.store.record("user", "", "", &b.username).await?
    } else {
        None
    };
    // The hash is checked whether or not the user exists (a dummy one otherwise): the answer takes as long.
    let hash = user.as_ref().and_then(|u| u.body["password_hash"].as_str()).unwrap_or_else(|| dummy_hash());
    let password = b.password.clone();
    let hash = hash.to_string();
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false);
    let ok =
        matches && user.as_ref().is_some_and(|u| u.body["disabled"] != true && u.body["password_hash"].is_string());
    if !ok {
        app.login_failed(&key).await?;
        app.login_failed(&name).await?;
        app.audit(
            &format!("user:{}", b.username.chars().take(128).collect::<String>()),
            &addr.0,
            "login_failed",
            "user",
            &b.username.chars().take(128).collect::<String>(),
            &Scope::account(),
            serde_json::json!({}),
        )
        .await?;
        return Err(ApiError::Unauthorized("wrong user name or password".into()));
    }
    app.login_succeeded(&key).await?;
    let who = PrincipalRef { kind: "user".into(), id: b.username.clone() };
    let expires = now_ms() + lifetime * 1000;
    let (t, secret) = issue_token(app.store.as_ref(), token_name, &who, &Scope::account(), Some(expires)).await?;
    app.audit(
        &b.username,
        &addr.0,
        "login",
        "user",
        &b.username,
        &Scope::account(),
        serde_json::json!({"token": t.id}),
    )
    .await?;
    Ok(LoginView { token: secret, token_id: t.id, expires_at: expires })
}

/// The caller, and its role bindings.
pub async fn whoami(app: &App, p: &Principal) -> ApiResult<WhoAmI> {
    let policy = app.policy().await?;
    let bindings = policy.bindings.iter().filter(|b| b.principal == p.who).cloned().collect();
    Ok(WhoAmI {
        kind: p.who.kind.clone(),
        id: p.who.id.clone(),
        scope: p.scope.clone(),
        token_id: p.token_id.clone(),
        bindings,
    })
}

async fn require_account(app: &App, p: &Principal, perm: Permission, rtype: &str) -> ApiResult<()> {
    app.require(p, perm, &Resource::new(rtype, "", Scope::account())).await
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    /// User name.
    #[schema(schema_with = crate::contract::identifier)]
    pub username: String,
    /// Password: at least 8 characters, and hard to guess (zxcvbn strength 3 of 4 or more).
    #[schema(schema_with = crate::contract::password)]
    pub password: String,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
}

/// List users.
pub async fn list_users(app: &App, p: &Principal) -> ApiResult<Vec<UserView>> {
    require_account(app, p, Permission::USER_MANAGE, "user").await?;
    Ok(app.store.records("user", Some(""), Some("")).await?.iter().map(UserView::of).collect())
}

/// Create a user.
pub async fn create_user(app: &App, p: &Principal, b: UserBody) -> ApiResult<UserView> {
    require_account(app, p, Permission::USER_MANAGE, "user").await?;
    identifier("user", &b.username)?;
    crate::auth::check_password(&b.password, &[&b.username, b.email.as_deref().unwrap_or_default()])?;
    let r = record(
        "user",
        &Scope::account(),
        &b.username,
        serde_json::json!({"uid": ulid::Ulid::new().to_string(), "email": b.email, "password_hash": hash_password(&b.password)?}),
    );
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!("user `{}` exists", b.username)));
    }
    app.audit(&p.display(), &p.address, "create", "user", &b.username, &Scope::account(), serde_json::json!({}))
        .await?;
    Ok(UserView::of(&r))
}

/// Delete a user, their tokens and bindings.
pub async fn delete_user(app: &App, p: &Principal, user: String) -> ApiResult<()> {
    require_account(app, p, Permission::USER_MANAGE, "user").await?;
    identifier("user", &user)?;
    let key = store::RecordKey { kind: "user".into(), org: "".into(), project: "".into(), identifier: user.clone() };
    if app.store.record("user", "", "", &user).await?.is_none() {
        return Err(ApiError::NotFound(format!("no user `{user}`")));
    }
    forget_principal(app, "user", &user, Some(key)).await?;
    leave_groups(app, &user).await?;
    app.audit(&p.display(), &p.address, "delete", "user", &user, &Scope::account(), serde_json::json!({})).await?;
    Ok(())
}

/// What every change that removes records must leave: one Account Admin binding at the account.
fn admin_kept() -> store::Keep {
    store::Keep { kind: "role_binding".into(), field: "role".into(), value: "_account_admin".into() }
}

/// Delete `keys` in one transaction unless that would leave the account without an Account Admin (as Harness
/// refuses it); concurrent changes are serialised by the store, so two of them cannot remove the last two.
async fn delete_keeping_an_admin(app: &App, keys: &[store::RecordKey]) -> ApiResult<u64> {
    let done = app.store.delete_records_keeping(keys, &admin_kept()).await?;
    app.policy_changed().await;
    done.ok_or_else(|| {
        ApiError::Conflict(
            "this would remove the last Account Admin; bind `_account_admin` at the account to another user first"
                .into(),
        )
    })
}

/// Remove a principal's role bindings together with its own record when given (in one transaction that
/// keeps an Account Admin), then revoke its tokens (it is deleted, or its scope is).
pub(crate) async fn forget_principal(
    app: &App,
    kind: &str,
    id: &str,
    record: Option<store::RecordKey>,
) -> ApiResult<()> {
    let mut keys: Vec<store::RecordKey> = record.into_iter().collect();
    for r in app.store.records("role_binding", None, None).await? {
        if r.body["principal"]["kind"] == kind && r.body["principal"]["id"] == id {
            keys.push(store::RecordKey::of(&r));
        }
    }
    delete_keeping_an_admin(app, &keys).await?;
    for t in app.store.tokens(Some((kind, id))).await? {
        app.store.revoke_token(&t.id).await?;
    }
    app.tokens_changed();
    Ok(())
}

/// A scope in a query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    /// Organization (none: account).
    #[serde(default)]
    #[param(pattern = "^([a-zA-Z_][0-9a-zA-Z_$]{0,127})?$")]
    pub org: Option<String>,
    /// Project (needs `org`).
    #[serde(default)]
    #[param(pattern = "^([a-zA-Z_][0-9a-zA-Z_$]{0,127})?$")]
    pub project: Option<String>,
}

fn scope_of(q: &ScopeQuery) -> ApiResult<Scope> {
    let org = q.org.clone().unwrap_or_default();
    let project = q.project.clone().unwrap_or_default();
    if !org.is_empty() {
        identifier("organization", &org)?;
    }
    if !project.is_empty() {
        if org.is_empty() {
            return Err(ApiError::BadRequest("a project scope needs `org` too".into()));
        }
        identifier("project", &project)?;
    }
    Ok(Scope { org, project })
}

/// A new service account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountBody {
    /// Identifier.
    #[schema(schema_with = crate::contract::identifier)]
    pub identifier: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Organization (none: account level).
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub org: Option<String>,
    /// Project.
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub project: Option<String>,
}

/// The service accounts or user groups (`kind`) of a scope; `user:manage` there.
async fn members(app: &App, p: &Principal, q: &ScopeQuery, kind: &str) -> ApiResult<Vec<MemberView>> {
    let scope = scope_of(q)?;
    app.require(p, Permission::USER_MANAGE, &Resource::new("user", "", scope.clone())).await?;
    Ok(app.store.records(kind, Some(&scope.org), Some(&scope.project)).await?.iter().map(MemberView::of).collect())
}

/// List service accounts of a scope.
pub async fn list_service_accounts(app: &App, p: &Principal, q: ScopeQuery) -> ApiResult<Vec<MemberView>> {
    members(app, p, &q, "service_account").await
}

/// Create a service account.
pub async fn create_service_account(app: &App, p: &Principal, b: ServiceAccountBody) -> ApiResult<MemberView> {
    let scope = scope_of(&ScopeQuery { org: b.org.clone(), project: b.project.clone() })?;
    app.require(p, Permission::USER_MANAGE, &Resource::new("user", "", scope.clone())).await?;
    identifier("service account", &b.identifier)?;
    let r = record(
        "service_account",
        &scope,
        &b.identifier,
        serde_json::json!({"uid": ulid::Ulid::new().to_string(), "name": if b.name.is_empty() { &b.identifier } else { &b.name }}),
    );
    if app.store.records("service_account", None, None).await?.iter().any(|s| s.identifier == b.identifier)
        || !app.store.put_record(&r, false).await?
    {
        return Err(ApiError::Conflict(format!("service account `{}` exists", b.identifier)));
    }
    app.audit(&p.display(), &p.address, "create", "service_account", &b.identifier, &scope, serde_json::json!({}))
        .await?;
    Ok(MemberView::of(&r))
}

async fn service_account(app: &App, id: &str) -> ApiResult<store::Record> {
    identifier("service account", id)?;
    app.store
        .records("service_account", None, None)
        .await?
        .into_iter()
        .find(|r| r.identifier == id)
        .ok_or_else(|| ApiError::NotFound(format!("no service account `{id}`")))
}

/// Delete a service account, its tokens and bindings.
pub async fn delete_service_account(app: &App, p: &Principal, id: String) -> ApiResult<()> {
    let sa = service_account(app, &id).await?;
    let scope = Scope { org: sa.org.clone(), project: sa.project.clone() };
    app.require(p, Permission::USER_MANAGE, &Resource::new("user", "", scope.clone())).await?;
    let key = store::RecordKey {
        kind: "service_account".into(),
        org: sa.org.clone(),
        project: sa.project.clone(),
        identifier: id.clone(),
    };
    forget_principal(app, "service_account", &id, Some(key)).await?;
    app.audit(&p.display(), &p.address, "delete", "service_account", &id, &scope, serde_json::json!({})).await?;
    Ok(())
}

/// A new token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// A name to recognise it by.
    pub name: String,
    /// For this service account (needs `user:manage` at its scope); none: for the caller.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Lifetime in seconds (none: no expiry; never beyond the expiry of the token used).
    #[serde(default, deserialize_with = "crate::contract::whole_number")]
    #[schema(minimum = 1, maximum = 3153600000_i64)]
    pub expires_in_seconds: Option<i64>,
}

/// List tokens: the caller's own, or all with `user:manage`.
pub async fn list_tokens(app: &App, p: &Principal) -> ApiResult<Vec<store::Token>> {
    let all = app.may(p, Permission::USER_MANAGE, &Resource::new("user", "", Scope::account())).await?;
    let items =
        if all { app.store.tokens(None).await? } else { app.store.tokens(Some((&p.who.kind, &p.who.id))).await? };
    Ok(items)
}

/// Create a token; its secret is in the response, once.
pub async fn create_token(app: &App, p: &Principal, b: TokenBody) -> ApiResult<CreatedToken> {
    let (who, scope) = match &b.service_account {
        Some(sa) => {
            let r = service_account(app, sa).await?;
            let scope = Scope { org: r.org.clone(), project: r.project.clone() };
            app.require(p, Permission::USER_MANAGE, &Resource::new("user", "", scope.clone())).await?;
            (PrincipalRef { kind: "service_account".into(), id: sa.clone() }, scope)
        }
        None => (p.who.clone(), p.scope.clone()),
    };
    if b.expires_in_seconds.is_some_and(|s| !(1..=3_153_600_000).contains(&s)) {
        return Err(ApiError::BadRequest("expires_in_seconds must be between 1 and 3153600000 (a century)".into()));
    }
    let mut expires = b.expires_in_seconds.map(|s| now_ms().saturating_add(s.saturating_mul(1000)));
    // A token never creates one that outlives it (the bootstrap token excepted: it is replaced by what it makes).
    if let Some(limit) = p.token_expires_at.filter(|_| !p.bootstrap) {
        match expires {
            None => expires = Some(limit),
            Some(e) if e > limit => {
                return Err(ApiError::BadRequest(format!(
                    "the token you are using expires in {} s; a token it creates may not outlive it (ask for at most that, or log in again)",
                    ((limit - now_ms()) / 1000).max(0)
                )));
            }
            Some(_) => {}
        }
    }
    let (t, secret) =
        issue_token(app.store.as_ref(), &b.name.chars().take(128).collect::<String>(), &who, &scope, expires).await?;
    app.audit(
        &p.display(),
        &p.address,
        "create",
        "token",
        &t.id,
        &scope,
        serde_json::json!({"for": format!("{}:{}", who.kind, who.id)}),
    )
    .await?;
    // The bootstrap token is one-time: once it has made the admin a token, it is revoked.
    if p.bootstrap {
        app.store.revoke_token(&p.token_id).await?;
        app.tokens_changed();
        app.audit(&p.display(), &p.address, "revoke", "token", BOOTSTRAP, &Scope::account(), serde_json::json!({}))
            .await?;
    }
    Ok(CreatedToken { record: t, token: secret })
}

/// Revoke a token (one's own, or any with `user:manage`).
pub async fn revoke_token(app: &App, p: &Principal, id: String) -> ApiResult<()> {
    let t = app
        .store
        .tokens(None)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no token `{}`", id.chars().take(40).collect::<String>())))?;
    let own = t.principal_kind == p.who.kind && t.principal_id == p.who.id;
    if !own {
        let scope = Scope { org: t.principal_org.clone(), project: t.principal_project.clone() };
        app.require(p, Permission::USER_MANAGE, &Resource::new("user", "", scope)).await?;
    }
    let revoked = app.store.revoke_token(&id).await?;
    app.tokens_changed();
    if !revoked {
        return Err(ApiError::Conflict("the token was already revoked".into()));
    }
    app.audit(&p.display(), &p.address, "revoke", "token", &id, &Scope::account(), serde_json::json!({})).await?;
    Ok(())
}

/// A custom role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// Identifier (not starting with `_`).
    #[schema(schema_with = crate::contract::custom_identifier)]
    pub identifier: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Permissions.
    #[schema(schema_with = crate::contract::permission_list)]
    pub permissions: Vec<String>,
    /// Organization (none: account).
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub org: Option<String>,
    /// Project.
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub project: Option<String>,
}

/// Built-in roles and the custom roles of a scope.
pub async fn list_roles(app: &App, p: &Principal, q: ScopeQuery) -> ApiResult<Vec<RoleView>> {
    let scope = scope_of(&q)?;
    app.require(p, Permission::ROLE_MANAGE, &Resource::new("role", "", scope.clone())).await?;
    let mut items: Vec<RoleView> =
        crate::rbac::builtin_roles().iter().map(|r| RoleView { role: r.clone(), builtin: true, scope: None }).collect();
    for r in app.store.records("role", Some(&scope.org), Some(&scope.project)).await? {
        items.push(RoleView { role: parsed(&r)?, builtin: false, scope: Some(scope.clone()) });
    }
    Ok(items)
}

fn custom_id(what: &str, id: &str) -> ApiResult<()> {
    identifier(what, id)?;
    if id.starts_with('_') {
        return Err(ApiError::BadRequest(format!("`{id}`: identifiers starting with `_` are built-in")));
    }
    Ok(())
}

/// Create a custom role.
pub async fn create_role(app: &App, p: &Principal, b: RoleBody) -> ApiResult<RoleView> {
    let scope = scope_of(&ScopeQuery { org: b.org.clone(), project: b.project.clone() })?;
    app.require(p, Permission::ROLE_MANAGE, &Resource::new("role", "", scope.clone())).await?;
    custom_id("role", &b.identifier)?;
    check_permissions(&b.permissions).map_err(ApiError::BadRequest)?;
    let role = Role {
        identifier: b.identifier.clone(),
        name: if b.name.is_empty() { b.identifier.clone() } else { b.name.clone() },
        permissions: b.permissions.clone(),
    };
    let r = record("role", &scope, &b.identifier, serde_json::to_value(&role).unwrap_or_default());
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!("role `{}` exists in {}", b.identifier, scope.describe())));
    }
    app.policy_changed().await;
    app.audit(
        &p.display(),
        &p.address,
        "create",
        "role",
        &b.identifier,
        &scope,
        serde_json::json!({"permissions": b.permissions}),
    )
    .await?;
    Ok(RoleView { role: parsed(&r)?, builtin: false, scope: Some(scope.clone()) })
}

/// Delete a custom role.
pub async fn delete_role(app: &App, p: &Principal, id: String, q: ScopeQuery) -> ApiResult<()> {
    delete_policy_record(app, p, &q, "role", &id).await
}

/// Delete a custom role or resource group (`kind`) of the scope `q` names; `role:manage` there.
async fn delete_policy_record(app: &App, p: &Principal, q: &ScopeQuery, kind: &str, id: &str) -> ApiResult<()> {
    let what = kind.replace('_', " ");
    let scope = scope_of(q)?;
    app.require(p, Permission::ROLE_MANAGE, &Resource::new("role", "", scope.clone())).await?;
    custom_id(&what, id)?;
    if !app.store.delete_record(kind, &scope.org, &scope.project, id).await? {
        return Err(ApiError::NotFound(format!("no {what} `{id}` in {}", scope.describe())));
    }
    app.policy_changed().await;
    app.audit(&p.display(), &p.address, "delete", kind, id, &scope, serde_json::json!({})).await?;
    Ok(())
}

/// A resource group to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    /// Identifier (not starting with `_`, which marks the built-in ones).
    #[schema(schema_with = crate::contract::custom_identifier)]
    pub identifier: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Include resources of the scopes below (an organization's projects).
    #[serde(default)]
    pub include_child_scopes: bool,
    /// Every resource (of the scope, and of child scopes when included).
    #[serde(default)]
    pub all_resources: bool,
    /// Otherwise, these.
    #[serde(default)]
    pub resources: Vec<crate::rbac::ResourceFilter>,
    /// Organization (none: account).
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub org: Option<String>,
    /// Project.
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub project: Option<String>,
}

/// Built-in resource groups and the custom ones of a scope.
pub async fn list_resource_groups(app: &App, p: &Principal, q: ScopeQuery) -> ApiResult<Vec<ResourceGroupView>> {
    let scope = scope_of(&q)?;
    app.require(p, Permission::ROLE_MANAGE, &Resource::new("role", "", scope.clone())).await?;
    let mut items: Vec<ResourceGroupView> = crate::rbac::builtin_resource_groups()
        .iter()
        .map(|g| ResourceGroupView { group: g.clone(), builtin: true, scope: None })
        .collect();
    for r in app.store.records("resource_group", Some(&scope.org), Some(&scope.project)).await? {
        items.push(ResourceGroupView { group: parsed(&r)?, builtin: false, scope: Some(scope.clone()) });
    }
    Ok(items)
}

/// Create a resource group.
pub async fn create_resource_group(app: &App, p: &Principal, b: GroupBody) -> ApiResult<ResourceGroupView> {
    let scope = scope_of(&ScopeQuery { org: b.org.clone(), project: b.project.clone() })?;
    app.require(p, Permission::ROLE_MANAGE, &Resource::new("role", "", scope.clone())).await?;
    let group = ResourceGroup {
        identifier: b.identifier,
        name: b.name,
        include_child_scopes: b.include_child_scopes,
        all_resources: b.all_resources,
        resources: b.resources,
    };
    custom_id("resource group", &group.identifier)?;
    for f in &group.resources {
        for id in f.identifiers.iter().flatten() {
            identifier(&f.resource_type, id)?;
        }
        if !crate::rbac::PERMISSIONS.iter().any(|p| p.split(':').next() == Some(f.resource_type.as_str())) {
            return Err(ApiError::BadRequest(format!("unknown resource type `{}`", f.resource_type)));
        }
    }
    let r = record("resource_group", &scope, &group.identifier, serde_json::to_value(&group).unwrap_or_default());
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!(
            "resource group `{}` exists in {}",
            group.identifier,
            scope.describe()
        )));
    }
    app.policy_changed().await;
    app.audit(&p.display(), &p.address, "create", "resource_group", &group.identifier, &scope, serde_json::json!({}))
        .await?;
    Ok(ResourceGroupView { group: parsed(&r)?, builtin: false, scope: Some(scope.clone()) })
}

/// Delete a resource group.
pub async fn delete_resource_group(app: &App, p: &Principal, id: String, q: ScopeQuery) -> ApiResult<()> {
    delete_policy_record(app, p, &q, "resource_group", &id).await
}

/// A role binding to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingBody {
    /// Who.
    pub principal: PrincipalRef,
    /// Role identifier.
    #[schema(schema_with = crate::contract::identifier)]
    pub role: String,
    /// Resource group identifier.
    #[schema(schema_with = crate::contract::identifier)]
    pub resource_group: String,
    /// Organization (none: account).
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub org: Option<String>,
    /// Project.
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub project: Option<String>,
}

/// Role bindings of a scope.
pub async fn list_bindings(app: &App, p: &Principal, q: ScopeQuery) -> ApiResult<Vec<Binding>> {
    let scope = scope_of(&q)?;
    app.require(p, Permission::ROLE_MANAGE, &Resource::new("role", "", scope.clone())).await?;
    app.store.records("role_binding", Some(&scope.org), Some(&scope.project)).await?.iter().map(parsed).collect()
}

/// Bind a role and a resource group to a principal at a scope.
pub async fn create_binding(app: &App, p: &Principal, b: BindingBody) -> ApiResult<Binding> {
    let scope = scope_of(&ScopeQuery { org: b.org.clone(), project: b.project.clone() })?;
    app.require(p, Permission::ROLE_MANAGE, &Resource::new("role", "", scope.clone())).await?;
    match b.principal.kind.as_str() {
        "user" => {
            identifier("user", &b.principal.id)?;
            if app.store.record("user", "", "", &b.principal.id).await?.is_none() {
                return Err(ApiError::BadRequest(format!("no user `{}`", b.principal.id)));
            }
        }
        "service_account" => {
            let sa = service_account(app, &b.principal.id).await.map_err(|e| ApiError::BadRequest(e.to_string()))?;
            if !(Scope { org: sa.org.clone(), project: sa.project.clone() }).contains(&scope) {
                return Err(ApiError::BadRequest(format!(
                    "service account `{}` belongs to another scope; bind it within its own",
                    b.principal.id
                )));
            }
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "principal kind `{other}`: expected `user` or `service_account`"
            )));
        }
    }
    let policy = app.policy().await?;
    if policy.role(&scope, &b.role).is_none() {
        return Err(ApiError::BadRequest(format!("no role `{}` at {}", b.role, scope.describe())));
    }
    if policy.group(&scope, &b.resource_group).is_none() {
        return Err(ApiError::BadRequest(format!("no resource group `{}` at {}", b.resource_group, scope.describe())));
    }
    let binding = Binding {
        identifier: format!("rb_{}", ulid::Ulid::new()),
        scope: scope.clone(),
        principal: b.principal.clone(),
        role: b.role.clone(),
        resource_group: b.resource_group.clone(),
    };
    app.store
        .put_record(
            &record("role_binding", &scope, &binding.identifier, serde_json::to_value(&binding).unwrap_or_default()),
            false,
        )
        .await?;
    app.policy_changed().await;
    app.audit(
        &p.display(),
        &p.address,
        "create",
        "role_binding",
        &binding.identifier,
        &scope,
        serde_json::to_value(&binding).unwrap_or_default(),
    )
    .await?;
    Ok(binding)
}

/// Delete a role binding.
pub async fn delete_binding(app: &App, p: &Principal, id: String) -> ApiResult<()> {
    identifier("role binding", &id)?;
    let r = app
        .store
        .records("role_binding", None, None)
        .await?
        .into_iter()
        .find(|r| r.identifier == id)
        .ok_or_else(|| ApiError::NotFound(format!("no role binding `{id}`")))?;
    let scope = Scope { org: r.org.clone(), project: r.project.clone() };
    app.require(p, Permission::ROLE_MANAGE, &Resource::new("role", "", scope.clone())).await?;
    delete_keeping_an_admin(app, &[store::RecordKey::of(&r)]).await?;
    app.audit(&p.display(), &p.address, "delete", "role_binding", &id, &scope, serde_json::json!({})).await?;
    Ok(())
}

/// Audit filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this resource type.
    pub resource_type: Option<String>,
    /// Events older than this id.
    pub before: Option<i64>,
    /// Page size (1–500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Who did what, from where; newest first (admins).
pub async fn audit(app: &App, p: &Principal, q: AuditParams) -> ApiResult<Vec<store::AuditEvent>> {
    require_account(app, p, Permission::AUDIT_VIEW, "audit").await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 500".into()));
    }
    let items = app
        .store
        .audit_events(&AuditQuery {
            principal: q.principal,
            resource_type: q.resource_type,
            before: q.before,
            limit: Some(limit),
        })
        .await?;
    Ok(items)
}

/// A user group: users who may, together, decide approvals that name the group.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserGroupBody {
    /// Identifier.
    #[schema(schema_with = crate::contract::identifier)]
    pub identifier: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Member user names.
    #[serde(default)]
    #[schema(schema_with = crate::contract::identifier_list)]
    pub users: Vec<String>,
    /// Organization (none: account).
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub org: Option<String>,
    /// Project.
    #[serde(default)]
    #[schema(schema_with = crate::contract::scope_part)]
    pub project: Option<String>,
}

/// New members of a user group.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersBody {
    /// Member user names (replacing the current ones).
    #[schema(schema_with = crate::contract::identifier_list)]
    pub users: Vec<String>,
}

async fn check_members(app: &App, users: &[String]) -> ApiResult<()> {
    for u in users {
        identifier("user", u)?;
        if app.store.record("user", "", "", u).await?.is_none() {
            return Err(ApiError::BadRequest(format!("no user `{u}`")));
        }
    }
    Ok(())
}

/// User groups of a scope.
pub async fn list_user_groups(app: &App, p: &Principal, q: ScopeQuery) -> ApiResult<Vec<MemberView>> {
    members(app, p, &q, "user_group").await
}

/// Create a user group.
pub async fn create_user_group(app: &App, p: &Principal, b: UserGroupBody) -> ApiResult<MemberView> {
    let scope = scope_of(&ScopeQuery { org: b.org.clone(), project: b.project.clone() })?;
    app.require(p, Permission::USER_MANAGE, &Resource::new("user", "", scope.clone())).await?;
    identifier("user group", &b.identifier)?;
    check_members(app, &b.users).await?;
    let name = if b.name.is_empty() { b.identifier.clone() } else { b.name.clone() };
    let r = record("user_group", &scope, &b.identifier, serde_json::json!({"name": name, "users": b.users}));
    if !app.store.put_record(&r, false).await? {
        return Err(ApiError::Conflict(format!("user group `{}` exists in {}", b.identifier, scope.describe())));
    }
    app.audit(
        &p.display(),
        &p.address,
        "create",
        "user_group",
        &b.identifier,
        &scope,
        serde_json::json!({"users": b.users}),
    )
    .await?;
    Ok(MemberView::of(&r))
}

/// Set a user group's members.
pub async fn update_user_group(
    app: &App,
    p: &Principal,
    id: String,
    q: ScopeQuery,
    b: MembersBody,
) -> ApiResult<MemberView> {
    let scope = scope_of(&q)?;
    app.require(p, Permission::USER_MANAGE, &Resource::new("user", "", scope.clone())).await?;
    identifier("user group", &id)?;
    check_members(app, &b.users).await?;
    let mut r = app
        .store
        .record("user_group", &scope.org, &scope.project, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user group `{id}` in {}", scope.describe())))?;
    r.body["users"] = serde_json::json!(b.users);
    r.updated_at = now_ms();
    app.store.put_record(&r, true).await?;
    app.audit(&p.display(), &p.address, "update", "user_group", &id, &scope, serde_json::json!({"users": b.users}))
        .await?;
    Ok(MemberView::of(&r))
}

/// Delete a user group.
pub async fn delete_user_group(app: &App, p: &Principal, id: String, q: ScopeQuery) -> ApiResult<()> {
    let scope = scope_of(&q)?;
    app.require(p, Permission::USER_MANAGE, &Resource::new("user", "", scope.clone())).await?;
    identifier("user group", &id)?;
    if !app.store.delete_record("user_group", &scope.org, &scope.project, &id).await? {
        return Err(ApiError::NotFound(format!("no user group `{id}` in {}", scope.describe())));
    }
    app.audit(&p.display(), &p.address, "delete", "user_group", &id, &scope, serde_json::json!({})).await?;
    Ok(())
}

/// Whether `user` belongs to one of `groups` as an approval names them (`g` in the execution's project,
/// `org.g` in its organization, `account.g` at the account).
pub(crate) async fn in_user_groups(
    app: &App,
    user: &str,
    groups: &[String],
    org: &str,
    project: &str,
) -> ApiResult<bool> {
    for g in groups {
        let (o, pr, id) = match g.split_once('.') {
            Some(("account", id)) => ("", "", id),
            Some(("org", id)) => (org, "", id),
            _ => (org, project, g.as_str()),
        };
        if let Some(r) = app.store.record("user_group", o, pr, id).await?
            && r.body["users"].as_array().is_some_and(|us| us.iter().any(|u| u == user))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Take a deleted user out of every user group (a new user with the same name is not a member).
pub(crate) async fn leave_groups(app: &App, user: &str) -> ApiResult<()> {
    for mut r in app.store.records("user_group", None, None).await? {
        let Some(users) = r.body["users"].as_array() else { continue };
        if users.iter().any(|u| u == user) {
            let kept: Vec<serde_json::Value> = users.iter().filter(|u| *u != user).cloned().collect();
            r.body["users"] = serde_json::Value::Array(kept);
            app.store.put_record(&r, true).await?;
        }
    }
    Ok(())
}
