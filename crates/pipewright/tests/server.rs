//! `pipewright serve` driven over HTTP as its users drive it: a real server process on a random loopback port
//! with a real SQLite state directory. The RBAC matrix covers every route of the OpenAPI document (a route
//! without an entry fails) for no token, a project viewer, a pipeline executor, the admin of another project
//! and the account admin; the flows cover selective runs, re-runs and retries, live logs over SSE (resumed
//! with Last-Event-ID), a restart while an execution runs, metrics, bad input and token handling, and the CLI
//! as a client printing what it prints locally.

mod common;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One row of the RBAC matrix: method, documented route, concrete path, body, expected statuses.
type Entry = (&'static str, &'static str, String, Option<Value>, [u16; 5]);

const P: &str = "/api/v1/orgs/default/projects/default";

struct Server {
    child: Child,
    url: String,
    token: String,
    state: PathBuf,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(state: &Path, extra: &[&str]) -> (Child, String, Option<String>) {
    // Unconfined steps (`--step-isolation none`) take no step network or read paths.
    let unconfined = extra.windows(2).any(|w| w[0] == "--step-isolation" && w[1] == "none");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(if unconfined { vec![] } else { common::step_network_args() })
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .envs((!unconfined).then(|| ("PIPEWRIGHT_STEP_READ_PATH", common::gates(state))))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().strip_prefix("listening on ").unwrap().to_string();
    let mut token = None;
    if !extra.contains(&"--admin-password-file") && !state.join("bootstrapped").exists() {
        let line = lines.next().unwrap().unwrap();
        let bootstrap = line.split(": ").last().unwrap().to_string();
        // The bootstrap token is one-time: exchange it for the admin's own token, as a person would.
        token = Some(exchange_bootstrap(&url, &bootstrap));
        std::fs::write(state.join("bootstrapped"), "").unwrap();
    }
    (child, url, token)
}

/// `POST /api/v1/tokens` with the bootstrap token (plain HTTP/1.1, before any async client exists).
fn exchange_bootstrap(url: &str, bootstrap: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let body = r#"{"name": "admin-tests"}"#;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "POST /api/v1/tokens HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {bootstrap}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let json = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {resp}"));
    let t = v["token"].as_str().unwrap_or_else(|| panic!("{resp}")).to_string();
    // The bootstrap token no longer works.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET /api/v1/auth/whoami HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {bootstrap}\r\nconnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    t
}

impl Server {
    fn start(state: &Path) -> Server {
        Self::start_with(state, &[])
    }

    fn start_with(state: &Path, extra: &[&str]) -> Server {
        let (child, url, token) = spawn(state, extra);
        Server { child, url, token: token.unwrap(), state: state.to_path_buf(), http: reqwest::Client::new() }
    }

    /// Kill (SIGKILL) and start again on the same state directory.
    fn restart(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, url, _) = spawn(&self.state, extra);
        self.child = child;
        self.url = url;
    }

    async fn req(&self, token: Option<&str>, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = match b {
                Value::String(yaml) => r.header("content-type", "application/yaml").body(yaml.clone()),
                other => r.json(other),
            };
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.req(Some(&self.token.clone()), method, path, body.as_ref()).await;
        assert!(s.is_success(), "{path}: {s} {v}");
        v
    }

    async fn wait_end(&self, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, v) = self.req(Some(token), Method::GET, &format!("/api/v1/executions/{id}"), None).await;
            if v["execution"]["ended_at"].is_number() {
                return v;
            }
            assert!(Instant::now() < deadline, "execution {id} did not end: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn user(&self, name: &str, role: &str, project: &str) -> String {
        self.ok(Method::POST, "/api/v1/users", Some(json!({"username": name, "password": "correct horse"}))).await;
        self.ok(
            Method::POST,
            "/api/v1/role-bindings",
            Some(json!({"principal": {"kind": "user", "id": name}, "role": role,
                "resource_group": "_all_project_level_resources", "org": "default", "project": project})),
        )
        .await;
        let (_, v) = self
            .req(
                None,
                Method::POST,
                "/api/v1/auth/login",
                Some(&json!({"username": name, "password": "correct horse"})),
            )
            .await;
        v["token"].as_str().unwrap().to_string()
    }
}

fn pipeline(id: &str, steps: &str) -> Value {
    Value::String(format!(
        "pipeline:\n  name: {id}\n  identifier: {id}\n  projectIdentifier: default\n  orgIdentifier: default\n  allowStageExecutions: true\n  stages:\n{steps}"
    ))
}

fn quick(id: &str) -> Value {
    pipeline(
        id,
        "    - stage:\n        name: a\n        identifier: a\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo hello\n",
    )
}

/// A step template of the account (`org` none) or of an organization.
fn shared_template(id: &str, org: Option<&str>) -> Value {
    let org = org.map(|o| format!("  orgIdentifier: {o}\n")).unwrap_or_default();
    Value::String(format!(
        "template:\n  name: {id}\n  identifier: {id}\n  versionLabel: v1\n  type: Step\n{org}  spec:\n    type: ShellScript\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: echo hi\n"
    ))
}

fn service(id: &str) -> Value {
    Value::String(format!(
        "service:\n  name: {id}\n  identifier: {id}\n  orgIdentifier: default\n  projectIdentifier: default\n  serviceDefinition:\n    type: Kubernetes\n    spec: {{}}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_permissions_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "other"}))).await;
    let viewer = s.user("viewer", "_project_viewer", "default").await;
    let executor = s.user("executor", "_pipeline_executor", "default").await;
    let other = s.user("other_admin", "_project_admin", "other").await;
    // Fixtures, and throwaway resources for the deletes.
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(quick("p1"))).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(quick("doomed_pl"))).await;
    s.ok(Method::POST, &format!("{P}/services"), Some(service("svc1"))).await;
    s.ok(Method::POST, &format!("{P}/services"), Some(service("doomed_svc"))).await;
    s.ok(Method::POST, "/api/v1/orgs", Some(json!({"identifier": "doomed"}))).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "doomedp"}))).await;
    for id in ["tpl1", "doomed_tpl"] {
        s.ok(Method::POST, "/api/v1/orgs/default/templates", Some(shared_template(id, Some("default")))).await;
        s.ok(Method::POST, "/api/v1/templates", Some(shared_template(id, None))).await;
    }
    s.ok(Method::POST, "/api/v1/users", Some(json!({"username": "doomed_user", "password": "amber-quiet-lantern-47"})))
        .await;
    s.ok(
        Method::POST,
        "/api/v1/service-accounts",
        Some(json!({"identifier": "doomed_sa", "org": "default", "project": "default"})),
    )
    .await;
    s.ok(Method::POST, "/api/v1/roles", Some(json!({"identifier": "doomed_role", "permissions": ["pipeline:view"], "org": "default", "project": "default"}))).await;
    s.ok(
        Method::POST,
        "/api/v1/resource-groups",
        Some(json!({"identifier": "doomed_rg", "all_resources": true, "org": "default", "project": "default"})),
    )
    .await;
    let binding = s
        .ok(Method::POST, "/api/v1/role-bindings", Some(json!({"principal": {"kind": "user", "id": "doomed_user"}, "role": "_project_viewer", "resource_group": "_all_project_level_resources", "org": "default", "project": "default"})))
        .await;
    s.ok(
        Method::POST,
        "/api/v1/user-groups",
        Some(json!({"identifier": "doomed_ug", "org": "default", "project": "default"})),
    )
    .await;
    let token = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "doomed"}))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/p1/execute"), Some(json!({}))).await;
    let e = e["id"].as_str().unwrap().to_string();
    s.wait_end(&s.token, &e).await;

    let x = format!("/api/v1/executions/{e}");
    let b = binding["identifier"].as_str().unwrap();
    let t = token["id"].as_str().unwrap();
    // (method, route as in the OpenAPI document, concrete path, body, [no token, viewer, executor, other project's admin, admin])
    let table: Vec<Entry> = vec![
        ("get", "/api/v1/audit", "/api/v1/audit".into(), None, [401, 403, 403, 403, 200]),
        (
            "post",
            "/api/v1/auth/login",
            "/api/v1/auth/login".into(),
            Some(json!({"username": "nobody", "password": "wrong"})),
            [401, 401, 401, 401, 401],
        ),
        ("get", "/api/v1/auth/whoami", "/api/v1/auth/whoami".into(), None, [401, 200, 200, 200, 200]),
        ("get", "/api/v1/executions/{id}", x.clone(), None, [401, 200, 200, 404, 200]),
        ("post", "/api/v1/executions/{id}/abort", format!("{x}/abort"), None, [401, 403, 409, 404, 409]),
        ("post", "/api/v1/executions/{id}/approve", format!("{x}/approve"), Some(json!({})), [401, 403, 409, 404, 409]),
        (
            "post",
            "/api/v1/executions/{id}/intervene",
            format!("{x}/intervene"),
            Some(json!({"action": "retry"})),
            [401, 403, 409, 404, 409],
        ),
        (
            "post",
            "/api/v1/executions/{id}/input",
            format!("{x}/input"),
            Some(json!({"inputs": {"pipeline.variables.x": "1"}})),
            [401, 403, 409, 404, 409],
        ),
        ("get", "/api/v1/executions/{id}/logs", format!("{x}/logs"), None, [401, 200, 200, 404, 200]),
        ("get", "/api/v1/executions/{id}/logs/stream", format!("{x}/logs/stream"), None, [401, 200, 200, 404, 200]),
        ("get", "/api/v1/executions/{id}/nodes", format!("{x}/nodes"), None, [401, 200, 200, 404, 200]),
        ("post", "/api/v1/executions/{id}/reject", format!("{x}/reject"), Some(json!({})), [401, 403, 409, 404, 409]),
        ("post", "/api/v1/executions/{id}/rerun", format!("{x}/rerun"), Some(json!({})), [401, 403, 201, 404, 201]),
        ("post", "/api/v1/executions/{id}/retry", format!("{x}/retry"), Some(json!({})), [401, 403, 422, 404, 422]),
        ("get", "/api/v1/executions/{id}/transitions", format!("{x}/transitions"), None, [401, 200, 200, 404, 200]),
        ("get", "/api/v1/orgs", "/api/v1/orgs".into(), None, [401, 200, 200, 200, 200]),
        (
            "post",
            "/api/v1/orgs",
            "/api/v1/orgs".into(),
            Some(json!({"identifier": "neworg"})),
            [401, 403, 403, 403, 201],
        ),
        ("get", "/api/v1/orgs/{org}", "/api/v1/orgs/default".into(), None, [401, 403, 403, 403, 200]),
        (
            "put",
            "/api/v1/orgs/{org}",
            "/api/v1/orgs/default".into(),
            Some(json!({"name": "Default"})),
            [401, 403, 403, 403, 200],
        ),
        ("delete", "/api/v1/orgs/{org}", "/api/v1/orgs/doomed".into(), None, [401, 403, 403, 403, 204]),
        ("get", "/api/v1/orgs/{org}/projects", "/api/v1/orgs/default/projects".into(), None, [401, 200, 200, 200, 200]),
        (
            "post",
            "/api/v1/orgs/{org}/projects",
            "/api/v1/orgs/default/projects".into(),
            Some(json!({"identifier": "np"})),
            [401, 403, 403, 403, 201],
        ),
        ("get", "/api/v1/orgs/{org}/projects/{project}", P.into(), None, [401, 200, 200, 403, 200]),
        (
            "put",
            "/api/v1/orgs/{org}/projects/{project}",
            P.into(),
            Some(json!({"name": "Default"})),
            [401, 403, 403, 403, 200],
        ),
        (
            "delete",
            "/api/v1/orgs/{org}/projects/{project}",
            "/api/v1/orgs/default/projects/doomedp".into(),
            None,
            [401, 403, 403, 403, 204],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/projects/{project}/executions",
            format!("{P}/executions"),
            None,
            [401, 200, 200, 403, 200],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/projects/{project}/pipelines",
            format!("{P}/pipelines"),
            None,
            [401, 200, 200, 403, 200],
        ),
        (
            "post",
            "/api/v1/orgs/{org}/projects/{project}/pipelines",
            format!("{P}/pipelines"),
            Some(quick("np1")),
            [401, 403, 403, 403, 201],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}",
            format!("{P}/pipelines/p1"),
            None,
            [401, 200, 200, 403, 200],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}",
            format!("{P}/pipelines/nope"),
            None,
            [401, 404, 404, 403, 404],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}",
            "/api/v1/orgs/default/projects/other/pipelines/nope".into(),
            None,
            [401, 403, 403, 404, 404],
        ),
        (
            "put",
            "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}",
            format!("{P}/pipelines/p1"),
            Some(quick("p1")),
            [401, 403, 403, 403, 200],
        ),
        (
            "delete",
            "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}",
            format!("{P}/pipelines/doomed_pl"),
            None,
            [401, 403, 403, 403, 204],
        ),
        (
            "post",
            "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}/execute",
            format!("{P}/pipelines/p1/execute"),
            Some(json!({})),
            [401, 403, 201, 403, 201],
        ),
        (
            "post",
            "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}/plan",
            format!("{P}/pipelines/p1/plan"),
            Some(json!({})),
            [401, 200, 200, 403, 200],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/projects/{project}/pipelines/{pipeline}/versions/{version}",
            format!("{P}/pipelines/p1/versions/1"),
            None,
            [401, 200, 200, 403, 200],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/projects/{project}/{kind}",
            format!("{P}/services"),
            None,
            [401, 200, 200, 403, 200],
        ),
        (
            "post",
            "/api/v1/orgs/{org}/projects/{project}/{kind}",
            format!("{P}/services"),
            Some(service("svc2")),
            [401, 403, 403, 403, 201],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}",
            format!("{P}/services/svc1"),
            None,
            [401, 200, 200, 403, 200],
        ),
        (
            "put",
            "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}",
            format!("{P}/services/svc1"),
            Some(service("svc1")),
            [401, 403, 403, 403, 200],
        ),
        (
            "delete",
            "/api/v1/orgs/{org}/projects/{project}/{kind}/{identifier}",
            format!("{P}/services/doomed_svc"),
            None,
            [401, 403, 403, 403, 204],
        ),
        (
            "post",
            "/api/v1/templates",
            "/api/v1/templates".into(),
            Some(shared_template("t2", None)),
            [401, 403, 403, 403, 201],
        ),
        ("get", "/api/v1/templates/{identifier}", "/api/v1/templates/tpl1".into(), None, [401, 403, 403, 403, 200]),
        (
            "put",
            "/api/v1/templates/{identifier}",
            "/api/v1/templates/tpl1".into(),
            Some(shared_template("tpl1", None)),
            [401, 403, 403, 403, 200],
        ),
        (
            "delete",
            "/api/v1/templates/{identifier}",
            "/api/v1/templates/doomed_tpl".into(),
            None,
            [401, 403, 403, 403, 204],
        ),
        (
            "post",
            "/api/v1/templates/{identifier}/stable",
            "/api/v1/templates/tpl1/stable".into(),
            Some(json!({"versionLabel": "v1"})),
            [401, 403, 403, 403, 200],
        ),
        (
            "post",
            "/api/v1/orgs/{org}/templates/{identifier}/stable",
            "/api/v1/orgs/default/templates/tpl1/stable".into(),
            Some(json!({"versionLabel": "v1"})),
            [401, 403, 403, 403, 200],
        ),
        (
            "post",
            "/api/v1/orgs/{org}/templates",
            "/api/v1/orgs/default/templates".into(),
            Some(shared_template("t2", Some("default"))),
            [401, 403, 403, 403, 201],
        ),
        (
            "get",
            "/api/v1/orgs/{org}/templates/{identifier}",
            "/api/v1/orgs/default/templates/tpl1".into(),
            None,
            [401, 403, 403, 403, 200],
        ),
        (
            "put",
            "/api/v1/orgs/{org}/templates/{identifier}",
            "/api/v1/orgs/default/templates/tpl1".into(),
            Some(shared_template("tpl1", Some("default"))),
            [401, 403, 403, 403, 200],
        ),
        (
            "delete",
            "/api/v1/orgs/{org}/templates/{identifier}",
            "/api/v1/orgs/default/templates/doomed_tpl".into(),
            None,
            [401, 403, 403, 403, 204],
        ),
        (
            "get",
            "/api/v1/resource-groups",
            "/api/v1/resource-groups?org=default&project=default".into(),
            None,
            [401, 403, 403, 403, 200],
        ),
        (
            "post",
            "/api/v1/resource-groups",
            "/api/v1/resource-groups".into(),
            Some(json!({"identifier": "rg1", "all_resources": true, "org": "default", "project": "default"})),
            [401, 403, 403, 403, 201],
        ),
        (
            "delete",
            "/api/v1/resource-groups/{identifier}",
            "/api/v1/resource-groups/doomed_rg?org=default&project=default".into(),
            None,
            [401, 403, 403, 403, 204],
        ),
        (
            "get",
            "/api/v1/role-bindings",
            "/api/v1/role-bindings?org=default&project=default".into(),
            None,
            [401, 403, 403, 403, 200],
        ),
        (
            "post",
            "/api/v1/role-bindings",
            "/api/v1/role-bindings".into(),
            Some(
                json!({"principal": {"kind": "user", "id": "viewer"}, "role": "_project_viewer", "resource_group": "_all_project_level_resources", "org": "default", "project": "other"}),
            ),
            [401, 403, 403, 201, 201],
        ),
        (
            "delete",
            "/api/v1/role-bindings/{identifier}",
            format!("/api/v1/role-bindings/{b}"),
            None,
            [401, 403, 403, 403, 204],
        ),
        ("get", "/api/v1/roles", "/api/v1/roles?org=default&project=default".into(), None, [401, 403, 403, 403, 200]),
        (
            "post",
            "/api/v1/roles",
            "/api/v1/roles".into(),
            Some(json!({"identifier": "r1", "permissions": ["pipeline:view"], "org": "default", "project": "default"})),
            [401, 403, 403, 403, 201],
        ),
        (
            "delete",
            "/api/v1/roles/{identifier}",
            "/api/v1/roles/doomed_role?org=default&project=default".into(),
            None,
            [401, 403, 403, 403, 204],
        ),
        (
            "get",
            "/api/v1/service-accounts",
            "/api/v1/service-accounts?org=default&project=default".into(),
            None,
            [401, 403, 403, 403, 200],
        ),
        (
            "post",
            "/api/v1/service-accounts",
            "/api/v1/service-accounts".into(),
            Some(json!({"identifier": "sa1", "org": "default", "project": "default"})),
            [401, 403, 403, 403, 201],
        ),
        (
            "delete",
            "/api/v1/service-accounts/{identifier}",
            "/api/v1/service-accounts/doomed_sa".into(),
            None,
            [401, 403, 403, 403, 204],
        ),
        ("get", "/api/v1/tokens", "/api/v1/tokens".into(), None, [401, 200, 200, 200, 200]),
        ("post", "/api/v1/tokens", "/api/v1/tokens".into(), Some(json!({"name": "mine"})), [401, 201, 201, 201, 201]),
        ("delete", "/api/v1/tokens/{id}", format!("/api/v1/tokens/{t}"), None, [401, 403, 403, 403, 204]),
        (
            "get",
            "/api/v1/user-groups",
            "/api/v1/user-groups?org=default&project=default".into(),
            None,
            [401, 403, 403, 403, 200],
        ),
        (
            "post",
            "/api/v1/user-groups",
            "/api/v1/user-groups".into(),
            Some(json!({"identifier": "ug1", "users": ["viewer"], "org": "default", "project": "default"})),
            [401, 403, 403, 403, 201],
        ),
        (
            "put",
            "/api/v1/user-groups/{identifier}",
            "/api/v1/user-groups/ug1?org=default&project=default".into(),
            Some(json!({"users": ["viewer", "executor"]})),
            [401, 403, 403, 403, 200],
        ),
        (
            "delete",
            "/api/v1/user-groups/{identifier}",
            "/api/v1/user-groups/doomed_ug?org=default&project=default".into(),
            None,
            [401, 403, 403, 403, 204],
        ),
        ("get", "/api/v1/users", "/api/v1/users".into(), None, [401, 403, 403, 403, 200]),
        (
            "post",
            "/api/v1/users",
            "/api/v1/users".into(),
            Some(json!({"username": "u1", "password": "amber-quiet-lantern-47"})),
            [401, 403, 403, 403, 201],
        ),
        ("delete", "/api/v1/users/{user}", "/api/v1/users/doomed_user".into(), None, [401, 403, 403, 403, 204]),
        // Agents: the agent protocol takes an agent's own credential only, so every token here is refused
        // (`boundary.rs` attacks it with credentials); registering and managing agents needs `agent:manage`
        // in the agent's scope, listing shows the agents the caller may view.
        (
            "post",
            "/api/v1/agent/claim",
            "/api/v1/agent/claim".into(),
            Some(json!({"name": "rbac-agent"})),
            [401, 401, 401, 401, 401],
        ),
        (
            "post",
            "/api/v1/agent/tasks/{id}/heartbeat",
            "/api/v1/agent/tasks/none/heartbeat".into(),
            Some(json!({"lease": "pwl_x"})),
            [401, 401, 401, 401, 401],
        ),
        (
            "post",
            "/api/v1/agent/tasks/{id}/output",
            "/api/v1/agent/tasks/none/output".into(),
            Some(json!({"lease": "pwl_x", "lines": [["stdout", "x"]]})),
            [401, 401, 401, 401, 401],
        ),
        (
            "post",
            "/api/v1/agent/tasks/{id}/report",
            "/api/v1/agent/tasks/none/report".into(),
            Some(json!({"lease": "pwl_x", "report": {"end": {"end": "exited", "detail": 0}, "outputs": {},
                "response": null, "started_at": 0, "ended_at": 0}})),
            [401, 401, 401, 401, 401],
        ),
        (
            "post",
            "/api/v1/agents",
            "/api/v1/agents".into(),
            Some(json!({"name": "rbac-agent"})),
            [401, 403, 403, 403, 201],
        ),
        ("get", "/api/v1/agents", "/api/v1/agents".into(), None, [401, 200, 200, 200, 200]),
        (
            "post",
            "/api/v1/agents/{name}/state",
            "/api/v1/agents/rbac-agent/state".into(),
            Some(json!({"state": "draining"})),
            [401, 403, 403, 403, 200],
        ),
        (
            "post",
            "/api/v1/agents/{name}/credential",
            "/api/v1/agents/rbac-agent/credential".into(),
            None,
            [401, 403, 403, 403, 200],
        ),
    ];

    // Every route the server documents has an entry, and every entry is a documented route.
    let (_, doc) = s.req(None, Method::GET, "/api/v1/openapi.json", None).await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    let tabled: BTreeSet<(String, String)> = table.iter().map(|(m, r, ..)| (m.to_string(), r.to_string())).collect();
    assert_eq!(
        documented.difference(&tabled).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes without an RBAC entry"
    );
    assert_eq!(
        tabled.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "entries for undocumented routes"
    );

    let who = [None, Some(viewer.as_str()), Some(executor.as_str()), Some(other.as_str()), Some(s.token.as_str())];
    let mut wrong = Vec::new();
    for (method, _, path, body, expected) in &table {
        for (i, t) in who.iter().enumerate() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, v) = s.req(*t, m, path, body.as_ref()).await;
            if status.as_u16() != expected[i] {
                wrong.push(format!("{method} {path} as #{i}: {status} (expected {}) {v}", expected[i]));
            }
            if status == StatusCode::FORBIDDEN {
                assert!(v["permission"].is_string(), "a 403 names the missing permission: {v}");
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn stage(id: &str, script: &str) -> String {
    format!(
        "    - stage:\n        name: {id}\n        identifier: {id}\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: {script}\n                    outputVariables:\n                      - name: out\n                        type: String\n                        value: out\n"
    )
}

/// Poll until `f` holds (a server state reached), failing after 30 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_runs_reruns_and_retries_work_over_the_api_for_an_executor() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let ex = s.user("executor", "_pipeline_executor", "default").await;
    let flag = common::gates(&s.state).join("fail");
    std::fs::write(&flag, "").unwrap();
    let yaml = pipeline(
        "chain",
        &[
            stage("build", "out=artifact-1"),
            stage(
                "deploy",
                &format!(
                    "'test ! -f {} && out=<+pipeline.stages.build.spec.execution.steps.s.output.outputVariables.out>'",
                    flag.display()
                ),
            ),
        ]
        .concat(),
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(yaml.clone())).await;
    // The executor cannot edit.
    let (st, v) = s.req(Some(&ex), Method::PUT, &format!("{P}/pipelines/chain"), Some(&yaml)).await;
    assert_eq!(st, 403);
    assert_eq!(v["permission"], "pipeline:create_edit");
    // A full run fails in deploy; retry after fixing resumes from deploy and reuses build.
    let (st, e1) = s.req(Some(&ex), Method::POST, &format!("{P}/pipelines/chain/execute"), Some(&json!({}))).await;
    assert_eq!(st, 201, "{e1}");
    let e1 = e1["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&ex, &e1).await;
    assert_eq!(done["execution"]["status"], "Failed");
    std::fs::remove_file(&flag).unwrap();
    let (st, e2) = s.req(Some(&ex), Method::POST, &format!("/api/v1/executions/{e1}/retry"), Some(&json!({}))).await;
    assert_eq!(st, 201, "{e2}");
    let e2 = e2["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&ex, &e2).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    assert_eq!(done["execution"]["mode"], "retry");
    assert_eq!(done["execution"]["parent_id"], e1.as_str());
    let build = done["nodes"].as_array().unwrap().iter().find(|n| n["identifier"] == "build").unwrap();
    assert_eq!(build["reused_from"], e1.as_str());
    let deploy = done["nodes"].as_array().unwrap().iter().find(|n| n["path"] == "deploy.s").unwrap();
    assert_eq!(deploy["outputs"]["out"], "artifact-1");
    assert_eq!(done["chain"].as_array().unwrap().len(), 2);
    // Selecting deploy alone: refused with the unmet dependency (409), planned the same way, then met.
    let (st, v) = s
        .req(
            Some(&ex),
            Method::POST,
            &format!("{P}/pipelines/chain/execute"),
            Some(&json!({"stage_identifiers": ["deploy"]})),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["unmet_dependencies"][0]["depends_on"], "build");
    let (_, plan) = s
        .req(
            Some(&ex),
            Method::POST,
            &format!("{P}/pipelines/chain/plan"),
            Some(&json!({"stage_identifiers": ["deploy"]})),
        )
        .await;
    assert_eq!(plan["satisfiable"], false);
    let (st, e3) = s
        .req(
            Some(&ex),
            Method::POST,
            &format!("{P}/pipelines/chain/execute"),
            Some(&json!({"stage_identifiers": ["deploy"], "from_execution": e2})),
        )
        .await;
    assert_eq!(st, 201, "{e3}");
    let done = s.wait_end(&ex, e3["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["mode"], "selective");
    assert_eq!(done["execution"]["status"], "Success");
    // Re-run of one stage, with expression values supplied instead.
    let (st, e4) = s
        .req(
            Some(&ex),
            Method::POST,
            &format!("/api/v1/executions/{e2}/rerun"),
            Some(&json!({"stage_identifiers": ["deploy"]})),
        )
        .await;
    assert_eq!(st, 201, "{e4}");
    let done = s.wait_end(&ex, e4["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["mode"], "rerun_stage");
    assert_eq!(done["execution"]["triggered_by"], "executor");
    // History filters and the audit trail.
    let (_, h) = s.req(Some(&ex), Method::GET, &format!("{P}/executions?mode=retry"), None).await;
    assert_eq!(h["items"].as_array().unwrap().len(), 1);
    let (_, h) = s.req(Some(&ex), Method::GET, &format!("{P}/executions?limit=2"), None).await;
    let cursor = h["next_cursor"].as_str().unwrap().to_string();
    let (_, h2) = s.req(Some(&ex), Method::GET, &format!("{P}/executions?limit=2&cursor={cursor}"), None).await;
    assert_eq!(h2["items"].as_array().unwrap().len(), 2);
    assert_ne!(h["items"][0]["id"], h2["items"][0]["id"]);
    let audit = s.ok(Method::GET, "/api/v1/audit?principal=executor", None).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"retry") && actions.contains(&"rerun") && actions.contains(&"execute"), "{actions:?}");
    assert!(audit["items"][0]["address"].as_str().unwrap().starts_with("127.0.0.1"));
}

async fn sse_until(s: &Server, token: &str, id: &str, last: Option<&str>, stop: &str) -> (String, Option<String>) {
    let mut r = s.http.get(format!("{}/api/v1/executions/{id}/logs/stream", s.url)).bearer_auth(token);
    if let Some(l) = last {
        r = r.header("last-event-id", l);
    }
    let mut resp = r.send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut last_id = None;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        for l in text.lines() {
            if let Some(i) = l.strip_prefix("id: ") {
                last_id = Some(i.to_string());
            }
        }
        if text.contains(stop) {
            break;
        }
    }
    (text, last_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_live_logs_and_resumes_with_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let go = common::gates(&s.state).join("go");
    let script = format!("'echo first-line; while [ ! -f {} ]; do sleep 0.05; done; echo second-line'", go.display());
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("live", &stage("a", &script)))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/live/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    // The first line arrives while the step still runs (it waits for `go`).
    let (text, last) = sse_until(&s, &s.token, &id, None, "first-line").await;
    assert!(text.contains("event: node"), "{text}");
    assert!(!text.contains("second-line"));
    let (_, now) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}"), None).await;
    assert_eq!(now["execution"]["status"], "Running");
    std::fs::write(&go, "").unwrap();
    // Resuming after the last event seen: the rest, not the first line again, then the end.
    let (rest, _) = sse_until(&s, &s.token, &id, last.as_deref(), "event: end").await;
    assert!(rest.contains("second-line"), "{rest}");
    assert!(!rest.contains("first-line"), "{rest}");
    assert!(rest.contains("\"status\":\"Success\""), "{rest}");
    // /metrics exposes the counters.
    let m = s.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("pipewright_executions_started_total 1"), "{m}");
    assert!(m.contains("pipewright_executions_finished_total{status=\"Success\"} 1"), "{m}");
    assert!(m.contains("pipewright_step_duration_seconds_bucket"), "{m}");
    assert!(m.contains("pipewright_http_request_duration_seconds_bucket"), "{m}");
    assert!(m.contains("pipewright_queue_depth"), "{m}");
}

/// The pid a step printed as `pid N`.
async fn said_pid(s: &Server, id: &str) -> Option<i32> {
    let (_, v) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    let text: String = v["items"].as_array().into_iter().flatten().filter_map(|c| c["data"].as_str()).collect();
    text.lines().find_map(|l| l.rsplit('\t').next()?.strip_prefix("pid ")?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_step_is_taken_over_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let lease = ["--lease-seconds", "1"];
    let mut s = Server::start_with(dir.path(), &lease);
    let go = common::gates(&s.state).join("go");
    // The step says its pid, then waits for the test's gate file.
    let script = format!("'echo pid $$; while [ ! -f {} ]; do sleep 0.05; done; echo released'", go.display());
    s.ok(
        Method::POST,
        &format!("{P}/pipelines"),
        Some(pipeline("slow", &(stage("a", "echo first") + &stage("b", &script)))),
    )
    .await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/slow/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while said_pid(&s, &id).await.is_none() {
        assert!(Instant::now() < deadline, "the step never said its pid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its processes are those whose command line holds the execution's id (the script's path does).
    let step_processes = || common::processes_with(&format!(".pw/{id}/")).len();
    assert!(step_processes() > 0);
    // kill -9: the step dies with its server (the launcher watches it), so the next server's new attempt can
    // never run beside it.
    s.restart(&lease);
    until("the step dies with its server", || async { step_processes() == 0 }).await;
    // The next server takes the execution over once the lease runs out.
    until("the step's second attempt", || async {
        let (_, v) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/nodes"), None).await;
        v.as_array()
            .is_some_and(|n| n.iter().any(|n| n["path"] == "b.s" && n["attempt"] == 2 && n["status"] == "Running"))
    })
    .await;
    std::fs::write(&go, "").unwrap();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let nodes = done["nodes"].as_array().unwrap();
    let steps: Vec<&Value> = nodes.iter().filter(|n| n["path"] == "b.s").collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0]["status"], "Failed");
    assert!(steps[0]["failure"].as_str().unwrap().starts_with("interrupted"), "{:?}", steps[0]);
    assert_eq!(steps[1]["status"], "Success");
    // What finished before the kill was not run again.
    assert_eq!(nodes.iter().filter(|n| n["path"] == "a.s").count(), 1);
    let (_, audit) = s.req(Some(&s.token), Method::GET, "/api/v1/audit?resource_type=execution&limit=100", None).await;
    assert!(
        audit["items"].as_array().unwrap().iter().any(|a| a["action"] == "take_over" && a["resource"] == id.as_str()),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_tokens_and_secrets_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "admin-password\n").unwrap();
    let (child, url, _) =
        spawn(&dir.path().join("st"), &["--admin-password-file", pw.to_str().unwrap(), "--max-body", "4096"]);
    let mut s = Server { child, url, token: String::new(), state: dir.path().join("st"), http: reqwest::Client::new() };
    let (st, v) = s
        .req(
            None,
            Method::POST,
            "/api/v1/auth/login",
            Some(&json!({"username": "admin", "password": "admin-password"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    s.token = v["token"].as_str().unwrap().to_string();
    let t = s.token.clone();
    // Malformed JSON, wrong content type, huge body, path traversal, SQL metacharacters.
    let r = s
        .http
        .post(format!("{}/api/v1/orgs", s.url))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");
    let r = s
        .http
        .post(format!("{}/api/v1/orgs", s.url))
        .bearer_auth(&t)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = s
        .http
        .post(format!("{}{P}/pipelines", s.url))
        .bearer_auth(&t)
        .header("content-type", "application/yaml")
        .body("a".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let (st, _) =
        s.req(Some(&t), Method::GET, "/api/v1/orgs/default/projects/default/pipelines/..%2F..%2Fetc", None).await;
    assert_eq!(st, 400);
    let (st, _) =
        s.req(Some(&t), Method::POST, "/api/v1/orgs", Some(&json!({"identifier": "x'; DROP TABLE records; --"}))).await;
    assert_eq!(st, 400);
    let (st, v) = s
        .req(
            Some(&t),
            Method::POST,
            "/api/v1/orgs",
            Some(&json!({"identifier": "o1", "name": "x'; DROP TABLE records; --"})),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(v["name"], "x'; DROP TABLE records; --");
    assert_eq!(s.ok(Method::GET, "/api/v1/orgs", None).await["items"].as_array().unwrap().len(), 2);
    // Invalid YAML: errors with line and column.
    let (st, v) = s
        .req(
            Some(&t),
            Method::POST,
            &format!("{P}/pipelines"),
            Some(&Value::String("pipeline:\n  identifier: 9bad\n".into())),
        )
        .await;
    assert_eq!(st, 422);
    assert!(v["diagnostics"][0]["line"].is_number(), "{v}");
    // Secrets are write-only and masked.
    let (st, v) = s
        .req(
            Some(&t),
            Method::POST,
            &format!("{P}/secrets"),
            Some(&json!({"identifier": "api_key", "value": "s3cr3t-value"})),
        )
        .await;
    assert_eq!(st, 201);
    assert!(!v.to_string().contains("s3cr3t-value"));
    let got = s.ok(Method::GET, &format!("{P}/secrets/api_key"), None).await;
    assert!(!got.to_string().contains("s3cr3t-value"));
    s.ok(
        Method::POST,
        &format!("{P}/pipelines"),
        Some(pipeline("sec", &stage("a", "'echo key=<+secrets.getValue(\"api_key\")>'"))),
    )
    .await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/sec/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_end(&t, &id).await["execution"]["status"], "Success");
    let logs = s.ok(Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    assert!(logs.to_string().contains("key="), "{logs}");
    assert!(!logs.to_string().contains("s3cr3t-value"), "{logs}");
    // A secret the project does not have is reported before anything runs.
    s.ok(
        Method::POST,
        &format!("{P}/pipelines"),
        Some(pipeline("nosec", &stage("a", "'echo key=<+secrets.getValue(\"missing_key\")>'"))),
    )
    .await;
    let (st, v) = s.req(Some(&t), Method::POST, &format!("{P}/pipelines/nosec/execute"), Some(&json!({}))).await;
    assert_eq!(st, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("does not have: `missing_key`; nothing was run"), "{v}");
    // Tokens: revoked, expired, a project service account's token on another project.
    let mine = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "short", "expires_in_seconds": 1}))).await;
    let short = mine["token"].as_str().unwrap().to_string();
    until("the token to expire", || async {
        s.req(Some(&short), Method::GET, "/api/v1/auth/whoami", None).await.0 == 401
    })
    .await;
    let (_, v) = s.req(Some(&short), Method::GET, "/api/v1/auth/whoami", None).await;
    assert!(v["message"].as_str().unwrap().contains("expired"));
    let other = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "x"}))).await;
    s.ok(Method::DELETE, &format!("/api/v1/tokens/{}", other["id"].as_str().unwrap()), None).await;
    let (st, v) = s.req(other["token"].as_str(), Method::GET, "/api/v1/auth/whoami", None).await;
    assert_eq!(st, 401);
    assert!(v["message"].as_str().unwrap().contains("revoked"));
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "other"}))).await;
    s.ok(
        Method::POST,
        "/api/v1/service-accounts",
        Some(json!({"identifier": "ci", "org": "default", "project": "default"})),
    )
    .await;
    s.ok(Method::POST, "/api/v1/role-bindings", Some(json!({"principal": {"kind": "service_account", "id": "ci"}, "role": "_pipeline_executor", "resource_group": "_all_project_level_resources", "org": "default", "project": "default"}))).await;
    let (st, _) = s.req(Some(&t), Method::POST, "/api/v1/role-bindings", Some(&json!({"principal": {"kind": "service_account", "id": "ci"}, "role": "_pipeline_executor", "resource_group": "_all_project_level_resources", "org": "default", "project": "other"}))).await;
    assert_eq!(st, 400, "a project's service account cannot be bound in another project");
    let sa = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci", "service_account": "ci"}))).await;
    let sa = sa["token"].as_str().unwrap();
    assert_eq!(s.req(Some(sa), Method::GET, &format!("{P}/pipelines"), None).await.0, 200);
    assert_eq!(s.req(Some(sa), Method::GET, "/api/v1/orgs/default/projects/other/pipelines", None).await.0, 403);
    // Brute force: locked out after five failures, even with the right password.
    for _ in 0..5 {
        let (st, _) = s
            .req(None, Method::POST, "/api/v1/auth/login", Some(&json!({"username": "admin", "password": "guess"})))
            .await;
        assert_eq!(st, 401);
    }
    let (st, _) = s
        .req(
            None,
            Method::POST,
            "/api/v1/auth/login",
            Some(&json!({"username": "admin", "password": "admin-password"})),
        )
        .await;
    assert_eq!(st, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_against_a_server_prints_what_it_prints_locally() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let file = dir.path().join("quick.yaml");
    std::fs::write(&file, quick("cli").as_str().unwrap()).unwrap();
    let cli = |args: &[&str], remote: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pipewright"));
        c.args(args).env_remove("PIPEWRIGHT_SERVER").env_remove("PIPEWRIGHT_TOKEN");
        if remote {
            c.env("PIPEWRIGHT_SERVER", &s.url).env("PIPEWRIGHT_TOKEN", &s.token);
        } else {
            c.env("PIPEWRIGHT_STATE_DIR", &s.state);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["run", file.to_str().unwrap()], true);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("[a.s]  hello") && out.contains("ended Success"), "{out}");
    // The same run locally (another state directory) prints the same lines, ids and times aside.
    let local_state = dir.path().join("local");
    let local = Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["run", file.to_str().unwrap()])
        .env_remove("PIPEWRIGHT_SERVER")
        .env("PIPEWRIGHT_STATE_DIR", &local_state)
        .output()
        .unwrap();
    let normal = |s: &str| {
        let s = regex::Regex::new("[0-9A-Z]{26}").unwrap().replace_all(s, "ID").to_string();
        regex::Regex::new(r"[0-9]+\.[0-9]s").unwrap().replace_all(&s, "T").to_string()
    };
    assert_eq!(normal(&out), normal(&String::from_utf8_lossy(&local.stdout)));
    let (_, h, _) = cli(&["history", "--output", "json"], true);
    let id = serde_json::from_str::<Value>(&h).unwrap()[0]["id"].as_str().unwrap().to_string();
    for args in [vec!["history"], vec!["show", &id], vec!["show", &id, "--output", "json"], vec!["logs", &id]] {
        let local = cli(&args, false);
        let remote = cli(&args, true);
        assert_eq!(local.1, remote.1, "{args:?}: local and --server print the same");
        assert_eq!(local.0, Some(0));
    }
    let (code, out, _) = cli(&["plan", file.to_str().unwrap(), "--stage", "a", "--output", "json"], true);
    assert_eq!(code, Some(0));
    let (lcode, lout, _) = cli(&["plan", file.to_str().unwrap(), "--stage", "a", "--output", "json"], false);
    assert_eq!((code, out), (lcode, lout));
    let (code, _, err) = cli(&["abort", &id], true);
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing to abort"), "{err}");
    let (code, _, err) = cli(&["run", file.to_str().unwrap(), "--token", "pw_wrong"], true);
    assert_eq!(code, Some(1));
    assert!(err.contains("not valid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_execution_finish_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("st");
    let (child, url, token) = spawn(&state, &["--shutdown-grace", "60"]);
    let mut s = Server { child, url, token: token.unwrap(), state, http: reqwest::Client::new() };
    let go = common::gates(&s.state).join("go");
    let script = format!("'while [ ! -f {} ]; do sleep 0.05; done; echo finished'", go.display());
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("grace", &stage("a", &script)))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/grace/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let mut stream =
        s.http.get(format!("{}/api/v1/executions/{id}/logs/stream", s.url)).bearer_auth(&s.token).send().await.unwrap();
    let mut seen = String::new();
    while !seen.contains("\"to\":\"Running\"") {
        seen.push_str(&String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    // The server says it is stopping; only then does the step get to finish.
    while !seen.contains("event: shutdown") {
        match stream.chunk().await.unwrap() {
            Some(c) => seen.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    assert!(seen.contains("event: shutdown"), "{seen}");
    std::fs::write(&go, "").unwrap();
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    s.restart(&[]);
    let (_, v) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}"), None).await;
    assert_eq!(v["execution"]["status"], "Success", "{v}");
}

/// A `pipewright run` on the state directory of a running server is that run's: the server, scanning for
/// executions to take over, leaves an execution alone while its owner renews its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_never_touches_a_local_run_that_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &["--lease-seconds", "0.5"]);
    let go = dir.path().join("go");
    let started = dir.path().join("started");
    let yaml = pipeline(
        "local",
        &stage("a", &format!("'touch {}; while [ ! -f {} ]; do sleep 0.02; done'", started.display(), go.display())),
    );
    let file = dir.path().join("local.yaml");
    std::fs::write(&file, yaml.as_str().unwrap()).unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["run", "--step-isolation", "none"])
        .arg(&file)
        .env("PIPEWRIGHT_STATE_DIR", &s.state)
        .env("PIPEWRIGHT_LEASE_SECONDS", "0.5")
        .env_remove("PIPEWRIGHT_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let id = first.split_whitespace().nth(1).unwrap().to_string();
    // The run's output is read to its end (a closed pipe would end it).
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    until("the local step to run", || async { started.exists() }).await;
    // An observation window of six leases (the server scans every quarter second): nothing may change hands.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, v) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}"), None).await;
    assert_eq!(v["execution"]["status"], "Running", "{v}");
    let attempts = v["nodes"].as_array().unwrap().iter().filter(|n| n["path"] == "a.s").count();
    assert_eq!(attempts, 1, "{v}");
    std::fs::write(&go, "").unwrap();
    let status = run.wait().unwrap();
    let out = rest.join().unwrap();
    assert!(status.success(), "{out}");
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
}

fn step_template(version: &str, script: &str) -> Value {
    Value::String(format!(
        "template:\n  name: Greet\n  identifier: greet\n  versionLabel: {version}\n  type: Step\n  orgIdentifier: default\n  spec:\n    type: ShellScript\n    timeout: 1m\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: {script}\n      environmentVariables:\n        - name: WHO\n          type: String\n          value: <+input>\n"
    ))
}

/// Templates are a record kind with versions: a pipeline saved on the server resolves them from the project
/// (and its organization, whose templates are published through the organization's route), runs what they make, and a reference to a template that is not stored is refused
/// when the pipeline is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_stored_with_versions_and_resolved_when_a_pipeline_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.ok(Method::POST, "/api/v1/orgs/default/templates", Some(step_template("v1", "echo \"hello $WHO\""))).await;
    s.ok(Method::POST, "/api/v1/orgs/default/templates", Some(step_template("v2", "echo \"hi $WHO (v2)\""))).await;
    let (st, v) = s
        .req(Some(&s.token), Method::POST, "/api/v1/orgs/default/templates", Some(&step_template("v2", "echo again")))
        .await;
    assert_eq!(st, 409, "{v}");
    let got = s.ok(Method::GET, "/api/v1/orgs/default/templates/greet", None).await;
    assert!(got["yaml"].as_str().unwrap().contains("(v2)"), "the newest version is shown: {got}");
    let uses = |version: &str| {
        pipeline(
            "greeter",
            &format!(
                "    - stage:\n        name: a\n        identifier: a\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  name: g\n                  identifier: g\n                  template:\n                    templateRef: org.greet\n                    versionLabel: {version}\n                    templateInputs:\n                      type: ShellScript\n                      spec:\n                        environmentVariables:\n                          - name: WHO\n                            type: String\n                            value: world\n"
            ),
        )
    };
    let (st, v) = s.req(Some(&s.token), Method::POST, &format!("{P}/pipelines"), Some(&uses("v3"))).await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("which has versions `v1`, `v2`"), "{v}");
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(uses("v1"))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/greeter/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let logs = s.ok(Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    assert!(logs.to_string().contains("hello world"), "{logs}");
    // A new version of the template does not change what a re-run of that execution runs.
    s.ok(Method::PUT, "/api/v1/orgs/default/templates/greet", Some(step_template("v1", "echo \"changed $WHO\""))).await;
    let again = s.ok(Method::POST, &format!("/api/v1/executions/{id}/rerun"), Some(json!({}))).await;
    let again_id = again["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&s.token, &again_id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let logs = s.ok(Method::GET, &format!("/api/v1/executions/{again_id}/logs"), None).await;
    assert!(logs.to_string().contains("hello world"), "{logs}");
}

/// A `Pipeline` stage on the server runs a stored pipeline as a child execution and reads its outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_stage_runs_a_stored_pipeline_as_a_child() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    let child = Value::String(
        "pipeline:\n  name: tagger\n  identifier: tagger\n  projectIdentifier: default\n  orgIdentifier: default\n  variables:\n    - name: base\n      type: String\n      value: <+input>\n  stages:\n    - stage:\n        name: t\n        identifier: t\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: tag=<+pipeline.variables.base>-7\n                    outputVariables:\n                      - name: tag\n                        type: String\n                        value: tag\n".into(),
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(child)).await;
    let parent = pipeline(
        "train",
        "    - stage:\n        name: tag\n        identifier: tag\n        type: Pipeline\n        spec:\n          pipeline: tagger\n          inputs:\n            identifier: tagger\n            variables:\n              - name: base\n                type: String\n                value: v1\n          outputs:\n            - name: tag\n              value: <+pipeline.stages.t.spec.execution.steps.s.output.outputVariables.tag>\n    - stage:\n        name: use\n        identifier: use\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: out=<+pipeline.stages.tag.output.tag>\n                    outputVariables:\n                      - name: out\n                        type: String\n                        value: out\n",
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(parent)).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/train/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let used = done["nodes"].as_array().unwrap().iter().find(|n| n["path"] == "use.s").unwrap();
    assert_eq!(used["outputs"]["out"], "v1-7", "{done}");
    let tag = done["nodes"].as_array().unwrap().iter().find(|n| n["path"] == "tag").unwrap();
    let child_id = tag["outputs"]["childExecutionId"].as_str().unwrap().to_string();
    let child = s.ok(Method::GET, &format!("/api/v1/executions/{child_id}"), None).await;
    assert_eq!(child["execution"]["pipeline"], "tagger");
    assert_eq!(child["execution"]["inputs"]["__chained_from"]["execution_id"], id.as_str(), "{child}");
}
