//! The administration pages, for those with the permissions: a project's settings — input sets, services,
//! environments, infrastructure definitions (YAML, validated with line and column) and secrets (values
//! write-only: typed in, sealed, never shown) — and access control: users, roles and role bindings, service
//! accounts and API tokens (a new token is shown once). Every action is a service-layer call; what a caller
//! may not do answers 403 as the API does.

use super::pages::crumbs;
use super::{Crumb, Web, WebResult, csrf_field, ok, page, time_el, urlencode, with_status};
use crate::App;
use crate::error::ApiError;
use crate::rbac::{PrincipalRef, Scope};
use crate::service::access as acsvc;
use crate::service::pipelines::{self as plsvc, EntityKind, Upload};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use std::sync::Arc;

/// The project settings kinds: URL segment, entity kind, label.
pub const KINDS: [(&str, EntityKind, &str); 6] = [
    ("input-sets", EntityKind::InputSets, "Input Sets"),
    ("services", EntityKind::Services, "Services"),
    ("environments", EntityKind::Environments, "Environments"),
    ("infrastructures", EntityKind::Infrastructures, "Infrastructure Definitions"),
    ("secrets", EntityKind::Secrets, "Secrets"),
    ("templates", EntityKind::Templates, "Templates"),
];

fn kind_of(segment: &str) -> Result<(EntityKind, &'static str), ApiError> {
    KINDS
        .iter()
        .find(|(s, ..)| *s == segment)
        .map(|(_, k, l)| (*k, *l))
        .ok_or_else(|| ApiError::NotFound(format!("no settings page `{segment}`")))
}

fn field(f: &[(String, String)], k: &str) -> String {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.replace("\r\n", "\n")).unwrap_or_default()
}

fn opt(f: &[(String, String)], k: &str) -> Option<String> {
    Some(field(f, k)).filter(|v| !v.is_empty())
}

fn tabs(org: &str, project: &str, current: &str) -> Markup {
    html! {
        nav.tabs aria-label="Project settings" {
            @for (seg, _, label) in KINDS {
                @if seg == current { span aria-current="page" { (label) } }
                @else { a href=(format!("/orgs/{org}/projects/{project}/settings/{seg}")) { (label) } }
            }
        }
    }
}

async fn settings_crumbs(app: &App, w: &Web, org: &str, project: &str, label: &str) -> Vec<Crumb> {
    let mut c = crumbs(app, w, org, Some(project)).await;
    c.push(("Project Settings".into(), Some(format!("/orgs/{org}/projects/{project}/settings/input-sets"))));
    c.push((label.into(), None));
    c
}

fn problems_of(e: &ApiError) -> Option<Markup> {
    match e {
        ApiError::Launch(launch::LaunchError::Invalid { diagnostics, text, .. }) => {
            let lines: Vec<&str> = text.lines().collect();
            Some(html! {
                div.problems role="alert" {
                    p { strong { "Not saved:" } }
                    ol { @for d in diagnostics {
                        li { "Line " (d.span.start.line) ", column " (d.span.start.col) ": " (d.message)
                            @if let Some(h) = &d.help { " — " (h) }
                            @if let Some(t) = lines.get(d.span.start.line as usize - 1) { pre.excerpt { span.ln { (d.span.start.line) } mark { (t) } } } }
                    } }
                }
            })
        }
        _ => None,
    }
}

async fn entity_page(
    app: &App,
    w: &Web,
    org: &str,
    project: &str,
    segment: &str,
    error: Option<ApiError>,
    draft: Option<&str>,
) -> WebResult<Markup> {
    let (kind, label) = kind_of(segment)?;
    let items = plsvc::list_entities(app, &w.p, org, project, kind).await?;
    let policy = app.policy().await?;
    let scope = Scope::project(org, project);
    let can_edit = policy.allows_some(&w.p.who, kind.create_edit(), kind.rtype(), &scope);
    let can_delete = policy.allows_some(&w.p.who, kind.delete(), kind.rtype(), &scope);
    let base = format!("/orgs/{org}/projects/{project}/settings/{segment}");
    let c = settings_crumbs(app, w, org, project, label).await;
    let error_view = error
        .as_ref()
        .map(|e| problems_of(e).unwrap_or_else(|| html! { p.error role="alert" { "Not saved: " (e.to_string()) } }));
    Ok(page(
        w,
        label,
        &c,
        html! {
            h1 { (label) }
            (tabs(org, project, segment))
            @if items.is_empty() { p { "None yet." } }
            @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Identifier" } th scope="col" { "Last changed" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody { @for it in &items {
                        tr {
                            td { @if kind == EntityKind::Secrets { (it.name) } @else { a href=(format!("{base}/{}", it.identifier)) { (it.name) } } }
                            td { code { (it.identifier) } }
                            td { (time_el(it.updated_at)) }
                            td { @if can_delete { form method="post" action=(format!("{base}/{}/delete", it.identifier)) {
                                (csrf_field(w)) button.danger type="submit" aria-label=(format!("Delete {}", it.name)) { "Delete" } } } }
                        }
                    } }
                }
            }
            @if let Some(e) = error_view { (e) }
            @if can_edit {
                h2 { @if kind == EntityKind::Secrets { "Add or replace a secret" } @else { "Add one from YAML" } }
                form.stack method="post" action=(base) {
                    (csrf_field(w))
                    @if kind == EntityKind::Secrets {
                        label for="identifier" { "Identifier" }
                        input id="identifier" name="identifier" type="text" required pattern="[a-zA-Z_][0-9a-zA-Z_$]{0,127}";
                        label for="name" { "Name" }
                        input id="name" name="name" type="text";
                        label for="value" { "Value" }
                        input id="value" name="value" type="password" required autocomplete="off" aria-describedby="value-help";
                        span.small id="value-help" { "Write-only: sealed at rest, never shown again, masked in every log." }
                    } @else {
                        label for="yaml" { "YAML" }
                        textarea id="yaml" name="yaml" rows="14" spellcheck="false" required { (draft.unwrap_or("")) }
                    }
                    button.primary type="submit" { "Save" }
                }
            }
        },
    ))
}

/// A settings list (and its add form).
pub async fn entities(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, segment)): Path<(String, String, String)>,
) -> WebResult {
    Ok(ok(entity_page(&app, &w, &org, &project, &segment, None, None).await?))
}

/// Add an entity (YAML) or a secret.
pub async fn create_entity(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, segment)): Path<(String, String, String)>,
    body: Bytes,
) -> WebResult {
    let (kind, _) = kind_of(&segment)?;
    let f = super::form(&body);
    let result = if kind == EntityKind::Secrets {
        let id = field(&f, "identifier");
        let upload = Upload::Json(
            serde_json::json!({"identifier": id, "name": opt(&f, "name").unwrap_or(id.clone()), "value": field(&f, "value")}),
        );
        plsvc::put_entity(&app, &w.p, &org, &project, kind, &id, upload).await.map(|_| ())
    } else {
        plsvc::create_entity(&app, &w.p, &org, &project, kind, Upload::Yaml(field(&f, "yaml"))).await.map(|_| ())
    };
    let to = format!("/orgs/{org}/projects/{project}/settings/{segment}");
    let draft = (kind != EntityKind::Secrets).then(|| field(&f, "yaml"));
    let (a, ww, o, pr, sg) = (&app, &w, &org, &project, &segment);
    super::settle(
        result,
        |_| to,
        move |e| async move { entity_page(a, ww, o, pr, sg, Some(e), draft.as_deref()).await },
    )
    .await
}

async fn one_entity(
    app: &App,
    w: &Web,
    org: &str,
    project: &str,
    segment: &str,
    id: &str,
    failed: Option<(String, ApiError)>,
) -> WebResult<Markup> {
    let (draft, error) = failed.map_or((None, None), |(d, e)| (Some(d), Some(e)));
    let (kind, label) = kind_of(segment)?;
    let v = plsvc::get_entity(app, &w.p, org, project, kind, id).await?;
    let mut c = settings_crumbs(app, w, org, project, label).await;
    if let Some(last) = c.last_mut() {
        last.1 = Some(format!("/orgs/{org}/projects/{project}/settings/{segment}"));
    }
    c.push((v.name.clone(), None));
    let yaml = draft.or(v.yaml.clone()).unwrap_or_default();
    let error_view = error
        .as_ref()
        .map(|e| problems_of(e).unwrap_or_else(|| html! { p.error role="alert" { "Not saved: " (e.to_string()) } }));
    Ok(page(
        w,
        &v.name,
        &c,
        html! {
            h1 { (v.name) " " span.small { code { (v.identifier) } } }
            @if let Some(e) = error_view { (e) }
            form.stack method="post" action=(format!("/orgs/{org}/projects/{project}/settings/{segment}/{id}")) {
                (csrf_field(w))
                label for="yaml" { "YAML" }
                textarea id="yaml" name="yaml" rows="20" spellcheck="false" { (yaml) }
                button.primary type="submit" { "Save" }
            }
        },
    ))
}

/// One entity's YAML, to edit.
pub async fn entity(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, segment, id)): Path<(String, String, String, String)>,
) -> WebResult {
    Ok(ok(one_entity(&app, &w, &org, &project, &segment, &id, None).await?))
}

/// Save an entity's YAML.
pub async fn save_entity(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, segment, id)): Path<(String, String, String, String)>,
    body: Bytes,
) -> WebResult {
    let (kind, _) = kind_of(&segment)?;
    let yaml = field(&super::form(&body), "yaml");
    let result = plsvc::put_entity(&app, &w.p, &org, &project, kind, &id, Upload::Yaml(yaml.clone())).await;
    let to = format!("/orgs/{org}/projects/{project}/settings/{segment}");
    let (a, ww, o, pr, sg, i) = (&app, &w, &org, &project, &segment, &id);
    super::settle(result, |_| to, move |e| async move { one_entity(a, ww, o, pr, sg, i, Some((yaml, e))).await }).await
}

/// Delete an entity or secret.
pub async fn delete_entity(
    State(app): State<Arc<App>>,
    w: Web,
    Path((org, project, segment, id)): Path<(String, String, String, String)>,
) -> WebResult {
    let (kind, _) = kind_of(&segment)?;
    plsvc::delete_entity(&app, &w.p, &org, &project, kind, &id).await?;
    Ok(Redirect::to(&format!("/orgs/{org}/projects/{project}/settings/{segment}")).into_response())
}

// ---- Access control --------------------------------------------------------------------------------------

fn access_tabs(current: &str) -> Markup {
    html! {
        nav.tabs aria-label="Access control" {
            @for (href, label) in [("/access/users", "Users"), ("/access/roles", "Roles and Role Bindings"), ("/access/service-accounts", "Service Accounts"), ("/access/tokens", "API Tokens"), ("/access/agents", "Agents")] {
                @if href == current { span aria-current="page" { (label) } } @else { a href=(href) { (label) } }
            }
        }
    }
}

fn access_crumbs(label: &str) -> Vec<Crumb> {
    vec![
        ("Organizations".into(), Some("/".into())),
        ("Access Control".into(), Some("/access/users".into())),
        (label.into(), None),
    ]
}

fn notice(e: Option<&ApiError>) -> Markup {
    html! { @if let Some(e) = e { p.error role="alert" { "Not done: " (e.to_string()) } } }
}

/// Scope query of the access pages.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ScopeParams {
    org: Option<String>,
    project: Option<String>,
}

impl ScopeParams {
    fn query(&self) -> acsvc::ScopeQuery {
        acsvc::ScopeQuery {
            org: self.org.clone().filter(|s| !s.is_empty()),
            project: self.project.clone().filter(|s| !s.is_empty()),
        }
    }
    fn qs(&self) -> String {
        let q = self.query();
        match (q.org, q.project) {
            (Some(o), Some(p)) => format!("?org={}&project={}", urlencode(&o), urlencode(&p)),
            (Some(o), None) => format!("?org={}", urlencode(&o)),
            _ => String::new(),
        }
    }
}

fn scope_picker(action: &str, s: &ScopeParams) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            label { "Organization " input type="text" name="org" value=(s.org.as_deref().unwrap_or("")) placeholder="(account)"; }
            label { "Project " input type="text" name="project" value=(s.project.as_deref().unwrap_or("")) placeholder="(none)"; }
            button type="submit" { "Show" }
        }
    }
}

async fn users_page(app: &App, w: &Web, error: Option<&ApiError>) -> WebResult<Markup> {
    let users = acsvc::list_users(app, &w.p).await?;
    Ok(page(
        w,
        "Users",
        &access_crumbs("Users"),
        html! {
            h1 { "Users" }
            (access_tabs("/access/users"))
            (notice(error))
            table {
                thead { tr { th scope="col" { "User name" } th scope="col" { "Email" } th scope="col" { "Created" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody { @for u in &users { tr {
                    td { (u.identifier) } td { (u.email.as_deref().unwrap_or("—")) } td { (time_el(u.created_at)) }
                    td { form method="post" action=(format!("/access/users/{}/delete", u.identifier)) { (csrf_field(w))
                        button.danger type="submit" aria-label=(format!("Delete user {}", u.identifier)) { "Delete" } } }
                } } }
            }
            h2 { "Add a user" }
            form.stack method="post" action="/access/users" {
                (csrf_field(w))
                label for="username" { "User name" } input id="username" name="username" type="text" required autocomplete="off";
                label for="email" { "Email" } input id="email" name="email" type="text" autocomplete="off";
                label for="password" { "Password" } input id="password" name="password" type="password" required autocomplete="new-password" minlength="8";
                button.primary type="submit" { "Add user" }
            }
        },
    ))
}

/// Users.
pub async fn users(State(app): State<Arc<App>>, w: Web) -> WebResult {
    Ok(ok(users_page(&app, &w, None).await?))
}

/// Add a user.
pub async fn create_user(State(app): State<Arc<App>>, w: Web, body: Bytes) -> WebResult {
    let f = super::form(&body);
    let b =
        acsvc::UserBody { username: field(&f, "username"), password: field(&f, "password"), email: opt(&f, "email") };
    let (a, ww) = (&app, &w);
    super::settle(
        acsvc::create_user(&app, &w.p, b).await,
        |_| "/access/users".into(),
        move |e| async move { users_page(a, ww, Some(&e)).await },
    )
    .await
}

/// Delete a user.
pub async fn delete_user(State(app): State<Arc<App>>, w: Web, Path(user): Path<String>) -> WebResult {
    let (a, ww) = (&app, &w);
    super::settle(
        acsvc::delete_user(&app, &w.p, user).await,
        |_| "/access/users".into(),
        move |e| async move { users_page(a, ww, Some(&e)).await },
    )
    .await
}

async fn roles_page(app: &App, w: &Web, s: &ScopeParams, error: Option<&ApiError>) -> WebResult<Markup> {
    let roles = acsvc::list_roles(app, &w.p, s.query()).await?;
    let bindings = acsvc::list_bindings(app, &w.p, s.query()).await?;
    let groups = acsvc::list_resource_groups(app, &w.p, s.query()).await.unwrap_or_default();
    let q = s.query();
    Ok(page(
        w,
        "Roles and Role Bindings",
        &access_crumbs("Roles and Role Bindings"),
        html! {
            h1 { "Roles and Role Bindings" }
            (access_tabs("/access/roles"))
            (scope_picker("/access/roles", s))
            (notice(error))
            h2 { "Role bindings" }
            table {
                thead { tr { th scope="col" { "Principal" } th scope="col" { "Role" } th scope="col" { "Resource group" } th scope="col" { "Scope" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody { @for b in &bindings { tr {
                    td { (b.principal.kind.replace('_', " ")) " " strong { (b.principal.id) } }
                    td { code { (b.role) } } td { code { (b.resource_group) } } td { (b.scope.describe()) }
                    td { form method="post" action=(format!("/access/bindings/{}/delete{}", b.identifier, s.qs())) { (csrf_field(w))
                        button.danger type="submit" aria-label=(format!("Remove binding {}", b.identifier)) { "Remove" } } }
                } } }
            }
            h3 { "Bind a role" }
            form.stack method="post" action=(format!("/access/bindings{}", s.qs())) {
                (csrf_field(w))
                input type="hidden" name="org" value=(q.org.as_deref().unwrap_or(""));
                input type="hidden" name="project" value=(q.project.as_deref().unwrap_or(""));
                label for="principal_kind" { "Principal kind" }
                select id="principal_kind" name="principal_kind" {
                    option value="user" { "User" } option value="service_account" { "Service account" } option value="user_group" { "User group" }
                }
                label for="principal_id" { "Principal" } input id="principal_id" name="principal_id" type="text" required;
                label for="role" { "Role" }
                select id="role" name="role" { @for r in &roles { option value=(r.role.identifier) { (r.role.name) " (" (r.role.identifier) ")" } } }
                label for="resource_group" { "Resource group" }
                select id="resource_group" name="resource_group" { @for g in &groups { option value=(g.group.identifier) { (g.group.name) } } }
                button.primary type="submit" { "Bind" }
            }
            h2 { "Roles" }
            table {
                thead { tr { th scope="col" { "Role" } th scope="col" { "Permissions" } } }
                tbody { @for r in &roles { tr { td { (r.role.name) br; code { (r.role.identifier) } @if r.builtin { " " span.small { "built-in" } } }
                    td.small { (r.role.permissions.join(", ")) } } } }
            }
        },
    ))
}

/// Roles and role bindings at a scope.
pub async fn roles(State(app): State<Arc<App>>, w: Web, Query(s): Query<ScopeParams>) -> WebResult {
    Ok(ok(roles_page(&app, &w, &s, None).await?))
}

/// Bind a role.
pub async fn create_binding(
    State(app): State<Arc<App>>,
    w: Web,
    Query(s): Query<ScopeParams>,
    body: Bytes,
) -> WebResult {
    let f = super::form(&body);
    let b = acsvc::BindingBody {
        principal: PrincipalRef { kind: field(&f, "principal_kind"), id: field(&f, "principal_id") },
        role: field(&f, "role"),
        resource_group: field(&f, "resource_group"),
        org: opt(&f, "org"),
        project: opt(&f, "project"),
    };
    let (a, ww) = (&app, &w);
    let to = format!("/access/roles{}", s.qs());
    super::settle(
        acsvc::create_binding(&app, &w.p, b).await,
        |_| to,
        move |e| async move { roles_page(a, ww, &s, Some(&e)).await },
    )
    .await
}

/// Remove a role binding.
pub async fn delete_binding(
    State(app): State<Arc<App>>,
    w: Web,
    Path(id): Path<String>,
    Query(s): Query<ScopeParams>,
) -> WebResult {
    let (a, ww) = (&app, &w);
    let to = format!("/access/roles{}", s.qs());
    super::settle(
        acsvc::delete_binding(&app, &w.p, id).await,
        |_| to,
        move |e| async move { roles_page(a, ww, &s, Some(&e)).await },
    )
    .await
}

async fn accounts_page(app: &App, w: &Web, s: &ScopeParams, error: Option<&ApiError>) -> WebResult<Markup> {
    let accounts = acsvc::list_service_accounts(app, &w.p, s.query()).await?;
    let q = s.query();
    Ok(page(
        w,
        "Service Accounts",
        &access_crumbs("Service Accounts"),
        html! {
            h1 { "Service Accounts" }
            (access_tabs("/access/service-accounts"))
            (scope_picker("/access/service-accounts", s))
            (notice(error))
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Identifier" } th scope="col" { "Scope" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody { @for a in &accounts { tr {
                    td { (a.name) } td { code { (a.identifier) } }
                    td { (Scope { org: a.org.clone(), project: a.project.clone() }.describe()) }
                    td.actions {
                        form method="post" action="/access/tokens" { (csrf_field(w))
                            input type="hidden" name="service_account" value=(a.identifier);
                            input type="hidden" name="name" value=(format!("{} token", a.identifier));
                            button type="submit" aria-label=(format!("New token for {}", a.identifier)) { "New token" } }
                        form method="post" action=(format!("/access/service-accounts/{}/delete{}", a.identifier, s.qs())) { (csrf_field(w))
                            button.danger type="submit" aria-label=(format!("Delete service account {}", a.identifier)) { "Delete" } }
                    }
                } } }
            }
            h2 { "Add a service account" }
            form.stack method="post" action=(format!("/access/service-accounts{}", s.qs())) {
                (csrf_field(w))
                input type="hidden" name="org" value=(q.org.as_deref().unwrap_or(""));
                input type="hidden" name="project" value=(q.project.as_deref().unwrap_or(""));
                label for="sa-id" { "Identifier" } input id="sa-id" name="identifier" type="text" required;
                label for="sa-name" { "Name" } input id="sa-name" name="name" type="text";
                button.primary type="submit" { "Add service account" }
            }
        },
    ))
}

/// Service accounts at a scope.
pub async fn service_accounts(State(app): State<Arc<App>>, w: Web, Query(s): Query<ScopeParams>) -> WebResult {
    Ok(ok(accounts_page(&app, &w, &s, None).await?))
}

/// Add a service account.
pub async fn create_service_account(
    State(app): State<Arc<App>>,
    w: Web,
    Query(s): Query<ScopeParams>,
    body: Bytes,
) -> WebResult {
    let f = super::form(&body);
    let id = field(&f, "identifier");
    let b = acsvc::ServiceAccountBody {
        name: opt(&f, "name").unwrap_or(id.clone()),
        identifier: id,
        org: opt(&f, "org"),
        project: opt(&f, "project"),
    };
    let (a, ww) = (&app, &w);
    let to = format!("/access/service-accounts{}", s.qs());
    super::settle(
        acsvc::create_service_account(&app, &w.p, b).await,
        |_| to,
        move |e| async move { accounts_page(a, ww, &s, Some(&e)).await },
    )
    .await
}

/// Delete a service account.
pub async fn delete_service_account(
    State(app): State<Arc<App>>,
    w: Web,
    Path(id): Path<String>,
    Query(s): Query<ScopeParams>,
) -> WebResult {
    let (a, ww) = (&app, &w);
    let to = format!("/access/service-accounts{}", s.qs());
    super::settle(
        acsvc::delete_service_account(&app, &w.p, id).await,
        |_| to,
        move |e| async move { accounts_page(a, ww, &s, Some(&e)).await },
    )
    .await
}

async fn tokens_page(
    app: &App,
    w: &Web,
    created: Option<&acsvc::CreatedToken>,
    error: Option<&ApiError>,
) -> WebResult<Markup> {
    let tokens = acsvc::list_tokens(app, &w.p).await?;
    Ok(page(
        w,
        "API Tokens",
        &access_crumbs("API Tokens"),
        html! {
            h1 { "API Tokens" }
            (access_tabs("/access/tokens"))
            (notice(error))
            @if let Some(t) = created {
                div.notice role="status" {
                    p { "Token " strong { (t.record.name) } " for " (t.record.principal_kind.replace('_', " ")) " " strong { (t.record.principal_id) }
                        " — copy it now, it is not shown again:" }
                    label for="new-token" { "New token" }
                    input id="new-token" type="text" readonly value=(t.token) size="72";
                }
            }
            table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "For" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "State" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody { @for t in &tokens { tr {
                    td { (t.name) } td { (t.principal_kind.replace('_', " ")) " " (t.principal_id) } td { (time_el(t.created_at)) }
                    td { @match t.expires_at { Some(e) => (time_el(e)), None => "never" } }
                    td { @if t.revoked_at.is_some() { "revoked" } @else if t.expires_at.is_some_and(|e| e <= store::now_ms()) { "expired" } @else { "active" } }
                    td { @if t.revoked_at.is_none() { form method="post" action=(format!("/access/tokens/{}/revoke", t.id)) { (csrf_field(w))
                        button.danger type="submit" aria-label=(format!("Revoke token {}", t.name)) { "Revoke" } } } }
                } } }
            }
            h2 { "Create a token for yourself" }
            form.stack method="post" action="/access/tokens" {
                (csrf_field(w))
                label for="token-name" { "Name" } input id="token-name" name="name" type="text" required;
                label for="token-days" { "Expires in (days)" }
                input id="token-days" name="expires_in_days" type="number" min="1" max="365" aria-describedby="token-days-help";
                span.small id="token-days-help" { "A token made from a web session lives at most as long as the session; use the CLI or the API for longer-lived tokens." }
                button.primary type="submit" { "Create token" }
            }
        },
    ))
}

/// API tokens (yours; all of them for those who manage users).
pub async fn tokens(State(app): State<Arc<App>>, w: Web) -> WebResult {
    Ok(ok(tokens_page(&app, &w, None, None).await?))
}

/// Create a token (for yourself, or a service account); shown once.
pub async fn create_token(State(app): State<Arc<App>>, w: Web, body: Bytes) -> WebResult {
    let f = super::form(&body);
    let days = opt(&f, "expires_in_days")
        .map(|d| d.parse::<i64>().map_err(|_| ApiError::BadRequest("the days must be a whole number".into())))
        .transpose()?;
    let b = acsvc::TokenBody {
        name: field(&f, "name"),
        service_account: opt(&f, "service_account"),
        expires_in_seconds: days.map(|d| d * 86_400),
    };
    match acsvc::create_token(&app, &w.p, b).await {
        // Shown once: the session middleware marks every page `Cache-Control: no-store`.
        Ok(t) => Ok(ok(tokens_page(&app, &w, Some(&t), None).await?)),
        Err(e @ (ApiError::Forbidden { .. } | ApiError::Internal(_))) => Err(e.into()),
        Err(e) => Ok(with_status(e.status(), tokens_page(&app, &w, None, Some(&e)).await?)),
    }
}

/// Revoke a token.
pub async fn revoke_token(State(app): State<Arc<App>>, w: Web, Path(id): Path<String>) -> WebResult {
    let (a, ww) = (&app, &w);
    super::settle(
        acsvc::revoke_token(&app, &w.p, id).await,
        |_| "/access/tokens".into(),
        move |e| async move { tokens_page(a, ww, None, Some(&e)).await },
    )
    .await
}

// ---- Agents ----------------------------------------------------------------------------------------------

async fn agents_page(
    app: &App,
    w: &Web,
    created: Option<&crate::service::agents::Registered>,
    error: Option<&ApiError>,
) -> WebResult<Markup> {
    let agents = crate::service::agents::list(app, &w.p).await?;
    let now = store::now_ms();
    let scope = |a: &store::AgentRecord| match (a.org.as_str(), a.project.as_str()) {
        ("", _) => "account".to_string(),
        (org, "") => format!("organization {org}"),
        (org, project) => format!("project {org}/{project}"),
    };
    Ok(page(
        w,
        "Agents",
        &access_crumbs("Agents"),
        html! {
            h1 { "Agents" }
            (access_tabs("/access/agents"))
            (notice(error))
            p.small { "Remote workers (" code { "pipewright agent" } ") that run the steps of servers started with "
                code { "--no-local-executor" } ". An agent takes only the steps of the projects in its scope, and a step with "
                code { "delegateSelectors" } " goes only to an agent given all of those tags." }
            @if let Some(r) = created {
                div.notice role="status" {
                    p { "Agent " strong { (r.agent.name) } " — copy its credential now, it is not shown again. Give it to "
                        code { "pipewright agent --token-file FILE" } " (or " code { "PIPEWRIGHT_TOKEN" } ")." }
                    label for="new-credential" { "Agent credential" }
                    input id="new-credential" type="text" readonly value=(r.credential) size="72";
                }
            }
            @if agents.is_empty() {
                p { "No agent is registered yet." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Scope" } th scope="col" { "State" } th scope="col" { "Last heartbeat" }
                        th scope="col" { "Version" } th scope="col" { "Tags" } th scope="col" { "Running tasks" }
                        th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody { @for a in &agents { tr {
                        td { (a.name) }
                        td { (scope(a)) }
                        td { (a.state) }
                        td { @if a.last_seen == 0 { "never" } @else { (time_el(a.last_seen)) " (" (format!("{:.0}", ((now - a.last_seen).max(0) as f64) / 1000.0)) " s ago)" } }
                        td { (a.version) }
                        td { @if a.tags.is_empty() { "none" } @else { (a.tags.join(", ")) } }
                        td { (a.running) }
                        td.actions {
                            @for (state, label, class) in [("draining", "Drain", ""), ("revoked", "Revoke", "danger"), ("active", "Activate", "")] {
                                @if a.state != state {
                                    form method="post" action=(format!("/access/agents/{}/state", a.name)) {
                                        (csrf_field(w))
                                        input type="hidden" name="state" value=(state);
                                        button class=(class) type="submit" aria-label=(format!("{label} agent {}", a.name)) { (label) }
                                    }
                                }
                            }
                            form method="post" action=(format!("/access/agents/{}/credential", a.name)) {
                                (csrf_field(w))
                                button type="submit" aria-label=(format!("New credential for agent {}", a.name)) { "New credential" }
                            }
                        }
                    } } }
                }
            }
            h2 { "Register an agent" }
            form.stack method="post" action="/access/agents" {
                (csrf_field(w))
                label for="agent-name" { "Name" } input id="agent-name" name="name" type="text" required pattern="[A-Za-z0-9._-]{1,64}";
                label for="agent-tags" { "Tags (comma-separated)" } input id="agent-tags" name="tags" type="text";
                label for="agent-org" { "Organization (empty: the account)" } input id="agent-org" name="org" type="text";
                label for="agent-project" { "Project (empty: the whole organization)" } input id="agent-project" name="project" type="text";
                button.primary type="submit" { "Register agent" }
            }
        },
    ))
}

/// The agents: scope, state, last heartbeat, version, tags, running tasks; registering one.
pub async fn agents(State(app): State<Arc<App>>, w: Web) -> WebResult {
    Ok(ok(agents_page(&app, &w, None, None).await?))
}

/// What a registration or a new credential came to: the page with the credential shown once, or the error.
async fn agent_registered(
    app: &App,
    w: &Web,
    r: crate::error::ApiResult<crate::service::agents::Registered>,
) -> WebResult {
    match r {
        // Shown once: the session middleware marks every page `Cache-Control: no-store`.
        Ok(r) => Ok(ok(agents_page(app, w, Some(&r), None).await?)),
        Err(e @ (ApiError::Forbidden { .. } | ApiError::Internal(_))) => Err(e.into()),
        Err(e) => Ok(with_status(e.status(), agents_page(app, w, None, Some(&e)).await?)),
    }
}

/// Register an agent; its credential is shown once.
pub async fn register_agent(State(app): State<Arc<App>>, w: Web, body: Bytes) -> WebResult {
    let f = super::form(&body);
    let b = crate::service::agents::RegisterBody {
        name: field(&f, "name"),
        tags: field(&f, "tags").split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
        org: field(&f, "org").trim().to_string(),
        project: field(&f, "project").trim().to_string(),
    };
    agent_registered(&app, &w, crate::service::agents::register(&app, &w.p, b).await).await
}

/// Give an agent a new credential; shown once.
pub async fn agent_credential(State(app): State<Arc<App>>, w: Web, Path(name): Path<String>) -> WebResult {
    agent_registered(&app, &w, crate::service::agents::new_credential(&app, &w.p, &name).await).await
}

/// Drain, revoke or re-activate an agent.
pub async fn agent_state(State(app): State<Arc<App>>, w: Web, Path(name): Path<String>, body: Bytes) -> WebResult {
    let f = super::form(&body);
    let state = field(&f, "state");
    let (a, ww) = (&app, &w);
    super::settle(
        crate::service::agents::set_state(&app, &w.p, &name, &state).await,
        |_| "/access/agents".into(),
        move |e| async move { agents_page(a, ww, None, Some(&e)).await },
    )
    .await
}
