//! The security suite: what a hostile or careless pipeline author or API client tries, with real processes
//! and a real SQLite state directory. Steps try to read the database and another execution's workspace, write
//! into the state directory and signal pipewright; each attempt must fail under the default isolation and
//! succeed with `--step-isolation none` (so the test can tell). Server findings (cut-off requests, secrets in
//! API answers, tokens outliving their principals, unbounded resources, enumeration) are covered by the
//! server tests below, each asserting the fixed behaviour.

use assert_cmd::Command;
use std::path::Path;

fn pw(state: &Path) -> Command {
    let mut c = Command::cargo_bin("pipewright").unwrap();
    c.env("PIPEWRIGHT_STATE_DIR", state).env_remove("PIPEWRIGHT_STEP_ISOLATION").env_remove("PIPEWRIGHT_SECRET_KEY");
    c
}

/// A one-step pipeline running `script` (Bash).
fn local_pipeline(id: &str, script: &str) -> String {
    let script: String = script.lines().map(|l| format!("                          {l}\n")).collect();
    format!(
        "pipeline:\n  name: {id}\n  identifier: {id}\n  stages:\n    - stage:\n        name: s\n        identifier: s\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: probe\n                  identifier: probe\n                  timeout: 30s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: |\n{script}"
    )
}

fn run_file(state: &Path, dir: &Path, name: &str, yaml: &str, extra: &[&str]) -> (bool, String, String) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out = pw(state).arg("run").arg(&file).args(extra).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a hostile step tries; each line prints `ALLOWED-…` when it got through.
fn attacks(state: &Path, other_workspace: &Path) -> String {
    format!(
        r#"head -c 16 {db} >/dev/null 2>&1 && echo ALLOWED-read-db || echo denied-read-db
cat {other}/marker.txt >/dev/null 2>&1 && echo ALLOWED-read-other-workspace || echo denied-read-other-workspace
ls {other} >/dev/null 2>&1 && echo ALLOWED-list-other-workspace || echo denied-list-other-workspace
( echo x > {state}/planted ) 2>/dev/null && echo ALLOWED-write-state || echo denied-write-state
( echo x >> {db} ) 2>/dev/null && echo ALLOWED-write-db || echo denied-write-db
parent=$(tr '\0' '\n' < /proc/1/cmdline 2>/dev/null | grep -A1 -x -- --parent | tail -n 1); kill -0 "${{parent:-$PPID}}" 2>/dev/null && echo ALLOWED-signal-pipewright || echo denied-signal-pipewright
( echo x > /tmp/pipewright-step-escape-$$ ) 2>/dev/null && {{ rm -f /tmp/pipewright-step-escape-$$; echo ALLOWED-write-tmp; }} || echo denied-write-tmp
echo mine > own.txt && cat own.txt
echo scratch > "$TMPDIR/scratch" && cat "$TMPDIR/scratch"
"#,
        db = state.join("pipewright.db").display(),
        other = other_workspace.display(),
        state = state.display(),
    )
}

#[test]
fn a_step_cannot_reach_the_state_directory_other_workspaces_or_pipewright() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // A first execution leaves a file in its workspace.
    let (ok, out, err) =
        run_file(&state, dir.path(), "first", &local_pipeline("first", "echo private > marker.txt\necho $PWD"), &[]);
    assert!(ok, "{out}{err}");
    let other =
        state.join("work").read_dir().unwrap().flatten().map(|e| e.path()).find(|p| p.join("marker.txt").exists());
    let other = other.expect("the first workspace");
    let (ok, out, err) = run_file(&state, dir.path(), "evil", &local_pipeline("evil", &attacks(&state, &other)), &[]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains("ALLOWED"), "{out}");
    for what in [
        "read-db",
        "read-other-workspace",
        "list-other-workspace",
        "write-state",
        "write-db",
        "signal-pipewright",
        "write-tmp",
    ] {
        assert!(out.contains(&format!("denied-{what}")), "{what}: {out}");
    }
    // The step still works in its own workspace and private temporary directory.
    assert!(out.contains("]  mine"), "{out}");
    assert!(out.contains("]  scratch"), "{out}");
    assert!(!state.join("planted").exists());
    // The state directory and the database are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert!(mode == 0o700 || mode == 0o711, "state directory mode {mode:o}");
    let db = std::fs::metadata(state.join("pipewright.db")).unwrap().permissions().mode() & 0o777;
    assert_eq!(db, 0o600);

    // Relaxed explicitly, the same attacks get through (and pipewright says so loudly): the test can fail.
    let (ok, out, err) = run_file(
        &state,
        dir.path(),
        "evil",
        &local_pipeline("evil", &attacks(&state, &other)),
        &["--step-isolation", "none"],
    );
    assert!(ok, "{out}{err}");
    assert!(err.contains("step isolation is OFF"), "{err}");
    assert!(out.contains("ALLOWED-read-db") && out.contains("ALLOWED-read-other-workspace"), "{out}");
    let _ = std::fs::remove_file(state.join("planted"));
}

#[test]
fn steps_run_as_the_step_user_when_pipewright_is_root() {
    if !nix::unistd::geteuid().is_root() {
        return; // Only root can switch users; the confinement itself is tested above for any user.
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (ok, out, err) = run_file(&state, dir.path(), "who", &local_pipeline("who", "id -un\nid -u"), &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("]  nobody"), "{out}");
    let (ok, out, err) =
        run_file(&state, dir.path(), "who", &local_pipeline("who", "id -u"), &["--step-user", "no_such_user_here"]);
    assert!(!ok, "{out}");
    assert!(err.contains("no user `no_such_user_here`"), "{err}");
    let (ok, out, err) = run_file(&state, dir.path(), "who", &local_pipeline("who", "id -u"), &["--step-user", "root"]);
    assert!(!ok, "{out}");
    assert!(err.contains("unprivileged"), "{err}");
    // A state directory the step user cannot pass through to (below a 0700 directory): its workspaces go
    // where it can, and the step still runs.
    use std::os::unix::fs::PermissionsExt;
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = private.join("state");
    let (ok, out, err) = run_file(&state, dir.path(), "who", &local_pipeline("who", "id -un\necho \"$PWD\""), &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("]  nobody") && out.contains("/var/lib/pipewright-steps/"), "{out}");
    let _ = std::fs::remove_dir_all(engine::sandbox::fallback_work_root(&std::path::absolute(&state).unwrap()));
}

#[test]
fn an_output_variable_cannot_be_turned_into_a_link_to_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // The step replaces its captured output with a link to the database; pipewright must not follow it.
    let yaml = local_pipeline("links", "secret=placeholder\ntrap 'ln -sf STATE/pipewright.db \"$__pw_out/secret\"' EXIT")
        .replace("STATE", &state.display().to_string())
        .replace(
            "                    source:",
            "                    outputVariables:\n                      - name: secret\n                        type: String\n                        value: secret\n                    source:",
        );
    let (ok, out, err) = run_file(&state, dir.path(), "links", &yaml, &["--output", "json"]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains("SQLite format"), "{out}");
}

mod common;
use common::{Server, files, pipeline, stage};
use reqwest::Method;
use serde_json::{Value, json};

const P: &str = "/api/v1/orgs/default/projects/default";

/// The secret value the leak tests look for everywhere.
const SECRET: &str = "S3cr3t-Value-7f1c9a";

fn leaky_pipeline() -> Value {
    pipeline(
        "leak",
        "    - stage:\n        name: s\n        identifier: s\n        type: Custom\n        variables:\n          - name: dbpw\n            type: Secret\n            value: db_password\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: echo\n                  identifier: echo\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: |\n                          echo \"stage variable: <+stage.variables.dbpw>\"\n                          copy='<+secrets.getValue(\"db_password\")>'\n                          echo \"copy: $copy\"\n                          echo \"upper: ${copy^^} lower: ${copy,,}\"\n                          printf '%s' \"$copy\" | base64\n                          printf 'Authorization: Bearer %s' \"$copy\" | base64 -w0; echo\n                    outputVariables:\n                      - name: copy\n                        type: String\n                        value: copy\n              - step:\n                  type: Http\n                  name: call\n                  identifier: call\n                  timeout: 5s\n                  spec:\n                    url: http://127.0.0.1:9/login/<+secrets.getValue(\"db_password\")>\n                    method: GET\n",
    )
}

fn secret_variable_pipeline() -> Value {
    Value::String(format!(
        "pipeline:\n  name: leak2\n  identifier: leak2\n  projectIdentifier: default\n  orgIdentifier: default\n  variables:\n    - name: pw\n      type: Secret\n      value: <+secrets.getValue(\"db_password\")>\n  stages:\n{}",
        stage("a", "echo hi")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_value_never_leaves_masking_and_is_encrypted_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("st");
    let mut s = Server::start(&state, &[]).await;
    s.ok(Method::POST, &format!("{P}/secrets"), Some(json!({"identifier": "db_password", "value": SECRET}))).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(leaky_pipeline())).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(secret_variable_pipeline())).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/leak/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    let done = s.wait_end(&s.token, &id).await;
    assert_eq!(done["execution"]["status"], "Failed", "the Http step fails: {done}");
    let e2 = s.ok(Method::POST, &format!("{P}/pipelines/leak2/execute"), Some(json!({}))).await;
    let id2 = e2["id"].as_str().unwrap().to_string();
    let done2 = s.wait_end(&s.token, &id2).await;
    assert_eq!(done2["execution"]["status"], "Failed", "{done2}");

    // Everything the API answers about both executions: the secret is masked wherever it would surface.
    let mut seen = String::new();
    for x in [&id, &id2] {
        for path in ["", "/nodes", "/transitions", "/logs", "/logs/stream"] {
            let (st, text) = s.raw(Some(&s.token), Method::GET, &format!("/api/v1/executions/{x}{path}"), None).await;
            assert!(st.is_success(), "{path}: {st} {text}");
            seen.push_str(&text);
        }
    }
    for path in [format!("{P}/secrets"), format!("{P}/secrets/db_password"), "/api/v1/audit".to_string()] {
        seen.push_str(&s.raw(Some(&s.token), Method::GET, &path, None).await.1);
    }
    assert!(!seen.contains(SECRET), "the secret value was returned by the API");
    use base64::Engine as _;
    for spelled in
        [SECRET.to_uppercase(), SECRET.to_lowercase(), base64::engine::general_purpose::STANDARD.encode(SECRET)]
    {
        assert!(!seen.contains(&spelled), "the secret value was returned by the API as {spelled}: {seen}");
    }
    // A Secret variable whose value resolves to the secret's value is refused by the variable's name.
    assert!(
        seen.contains("pipeline variable `pw`: is a Secret variable whose value resolves to a secret's value"),
        "{seen}"
    );
    assert!(seen.contains("upper: ************** lower: **************"), "{seen}");
    // …while the step itself had it: masked in the logs, the output masked, the failing URL masked.
    assert!(seen.contains("stage variable: **************"), "{seen}");
    assert!(seen.contains("copy: **************"), "{seen}");
    assert!(seen.contains("/login/**************"), "{seen}");
    assert!(seen.contains("\"copy\":\"**************\""), "{seen}");

    // At rest: not one file of the state directory holds the value in clear.
    s.stop();
    for f in files(&state) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret value in clear",
            f.display()
        );
    }
    let key = std::fs::metadata(state.join("secret.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // Rotating the key: every value sealed again, the old key gone, the secret still usable.
    let old_key = std::fs::read_to_string(state.join("secret.key")).unwrap();
    let out = assert_cmd::Command::cargo_bin("pipewright")
        .unwrap()
        .args(["secret", "rotate-key", "--state-dir"])
        .arg(&state)
        .env_remove("PIPEWRIGHT_SECRET_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sealed 1 secret value"));
    let new_key = std::fs::read_to_string(state.join("secret.key")).unwrap();
    assert_ne!(old_key, new_key);
    let s = Server::start(&state, &[]).await;
    s.ok(
        Method::PUT,
        &format!("{P}/pipelines/leak2"),
        Some(pipeline("leak2", &stage("a", "echo \"<+secrets.getValue('db_password')>\" | wc -c"))),
    )
    .await;
    let e3 = s.ok(Method::POST, &format!("{P}/pipelines/leak2/execute"), Some(json!({}))).await;
    let done3 = s.wait_end(&s.token, e3["id"].as_str().unwrap()).await;
    assert_eq!(done3["execution"]["status"], "Success", "{done3}");
    let (_, logs) = s
        .raw(Some(&s.token), Method::GET, &format!("/api/v1/executions/{}/logs", e3["id"].as_str().unwrap()), None)
        .await;
    assert!(logs.contains(&format!("{}", SECRET.len() + 1)), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_requests_never_wedge_the_server_or_strand_an_execution() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("burst", &stage("a", "true")))).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let body = "{}";
    let request = format!(
        "POST {P}/pipelines/burst/execute HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        s.token,
        body.len()
    );
    // 300 requests whose connections are reset 0–4 ms after they are sent (SO_LINGER 0 makes close send RST).
    let burst = tokio::task::spawn_blocking(move || {
        let mut handles = Vec::new();
        for batch in 0..30 {
            let (addr, request) = (addr.clone(), request.clone());
            handles.push(std::thread::spawn(move || {
                for i in 0..10u64 {
                    let Ok(mut c) = std::net::TcpStream::connect(&addr) else { continue };
                    let _ = c.write_all(request.as_bytes());
                    std::thread::sleep(std::time::Duration::from_micros(((batch * 10 + i) * 397) % 4000));
                    let _ = nix::sys::socket::setsockopt(
                        &c,
                        nix::sys::socket::sockopt::Linger,
                        &nix::libc::linger { l_onoff: 1, l_linger: 0 },
                    );
                    drop(c);
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
    });
    burst.await.unwrap();
    // The server still writes: login, a pipeline save, an execution.
    let t = s.login("admin", common::ADMIN_PASSWORD).await;
    s.ok(Method::PUT, &format!("{P}/pipelines/burst"), Some(pipeline("burst", &stage("a", "echo again")))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/burst/execute"), Some(json!({}))).await;
    assert_eq!(s.wait_end(&t, e["id"].as_str().unwrap()).await["execution"]["status"], "Success");
    // Every execution that was recorded ends: none is left Queued without an owner.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = format!(
                "{P}/executions?pipeline=burst&limit=200{}",
                cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default()
            );
            let page = s.ok(Method::GET, &path, None).await;
            all.extend(page["items"].as_array().unwrap().clone());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let open: Vec<&Value> =
            all.iter().filter(|e| !["Success", "Failed", "Aborted"].contains(&e["status"].as_str().unwrap())).collect();
        if open.is_empty() {
            assert!(all.iter().all(|e| e["status"] == "Success"), "{all:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{} executions never ended: {:?}", open.len(), open.first());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_ends_an_execution_whatever_state_it_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("slow", &stage("a", "sleep 30")))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/slow/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap();
    s.ok(Method::POST, &format!("/api/v1/executions/{id}/abort"), None).await;
    assert_eq!(s.wait_end(&s.token, id).await["execution"]["status"], "Aborted");
    let (st, _) = s.req(Some(&s.token), Method::POST, &format!("/api/v1/executions/{id}/abort"), None).await;
    assert_eq!(st, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_die_with_their_principals_and_never_outlive_the_token_that_made_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "tmp"}))).await;
    s.ok(
        Method::POST,
        "/api/v1/service-accounts",
        Some(json!({"identifier": "deployer", "org": "default", "project": "tmp"})),
    )
    .await;
    s.ok(Method::POST, "/api/v1/role-bindings", Some(json!({"principal": {"kind": "service_account", "id": "deployer"}, "role": "_project_admin", "resource_group": "_all_project_level_resources", "org": "default", "project": "tmp"}))).await;
    let t = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci", "service_account": "deployer"}))).await;
    let sa = t["token"].as_str().unwrap().to_string();
    assert_eq!(s.req(Some(&sa), Method::GET, "/api/v1/orgs/default/projects/tmp/pipelines", None).await.0, 200);
    // Deleting the project revokes its service accounts' tokens…
    s.ok(Method::DELETE, "/api/v1/orgs/default/projects/tmp", None).await;
    let (st, v) = s.req(Some(&sa), Method::GET, "/api/v1/auth/whoami", None).await;
    assert_eq!(st, 401, "{v}");
    // …and a new service account with the same identifier, elsewhere, is another principal: the old token
    // does not attach to it.
    s.ok(
        Method::POST,
        "/api/v1/service-accounts",
        Some(json!({"identifier": "deployer", "org": "default", "project": "default"})),
    )
    .await;
    s.ok(Method::POST, "/api/v1/role-bindings", Some(json!({"principal": {"kind": "service_account", "id": "deployer"}, "role": "_project_admin", "resource_group": "_all_project_level_resources", "org": "default", "project": "default"}))).await;
    assert_eq!(s.req(Some(&sa), Method::GET, &format!("{P}/pipelines"), None).await.0, 401);
    // A user deleted and created again: the old token is dead too.
    let alice = s.user("alice", "_project_viewer", "default").await;
    s.ok(Method::DELETE, "/api/v1/users/alice", None).await;
    s.user("alice", "_project_viewer", "default").await;
    assert_eq!(s.req(Some(&alice), Method::GET, &format!("{P}/pipelines"), None).await.0, 401);

    // A token may not make a token that outlives it.
    let short = s.ok(Method::POST, "/api/v1/tokens", Some(json!({"name": "short", "expires_in_seconds": 600}))).await;
    let short_t = short["token"].as_str().unwrap();
    let (st, v) = s
        .req(
            Some(short_t),
            Method::POST,
            "/api/v1/tokens",
            Some(&json!({"name": "forever", "expires_in_seconds": 86400})),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("may not outlive it"), "{v}");
    let (st, v) = s.req(Some(short_t), Method::POST, "/api/v1/tokens", Some(&json!({"name": "inherits"}))).await;
    assert_eq!(st, 201, "{v}");
    assert!(v["expires_at"].as_i64().unwrap() <= short["expires_at"].as_i64().unwrap(), "{v} {short}");

    // The last Account Admin cannot be removed.
    let (st, v) = s.req(Some(&s.token), Method::DELETE, "/api/v1/role-bindings/admin_account_admin", None).await;
    assert_eq!(st, 409, "{v}");
    let (st, _) = s.req(Some(&s.token), Method::DELETE, "/api/v1/users/admin", None).await;
    assert_eq!(st, 409);
    s.ok(Method::POST, "/api/v1/users", Some(json!({"username": "root2", "password": "amber-quiet-lantern-47"}))).await;
    s.ok(Method::POST, "/api/v1/role-bindings", Some(json!({"principal": {"kind": "user", "id": "root2"}, "role": "_account_admin", "resource_group": "_all_resources_including_child_scopes"}))).await;
    s.ok(Method::DELETE, "/api/v1/role-bindings/admin_account_admin", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_token_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("st");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(common::step_network_args())
        .arg("--state-dir")
        .arg(&state)
        .env_remove("PIPEWRIGHT_STEP_ISOLATION")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().strip_prefix("listening on ").unwrap().to_string();
    let boot = lines.next().unwrap().unwrap().split(": ").last().unwrap().to_string();
    let http = reqwest::Client::new();
    let who = http.get(format!("{url}/api/v1/auth/whoami")).bearer_auth(&boot).send().await.unwrap();
    assert_eq!(who.status(), 200);
    let made: Value = http
        .post(format!("{url}/api/v1/tokens"))
        .bearer_auth(&boot)
        .json(&json!({"name": "mine"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(made["expires_at"].is_null(), "the admin's own token may be permanent: {made}");
    let again = http.get(format!("{url}/api/v1/auth/whoami")).bearer_auth(&boot).send().await.unwrap();
    assert_eq!(again.status(), 401, "the bootstrap token was used once");
    let mine = http
        .get(format!("{url}/api/v1/auth/whoami"))
        .bearer_auth(made["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_project_takes_its_history_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "gone"}))).await;
    let yaml = Value::String(
        pipeline("p", &stage("a", "echo from-the-old-project"))
            .as_str()
            .unwrap()
            .replace("projectIdentifier: default", "projectIdentifier: gone"),
    );
    let yaml_new = yaml.as_str().unwrap().to_string();
    s.ok(Method::POST, "/api/v1/orgs/default/projects/gone/pipelines", Some(yaml)).await;
    let e = s.ok(Method::POST, "/api/v1/orgs/default/projects/gone/pipelines/p/execute", Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    s.wait_end(&s.token, &id).await;
    s.ok(Method::DELETE, "/api/v1/orgs/default/projects/gone", None).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "gone"}))).await;
    let h = s.ok(Method::GET, "/api/v1/orgs/default/projects/gone/executions", None).await;
    assert_eq!(h["items"].as_array().unwrap().len(), 0, "{h}");
    let (st, _) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}"), None).await;
    assert_eq!(st, 404);
    // The pipeline's old versions are gone: saved again, it starts at version 1.
    let again = Value::String(yaml_new.replace("from-the-old-project", "from-the-new-project"));
    let v = s.ok(Method::POST, "/api/v1/orgs/default/projects/gone/pipelines", Some(again)).await;
    assert_eq!(v["version"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_out_the_source_not_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    // An attacker on another loopback address guesses the admin's password five times.
    let attacker =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    for _ in 0..6 {
        let _ = attacker
            .post(format!("{}/api/v1/auth/login", s.url))
            .json(&json!({"username": "admin", "password": "guess"}))
            .send()
            .await
            .unwrap();
    }
    let r = attacker
        .post(format!("{}/api/v1/auth/login", s.url))
        .json(&json!({"username": "admin", "password": common::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the attacker's address is locked out");
    // The admin, from their own address, still logs in.
    s.login("admin", common::ADMIN_PASSWORD).await;
    // Overlong passwords are refused before hashing.
    let (st, _) = s
        .req(
            None,
            Method::POST,
            "/api/v1/auth/login",
            Some(&json!({"username": "admin", "password": "x".repeat(5000)})),
        )
        .await;
    assert_eq!(st, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_caller_may_not_see_cannot_be_enumerated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    s.ok(Method::POST, "/api/v1/orgs", Some(json!({"identifier": "hidden_org"}))).await;
    s.ok(Method::POST, "/api/v1/orgs/default/projects", Some(json!({"identifier": "elsewhere"}))).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("secret_pipeline", &stage("a", "true")))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/secret_pipeline/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    s.wait_end(&s.token, &id).await;
    let outsider = s.user("outsider", "_project_viewer", "elsewhere").await;
    // An existing execution of a project the caller cannot see answers as a missing one, without names.
    let (st, real) = s.raw(Some(&outsider), Method::GET, &format!("/api/v1/executions/{id}"), None).await;
    assert_eq!(st, 404, "{real}");
    assert!(!real.contains("secret_pipeline") && !real.contains("default"), "{real}");
    let fake = format!("{}ZZZZ", &id[..22]);
    let (st2, missing) = s.raw(Some(&outsider), Method::GET, &format!("/api/v1/executions/{fake}"), None).await;
    assert_eq!(st2, 404);
    assert_eq!(real.replace(&id, "ID"), missing.replace(&fake, "ID"));
    // Prefixes match only what the caller may see.
    for n in [1, 4, 10] {
        let (st, body) = s.raw(Some(&outsider), Method::GET, &format!("/api/v1/executions/{}", &id[..n]), None).await;
        assert_eq!(st, 404, "prefix of {n}: {body}");
    }
    let (st, _) = s.raw(Some(&s.token), Method::GET, &format!("/api/v1/executions/{}", &id[..12]), None).await;
    assert_eq!(st, 200, "the admin may use a prefix");
    // An organization the caller cannot see answers the same whether it exists or not.
    let (a, x) = s.raw(Some(&outsider), Method::GET, "/api/v1/orgs/hidden_org/projects", None).await;
    let (b, y) = s.raw(Some(&outsider), Method::GET, "/api/v1/orgs/no_such_org/projects", None).await;
    assert_eq!(a, b);
    assert_eq!(x.replace("hidden_org", "X"), y.replace("no_such_org", "X"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_do_not_grow_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    for i in 0..300 {
        let m = Method::from_bytes(format!("BOGUS{i}").as_bytes()).unwrap();
        let _ = s.http.request(m, format!("{}/healthz", s.url)).send().await.unwrap();
    }
    let text = s.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("BOGUS"), "made-up methods became labels");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.len() < 64 * 1024, "metrics grew to {} bytes", text.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_connection_floods_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--header-timeout", "1", "--max-connections-per-ip", "8"]).await;
    let addr: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    // Slowloris: a request head that never ends is closed after the header timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the slow connection was not closed");
    // A flood of silent connections — from the very address the next client uses — cannot keep it out: at the
    // caps, the oldest silent connections are closed to make room, and at most the cap stays open.
    let mut held = Vec::new();
    for _ in 0..300 {
        if let Ok(c) = tokio::net::TcpStream::connect(addr).await {
            held.push(c);
        }
    }
    // Closing is asynchronous: look until the evicted ones are closed (or give up after a few seconds).
    let mut open: Vec<bool> = vec![true; held.len()];
    let mut still_open = held.len();
    for _ in 0..50 {
        for (c, o) in held.iter_mut().zip(open.iter_mut()) {
            let mut b = [0u8; 1];
            if *o && let Ok(Ok(0)) = tokio::time::timeout(std::time::Duration::from_millis(5), c.read(&mut b)).await {
                *o = false;
            }
        }
        still_open = open.iter().filter(|o| **o).count();
        if still_open <= 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(still_open <= 8, "{still_open} silent connections from one address are still open");
    let r = s.http.get(format!("{}/healthz", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_pipelines_streams_and_pages_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        Server::start(&dir.path().join("st"), &["--max-pipeline-bytes", "20000", "--max-streams-per-user", "2"]).await;
    // One 3 MB line without a newline is stored as lines of at most 64 KiB, none lost.
    s.ok(
        Method::POST,
        &format!("{P}/pipelines"),
        Some(pipeline("big", &stage("a", "yes a | tr -d '\\n' | head -c 3000000"))),
    )
    .await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/big/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_end(&s.token, &id).await["execution"]["status"], "Success");
    let mut total = 0;
    let mut longest = 0;
    let mut after = 0i64;
    let mut pages = 0;
    loop {
        let (st, page) = s
            .raw(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs?after={after}&limit=1000"), None)
            .await;
        assert_eq!(st, 200);
        assert!(page.len() < 6 * 1024 * 1024, "a log page of {} bytes", page.len());
        let page: Value = serde_json::from_str(&page).unwrap();
        pages += 1;
        for c in page["items"].as_array().unwrap() {
            for l in c["data"].as_str().unwrap().lines() {
                let text = l.splitn(3, '\t').nth(2).unwrap_or_default();
                total += text.matches('a').count();
                longest = longest.max(text.len());
            }
        }
        match page["next_cursor"].as_i64() {
            Some(c) => after = c,
            None => break,
        }
    }
    assert_eq!(total, 3_000_000);
    assert!(longest <= 64 * 1024, "a line of {longest} bytes");
    assert!(pages >= 1);
    // A pipeline over --max-pipeline-bytes is refused with 413, saved or planned.
    let huge = pipeline("huge", &stage("a", &format!("echo {}", "x".repeat(30_000))));
    let (st, v) = s.req(Some(&s.token), Method::POST, &format!("{P}/pipelines"), Some(&huge)).await;
    assert_eq!(st, 413, "{v}");
    let (st, _) = s
        .req(
            Some(&s.token),
            Method::POST,
            &format!("{P}/pipelines/big/plan"),
            Some(&json!({"pipeline_yaml": huge.as_str().unwrap()})),
        )
        .await;
    assert_eq!(st, 413);
    // Live-log streams per user are capped: a third one gets 429, and a closed one frees its slot.
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("waits", &stage("a", "sleep 20")))).await;
    let w = s.ok(Method::POST, &format!("{P}/pipelines/waits/execute"), Some(json!({}))).await;
    let wid = w["id"].as_str().unwrap().to_string();
    let url = format!("{}/api/v1/executions/{wid}/logs/stream", s.url);
    let a = s.http.get(&url).bearer_auth(&s.token).send().await.unwrap();
    let b = s.http.get(&url).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let c = s.http.get(&url).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(c.status(), 429);
    drop(a);
    let mut ok = false;
    for _ in 0..100 {
        let d = s.http.get(&url).bearer_auth(&s.token).send().await.unwrap();
        if d.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "a closed stream's slot was not given back");
    s.ok(Method::POST, &format!("/api/v1/executions/{wid}/abort"), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_by_their_user_groups_and_not_by_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &[]).await;
    let alice = s.user("alice", "_pipeline_executor", "default").await;
    let bob = s.user("bob", "_pipeline_executor", "default").await;
    let carol = s.user("carol", "_pipeline_executor", "default").await;
    s.ok(
        Method::POST,
        "/api/v1/user-groups",
        Some(json!({"identifier": "release_managers", "users": ["alice", "carol"], "org": "default", "project": "default"})),
    )
    .await;
    let gate = "    - stage:\n        name: gate\n        identifier: gate\n        type: Approval\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: HarnessApproval\n                  name: sign off\n                  identifier: sign_off\n                  timeout: 1m\n                  spec:\n                    approvalMessage: ship it?\n                    approvers:\n                      userGroups: [release_managers]\n                      minimumCount: 1\n                      disallowPipelineExecutor: true\n";
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("gated", gate))).await;
    let (st, e) = s.req(Some(&alice), Method::POST, &format!("{P}/pipelines/gated/execute"), Some(&json!({}))).await;
    assert_eq!(st, 201, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, n) = s.req(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/nodes"), None).await;
        if n.as_array().is_some_and(|n| n.iter().any(|n| n["status"] == "ApprovalWaiting")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the approval never waited");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let approve = format!("/api/v1/executions/{id}/approve");
    // The executor is in the group, but may not approve their own run: answered and audited as not counted.
    let (st, v) = s.req(Some(&alice), Method::POST, &approve, Some(&json!({}))).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("not counted"), "{v}");
    // Someone outside the group may not decide at all.
    let (st, v) = s.req(Some(&bob), Method::POST, &approve, Some(&json!({}))).await;
    assert_eq!(st, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("release_managers"), "{v}");
    let (st, _) = s.req(Some(&bob), Method::POST, &format!("/api/v1/executions/{id}/reject"), Some(&json!({}))).await;
    assert_eq!(st, 403);
    // A member who did not run it approves.
    let (st, v) = s.req(Some(&carol), Method::POST, &approve, Some(&json!({"comment": "ok"}))).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.wait_end(&s.token, &id).await["execution"]["status"], "Success");
    let audit = s.ok(Method::GET, "/api/v1/audit?principal=alice", None).await;
    assert!(audit["items"].as_array().unwrap().iter().any(|a| a["action"] == "approve_not_counted"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_on_the_server_cannot_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("st");
    let s = Server::start(&state, &[]).await;
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("first", &stage("a", "echo private > marker.txt"))))
        .await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/first/execute"), Some(json!({}))).await;
    s.wait_end(&s.token, e["id"].as_str().unwrap()).await;
    let other = state.join("work").join(e["id"].as_str().unwrap());
    assert!(other.join("marker.txt").exists());
    let script: String = attacks(&state, &other).lines().map(|l| format!("                          {l}\n")).collect();
    let yaml = format!(
        "    - stage:\n        name: a\n        identifier: a\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: |\n{script}"
    );
    s.ok(Method::POST, &format!("{P}/pipelines"), Some(pipeline("evil", &yaml))).await;
    let e = s.ok(Method::POST, &format!("{P}/pipelines/evil/execute"), Some(json!({}))).await;
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(s.wait_end(&s.token, &id).await["execution"]["status"], "Success");
    let (_, logs) = s.raw(Some(&s.token), Method::GET, &format!("/api/v1/executions/{id}/logs"), None).await;
    assert!(!logs.contains("ALLOWED"), "{logs}");
    for what in ["read-db", "read-other-workspace", "write-state", "write-db", "signal-pipewright"] {
        assert!(logs.contains(&format!("denied-{what}")), "{what}: {logs}");
    }
    // The server is unharmed.
    assert_eq!(s.http.get(format!("{}/healthz", s.url)).send().await.unwrap().status(), 200);
}
