//! `pipewright serve` driven over HTTP as its users drive it: a real server process on a random loopback port
//! with a real SQLite state directory. The RBAC matrix covers every route of the OpenAPI document (a route
//! without an entry fails) for no token, a project viewer, a pipeline executor, the admin of another project
//! and the account admin; the flows cover selective runs, re-runs and retries, live logs over SSE (resumed
//! with Last-Event-ID), a restart while an execution runs, metrics, bad input and token handling, and the CLI
//! as a client printing what it prints locally.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state)
        .args(extra)
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
        token = line.split(": ").last().map(String::from);
        std::fs::write(state.join("bootstrapped"), "").unwrap();
    }
    (child, url, token)
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
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, url, _) = spawn(&self.state, &[]);
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
    s.ok(Method::POST, "/api/v1/users", Some(json!({"username": "doomed_user", "password": "12345678"}))).await;
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
    let token = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "doomed"}))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/p1/execute"), Some(json!({}))).await;
    let e = e["id"].as_str().unwrap().to_string();
    s.wait_end(&s.token, &e).await;

    let x = format!("/api/v1/executions/{e}");
    let b = binding["identifier"].as_str().unwrap();
    let t = token["id"].as_str().unwrap();
    // (method, route as in the OpenAPI document, concrete path, body, [no token, viewer, executor, other project's admin, admin])
    let table: Vec<(&str, &str, String, Option<Value>, [u16; 5])> = vec![
        ("get", "/api/v1/audit", "/api/v1/audit".into(), None, [401, 403, 403, 403, 200]),
        (
            "post",
            "/api/v1/auth/login",
            "/api/v1/auth/login".into(),
            Some(json!({"username": "nobody", "password": "wrong"})),
            [401, 401, 401, 401, 401],
        ),
        ("get", "/api/v1/auth/whoami", "/api/v1/auth/whoami".into(), None, [401, 200, 200, 200, 200]),
        ("get", "/api/v1/executions/{id}", x.clone(), None, [401, 200, 200, 403, 200]),
        ("post", "/api/v1/executions/{id}/abort", format!("{x}/abort"), None, [401, 403, 409, 403, 409]),
        ("post", "/api/v1/executions/{id}/approve", format!("{x}/approve"), Some(json!({})), [401, 403, 409, 403, 409]),
        (
            "post",
            "/api/v1/executions/{id}/intervene",
            format!("{x}/intervene"),
            Some(json!({"action": "retry"})),
            [401, 403, 409, 403, 409],
        ),
        ("get", "/api/v1/executions/{id}/logs", format!("{x}/logs"), None, [401, 200, 200, 403, 200]),
        ("get", "/api/v1/executions/{id}/logs/stream", format!("{x}/logs/stream"), None, [401, 200, 200, 403, 200]),
        ("get", "/api/v1/executions/{id}/nodes", format!("{x}/nodes"), None, [401, 200, 200, 403, 200]),
        ("post", "/api/v1/executions/{id}/reject", format!("{x}/reject"), Some(json!({})), [401, 403, 409, 403, 409]),
        ("post", "/api/v1/executions/{id}/rerun", format!("{x}/rerun"), Some(json!({})), [401, 403, 201, 403, 201]),
        ("post", "/api/v1/executions/{id}/retry", format!("{x}/retry"), Some(json!({})), [401, 403, 422, 403, 422]),
        ("get", "/api/v1/executions/{id}/transitions", format!("{x}/transitions"), None, [401, 200, 200, 403, 200]),
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
        ("get", "/api/v1/users", "/api/v1/users".into(), None, [401, 403, 403, 403, 200]),
        (
            "post",
            "/api/v1/users",
            "/api/v1/users".into(),
            Some(json!({"username": "u1", "password": "12345678"})),
            [401, 403, 403, 403, 201],
        ),
        ("delete", "/api/v1/users/{user}", "/api/v1/users/doomed_user".into(), None, [401, 403, 403, 403, 204]),
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
