//! The web UI under `/`: server-rendered HTML (maud) with one small embedded script, over the same service
//! layer — and so the same RBAC — as the JSON API. This file owns the routes, the session middleware (an
//! HttpOnly, SameSite=Strict cookie holding a `web session` token that logout or revocation ends; CSRF checked
//! on every state-changing request), the page frame (header, breadcrumbs, log-out form), error pages, and the
//! embedded assets. The pages themselves live in [`pages`], [`run`] and [`execution`]; the stage graph in
//! [`graph`].

pub mod admin;
pub mod execution;
pub mod graph;
pub mod pages;
pub mod run;

use crate::App;
use crate::auth::{ClientAddr, Principal};
use crate::error::ApiError;
use crate::rbac::Permission;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The session cookie.
pub const SESSION_COOKIE: &str = "pw_session";
/// The cookie the login form's CSRF token is checked against (there is no session yet).
const LOGIN_CSRF_COOKIE: &str = "pw_login_csrf";

/// The stylesheet, embedded.
pub const CSS: &str = include_str!("assets/app.css");
/// The script, embedded.
pub const JS: &str = include_str!("assets/app.js");

/// Declares the web routes once: the list [`ROUTES`] (which the RBAC matrix test requires a row for, each)
/// and the functions that register them.
macro_rules! web_routes {
    (public: [$($pm:ident $pp:literal => $ph:expr),* $(,)?], session: [$($sm:ident $sp:literal => $sh:expr),* $(,)?]) => {
        /// Every route of the web UI, as (method, template).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($pm), $pp),)* $((stringify!($sm), $sp),)*];

        fn public_routes(r: Router<Arc<App>>) -> Router<Arc<App>> {
            r$(.route($pp, axum::routing::$pm($ph)))*
        }

        fn session_routes(r: Router<Arc<App>>) -> Router<Arc<App>> {
            r$(.route($sp, axum::routing::$sm($sh)))*
        }
    };
}

web_routes! {
    public: [
        get "/login" => login_page,
        post "/login" => login,
        get "/assets/app.css" => || async { asset(CSS, "text/css; charset=utf-8") },
        get "/assets/app.js" => || async { asset(JS, "text/javascript; charset=utf-8") },
    ],
    session: [
        post "/logout" => logout,
        get "/" => pages::home,
        get "/orgs/{org}" => pages::org,
        get "/orgs/{org}/projects/{project}" => pages::project,
        get "/orgs/{org}/projects/{project}/executions" => pages::history,
        get "/orgs/{org}/projects/{project}/pipelines/{pipeline}" => pages::pipeline,
        post "/orgs/{org}/projects/{project}/pipelines/{pipeline}/yaml" => pages::save_yaml,
        post "/orgs/{org}/projects/{project}/pipelines/{pipeline}/settings" => pages::save_settings,
        get "/orgs/{org}/projects/{project}/pipelines/{pipeline}/run" => run::dialog,
        post "/orgs/{org}/projects/{project}/pipelines/{pipeline}/run" => run::start,
        post "/orgs/{org}/projects/{project}/pipelines/{pipeline}/plan" => run::plan_panel,
        get "/executions/{id}" => execution::view,
        get "/executions/{id}/events" => execution::events,
        get "/executions/{id}/rerun" => run::rerun_dialog,
        post "/executions/{id}/rerun" => run::rerun,
        post "/executions/{id}/rerun/plan" => run::rerun_plan,
        post "/executions/{id}/retry" => execution::retry,
        post "/executions/{id}/abort" => execution::abort,
        post "/executions/{id}/approval" => execution::approval,
        post "/executions/{id}/intervene" => execution::intervene,
        post "/executions/{id}/input" => execution::input,
        get "/orgs/{org}/projects/{project}/settings/{kind}" => admin::entities,
        post "/orgs/{org}/projects/{project}/settings/{kind}" => admin::create_entity,
        get "/orgs/{org}/projects/{project}/settings/{kind}/{id}" => admin::entity,
        post "/orgs/{org}/projects/{project}/settings/{kind}/{id}" => admin::save_entity,
        post "/orgs/{org}/projects/{project}/settings/{kind}/{id}/delete" => admin::delete_entity,
        get "/access/users" => admin::users,
        post "/access/users" => admin::create_user,
        post "/access/users/{user}/delete" => admin::delete_user,
        get "/access/roles" => admin::roles,
        post "/access/bindings" => admin::create_binding,
        post "/access/bindings/{id}/delete" => admin::delete_binding,
        get "/access/service-accounts" => admin::service_accounts,
        post "/access/service-accounts" => admin::create_service_account,
        post "/access/service-accounts/{id}/delete" => admin::delete_service_account,
        get "/access/tokens" => admin::tokens,
        post "/access/tokens" => admin::create_token,
        post "/access/tokens/{id}/revoke" => admin::revoke_token,
        get "/access/agents" => admin::agents,
        post "/access/agents" => admin::register_agent,
        post "/access/agents/{name}/state" => admin::agent_state,
        post "/access/agents/{name}/credential" => admin::agent_credential,
    ]
}

/// The web routes: the public ones (log-in, assets) and, behind the session middleware, the rest.
pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let pages = session_routes(Router::new()).route_layer(axum::middleware::from_fn_with_state(app, session));
    public_routes(Router::new()).merge(pages)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

/// The signed-in caller of a page, and the CSRF token its forms carry.
#[derive(Clone)]
pub struct Web {
    /// Who.
    pub p: Principal,
    /// The CSRF token of this session.
    pub csrf: String,
    /// Whether the caller manages users or roles somewhere (the header links to Access Control).
    pub admin: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Web {
    type Rejection = WebError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Web>().cloned().ok_or_else(|| WebError(ApiError::Unauthorized("log in first".into())))
    }
}

/// The CSRF token of a session: derived from the session's secret, so only a page of this session knows it.
pub fn csrf_token(secret: &str) -> String {
    Sha256::digest(format!("pipewright-csrf\0{secret}").as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Whether the request came over TLS (through a proxy that says so): cookies are then `Secure`.
fn over_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A request from another site (its `Origin` names another host) is refused whatever it carries.
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin == "null" || origin_host != host
}

/// The session middleware: a valid session cookie makes a [`Web`] caller; GETs without one are sent to the
/// log-in page, anything else is refused. State-changing requests must carry the session's CSRF token (form
/// field `csrf` or header `X-CSRF-Token`) and come from this site.
async fn session(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let address = crate::auth::client_address(&req);
    let headers = req.headers().clone();
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    let secret = cookie(&headers, SESSION_COOKIE);
    let principal = match secret.as_deref() {
        Some(s) => app.principal(s, address).await.ok(),
        None => None,
    };
    let (Some(p), Some(secret)) = (principal, secret) else {
        if safe {
            let next = req.uri().path_and_query().map_or("/", |p| p.as_str());
            return Redirect::to(&format!("/login?next={}", urlencode(next))).into_response();
        }
        return WebError(ApiError::Unauthorized("your session has ended; log in again".into())).into_response();
    };
    let csrf = csrf_token(&secret);
    let mut req = req;
    if !safe {
        if foreign_origin(&headers) {
            return WebError(ApiError::csrf("a request from another site")).into_response();
        }
        let given = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(String::from);
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, app.config.max_body).await {
            Ok(b) => b,
            Err(_) => return WebError(ApiError::TooLarge("the form is too large".into())).into_response(),
        };
        let given = given.or_else(|| field(&bytes, "csrf"));
        if !given.is_some_and(|g| same(&g, &csrf)) {
            return WebError(ApiError::csrf(
                "this form (it was not sent by a page of your session; reload the page and try again)",
            ))
            .into_response();
        }
        req = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let admin = match app.policy().await {
        Ok(policy) => [Permission::USER_MANAGE, Permission::ROLE_MANAGE].into_iter().any(|perm| {
            policy
                .bindings
                .iter()
                .any(|b| b.principal == p.who && policy.allows_some(&p.who, perm, perm.rtype(), &b.scope))
        }),
        Err(_) => false,
    };
    req.extensions_mut().insert(Web { p, csrf, admin });
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The fields of an urlencoded form, in order (a name may repeat).
pub fn form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

fn field(bytes: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(bytes).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Percent-encode a query value.
pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An error shown as a page (a 401 sends the browser to the log-in page).
#[derive(Debug)]
pub struct WebError(pub ApiError);

impl<E: Into<ApiError>> From<E> for WebError {
    fn from(e: E) -> Self {
        WebError(e.into())
    }
}

/// A page handler's result.
pub type WebResult<T = Response> = Result<T, WebError>;

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if matches!(self.0, ApiError::Internal(_)) {
            tracing::error!("internal error: {}", self.0);
        }
        let (title, text) = match &self.0 {
            ApiError::Unauthorized(m) => ("Log in", m.clone()),
            ApiError::Forbidden { message, .. } => ("Not allowed", format!("You do not have permission: {message}.")),
            ApiError::NotFound(m) => ("Not found", m.clone()),
            ApiError::Launch(e) => ("Cannot do that", launch_message(e)),
            other => ("Cannot do that", other.to_string()),
        };
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · pipewright" } link rel="stylesheet" href="/assets/app.css"; }
                body {
                    header.top { a.brand href="/" { "pipewright" } }
                    main id="main" {
                        h1 { (title) }
                        p.error role="alert" { (text) }
                        @if status == StatusCode::UNAUTHORIZED { p { a href="/login" { "Log in" } } }
                        @else { p { a href="/" { "Back to the start page" } } }
                    }
                }
            }
        };
        (status, axum::response::Html(body.into_string())).into_response()
    }
}

/// Where a form action ends: on success, a redirect to where `to` says; a refusal the user can act on (a bad value, a
/// conflict) shows `again`'s page with the reason and the refusal's status; a missing permission, a missing
/// resource or a failure of ours is an error page.
pub async fn settle<T, F, Fut>(r: crate::error::ApiResult<T>, to: impl FnOnce(&T) -> String, again: F) -> WebResult
where
    F: FnOnce(ApiError) -> Fut,
    Fut: std::future::Future<Output = WebResult<Markup>>,
{
    match r {
        Ok(v) => Ok(Redirect::to(&to(&v)).into_response()),
        Err(e @ (ApiError::Forbidden { .. } | ApiError::NotFound(_) | ApiError::Internal(_))) => Err(e.into()),
        Err(e) => {
            let status = e.status();
            Ok(with_status(status, again(e).await?))
        }
    }
}

/// A launch error as one readable text.
pub fn launch_message(e: &launch::LaunchError) -> String {
    match e {
        launch::LaunchError::Invalid { label, diagnostics, .. } => {
            let list: Vec<String> = diagnostics
                .iter()
                .map(|d| format!("line {}, column {}: {}", d.span.start.line, d.span.start.col, d.message))
                .collect();
            format!("{label} is invalid: {}", list.join("; "))
        }
        launch::LaunchError::Inputs(problems) => {
            let list: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
            format!("runtime inputs are missing or invalid: {}", list.join("; "))
        }
        other => other.to_string(),
    }
}

/// A crumb: text and, except for the current page, a link.
pub type Crumb = (String, Option<String>);

/// The frame of every signed-in page.
pub fn page(w: &Web, title: &str, crumbs: &[Crumb], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(w.csrf);
                title { (title) " · pipewright" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/assets/app.css";
                script type="module" src="/assets/app.js" {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "pipewright" }
                    nav aria-label="Breadcrumb" {
                        ol.crumbs {
                            @for (i, (text, href)) in crumbs.iter().enumerate() {
                                li {
                                    @match href {
                                        Some(h) if i + 1 < crumbs.len() => { a href=(h) { (text) } },
                                        _ => { span aria-current="page" { (text) } },
                                    }
                                }
                            }
                        }
                    }
                    @if w.admin { a.access href="/access/users" { "Access Control" } }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(w.csrf);
                        span.who { "Signed in as " strong { (w.p.display()) } }
                        button type="submit" { "Log out" }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_field(w: &Web) -> Markup {
    html! { input type="hidden" name="csrf" value=(w.csrf); }
}

/// A page as a response.
pub fn ok(m: Markup) -> Response {
    axum::response::Html(m.into_string()).into_response()
}

/// A page with a status.
pub fn with_status(status: StatusCode, m: Markup) -> Response {
    (status, axum::response::Html(m.into_string())).into_response()
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// Only a path of this site may follow a log-in: none or empty is `/`; anything else must start with one
/// `/` and hold only visible ASCII without `\\` (browsers drop tabs and newlines and read `\\` as `/`, which
/// would make `/\t/evil.example` a link to another site). Anything else is refused (a 400, never a redirect).
fn safe_next(next: Option<&str>) -> Result<String, WebError> {
    let n = next.unwrap_or_default();
    if n.is_empty() {
        return Ok("/".into());
    }
    let local =
        n.starts_with('/') && !n[1..].starts_with(['/', '\\']) && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if !local {
        return Err(WebError(ApiError::BadRequest(
            "`next` must be a path of this site (starting with one `/`, without spaces, tabs or `\\`)".into(),
        )));
    }
    Ok(n.to_string())
}

fn login_form(next: &str, csrf: &str, error: Option<&str>, name: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · pipewright" }
                link rel="stylesheet" href="/assets/app.css";
            }
            body.login {
                main id="main" {
                    h1 { "pipewright" }
                    form.card method="post" action="/login" {
                        h2 { "Log in" }
                        @if let Some(e) = error { p.error role="alert" id="login-error" { (e) } }
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="next" value=(next);
                        label for="username" { "User name" }
                        input id="username" name="username" type="text" autocomplete="username" required value=(name)
                            autofocus[error.is_none()] aria-describedby=[error.map(|_| "login-error")];
                        label for="password" { "Password" }
                        input id="password" name="password" type="password" autocomplete="current-password" required
                            autofocus[error.is_some()];
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

fn login_cookie(headers: &HeaderMap, value: &str, max_age: i64) -> HeaderValue {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{LOGIN_CSRF_COOKIE}={value}; Path=/login; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn login_page(headers: HeaderMap, axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    let token = crate::auth::new_secret();
    let next = match safe_next(q.next.as_deref()) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let mut resp = ok(login_form(&next, &token, None, ""));
    resp.headers_mut().append(header::SET_COOKIE, login_cookie(&headers, &token, 3600));
    resp
}

async fn login(
    State(app): State<Arc<App>>,
    axum::Extension(addr): axum::Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let next = match safe_next(Some(&get("next"))) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE);
    if foreign_origin(&headers) || !expected.is_some_and(|e| same(&e, &get("csrf"))) {
        return WebError(ApiError::csrf("this log-in form (reload the log-in page and try again)")).into_response();
    }
    let username = get("username");
    match crate::service::access::login_session(&app, &addr, username.clone(), get("password")).await {
        Ok(v) => {
            let secure = if over_tls(&headers) { "; Secure" } else { "" };
            let max_age = (v.expires_at - store::now_ms()) / 1000;
            let mut resp = Redirect::to(&next).into_response();
            let cookie =
                format!("{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}", v.token);
            if let Ok(h) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().append(header::SET_COOKIE, h);
            }
            resp.headers_mut().append(header::SET_COOKIE, login_cookie(&headers, "", 0));
            resp
        }
        Err(e) => {
            let status = e.status();
            let message = match e {
                ApiError::Unauthorized(_) => "Wrong user name or password.".to_string(),
                other => other.to_string(),
            };
            let token = crate::auth::new_secret();
            let mut resp = with_status(status, login_form(&next, &token, Some(&message), &username));
            resp.headers_mut().append(header::SET_COOKIE, login_cookie(&headers, &token, 3600));
            resp
        }
    }
}

async fn logout(State(app): State<Arc<App>>, w: Web, headers: HeaderMap) -> WebResult {
    crate::service::access::logout(&app, &w.p).await?;
    let secure = if over_tls(&headers) { "; Secure" } else { "" };
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(h) =
        HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"))
    {
        resp.headers_mut().append(header::SET_COOKIE, h);
    }
    Ok(resp)
}

/// Milliseconds as `1m 05s`, `3.2s`, `420ms`.
pub fn duration(ms: i64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms if ms < 3_600_000 => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
        ms => format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// A Unix time in ms as `2026-11-26 05:12:03 UTC`.
pub fn when(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// A `<time>` element (machine-readable too).
pub fn time_el(ms: i64) -> Markup {
    let iso = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default();
    html! { time datetime=(iso) { (when(ms)) } }
}

/// A status as a badge: its name in words (never colour alone) and a class for the colour.
pub fn status_badge(s: store::Status) -> Markup {
    html! { span class=(format!("badge st-{s}")) { (s.to_string()) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_follow_a_login() {
        for (given, want) in [
            (Some("/orgs/default"), Some("/orgs/default")),
            (Some("/executions/01J?tab=logs&x=%2F%2F"), Some("/executions/01J?tab=logs&x=%2F%2F")),
            (None, Some("/")),
            (Some(""), Some("/")),
            (Some("//evil.example/x"), None),
            (Some("https://evil.example"), None),
            (Some("/\\evil.example"), None),
            (Some("/\t/evil.example"), None),
            (Some("/\r\nSet-Cookie: x=1"), None),
            (Some("/ /evil.example"), None),
            (Some("/\u{7f}/evil.example"), None),
            (Some("/é"), None),
            (Some("evil.example"), None),
        ] {
            assert_eq!(safe_next(given).ok().as_deref(), want, "{given:?}");
        }
    }

    #[test]
    fn foreign_origins_are_told_apart() {
        let h = |origin: Option<&str>| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
            if let Some(o) = origin {
                m.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            m
        };
        for (origin, foreign) in [
            (None, false),
            (Some("http://127.0.0.1:8080"), false),
            (Some("https://127.0.0.1:8080"), false),
            (Some("http://evil.example"), true),
            (Some("null"), true),
        ] {
            assert_eq!(foreign_origin(&h(origin)), foreign, "{origin:?}");
        }
    }

    #[test]
    fn durations_read_well() {
        for (ms, want) in [(0, "0ms"), (420, "420ms"), (3200, "3.2s"), (65_000, "1m 05s"), (3_780_000, "1h 03m")] {
            assert_eq!(duration(ms), want);
        }
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        assert_ne!(csrf_token("pw_a"), csrf_token("pw_b"));
        assert_eq!(csrf_token("pw_a"), csrf_token("pw_a"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
