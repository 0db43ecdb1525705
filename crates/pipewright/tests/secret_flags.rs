//! Nothing secret on a command line, as real processes: an agent given its token with `--token-file` works and
//! its `/proc/<pid>/cmdline` does not hold the token; the CLI takes its token from a file or the environment
//! quietly; a token given as an argument still works, with one warning line; a database URL given as an
//! argument warns only when it carries a password; giving the value and the file both is refused; `--help`
//! shows only the file form.

mod common;
use common::{Agent, Server, agent_credential, pw, until};
use reqwest::Method;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN_WARNING: &str = "warning: --token on the command line can be read by every process on this machine; \
                             use --token-file FILE or PIPEWRIGHT_TOKEN";
const URL_WARNING: &str = "warning: --database-url on the command line can be read by every process on this \
                           machine; use --database-url-file FILE or PIPEWRIGHT_DATABASE_URL";

/// Whether the server has seen agent `name` (it has claimed with its credential, so it was accepted).
async fn listed(s: &Server, name: &str) -> bool {
    let v = s.ok(Method::GET, "/api/v1/agents", None).await;
    v["items"].as_array().is_some_and(|a| a.iter().any(|i| i["name"] == name && i["last_seen"].as_i64() > Some(0)))
}

/// The command line of a running process, its arguments joined by spaces.
fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).replace('\0', " ")
}

/// `pipewright ARGS` with its state in `state`; the exit code, stdout and stderr.
fn cli(state: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = pw(state).args(args).envs(envs.iter().copied()).env_remove("PIPEWRIGHT_DATABASE_URL").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_a_file_works_and_stays_off_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("st"), &["--no-local-executor"]).await;
    let token = agent_credential(&s, "quiet", "").await;

    // The agent, its token in a file: it connects and runs a step; its command line names the file only.
    let agent = Agent::start(dir.path(), &s.url, &token, "quiet", "");
    until("the agent to connect", Duration::from_secs(30), || listed(&s, "quiet")).await;
    let line = cmdline(agent.child.id());
    assert!(line.contains("--token-file") && !line.contains(&token), "{line}");
    let p = "/api/v1/orgs/default/projects/default";
    s.ok(Method::POST, &format!("{p}/pipelines"), Some(common::pipeline("ok", &common::stage("a", "echo hi")))).await;
    let e = s.ok(Method::POST, &format!("{p}/pipelines/ok/execute"), Some(serde_json::json!({}))).await;
    let done = s.wait_end(&s.token, e["id"].as_str().unwrap()).await;
    assert_eq!(done["execution"]["status"], "Success", "{done}");
    assert!(!agent.said().contains("warning:"), "{}", agent.said());

    // The agent, its token as an argument: it still connects, and said so once, at start.
    let token = agent_credential(&s, "loud", "").await;
    let stderr = dir.path().join("loud.stderr");
    let mut loud = Command::new(env!("CARGO_BIN_EXE_pipewright"))
        .args(["agent", "--server", &s.url, "--token", &token, "--name", "loud", "--state-dir"])
        .arg(dir.path().join("loud"))
        .env_remove("PIPEWRIGHT_TOKEN")
        .env_remove("PIPEWRIGHT_STEP_ISOLATION")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    until("the agent given --token to connect", Duration::from_secs(30), || listed(&s, "loud")).await;
    let said = std::fs::read_to_string(&stderr).unwrap();
    // (What the first agent was spared: the token, there for every process to read.)
    assert!(cmdline(loud.id()).contains(&token));
    let _ = loud.kill();
    let _ = loud.wait();
    assert_eq!(said.lines().next(), Some(TOKEN_WARNING), "{said}");
    assert_eq!(said.matches("warning:").count(), 1, "{said}");

    // The CLI: from a file or the environment quietly; as an argument with the warning; both refused.
    let state = dir.path().join("cli");
    let file = dir.path().join("cli.token");
    std::fs::write(&file, format!("{}\n", s.token)).unwrap();
    let file = file.to_str().unwrap();
    let (code, out, err) = cli(&state, &["history", "--server", &s.url, "--token-file", file], &[]);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{out}");
    let (code, out, err) = cli(&state, &["history", "--server", &s.url], &[("PIPEWRIGHT_TOKEN", &s.token)]);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{out}");
    // The file wins over the environment.
    let env = [("PIPEWRIGHT_TOKEN", "pw_wrong")];
    let (code, out, err) = cli(&state, &["history", "--server", &s.url, "--token-file", file], &env);
    assert_eq!((code, err.as_str()), (Some(0), ""), "{out}");
    let (code, out, err) = cli(&state, &["history", "--server", &s.url, "--token", &s.token], &env);
    assert_eq!((code, err.as_str()), (Some(0), format!("{TOKEN_WARNING}\n").as_str()), "{out}");
    let (code, _, err) = cli(&state, &["history", "--server", &s.url, "--token", &s.token, "--token-file", file], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--token and --token-file both give the value"), "{err}");
}

#[test]
fn a_database_url_warns_only_with_a_password_and_help_shows_only_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // `--server` with a database URL is refused after the flags are read: no database is reached.
    let server = ["history", "--server", "http://127.0.0.1:9"];
    fn with<'a>(server: &[&'a str], url: &'a str) -> Vec<&'a str> {
        [server, &["--database-url", url]].concat()
    }
    let (code, _, err) = cli(dir.path(), &with(&server, "postgres://ci:hunter2@127.0.0.1:9/pw"), &[]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().next(), Some(URL_WARNING), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let (code, _, err) = cli(dir.path(), &with(&server, "postgres://ci@127.0.0.1:9/pw"), &[]);
    assert_eq!(code, Some(1));
    assert!(!err.contains("warning:") && err.contains("both say where the history is"), "{err}");
    let file = dir.path().join("url");
    std::fs::write(&file, "postgres://ci:hunter2@127.0.0.1:9/pw\n").unwrap();
    let (code, _, err) =
        cli(dir.path(), &[&server[..], &["--database-url-file", file.to_str().unwrap()]].concat(), &[]);
    assert_eq!(code, Some(1));
    assert!(!err.contains("warning:") && err.contains("both say where the history is"), "{err}");

    for (args, shown, hidden) in [
        (&["agent", "--help"][..], "--token-file <FILE>", "--token <"),
        (&["history", "--help"][..], "--token-file <FILE>", "--token <"),
        (&["history", "--help"][..], "--database-url-file <FILE>", "--database-url <"),
        (&["serve", "--help"][..], "--database-url-file <FILE>", "--database-url <"),
        (&["secret", "rotate-key", "--help"][..], "--database-url-file <FILE>", "--database-url <"),
    ] {
        let (code, out, _) = cli(dir.path(), args, &[]);
        assert_eq!(code, Some(0));
        assert!(out.contains(shown) && !out.contains(hidden), "{args:?}: {out}");
    }
}
