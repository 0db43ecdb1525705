//! A `pipewright serve` process for tests: a random loopback port, a temporary state directory, the `admin`
//! user with a known password, and helpers for JSON requests; and the CLI helpers of the repository tests
//! (`pw`, `write`, `log_text`).

#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin's password in these tests.
pub const ADMIN_PASSWORD: &str = "correct-horse-battery";

/// A running server.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub state: PathBuf,
    pub http: reqwest::Client,
    pub extra: Vec<String>,
    pub envs: Vec<(String, String)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this machine can give steps an isolated network (root, `slirp4netns`, `ip`). Without it, servers
/// and agents in these tests run their steps with `--step-network none` (`host` without root) and the tests of the isolated network
/// say so and pass — except under `CI`, where they fail.
pub fn isolated_network() -> bool {
    let have = |p: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    let ok = nix::unistd::geteuid().is_root() && have("slirp4netns") && have("ip");
    assert!(ok || std::env::var_os("CI").is_none(), "CI needs root, slirp4netns and ip for the step network");
    ok
}

/// The step network flags for a test server or agent: none when the default (`isolated`) works here.
pub fn step_network_args() -> Vec<String> {
    if isolated_network() {
        return vec![];
    }
    // The stage namespaces of `none` need root too; without it only the host's network is left.
    let mode = if nix::unistd::geteuid().is_root() { "none" } else { "host" };
    eprintln!("note: no slirp4netns, ip or root here: test servers and agents run steps with --step-network {mode}");
    vec!["--step-network".into(), mode.into()]
}

/// The directory of test directory `dir` where a test puts the files that release or steer its steps
/// (`<dir>/gates`, readable by the step user): steps see only the paths they are given, and the servers
/// (state directories in `dir`) and agents of these tests give them this one (`PIPEWRIGHT_STEP_READ_PATH`).
pub fn gates(dir: &Path) -> PathBuf {
    let gates = dir.join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gates, std::fs::Permissions::from_mode(0o755)).unwrap();
    gates
}

fn spawn(state: &Path, extra: &[String], envs: &[(String, String)]) -> (Child, String) {
    // Unconfined steps (`--step-isolation none`) take no step network or read paths.
    let unconfined = extra.windows(2).any(|w| w[0] == "--step-isolation" && w[1] == "none");
    let pw = state.with_extension("admin-password");
    std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state)
        .arg("--admin-password-file")
        .arg(&pw)
        .args(if unconfined { vec![] } else { step_network_args() })
        .args(extra)
        .envs((!unconfined).then(|| ("PIPEWRIGHT_STEP_READ_PATH", gates(state.parent().unwrap_or(state)))))
        .env("RUST_LOG", "warn")
        .env_remove("PIPEWRIGHT_STEP_ISOLATION")
        .env_remove("PIPEWRIGHT_STEP_NETWORK")
        .env_remove("PIPEWRIGHT_SECRET_KEY")
        .env_remove("PIPEWRIGHT_DATABASE_URL")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().strip_prefix("listening on ").unwrap().to_string();
    (child, url)
}

impl Server {
    /// Start a server on a state directory, logged in as `admin`.
    pub async fn start(state: &Path, extra: &[&str]) -> Server {
        Server::start_env(state, extra, &[]).await
    }

    /// Start a server with environment variables set, logged in as `admin`.
    pub async fn start_env(state: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, url) = spawn(state, &extra, &envs);
        let mut s = Server {
            child,
            url,
            token: String::new(),
            state: state.to_path_buf(),
            http: reqwest::Client::new(),
            extra,
            envs,
        };
        s.token = s.login("admin", ADMIN_PASSWORD).await;
        s
    }

    /// Stop the server (SIGTERM) and wait for it.
    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
    }

    /// A token for a user.
    pub async fn login(&self, user: &str, password: &str) -> String {
        let (st, v) = self
            .req(
                None,
                Method::POST,
                "/api/v1/auth/login",
                Some(&serde_json::json!({"username": user, "password": password})),
            )
            .await;
        assert_eq!(st, 200, "login {user}: {v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// A JSON request; returns the status and the body (Null when empty or not JSON).
    pub async fn req(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let (st, text) = self.raw(token, method, path, body).await;
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request; returns the status and the body text.
    pub async fn raw(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, String) {
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
        let st = resp.status();
        (st, resp.text().await.unwrap_or_default())
    }

    /// As admin, expecting success.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (st, v) = self.req(Some(&self.token), method.clone(), path, body.as_ref()).await;
        assert!(st.is_success(), "{method} {path}: {st} {v}");
        v
    }

    /// Wait until an execution ends; returns `GET /executions/{id}`.
    pub async fn wait_end(&self, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, v) = self.req(Some(token), Method::GET, &format!("/api/v1/executions/{id}"), None).await;
            let st = v["execution"]["status"].as_str().unwrap_or_default().to_string();
            if ["Success", "Failed", "Aborted", "Expired", "ApprovalRejected"].contains(&st.as_str()) {
                return v;
            }
            assert!(Instant::now() < deadline, "execution {id} did not end: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Create a user with a role in a project; returns their token.
    pub async fn user(&self, name: &str, role: &str, project: &str) -> String {
        self.ok(
            Method::POST,
            "/api/v1/users",
            Some(serde_json::json!({"username": name, "password": "amber-quiet-lantern-47"})),
        )
        .await;
        self.ok(
            Method::POST,
            "/api/v1/role-bindings",
            Some(serde_json::json!({"principal": {"kind": "user", "id": name}, "role": role,
                "resource_group": "_all_project_level_resources", "org": "default", "project": project})),
        )
        .await;
        self.login(name, "amber-quiet-lantern-47").await
    }
}

/// A pipeline in the default project with the given stages (YAML text, already indented).
pub fn pipeline(id: &str, stages: &str) -> Value {
    Value::String(format!(
        "pipeline:\n  name: {id}\n  identifier: {id}\n  projectIdentifier: default\n  orgIdentifier: default\n  allowStageExecutions: true\n  stages:\n{stages}"
    ))
}

/// A Custom stage with one Bash step running `script` (one line).
pub fn stage(id: &str, script: &str) -> String {
    format!(
        "    - stage:\n        name: {id}\n        identifier: {id}\n        type: Custom\n        spec:\n          execution:\n            steps:\n              - step:\n                  type: ShellScript\n                  name: s\n                  identifier: s\n                  spec:\n                    shell: Bash\n                    source:\n                      type: Inline\n                      spec:\n                        script: {script}\n"
    )
}

/// Every file below `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// `pipewright` with its state in `state`, never talking to a server the environment names.
pub fn pw(state: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("pipewright").unwrap();
    c.env("PIPEWRIGHT_STATE_DIR", state).env_remove("PIPEWRIGHT_SERVER").env_remove("PIPEWRIGHT_TOKEN");
    c
}

/// Write `text` to `dir/name`, creating the folders on the way.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, text).unwrap();
    f
}

/// The stored log lines of execution `id`.
pub fn log_text(state: &Path, id: &str) -> String {
    String::from_utf8(pw(state).args(["logs", id]).assert().success().get_output().stdout.clone()).unwrap()
}

/// The secret key every server of a scale-out test shares.
pub const SHARED_KEY: &str = "7d2c0b5f9a8e41d3b6c2f0e9a7d5c3b1e0f9a8d7c6b5a4f3e2d1c0b9a8f7e6d5";

/// A fresh PostgreSQL database for one test, dropped after it; None (the test is skipped, saying so) where no
/// PostgreSQL answers outside CI. Under CI a missing PostgreSQL fails the test.
pub async fn scratch_database() -> Option<store::Scratch> {
    let admin = store::Scratch::admin_url();
    match store::Scratch::create(&admin).await {
        Ok(db) => Some(db),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: no PostgreSQL for this test ({e})");
            None
        }
        Err(e) => panic!("this test needs PostgreSQL under CI: {e}"),
    }
}

/// A server on the database `db` (given in the environment, as a URL with a password should be) with its own
/// state directory (its work directories), the shared key and a lease of `lease` seconds; `extra` flags on top.
pub async fn replica(state: &Path, db: &store::Scratch, lease: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--lease-seconds", lease];
    args.extend_from_slice(extra);
    Server::start_env(state, &args, &[("PIPEWRIGHT_SECRET_KEY", SHARED_KEY), ("PIPEWRIGHT_DATABASE_URL", db.url())])
        .await
}

/// Wait (polling every 20 ms, up to `limit`) until `f` holds.
pub async fn until<F: std::future::Future<Output = bool>>(what: &str, limit: Duration, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Register agent `name` at the account with `tags` (comma-separated), as the test's admin; returns its
/// credential.
pub async fn agent_credential(s: &Server, name: &str, tags: &str) -> String {
    agent_credential_in(s, name, tags, "", "").await
}

/// Register agent `name` in a scope (`org` and `project` empty: the account) with `tags`; returns its
/// credential.
pub async fn agent_credential_in(s: &Server, name: &str, tags: &str, org: &str, project: &str) -> String {
    let tags: Vec<&str> = tags.split(',').filter(|t| !t.is_empty()).collect();
    let v = s
        .ok(
            Method::POST,
            "/api/v1/agents",
            Some(serde_json::json!({"name": name, "tags": tags, "orgIdentifier": org, "projectIdentifier": project})),
        )
        .await;
    v["credential"].as_str().unwrap().to_string()
}

/// A running `pipewright agent`.
pub struct Agent {
    pub child: Child,
    pub stderr: std::path::PathBuf,
}

impl Agent {
    /// Register agent `name` at the account with `tags` on `s` and start it on `url`.
    pub async fn register(s: &Server, dir: &Path, url: &str, name: &str, tags: &str) -> Agent {
        let credential = agent_credential(s, name, tags).await;
        Agent::start(dir, url, &credential, name, "")
    }

    /// An agent named `name` on `url`, its credential in `<dir>/<name>.token` (`--token-file`: never on its
    /// command line), its state in `<dir>/<name>`, its stderr in `<dir>/<name>.stderr`; `tags`, when not
    /// empty, narrows the tags it takes steps by.
    pub fn start(dir: &Path, url: &str, token: &str, name: &str, tags: &str) -> Agent {
        let stderr = dir.join(format!("{name}.stderr"));
        let token_file = dir.join(format!("{name}.token"));
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_pipewright"));
        c.args(["agent", "--server", url, "--name", name, "--concurrency", "4"])
            .args(step_network_args())
            .env("PIPEWRIGHT_STEP_READ_PATH", gates(dir))
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state-dir")
            .arg(dir.join(name))
            .env_remove("PIPEWRIGHT_STEP_ISOLATION")
            .env_remove("PIPEWRIGHT_STEP_NETWORK")
            .env_remove("PIPEWRIGHT_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if !tags.is_empty() {
            c.args(["--tags", tags]);
        }
        Agent { child: c.spawn().unwrap(), stderr }
    }

    pub fn said(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes of this machine whose command line holds `marker` (a step's own processes are in a PID
/// namespace of their own, so the tests look at them from outside).
pub fn processes_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// `text` with every line indented by `n` spaces.
pub fn indent(text: &str, n: usize) -> String {
    text.lines().map(|l| format!("{}{l}\n", " ".repeat(n))).collect()
}

/// Pipeline `fan` in the default project: stages `build` and `scan` side by side, then `publish`; each stage
/// runs two steps (`x`, `y`) side by side, each printing `RAN <execution> <stage>.<step>`.
pub fn fan_pipeline() -> Value {
    let stage = |id: &str| {
        let step = |s: &str| {
            format!(
                "- step:\n    type: ShellScript\n    name: {s}\n    identifier: {s}\n    spec:\n      shell: Bash\n      source:\n        type: Inline\n        spec:\n          script: echo \"RAN <+pipeline.executionId> {id}.{s}\"\n"
            )
        };
        format!(
            "- stage:\n    name: {id}\n    identifier: {id}\n    type: Custom\n    spec:\n      execution:\n        steps:\n          - parallel:\n{}{}",
            indent(&step("x"), 14),
            indent(&step("y"), 14)
        )
    };
    Value::String(format!(
        "pipeline:\n  name: fan\n  identifier: fan\n  projectIdentifier: default\n  orgIdentifier: default\n  stages:\n    - parallel:\n{}{}{}",
        indent(&stage("build"), 8),
        indent(&stage("scan"), 8),
        indent(&stage("publish"), 4),
    ))
}

/// The `<execution> <stage>.<step>` of every line a `fan` step printed, in a log's text.
pub fn fan_lines(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split("RAN ").nth(1)).map(String::from).collect()
}

/// A PostgreSQL server of the test's own (initdb in a temporary directory, a free port), so the test may
/// stop and start it. Run as the `postgres` user when the test runs as root (initdb refuses root).
pub struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
}

impl OwnPostgres {
    fn cmd(&self, program: &str) -> std::process::Command {
        let exe = self.bin.join(program);
        if nix::unistd::geteuid().is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Initialise and start one, or None (skip) where PostgreSQL's programs are not installed outside CI.
    pub fn start() -> Option<OwnPostgres> {
        let bin = std::process::Command::new("pg_config").arg("--bindir").output().ok().filter(|o| o.status.success());
        let Some(bin) = bin else {
            assert!(std::env::var_os("CI").is_none(), "the database restart test needs PostgreSQL's programs under CI");
            eprintln!("SKIPPED: pg_config is not installed");
            return None;
        };
        let bin = std::path::PathBuf::from(String::from_utf8_lossy(&bin.stdout).trim());
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = OwnPostgres { dir, port, bin };
        if nix::unistd::geteuid().is_root() {
            let uid = nix::unistd::User::from_name("postgres").unwrap().expect("a postgres user");
            nix::unistd::chown(pg.dir.path(), Some(uid.uid), Some(uid.gid)).unwrap();
        }
        let ok = pg
            .cmd("initdb")
            .args(["-U", "postgres", "--auth=trust", "-D"])
            .arg(pg.data())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "initdb failed");
        pg.ctl("start");
        Some(pg)
    }

    pub fn ctl(&self, action: &str) {
        self.ctl_with(action, "fast");
    }

    /// `pg_ctl ACTION` with a shutdown mode (`fast`, `immediate`: a crash, no checkpoint).
    pub fn ctl_with(&self, action: &str, mode: &str) {
        let mut c = self.cmd("pg_ctl");
        c.arg("-D").arg(self.data()).args(["-w", "-m", mode, "-l"]).arg(self.dir.path().join("log"));
        if action == "start" {
            c.arg("-o").arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            ));
        }
        let ok = c.arg(action).stdout(std::process::Stdio::null()).status().unwrap();
        assert!(ok.success(), "pg_ctl {action} failed");
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
