//! The attack suite of the step boundary (SECURITY.md): each test is an attack a pipeline author, an
//! executor or a step makes against a real `pipewright serve` or `pipewright run`, and must fail. Channels
//! covered here: expansion of looping strategies from runtime inputs (memory), a secret's value in every
//! message path and spelling, the last Account Admin, the login redirect and the page headers.

mod common;
use common::{Server, pipeline, processes_with, stage};
use reqwest::Method;
use serde_json::json;

const P: &str = "/api/v1/orgs/default/projects/default";

/// A stage whose three-axis matrix takes each axis from a runtime input.
fn matrix_from_inputs() -> serde_json::Value {
    let mut yaml =
        pipeline("fanbomb", &stage("s", "echo <+matrix.x><+matrix.y><+matrix.z>")).as_str().unwrap().to_string();
    yaml = yaml.replace(
        "        type: Custom\n",
        "        type: Custom\n        strategy:\n          matrix:\n            x: <+pipeline.variables.values>\n            y: <+pipeline.variables.values>\n            z: <+pipeline.variables.values>\n",
    );
    yaml = yaml.replace(
        "  stages:\n",
        "  variables:\n    - name: values\n      type: String\n      value: <+input>\n  stages:\n",
    );
    serde_json::Value::String(yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_cannot_expand_a_matrix_past_the_servers_limits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--max-iterations", "500"]).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(matrix_from_inputs())).await;
    let executor = s.user("eve", "_pipeline_executor", "default").await;
    // 1000 values on three axes: 10⁹ combinations, counted and refused before any is built.
    let values: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let body = json!({"inputs": {"pipeline.variables.values": values.join(",")}});
    let (st, e) = s.req(Some(&executor), Method::POST, &format!("{P}/pipelines/fanbomb/execute"), Some(&body)).await;
    assert!(st.is_success(), "{st} {e}");
    let done = s.wait_end(&executor, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Failed", "{done}");
    let text = done.to_string();
    assert!(
        text.contains("the looping strategy has 1000000000 iterations, more than the 500 a node may have"),
        "{text}"
    );
    // Under the limit the same pipeline runs: 7 × 7 × 7 = 343 iterations.
    let small = json!({"inputs": {"pipeline.variables.values": "1,2,3,4,5,6,7"}});
    let (_, e) = s.req(Some(&executor), Method::POST, &format!("{P}/pipelines/fanbomb/execute"), Some(&small)).await;
    let done = s.wait_end(&executor, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_strategies_are_bounded_by_the_node_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--max-nodes", "300"]).await;
    // 20 stage iterations of a step that itself runs 20 times: 20 × 21 nodes + 20 × 20 step iterations.
    let mut yaml = pipeline("nested", &stage("s", "echo hi")).as_str().unwrap().to_string();
    yaml =
        yaml.replace("        type: Custom\n", "        type: Custom\n        strategy:\n          parallelism: 20\n");
    yaml = yaml.replace(
        "                  identifier: s\n",
        "                  identifier: s\n                  strategy:\n                    repeat:\n                      times: 20\n",
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(serde_json::Value::String(yaml))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/nested/execute"), Some(json!({}))).await;
    let done = s.wait_end(&s.token, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Failed", "{done}");
    assert!(done.to_string().contains("would create more than 300 nodes"), "{done}");
}

/// However many stage iterations a strategy or a parallel block asks for, an execution runs at most
/// `--max-parallel-stages` stages at once (each holds a network and processes); the others wait Queued and
/// all of them run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_runs_at_most_the_servers_stages_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--max-parallel-stages", "3"]).await;
    let mut yaml = pipeline("wide", &stage("s", "sleep 0.3")).as_str().unwrap().to_string();
    yaml =
        yaml.replace("        type: Custom\n", "        type: Custom\n        strategy:\n          parallelism: 8\n");
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(serde_json::Value::String(yaml))).await;
    let executor = s.user("eve", "_pipeline_executor", "default").await;
    let (st, e) = s.req(Some(&executor), Method::POST, &format!("{P}/pipelines/wide/execute"), Some(&json!({}))).await;
    assert!(st.is_success(), "{st} {e}");
    let done = s.wait_end(&executor, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let spans: Vec<(i64, i64)> = done["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "step")
        .map(|n| (n["started_at"].as_i64().unwrap(), n["ended_at"].as_i64().unwrap()))
        .collect();
    assert_eq!(spans.len(), 8, "{done}");
    // The most steps running at one instant: at each start, the spans that hold it.
    let most = spans.iter().map(|(t, _)| spans.iter().filter(|(a, b)| a <= t && t < b).count()).max().unwrap();
    assert!(most <= 3, "{most} stages ran at once: {spans:?}");
    assert!(most >= 2, "the stages ran one by one: {spans:?}");
}

/// Nested strategies whose lists come from runtime inputs, each level under the per-node limit: the budget
/// is taken before each expansion, so the execution stores no more nodes than it allows and every node past it
/// fails without being expanded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_strategies_from_runtime_inputs_stay_within_the_node_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--max-nodes", "1000"]).await;
    let mut yaml = pipeline("grid", &stage("s", "echo <+repeat.item>")).as_str().unwrap().to_string();
    yaml = yaml.replace(
        "        type: Custom\n",
        "        type: Custom\n        strategy:\n          repeat:\n            items: <+pipeline.variables.xs.split(\",\")>\n",
    );
    yaml = yaml.replace(
        "                  identifier: s\n",
        "                  identifier: s\n                  strategy:\n                    repeat:\n                      items: <+pipeline.variables.ys.split(\",\")>\n",
    );
    yaml = yaml.replace(
        "  stages:\n",
        "  variables:\n    - name: xs\n      type: String\n      value: <+input>\n    - name: ys\n      type: String\n      value: <+input>\n  stages:\n",
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(serde_json::Value::String(yaml))).await;
    let executor = s.user("eve", "_pipeline_executor", "default").await;
    let values: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let body =
        json!({"inputs": {"pipeline.variables.xs": values.join(","), "pipeline.variables.ys": values.join(",")}});
    let (st, e) = s.req(Some(&executor), Method::POST, &format!("{P}/pipelines/grid/execute"), Some(&body)).await;
    assert!(st.is_success(), "{st} {e}");
    let done = s.wait_end(&executor, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Failed", "{done}");
    assert!(done.to_string().contains("would create more than 1000 nodes"), "{done}");
    let nodes = done["nodes"].as_array().unwrap().len();
    assert!(nodes <= 1001, "{nodes} nodes stored past a budget of 1000");
}

#[test]
fn validate_refuses_a_written_strategy_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let axis: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let axis = format!("[{}]", axis.join(", "));
    let yaml = pipeline("big", &stage("s", "echo <+matrix.a>")).as_str().unwrap().replace(
        "        type: Custom\n",
        &format!("        type: Custom\n        strategy:\n          matrix:\n            a: {axis}\n            b: {axis}\n            c: {axis}\n"),
    );
    let file = common::write(dir.path(), "big.yaml", &yaml);
    let out = common::pw(&dir.path().join("st")).arg("validate").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("big.yaml:13:"), "{err}");
    assert!(err.contains("this looping strategy has 1000000 iterations, more than the 10000 a node may have"), "{err}");
}

/// The Account Admin bindings at the account, by identifier, as `token` sees them (none when it may not).
async fn admin_bindings(s: &Server, token: &str) -> Vec<String> {
    let (_, all) = s.req(Some(token), Method::GET, "/api/v1/role-bindings", None).await;
    let mut ids: Vec<String> = all
        .as_array()
        .or_else(|| all["items"].as_array())
        .into_iter()
        .flatten()
        .filter(|b| b["role"] == "_account_admin" && b["scope"]["org"].as_str().unwrap_or_default().is_empty())
        .map(|b| b["identifier"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_always_keeps_an_account_admin() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    let own = admin_bindings(&s, &s.token).await;
    assert_eq!(own.len(), 1, "the admin's own binding: {own:?}");
    // Bind Account Admin to a service account, remove the admin's own binding, delete the service account.
    s.ok(Method::POST, "/api/v1/service-accounts", Some(json!({"identifier": "robot"}))).await;
    let rb = json!({"principal": {"kind": "service_account", "id": "robot"}, "role": "_account_admin",
        "resource_group": "_all_resources_including_child_scopes"});
    s.ok(Method::POST, "/api/v1/role-bindings", Some(rb)).await;
    let t = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "robot", "service_account": "robot"}))).await;
    let robot = t["token"].as_str().unwrap().to_string();
    s.ok(Method::DELETE, &format!("/api/v1/role-bindings/{}", own[0]), None).await;
    // The service account, now the only admin, deletes itself.
    let (st, v) = s.req(Some(&robot), Method::DELETE, "/api/v1/service-accounts/robot", None).await;
    assert_eq!(st, 409, "deleting the last admin's service account: {v}");
    assert!(v.to_string().contains("the last Account Admin"), "{v}");
    assert_eq!(admin_bindings(&s, &robot).await.len(), 1, "the service account keeps its binding");
    let (st, v) = s.req(Some(&robot), Method::GET, "/api/v1/service-accounts", None).await;
    assert!(
        st.is_success() && v.to_string().contains("robot"),
        "the service account is still there, its token alive: {st} {v}"
    );
    // The service account gives the account back to a person.
    let rb = json!({"principal": {"kind": "user", "id": "admin"}, "role": "_account_admin",
        "resource_group": "_all_resources_including_child_scopes"});
    let (st, v) = s.req(Some(&robot), Method::POST, "/api/v1/role-bindings", Some(&rb)).await;
    assert!(st.is_success(), "{v}");
    s.ok(Method::DELETE, "/api/v1/service-accounts/robot", None).await;

    // Two admins, and two concurrent deletes of the two bindings: one is refused.
    s.ok(Method::POST, "/api/v1/users", Some(json!({"username": "second", "password": "correct-horse-battery-2"})))
        .await;
    let rb = json!({"principal": {"kind": "user", "id": "second"}, "role": "_account_admin",
        "resource_group": "_all_resources_including_child_scopes"});
    s.ok(Method::POST, "/api/v1/role-bindings", Some(rb)).await;
    let second_token = s.login("second", "correct-horse-battery-2").await;
    let two = admin_bindings(&s, &s.token).await;
    assert_eq!(two.len(), 2);
    let (first, second) = (format!("/api/v1/role-bindings/{}", two[0]), format!("/api/v1/role-bindings/{}", two[1]));
    let (a, b) = tokio::join!(
        s.req(Some(&s.token), Method::DELETE, &first, None),
        s.req(Some(&second_token), Method::DELETE, &second, None)
    );
    // The loser is refused by the guard (409), or already by RBAC once its own binding is gone (403).
    let codes = [a.0.as_u16(), b.0.as_u16()];
    assert_eq!(codes.iter().filter(|c| **c == 204).count(), 1, "exactly one delete succeeds: {a:?} {b:?}");
    assert!(codes.iter().all(|c| [204, 403, 409].contains(c)), "{a:?} {b:?}");
    // Whoever is still an admin sees one binding left.
    let mut left = admin_bindings(&s, &s.token).await;
    let mut admin = s.token.clone();
    if left.is_empty() {
        (left, admin) = (admin_bindings(&s, &second_token).await, second_token.clone());
    }
    assert_eq!(left.len(), 1);
    // Deleting the user who holds the last binding is refused too, and leaves the user able to log in.
    let (_, all) = s.req(Some(&admin), Method::GET, "/api/v1/role-bindings", None).await;
    let holder = all
        .as_array()
        .or_else(|| all["items"].as_array())
        .unwrap()
        .iter()
        .find(|b| b["identifier"] == left[0].as_str())
        .map(|b| {
            (b["principal"]["kind"].as_str().unwrap().to_string(), b["principal"]["id"].as_str().unwrap().to_string())
        })
        .unwrap();
    let path = if holder.0 == "user" {
        format!("/api/v1/users/{}", holder.1)
    } else {
        format!("/api/v1/service-accounts/{}", holder.1)
    };
    let (st, v) = s.req(Some(&admin), Method::DELETE, &path, None).await;
    assert_eq!(st, 409, "{path}: {v}");
    assert_eq!(admin_bindings(&s, &admin).await, left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_redirect_stays_on_this_site_and_pages_cannot_be_framed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for next in
        ["/%09/evil.example", "//evil.example", "/%5Cevil.example", "/%0d%0aSet-Cookie:%20x=1", "https://evil.example"]
    {
        let resp = http.get(format!("{}/login?next={next}", s.url)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "next={next}");
    }
    let resp = http.get(format!("{}/login?next=/orgs/default", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"name="next" value="/orgs/default""#), "{page}");
    // Every answer, page or API, carries the headers that keep it out of other sites' frames and scripts.
    for path in ["/login", "/api/v1/openapi.json", "/healthz", "/assets/app.css"] {
        let resp = http.get(format!("{}{path}", s.url)).send().await.unwrap();
        let h = resp.headers();
        let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{path}");
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff", "{path}");
        assert!(h.get("referrer-policy").is_some(), "{path}");
    }
    assert!(h.get("content-security-policy").is_some());
    // A form post with a bad `next` is refused the same way, before any log-in is tried.
    let resp = http
        .post(format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("next=%2F%09%2Fevil.example&username=admin&password=x&csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

/// Wait up to `limit` for `cond`, looking every 20 ms.
async fn within(limit: std::time::Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_connect_to_the_hosts_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    // A service of the host on a Unix socket anyone may connect to (as PostgreSQL's and MariaDB's are).
    let sock = dir.path().join("service.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut sockets = vec![sock.display().to_string()];
    for known in ["/var/run/postgresql/.s.PGSQL.5432", "/run/mysqld/mysqld.sock", "/var/run/docker.sock"] {
        if std::path::Path::new(known).exists() {
            sockets.push(known.to_string());
        }
    }
    let probe: String = sockets
        .iter()
        .map(|p| format!("/usr/bin/python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{p}')\" 2>/dev/null && echo CONNECTED-{p} || echo refused-{p}; "))
        .collect();
    let yaml = pipeline("unix", &stage("s", &format!("'{}'", probe.replace('\'', "''"))));
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(yaml)).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/unix/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    s.wait_end(&s.token, &id).await;
    let (_, logs) = s.raw(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    assert!(!logs.contains("CONNECTED-"), "{logs}");
    for p in &sockets {
        assert!(logs.contains(&format!("refused-{p}")), "{p}: {logs}");
    }
    // The socket works from outside the step.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_sees_only_its_own_processes_and_dies_with_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--no-local-executor"]).await;
    let token = common::agent_credential(&s, "a1", "").await;
    let mut agent = common::Agent::start(dir.path(), &s.url, &token, "a1", "");
    // A step that lists every process it can see and reads their command lines, looking for tokens.
    let spy = "for p in /proc/[0-9]*; do printf 'PROC %s %s\\n' \"${p#/proc/}\" \"$(tr '\\0' ' ' < $p/cmdline)\"; done; echo \"HOST $(cat /proc/sys/kernel/hostname)\"; echo \"SHM $(wc -l < /proc/sysvipc/shm)\"";
    let yaml = pipeline("spy", &stage("s", &format!("'{}'", spy.replace('\'', "''"))));
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(yaml)).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/spy/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let (_, logs) = s.raw(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    // Its own host name, and its own System V IPC: none of the host's shared memory segments (PostgreSQL's).
    assert!(logs.contains("HOST pipewright-step"), "{logs}");
    assert!(logs.contains("SHM 1"), "only the header of an empty segment list: {logs}");
    let seen: Vec<&str> = logs.split("PROC ").skip(1).collect();
    assert!(!seen.is_empty(), "{logs}");
    assert!(seen.len() <= 4, "the step sees only its own few processes: {seen:?}");
    for secret_place in [token.as_str(), "--token", "pipewright agent", "pipewright serve", "--admin-password-file"] {
        assert!(!logs.contains(secret_place), "{secret_place}: {logs}");
    }

    // A step still running when its agent is killed with -9 dies with it, at once.
    let marker = format!("pw-orphan-{}", &id[id.len() - 8..]);
    let yaml = pipeline("long", &stage("s", &format!("'exec -a {marker} sleep 300'")));
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(yaml)).await;
    s.ok(Method::POST, &format!("{P}/pipelines/long/execute"), Some(json!({}))).await;
    within(std::time::Duration::from_secs(30), "the step never started", || !processes_with(&marker).is_empty()).await;
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = agent.child.wait();
    within(std::time::Duration::from_secs(2), "the step outlived its agent", || processes_with(&marker).is_empty())
        .await;
    // And so did its stage's network: no slirp4netns is left serving a namespace whose holder is gone.
    let orphans = || {
        processes_with("slirp4netns")
            .into_iter()
            .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).split('\0').map(String::from).collect::<Vec<_>>())
            .filter(|args| args.first().is_some_and(|a| a.ends_with("slirp4netns")))
            .filter(|args| {
                let target = args.iter().rev().nth(1).and_then(|p| p.parse::<i32>().ok());
                target.is_some_and(|t| !std::path::Path::new(&format!("/proc/{t}")).exists())
            })
            .count()
    };
    within(std::time::Duration::from_secs(2), "a slirp4netns outlived its stage's namespace", || orphans() == 0).await;
}

/// A step template `shared` as a project admin of `project` would write it, with `scope` lines.
fn shared_template(scope: &str) -> serde_json::Value {
    serde_json::Value::String(format!(
        "template:\n  name: shared\n  identifier: shared\n  versionLabel: v1\n  type: Step\n{scope}  spec:\n    type: ShellScript\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: echo HIJACKED <+secrets.getValue(\"deploy_key\")> | base64\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_admin_cannot_publish_a_template_into_another_scope() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "b"}))).await;
    let b_admin = s.user("mallory", "_project_admin", "b").await;
    let post = |path: &str, body: serde_json::Value| {
        let (path, token) = (path.to_string(), b_admin.clone());
        let s = &s;
        async move { s.req(Some(&token), Method::POST, &path, Some(&body)).await }
    };
    // Without orgIdentifier / projectIdentifier the file declares the account: refused on the project route…
    let (st, v) = post("/api/v1/orgs/default/projects/b/templates", shared_template("")).await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("declares the account"), "{v}");
    // …as is the organization, and the account's and the organization's own routes need rights there.
    let (st, v) =
        post("/api/v1/orgs/default/projects/b/templates", shared_template("  orgIdentifier: default\n")).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = post("/api/v1/templates", shared_template("")).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = post("/api/v1/orgs/default/templates", shared_template("  orgIdentifier: default\n")).await;
    assert_eq!(st, 403, "{v}");
    // What B may store is B's own, and project A cannot reach it under any reference.
    let (st, v) = post(
        "/api/v1/orgs/default/projects/b/templates",
        shared_template("  orgIdentifier: default\n  projectIdentifier: b\n"),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    s.ok(
        Method::POST,
        &format!("{P}/secrets"),
        Some(json!({"identifier": "deploy_key", "value": "A-deploy-key-9931"})),
    )
    .await;
    for reference in ["account.shared", "org.shared", "shared"] {
        let yaml = pipeline("victim", &stage("s", "echo hi")).as_str().unwrap().replace(
            "                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo hi\n",
            &format!("                  name: s\n                  identifier: s\n                  template:\n                    templateRef: {reference}\n"),
        );
        let (st, v) = s
            .req(Some(&s.token), Method::POST, &format!("{P}/pipelines"), Some(&serde_json::Value::String(yaml)))
            .await;
        assert_eq!(st, 422, "{reference}: {v}");
    }
}

/// A version of the account's step template `shared` that says which version it is.
fn account_template(version: &str) -> serde_json::Value {
    serde_json::Value::String(format!(
        "template:\n  name: shared\n  identifier: shared\n  versionLabel: {version}\n  type: Step\n  spec:\n    type: ShellScript\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: echo running-shared-{version}\n"
    ))
}

/// A reference without `versionLabel` runs the version an administrator of the template's scope marked
/// stable, not whatever was stored last; a project admin cannot move the mark, and a newer version stored
/// later does not move it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_without_a_version_runs_the_stable_version_only_its_scopes_admins_mark() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "b"}))).await;
    let b_admin = s.user("mallory", "_project_admin", "b").await;
    s.ok(Method::POST, "/api/v1/templates", Some(account_template("v1"))).await;
    s.ok(Method::POST, "/api/v1/templates", Some(account_template("v2"))).await;
    let (st, v) = s
        .req(Some(&s.token), Method::POST, "/api/v1/templates/shared/stable", Some(&json!({"versionLabel": "v9"})))
        .await;
    assert_eq!(st, 404, "{v}");
    assert!(v.to_string().contains("has no version `v9`; it has v1, v2"), "{v}");
    let marked = s.ok(Method::POST, "/api/v1/templates/shared/stable", Some(json!({"versionLabel": "v1"}))).await;
    assert_eq!(marked["stable"], "v1", "{marked}");
    let (st, v) = s
        .req(Some(&b_admin), Method::POST, "/api/v1/templates/shared/stable", Some(&json!({"versionLabel": "v2"})))
        .await;
    assert_eq!(st, 403, "{v}");
    // A newer version stored later keeps the mark where it was.
    s.ok(Method::POST, "/api/v1/templates", Some(account_template("v3"))).await;
    let yaml = pipeline("uses_shared", &stage("s", "echo hi")).as_str().unwrap().replace(
        "                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: echo hi\n",
        "                  name: s\n                  identifier: s\n                  template:\n                    templateRef: account.shared\n",
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(serde_json::Value::String(yaml))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/uses_shared/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let logs = s.ok(Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await.to_string();
    assert!(logs.contains("running-shared-v1"), "{logs}");
    assert!(!logs.contains("running-shared-v3") && !logs.contains("running-shared-v2"), "{logs}");
}

/// Records other than templates live in one project only: a secret reference spelled for the account or
/// the organization never reaches another project's secret of that name, whichever way it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reference_never_reaches_another_projects_secret() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "b"}))).await;
    s.ok(
        Method::POST,
        "/api/v1/orgs/default/projects/b/secrets",
        Some(json!({"identifier": "deploy_key", "value": "B-deploy-key-5521"})),
    )
    .await;
    let variable =
        |value: &str| format!("  variables:\n    - name: key\n      type: Secret\n      value: {value}\n  stages:\n");
    let cases = [
        ("get_account", String::new(), "echo <+secrets.getValue(\"account.deploy_key\")>"),
        ("get_org", String::new(), "echo <+secrets.getValue(\"org.deploy_key\")>"),
        ("get_plain", String::new(), "echo <+secrets.getValue(\"deploy_key\")>"),
        ("var_account", variable("account.deploy_key"), "echo <+pipeline.variables.key>"),
        ("var_org", variable("org.deploy_key"), "echo <+pipeline.variables.key>"),
    ];
    for (id, vars, script) in cases {
        let yaml = pipeline(id, &stage("s", script)).as_str().unwrap().replace("  stages:\n", &vars.to_string());
        let yaml = if vars.is_empty() {
            yaml.replace("  allowStageExecutions: true\n", "  allowStageExecutions: true\n  stages:\n")
        } else {
            yaml
        };
        let (st, v) = s
            .req(Some(&s.token), Method::POST, &format!("{P}/pipelines"), Some(&serde_json::Value::String(yaml)))
            .await;
        assert!(st == 201 || st == 200, "{id}: {v}");
        let (st, v) =
            s.req(Some(&s.token), Method::POST, &format!("{P}/pipelines/{id}/execute"), Some(&json!({}))).await;
        assert_eq!(st, 422, "{id}: {v}");
        assert!(v.to_string().contains("does not have"), "{id}: {v}");
        assert!(!v.to_string().contains("B-deploy-key"), "{id}: {v}");
    }
}

/// This host's own IPv4 addresses (loopback included), as `ip -4 -o addr` lists them.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("ip").args(["-4", "-o", "addr"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut addrs: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next().map(String::from))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reaches_no_address_of_the_host_but_its_stages_services() {
    if !common::isolated_network() {
        eprintln!("skipped: the isolated step network needs root, slirp4netns and ip (it fails under CI)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A service of the host listening on every address, beside the server and PostgreSQL.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let open_port = listener.local_addr().unwrap().port();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    let server_port: u16 = s.url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    let mut targets: Vec<String> = Vec::new();
    for addr in host_addresses().iter().map(String::as_str).chain(["169.254.169.254", "10.0.2.2"]) {
        for port in [open_port, server_port, 5432] {
            targets.push(format!("{addr}/{port}"));
        }
    }
    let probe: String = targets
        .iter()
        .map(|t| format!("(exec 3<>/dev/tcp/{t}) 2>/dev/null && echo REACHED-{t} || echo refused-{t}; "))
        .collect();
    // Http steps are made by the server itself: a URL naming the host (by address or by a name that
    // resolves to it) is refused before any connection.
    let http: String = [format!("127.0.0.1:{server_port}"), format!("localhost:{server_port}"), "169.254.169.254".into()]
        .iter()
        .chain(host_addresses().iter().filter(|a| !a.starts_with("127.")).map(|a| format!("{a}:{open_port}")).collect::<Vec<_>>().iter())
        .enumerate()
        .map(|(i, target)| {
            format!("              - step:\n                  type: Http\n                  name: call{i}\n                  identifier: call{i}\n                  timeout: 5s\n                  failureStrategies:\n                    - onFailure:\n                        errors: [AllErrors]\n                        action:\n                          type: Ignore\n                  spec:\n                    url: http://{target}/healthz\n                    method: GET\n")
        })
        .collect();
    // The stage's Background service on its own loopback, reached by the step after it.
    let yaml = format!(
        "pipeline:\n  name: net\n  identifier: net\n  projectIdentifier: default\n  orgIdentifier: default\n  stages:\n    - stage:\n        name: s\n        identifier: s\n        type: CI\n        spec:\n          cloneCodebase: false\n          execution:\n            steps:\n              - step:\n                  type: Background\n                  name: web\n                  identifier: web\n                  spec:\n                    shell: Sh\n                    command: exec /usr/bin/python3 -m http.server 8080 --bind 127.0.0.1\n              - step:\n                  type: Run\n                  name: probe\n                  identifier: probe\n                  spec:\n                    shell: Bash\n                    command: |\n                      {probe}\n                      for i in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.05; done\n                      (exec 3<>/dev/tcp/127.0.0.1/8080) && echo SERVICE-REACHED\n{http}"
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(serde_json::Value::String(yaml))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/net/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&s.token, &id).await;
    let (_, logs) = s.raw(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    assert_eq!(done["execution"]["status"], "Success", "{done} {logs}");
    assert!(!logs.contains("REACHED-"), "a host address was reachable: {logs}");
    for t in &targets {
        assert!(logs.contains(&format!("refused-{t}")), "{t}: {logs}");
    }
    assert!(logs.contains("SERVICE-REACHED"), "the stage's own service: {logs}");
    let nodes = done["nodes"].as_array().unwrap();
    let calls: Vec<&serde_json::Value> =
        nodes.iter().filter(|n| n["identifier"].as_str().is_some_and(|i| i.starts_with("call"))).collect();
    assert!(calls.len() >= 3, "{done}");
    for c in calls {
        let failure = c["failure"].as_str().unwrap_or_default();
        assert!(failure.contains("an address of this host"), "{c}");
    }
    drop(listener);
}

/// Finding 1 of issue 20: an agent token read from `/proc` claimed another project's task with tags it made
/// up, and a forged report recorded a step's outcome. Now: project B's admin registers B's own agent and,
/// holding its credential, her own token and the account admin's, tries every claim and report she can make
/// against project A's waiting task — all refused, and A's secret is in nothing she receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_one_project_cannot_take_or_speak_for_another_projects_task() {
    const SECRET: &str = "A-deploy-key-5521";
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--no-local-executor"]).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "b"}))).await;
    let mallory = s.user("mallory", "_project_admin", "b").await;
    // Project A (default/default): a secret and a step that uses it, waiting for an agent of A.
    s.ok(Method::POST, &format!("{P}/secrets"), Some(json!({"identifier": "deploy_key", "value": SECRET}))).await;
    let script = "'echo deploying with <+secrets.getValue(\"deploy_key\")>'";
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("deploy", &stage("s", script)))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/deploy/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let task = {
        let running = |v: &serde_json::Value| {
            v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["kind"] == "step" && n["status"] == "Running")
                .map(|n| n["id"].as_str().unwrap().to_string())
        };
        common::until("A's step to wait for an agent", std::time::Duration::from_secs(30), || async {
            running(&s.ok(Method::GET, &format!("/api/v1/executions/{id}"), None).await).is_some()
        })
        .await;
        running(&s.ok(Method::GET, &format!("/api/v1/executions/{id}"), None).await).unwrap()
    };
    let mut received = String::new();
    let mut call = async |token: &str, path: &str, body: serde_json::Value| {
        let (st, v) = s.req(Some(token), Method::POST, path, Some(&body)).await;
        received.push_str(&v.to_string());
        (st.as_u16(), v)
    };
    // Mallory may register B's own agent, never one of the account or of project A.
    let (st, v) = call(
        &mallory,
        "/api/v1/agents",
        json!({"name": "b-agent", "tags": ["linux"], "orgIdentifier": "default", "projectIdentifier": "b"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let b_credential = v["credential"].as_str().unwrap().to_string();
    for scope in [
        json!({}),
        json!({"orgIdentifier": "default"}),
        json!({"orgIdentifier": "default", "projectIdentifier": "default"}),
    ] {
        let mut body = json!({"name": "evil", "tags": ["linux"]});
        body.as_object_mut().unwrap().extend(scope.as_object().unwrap().clone());
        let (st, v) = call(&mallory, "/api/v1/agents", body).await;
        assert_eq!(st, 403, "{v}");
    }
    // A name Mallory took in B is not offered to the account's admin for a new credential (which would
    // hand the admin's machine to B's tasks).
    let (st, v) = call(&s.token, "/api/v1/agents", json!({"name": "b-agent", "tags": ["linux"]})).await;
    assert_eq!(st, 409, "{v}");
    assert!(v.to_string().contains("taken by an agent of another scope"), "{v}");
    assert!(!v.to_string().contains("agents credential"), "{v}");
    // With B's credential: the claim finds nothing of A, tags it was not given and another agent's name are
    // refused.
    let (st, v) = call(&b_credential, "/api/v1/agent/claim", json!({"wait_seconds": 1})).await;
    assert_eq!((st, v["claimed"].is_null(), v["agent"].as_str()), (200, true, Some("b-agent")), "{v}");
    let (st, v) = call(&b_credential, "/api/v1/agent/claim", json!({"tags": ["linux", "prod"]})).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = call(&b_credential, "/api/v1/agent/claim", json!({"name": "a-agent"})).await;
    assert_eq!(st, 400, "{v}");
    // Her own token and the account admin's do not open the agent protocol; the agent credential opens
    // nothing else.
    for token in [mallory.as_str(), s.token.as_str()] {
        let (st, v) = call(token, "/api/v1/agent/claim", json!({})).await;
        assert_eq!(st, 401, "{v}");
    }
    let (st, _) = s.req(Some(&b_credential), Method::GET, "/api/v1/agents", None).await;
    assert_eq!(st, 401);
    // Speaking for A's task without the lease of its claim: refused, nothing recorded.
    let forged = format!("pwl_{}", "0".repeat(64));
    let report =
        json!({"end": {"end": "exited", "detail": 0}, "outputs": {}, "response": null, "started_at": 0, "ended_at": 0});
    for (path, body) in [
        ("heartbeat", json!({"lease": forged})),
        ("output", json!({"lease": forged, "lines": [["stdout", "forged"]]})),
        ("report", json!({"lease": forged, "report": report})),
    ] {
        let (st, v) = call(&b_credential, &format!("/api/v1/agent/tasks/{task}/{path}"), body).await;
        assert_eq!(st, 409, "{path}: {v}");
    }
    // A's own agent takes the task and runs it; B's credential still cannot report for it.
    let a_credential = common::agent_credential_in(&s, "a-agent", "", "default", "default").await;
    let agent = common::Agent::start(dir.path(), &s.url, &a_credential, "a-agent", "");
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let (st, v) =
        call(&b_credential, &format!("/api/v1/agent/tasks/{task}/report"), json!({"lease": forged, "report": report}))
            .await;
    assert_eq!(st, 409, "{v}");
    let (_, logs) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    assert!(logs.to_string().contains("deploying with"), "{logs}");
    assert!(!logs.to_string().contains("forged"), "{logs}");
    drop(agent);
    // Nothing Mallory received holds A's secret, in any spelling.
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, SECRET);
    for spelling in [SECRET.to_string(), SECRET.to_uppercase(), SECRET.to_lowercase(), b64] {
        assert!(!received.contains(&spelling), "{spelling} in {received}");
    }
}

/// Finding 9 of issue 20: 125 failed logins spread over 25 addresses locked the user out everywhere, and
/// `password` was accepted. Now a clean address still logs in while the addresses that guessed are held
/// back, and weak passwords are refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_guess_locks_out_the_guessers_not_the_user_and_weak_passwords_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    let from = |last: u8| {
        let ip: std::net::IpAddr = format!("127.0.0.{last}").parse().unwrap();
        reqwest::Client::builder().local_address(ip).build().unwrap()
    };
    let login = |c: reqwest::Client, password: &'static str| {
        let url = format!("{}/api/v1/auth/login", s.url);
        async move {
            c.post(url)
                .json(&json!({"username": "admin", "password": password}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // 21 addresses guess five times each: 105 failures for the name, more than its limit of 100. Every
    // address gets its first guess; past the name's limit, an address that failed already is held back.
    for last in 2..23u8 {
        assert_eq!(login(from(last), "guess").await, 401, "the first guess from 127.0.0.{last}");
        for _ in 0..4 {
            assert!([401, 429].contains(&login(from(last), "guess").await));
        }
    }
    // Every guessing address is held back, even with the right password…
    assert_eq!(login(from(2), common::ADMIN_PASSWORD).await, 429);
    // …and one that failed once, past the name's limit, too; a clean address still logs in.
    assert_eq!(login(from(40), "guess").await, 401);
    assert_eq!(login(from(40), common::ADMIN_PASSWORD).await, 429);
    assert_eq!(login(from(41), common::ADMIN_PASSWORD).await, 200);
    // Weak passwords are refused, saying why; a passphrase is taken.
    for weak in ["password", "password-123", "12345678", "qwertyuiop", "Summer2024!"] {
        let (st, v) = s
            .req(Some(&s.token), Method::POST, "/api/v1/users", Some(&json!({"username": "weak", "password": weak})))
            .await;
        assert_eq!(st, 400, "{weak}: {v}");
        assert!(v.to_string().contains("too easy to guess"), "{weak}: {v}");
    }
    let body = json!({"username": "strong", "password": "amber-quiet-lantern-47"});
    let (st, v) = s.req(Some(&s.token), Method::POST, "/api/v1/users", Some(&body)).await;
    assert_eq!(st, 201, "{v}");
}

/// Finding 9 of issue 20: a 500 MB log line was stored whole. Now an execution stores at most the server's
/// `--max-log-bytes`, cut at a line with a marker saying so, and no line longer than 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executions_log_is_cut_at_its_quota_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--max-log-bytes", "20000"]).await;
    // One line of 300 kB, then 5000 short lines, in two steps of two stages.
    let flood = "'head -c 300000 /dev/zero | tr \"\\\\0\" x; echo; for i in $(seq 1 5000); do echo line-$i; done'";
    let yaml = pipeline("flood", &(stage("a", flood) + &stage("b", "echo after-the-flood")));
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(yaml)).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/flood/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap();
    let done = s.wait_end(&s.token, id).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    let mut stored = String::new();
    let mut after = 0;
    loop {
        let v = s.ok(Method::GET, &format!("/api/v1/executions/{id}/logs?after={after}"), None).await;
        let items = v["items"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        for c in &items {
            stored.push_str(c["data"].as_str().unwrap());
        }
        match v["next_cursor"].as_i64() {
            Some(n) if n > after => after = n,
            _ => break,
        }
    }
    assert!(stored.len() < 20_000 + 1_000, "{} bytes stored", stored.len());
    assert!(stored.contains("reached its limit of 20000 bytes"), "{stored}");
    assert_eq!(stored.matches("reached its limit").count(), 1);
    assert!(!stored.contains("line-5000") && !stored.contains("after-the-flood"), "nothing past the cut is stored");
    assert!(stored.lines().all(|l| l.len() < 64 * 1024 + 200), "no line is longer than the line limit");
}

/// Finding 8 of issue 20: a runtime input pasted into a script let an executor run code of its own (and print
/// a secret base64-encoded past the mask). `validate` and `plan` now say so, at the line, with the safe way:
/// every runtime input is also in the step's environment, where a value is only data.
#[test]
fn inputs_pasted_into_scripts_are_warned_about_and_given_as_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let pasted = "'echo pasted: <+pipeline.variables.tag>; echo \"read: $PIPEWRIGHT_INPUT_PIPELINE_VARIABLES_TAG\"'";
    let yaml = pipeline("release", &stage("s", pasted)).as_str().unwrap().replace(
        "  stages:\n",
        "  variables:\n    - name: tag\n      type: String\n      value: <+input>\n    - name: env\n      type: String\n      value: <+input>.allowedValues(dev,prod)\n  stages:\n",
    );
    let file = common::write(dir.path(), "release.yaml", &yaml);
    let state = dir.path().join("st");
    let out = common::pw(&state).arg("validate").arg(&file).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a warning, not an error: {said}");
    assert!(said.contains("release.yaml:") && said.contains("warning"), "{said}");
    assert!(said.contains("runtime input `pipeline.variables.tag` is pasted into the script"), "{said}");
    assert!(said.contains("$PIPEWRIGHT_INPUT_PIPELINE_VARIABLES_TAG"), "{said}");
    assert!(!said.contains("pipeline.variables.env"), "a constrained input is not warned about: {said}");
    // Run with a value that is code: pasted, it runs (as in Harness); read from the environment, it is data.
    let out = common::pw(&state)
        .args(["run", "--step-isolation", "none"])
        .arg(&file)
        .args(["--input", "pipeline.variables.tag=v1$(echo INJECTED)", "--input", "pipeline.variables.env=dev"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("pasted: v1INJECTED"), "{said}");
    assert!(said.contains("read: v1$(echo INJECTED)"), "{said}");
}

/// The boundary as one attack: a step of project B, on two servers and two agents over PostgreSQL, reads
/// every command line and environment it can, connects to both servers' ports and the database's on every
/// host address, and claims and reports with every token it finds. All of it fails; project A's step, run
/// meanwhile by A's own agent, succeeds; and A's secret appears nowhere in B's execution, in any case or
/// encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_another_project_reaches_nothing_of_a_on_two_servers_and_two_agents() {
    use base64::Engine as _;
    const SECRET: &str = "A-Deploy-Key-7390";
    let Some(db) = common::scratch_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let one = common::replica(&dir.path().join("one"), &db, "5", &["--no-local-executor"]).await;
    let two = common::replica(&dir.path().join("two"), &db, "5", &["--no-local-executor"]).await;
    one.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "b"}))).await;
    let a_cred = common::agent_credential_in(&one, "agent-a", "", "default", "default").await;
    let b_cred = common::agent_credential_in(&one, "agent-b", "", "default", "b").await;
    let _agents = [
        common::Agent::start(dir.path(), &one.url, &a_cred, "agent-a", ""),
        common::Agent::start(dir.path(), &two.url, &b_cred, "agent-b", ""),
    ];
    one.ok(Method::POST, &format!("{P}/secrets"), Some(json!({"identifier": "deploy_key", "value": SECRET}))).await;
    let a_script = "'echo deploying with <+secrets.getValue(\"deploy_key\")> | sha256sum; sleep 2'";
    one.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("deploy", &stage("s", a_script)))).await;
    // The attacker's step: every address and port of the host it can name, every token it can find.
    let ports: Vec<String> = [&one.url, &two.url]
        .iter()
        .map(|u| u.rsplit(':').next().unwrap().trim_end_matches('/').to_string())
        .chain(["5432".to_string()])
        .collect();
    let mut addrs = host_addresses();
    addrs.extend(["169.254.169.254".to_string(), "10.0.2.2".to_string()]);
    let attack = format!(
        "for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do tr '\\0' ' ' < $f 2>/dev/null; echo; done > seen; \
         cat seen; tokens=$(grep -o -E 'pw[a-z]_[A-Za-z0-9_-]+' seen | sort -u); echo tokens: $tokens; \
         for a in {addrs}; do for p in {ports}; do \
           (exec 3<>/dev/tcp/$a/$p) 2>/dev/null && echo REACHED-$a-$p; \
           for t in $tokens; do curl -s -m 2 -X POST -H \"Authorization: Bearer $t\" http://$a:$p/api/v1/agent/claim && echo CLAIMED-$a-$p; done; \
         done; done; echo attack-done",
        addrs = addrs.join(" "),
        ports = ports.join(" ")
    );
    let b_pipeline = pipeline("attack", &stage("s", &format!("'{}'", attack.replace('\'', "''"))))
        .as_str()
        .unwrap()
        .replace("projectIdentifier: default", "projectIdentifier: b");
    let bp = "/api/v1/orgs/default/projects/b";
    one.ok(Method::POST, &format!("{bp}/pipelines"), Some(serde_json::Value::String(b_pipeline))).await;
    let a_run = one.ok(Method::POST, &format!("{P}/pipelines/deploy/execute"), Some(json!({}))).await;
    let b_run = two.ok(Method::POST, &format!("{bp}/pipelines/attack/execute"), Some(json!({}))).await;
    let a_done = two.wait_end(&two.token, a_run["id"].as_str().unwrap()).await;
    assert_eq!(a_done["execution"]["status"], "Success", "{a_done}");
    let b_id = b_run["id"].as_str().unwrap();
    let b_done = one.wait_end(&one.token, b_id).await;
    let (_, logs) = one.raw(Some(&one.token), Method::GET, &format!("/api/v1/executions/{b_id}/logs"), None).await;
    assert!(logs.contains("attack-done"), "the attack did not run to its end: {b_done} {logs}");
    assert!(!logs.contains("REACHED-"), "{logs}");
    assert!(!logs.contains("CLAIMED-"), "{logs}");
    assert!(!logs.contains("pwa_") && !logs.contains("pwl_"), "a credential was readable: {logs}");
    let everything = format!("{logs}{b_done}");
    let spellings = [
        SECRET.to_string(),
        SECRET.to_lowercase(),
        SECRET.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(SECRET),
        SECRET.bytes().map(|b| format!("{b:02x}")).collect(),
    ];
    for s in spellings {
        assert!(!everything.contains(&s), "A's secret as {s} in B's execution");
    }
}
