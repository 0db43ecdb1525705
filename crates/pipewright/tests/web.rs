//! The web UI's pages and form actions under RBAC, over plain HTTP against a real server: every route of
//! `server::web::ROUTES` × no session, a project viewer, a pipeline executor, the admin of another project and
//! the account admin (a route without a row fails). Forms are posted as a browser would — with the session's
//! cookie and CSRF token — so a 403 here is a forged request from someone who lacks the permission. Also: the
//! session cookie's attributes, CSRF and cross-site refusal, logout and token revocation ending a session, and
//! the login rate limit shared with the API.

mod common;

use common::Server;
use reqwest::Method;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::json;
use std::collections::BTreeSet;

const P: &str = "/orgs/default/projects/default";

/// A browser-like session: its cookie and CSRF token (empty for no session).
#[derive(Clone, Default)]
struct Session {
    cookie: String,
    csrf: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(String::from)
}

fn attr_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

fn hidden(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Log in through the form, as a browser does.
async fn login(url: &str, user: &str, password: &str) -> Result<Session, reqwest::StatusCode> {
    let http = client();
    let page = http.get(format!("{url}/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "pw_login_csrf").expect("the login page sets its CSRF cookie");
    let token = hidden(&page.text().await.unwrap(), "csrf");
    let resp = http
        .post(format!("{url}/login"))
        .header(COOKIE, format!("pw_login_csrf={}", attr_value(&login_cookie)))
        .form(&[("csrf", token.as_str()), ("next", "/"), ("username", user), ("password", password)])
        .send()
        .await
        .unwrap();
    if resp.status() != 303 {
        return Err(resp.status());
    }
    let session = set_cookie(&resp, "pw_session").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    let cookie = format!("pw_session={}", attr_value(&session));
    let home = http.get(format!("{url}/")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    let at = html.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    Ok(Session { cookie, csrf: html[at..at + 64].to_string() })
}

async fn send(url: &str, s: &Session, method: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let http = client();
    let mut r = http.request(Method::from_bytes(method.as_bytes()).unwrap(), format!("{url}{path}"));
    if !s.cookie.is_empty() {
        r = r.header(COOKIE, &s.cookie);
    }
    if method == "POST" {
        let mut fields: Vec<(&str, &str)> = vec![("csrf", s.csrf.as_str())];
        fields.extend_from_slice(form);
        r = r.form(&fields);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let location = resp.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
    let text = if path.ends_with("/events") { String::new() } else { resp.text().await.unwrap_or_default() };
    (status, if location.is_empty() { text } else { location })
}

/// One row: method, route template, concrete path, form fields, expected statuses for no session, viewer,
/// executor, another project's admin, account admin.
type Row<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>, [u16; 5]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_form_checks_permissions_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state"), &["--step-isolation", "none"]).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "other"}))).await;
    s.user("viewer", "_project_viewer", "default").await;
    s.user("executor", "_pipeline_executor", "default").await;
    s.user("other_admin", "_project_admin", "other").await;
    let api = "/api/v1/orgs/default/projects/default/pipelines";
    s.ok(
        Method::POST,
        api,
        Some(common::pipeline("p1", &(common::stage("a", "echo a") + &common::stage("b", "echo b")))),
    )
    .await;
    let e = s.ok(Method::POST, &format!("{api}/p1/execute"), Some(json!({}))).await;
    let ex = e["id"].as_str().unwrap().to_string();
    s.wait_end(&s.token, &ex).await;

    let svc = |id: &str| {
        serde_json::Value::String(format!(
            "service:\n  name: {id}\n  identifier: {id}\n  orgIdentifier: default\n  projectIdentifier: default\n  serviceDefinition:\n    type: Kubernetes\n    spec: {{}}\n"
        ))
    };
    let ent = "/api/v1/orgs/default/projects/default/services";
    s.ok(Method::POST, ent, Some(svc("svc1"))).await;
    s.ok(Method::POST, ent, Some(svc("doomed_svc"))).await;
    s.ok(Method::POST, "/api/v1/users", Some(json!({"username": "doomed_user", "password": "amber-quiet-lantern-47"})))
        .await;
    s.ok(Method::POST, "/api/v1/users", Some(json!({"username": "bystander", "password": "amber-quiet-lantern-47"})))
        .await;
    s.ok(
        Method::POST,
        "/api/v1/service-accounts",
        Some(json!({"identifier": "doomed_sa", "org": "default", "project": "default"})),
    )
    .await;
    let b = s
        .ok(
            Method::POST,
            "/api/v1/role-bindings",
            Some(json!({"principal": {"kind": "user", "id": "bystander"}, "role": "_project_viewer",
                "resource_group": "_all_project_level_resources", "org": "default", "project": "default"})),
        )
        .await;
    let doomed_binding = b["identifier"].as_str().unwrap().to_string();
    let t = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "doomed"}))).await;
    let doomed_token = t["id"].as_str().unwrap().to_string();
    let svc2 = svc("svc2").as_str().unwrap().to_string();
    let svc1 = svc("svc1").as_str().unwrap().replace("spec: {}", "spec: {}\n  tags: {team: web}");

    let none = Session::default();
    let mut sessions = vec![none.clone()];
    for user in ["viewer", "executor", "other_admin"] {
        sessions.push(login(&s.url, user, "amber-quiet-lantern-47").await.unwrap());
    }
    sessions.push(login(&s.url, "admin", common::ADMIN_PASSWORD).await.unwrap());

    let yaml = common::pipeline("p1", &common::stage("a", "echo changed")).as_str().unwrap().to_string();
    let e = |p: &str| format!("/executions/{ex}{p}");
    let table: Vec<Row> = vec![
        ("GET", "/login", "/login".into(), vec![], [200, 200, 200, 200, 200]),
        ("GET", "/", "/".into(), vec![], [303, 200, 200, 200, 200]),
        ("GET", "/orgs/{org}", "/orgs/default".into(), vec![], [303, 200, 200, 200, 200]),
        ("GET", "/orgs/{org}/projects/{project}", P.into(), vec![], [303, 200, 200, 403, 200]),
        (
            "GET",
            "/orgs/{org}/projects/{project}/executions",
            format!("{P}/executions"),
            vec![],
            [303, 200, 200, 403, 200],
        ),
        (
            "GET",
            "/orgs/{org}/projects/{project}/pipelines/{pipeline}",
            format!("{P}/pipelines/p1"),
            vec![],
            [303, 200, 200, 403, 200],
        ),
        (
            "POST",
            "/orgs/{org}/projects/{project}/pipelines/{pipeline}/yaml",
            format!("{P}/pipelines/p1/yaml"),
            vec![("yaml", yaml.as_str())],
            [401, 403, 403, 403, 303],
        ),
        (
            "POST",
            "/orgs/{org}/projects/{project}/pipelines/{pipeline}/settings",
            format!("{P}/pipelines/p1/settings"),
            vec![("allowStageExecutions", "true")],
            [401, 403, 403, 403, 303],
        ),
        (
            "GET",
            "/orgs/{org}/projects/{project}/pipelines/{pipeline}/run",
            format!("{P}/pipelines/p1/run"),
            vec![],
            [303, 403, 200, 403, 200],
        ),
        (
            "POST",
            "/orgs/{org}/projects/{project}/pipelines/{pipeline}/plan",
            format!("{P}/pipelines/p1/plan"),
            vec![("scope", "stages"), ("stage", "b")],
            [401, 403, 200, 403, 200],
        ),
        (
            "POST",
            "/orgs/{org}/projects/{project}/pipelines/{pipeline}/run",
            format!("{P}/pipelines/p1/run"),
            vec![("scope", "stages"), ("stage", "b")],
            [401, 403, 303, 403, 303],
        ),
        ("GET", "/executions/{id}", e(""), vec![], [303, 200, 200, 404, 200]),
        ("GET", "/executions/{id}/events", e("/events"), vec![], [303, 200, 200, 404, 200]),
        ("GET", "/executions/{id}/rerun", e("/rerun"), vec![], [303, 403, 200, 404, 200]),
        (
            "POST",
            "/executions/{id}/rerun/plan",
            e("/rerun/plan"),
            vec![("scope", "stages"), ("stage", "b")],
            [401, 403, 200, 404, 200],
        ),
        (
            "POST",
            "/executions/{id}/rerun",
            e("/rerun"),
            vec![("scope", "stages"), ("stage", "b")],
            [401, 403, 303, 404, 303],
        ),
        // It succeeded: nothing to retry (422), abort, approve or decide (409) — refused after the permission.
        ("POST", "/executions/{id}/retry", e("/retry"), vec![], [401, 403, 422, 404, 422]),
        ("POST", "/executions/{id}/abort", e("/abort"), vec![], [401, 403, 409, 404, 409]),
        ("POST", "/executions/{id}/approval", e("/approval"), vec![("decision", "approve")], [401, 403, 409, 404, 409]),
        ("POST", "/executions/{id}/intervene", e("/intervene"), vec![("action", "retry")], [401, 403, 409, 404, 409]),
        (
            "POST",
            "/executions/{id}/input",
            e("/input"),
            vec![("input.pipeline.variables.x", "1")],
            [401, 403, 409, 404, 409],
        ),
        (
            "GET",
            "/orgs/{org}/projects/{project}/settings/{kind}",
            format!("{P}/settings/services"),
            vec![],
            [303, 200, 200, 403, 200],
        ),
        (
            "POST",
            "/orgs/{org}/projects/{project}/settings/{kind}",
            format!("{P}/settings/services"),
            vec![("yaml", svc2.as_str())],
            [401, 403, 403, 403, 303],
        ),
        (
            "GET",
            "/orgs/{org}/projects/{project}/settings/{kind}/{id}",
            format!("{P}/settings/services/svc1"),
            vec![],
            [303, 200, 200, 403, 200],
        ),
        (
            "POST",
            "/orgs/{org}/projects/{project}/settings/{kind}/{id}",
            format!("{P}/settings/services/svc1"),
            vec![("yaml", svc1.as_str())],
            [401, 403, 403, 403, 303],
        ),
        (
            "POST",
            "/orgs/{org}/projects/{project}/settings/{kind}/{id}/delete",
            format!("{P}/settings/services/doomed_svc/delete"),
            vec![],
            [401, 403, 403, 403, 303],
        ),
        ("GET", "/access/users", "/access/users".into(), vec![], [303, 403, 403, 403, 200]),
        (
            "POST",
            "/access/users",
            "/access/users".into(),
            vec![("username", "webuser"), ("password", "web-password-1")],
            [401, 403, 403, 403, 303],
        ),
        (
            "POST",
            "/access/users/{user}/delete",
            "/access/users/doomed_user/delete".into(),
            vec![],
            [401, 403, 403, 403, 303],
        ),
        // As the API: listing roles and bindings, or service accounts, needs `role:manage` / `user:manage`.
        ("GET", "/access/roles", "/access/roles?org=default&project=default".into(), vec![], [303, 403, 403, 403, 200]),
        (
            "POST",
            "/access/bindings",
            "/access/bindings?org=default&project=default".into(),
            vec![
                ("principal_kind", "user"),
                ("principal_id", "executor"),
                ("role", "_project_viewer"),
                ("resource_group", "_all_project_level_resources"),
                ("org", "default"),
                ("project", "default"),
            ],
            [401, 403, 403, 403, 303],
        ),
        (
            "POST",
            "/access/bindings/{id}/delete",
            format!("/access/bindings/{doomed_binding}/delete"),
            vec![],
            [401, 403, 403, 403, 303],
        ),
        (
            "GET",
            "/access/service-accounts",
            "/access/service-accounts?org=default&project=default".into(),
            vec![],
            [303, 403, 403, 403, 200],
        ),
        (
            "POST",
            "/access/service-accounts",
            "/access/service-accounts".into(),
            vec![("identifier", "web_sa"), ("org", "default"), ("project", "default")],
            [401, 403, 403, 403, 303],
        ),
        (
            "POST",
            "/access/service-accounts/{id}/delete",
            "/access/service-accounts/doomed_sa/delete".into(),
            vec![],
            [401, 403, 403, 403, 303],
        ),
        ("GET", "/access/tokens", "/access/tokens".into(), vec![], [303, 200, 200, 200, 200]),
        ("POST", "/access/tokens", "/access/tokens".into(), vec![("name", "mine")], [401, 200, 200, 200, 200]),
        (
            "POST",
            "/access/tokens/{id}/revoke",
            format!("/access/tokens/{doomed_token}/revoke"),
            vec![],
            [401, 403, 403, 403, 303],
        ),
        ("GET", "/access/agents", "/access/agents".into(), vec![], [303, 200, 200, 200, 200]),
        (
            "POST",
            "/access/agents",
            "/access/agents".into(),
            vec![("name", "web-agent"), ("tags", "linux")],
            [401, 403, 403, 403, 200],
        ),
        (
            "POST",
            "/access/agents/{name}/state",
            "/access/agents/nobody/state".into(),
            vec![("state", "draining")],
            [401, 403, 403, 403, 404],
        ),
        (
            "POST",
            "/access/agents/{name}/credential",
            "/access/agents/web-agent/credential".into(),
            vec![],
            [401, 403, 403, 403, 200],
        ),
        ("GET", "/assets/app.css", "/assets/app.css".into(), vec![], [200, 200, 200, 200, 200]),
        ("GET", "/assets/app.js", "/assets/app.js".into(), vec![], [200, 200, 200, 200, 200]),
    ];
    // Log-in and log-out are covered below (they change the sessions this table uses).
    let tabled: BTreeSet<(&str, &str)> =
        table.iter().map(|(m, r, ..)| (*m, *r)).chain([("POST", "/login"), ("POST", "/logout")]).collect();
    let routes: BTreeSet<(String, &str)> = server::web::ROUTES.iter().map(|(m, r)| (m.to_uppercase(), *r)).collect();
    let tabled: BTreeSet<(String, &str)> = tabled.into_iter().map(|(m, r)| (m.to_string(), r)).collect();
    assert_eq!(
        routes.difference(&tabled).collect::<Vec<_>>(),
        Vec::<&(String, &str)>::new(),
        "web routes without a row"
    );
    assert_eq!(tabled.difference(&routes).collect::<Vec<_>>(), Vec::<&(String, &str)>::new(), "rows for no route");

    let mut wrong = Vec::new();
    for (method, _, path, form, expected) in &table {
        for (i, session) in sessions.iter().enumerate() {
            let (status, body) = send(&s.url, session, method, path, form).await;
            if status != expected[i] {
                wrong.push(format!(
                    "{method} {path} as #{i}: {status} (expected {}) {}",
                    expected[i],
                    body.chars().take(300).collect::<String>()
                ));
            }
            if status == 303 && i == 0 {
                assert!(body.starts_with("/login?next="), "{path}: {body}");
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The viewer sees no Run button, no Re-run and no Advanced Options; the executor sees Run.
    let (_, html) = send(&s.url, &sessions[1], "GET", &format!("{P}/pipelines/p1"), &[]).await;
    assert!(!html.contains(">Run</a>") && !html.contains("Advanced Options"), "{html}");
    let (_, html) = send(&s.url, &sessions[2], "GET", &format!("{P}/pipelines/p1"), &[]).await;
    assert!(html.contains(">Run</a>") && !html.contains("Advanced Options"));
    let (_, html) = send(&s.url, &sessions[1], "GET", &e(""), &[]).await;
    assert!(html.contains("Execution #1") && !html.contains(&format!("/executions/{ex}/rerun")), "{html}");
    let (_, html) = send(&s.url, &sessions[2], "GET", &e(""), &[]).await;
    assert!(html.contains(&format!("/executions/{ex}/rerun")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_logout_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state"), &["--step-isolation", "none"]).await;
    let admin = login(&s.url, "admin", common::ADMIN_PASSWORD).await.unwrap();
    let settings = format!("{P}/pipelines/none/settings");

    // A form without the session's CSRF token, or with another session's, is refused before anything else.
    let mut forged = admin.clone();
    forged.csrf = "0".repeat(64);
    assert_eq!(send(&s.url, &forged, "POST", &settings, &[("allowStageExecutions", "true")]).await.0, 403);
    let other = login(&s.url, "admin", common::ADMIN_PASSWORD).await.unwrap();
    forged.csrf = other.csrf.clone();
    assert_eq!(send(&s.url, &forged, "POST", &settings, &[("allowStageExecutions", "true")]).await.0, 403);
    // From another site, even with the right token.
    let resp = client()
        .post(format!("{}/executions/X/abort", s.url))
        .header(COOKIE, &admin.cookie)
        .header(ORIGIN, "https://evil.example")
        .form(&[("csrf", admin.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // The login form itself needs its own CSRF cookie.
    let resp = client()
        .post(format!("{}/login", s.url))
        .form(&[("csrf", "x"), ("username", "admin"), ("password", common::ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // An open redirect after log-in is not possible: a foreign `next` is refused, a local one followed.
    let http = client();
    let page = http.get(format!("{}/login?next=//evil.example/x", s.url)).send().await.unwrap();
    assert_eq!(page.status(), 400);
    let page = http.get(format!("{}/login?next=/orgs/default", s.url)).send().await.unwrap();
    let c = attr_value(&set_cookie(&page, "pw_login_csrf").unwrap());
    let html = page.text().await.unwrap();
    let resp = http
        .post(format!("{}/login", s.url))
        .header(COOKIE, format!("pw_login_csrf={c}"))
        .form(&[
            ("csrf", hidden(&html, "csrf").as_str()),
            ("next", &hidden(&html, "next")),
            ("username", "admin"),
            ("password", common::ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()[LOCATION], "/orgs/default");

    // Logging out revokes the session's token: the cookie no longer works, here or on the API.
    let (st, loc) = send(&s.url, &admin, "POST", "/logout", &[]).await;
    assert_eq!((st, loc.as_str()), (303, "/login"));
    assert_eq!(send(&s.url, &admin, "GET", "/", &[]).await.0, 303);
    let secret = admin.cookie.strip_prefix("pw_session=").unwrap();
    let (st, _) = s.req(Some(secret), Method::GET, "/api/v1/auth/whoami", None).await;
    assert_eq!(st, 401);

    // Revoking a session's token through the API ends that session.
    let (st, v) =
        s.req(Some(other.cookie.strip_prefix("pw_session=").unwrap()), Method::GET, "/api/v1/auth/whoami", None).await;
    assert_eq!(st, 200);
    let token_id = v["token_id"].as_str().unwrap().to_string();
    let tokens = s.ok(Method::GET, "/api/v1/tokens", None).await;
    assert!(
        tokens["items"].as_array().unwrap().iter().any(|t| t["id"] == token_id && t["name"] == "web session"),
        "{tokens}"
    );
    s.ok(Method::DELETE, &format!("/api/v1/tokens/{token_id}"), None).await;
    assert_eq!(send(&s.url, &other, "GET", "/", &[]).await.0, 303);

    // The login rate limit is the API's: five failures from one address, then 429 even for the right password.
    for _ in 0..5 {
        assert_eq!(login(&s.url, "admin", "wrong-password").await.err(), Some(reqwest::StatusCode::UNAUTHORIZED));
    }
    assert_eq!(
        login(&s.url, "admin", common::ADMIN_PASSWORD).await.err(),
        Some(reqwest::StatusCode::TOO_MANY_REQUESTS)
    );
}

/// A matrix stage is shown once, its iterations inside it labelled by their values, and its *Re-run Stage*
/// re-runs the stage (never an iteration's identifier, which is no stage of the pipeline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_stage_shows_each_iteration_once_by_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state"), &["--step-isolation", "none"]).await;
    let api = "/api/v1/orgs/default/projects/default/pipelines";
    let stages = common::stage("unit_tests", "echo jdk <+matrix.jdk>").replace(
        "        type: Custom\n",
        "        type: Custom\n        strategy:\n          matrix:\n            jdk: [\"17\", \"21\"]\n",
    ) + &common::stage("publish", "echo done");
    s.ok(Method::POST, api, Some(common::pipeline("jdks", &stages))).await;
    let e = s.ok(Method::POST, &format!("{api}/jdks/execute"), Some(json!({}))).await;
    let ex = e["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&s.token, &ex).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let admin = login(&s.url, "admin", common::ADMIN_PASSWORD).await.unwrap();
    let (st, html) = send(&s.url, &admin, "GET", &format!("/executions/{ex}"), &[]).await;
    assert_eq!(st, 200, "{html}");
    assert_eq!(html.matches("class=\"stage-detail\"").count(), 2, "one card per stage: {html}");
    for jdk in ["17", "21"] {
        assert_eq!(html.matches(&format!("unit_tests (jdk: {jdk})")).count(), 1, "{html}");
    }
    assert!(!html.contains("stage=unit_tests_0"), "{html}");
    let link = format!("/executions/{ex}/rerun?scope=stages&amp;stage=unit_tests");
    assert!(html.contains(&link), "{html}");
    let (st, form) = send(&s.url, &admin, "GET", &link.replace("&amp;", "&"), &[]).await;
    assert_eq!(st, 200, "{form}");
    assert!(!form.contains("does not exist"), "{form}");
}
