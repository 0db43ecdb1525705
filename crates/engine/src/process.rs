//! Step processes: each runs in a fresh process group with stdin closed, a clean environment and the
//! execution's working directory; its stdout and stderr are read line by line into the step's log. A timeout
//! or an abort sends SIGTERM to the whole group, then SIGKILL after a grace period; when the main process
//! exits, anything it left running in its group (a forked daemon) is stopped the same way.

use crate::executor::Feedback;
use crate::logs::MAX_LINE;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

/// How a process ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code (signals: 128 + number).
    Code(i32),
    /// It ran past its timeout and was stopped.
    TimedOut,
    /// The execution was aborted and it was stopped.
    Aborted,
    /// It could not be started.
    SpawnFailed(String),
}

/// What to run.
pub struct Spec<'a> {
    /// The program (`bash`, `sh`, or the step launcher).
    pub program: std::ffi::OsString,
    /// Its arguments.
    pub args: Vec<std::ffi::OsString>,
    /// The working directory.
    pub cwd: &'a Path,
    /// The whole environment.
    pub env: Vec<(String, String)>,
}

/// The environment every step starts from: these variables of pipewright's own environment, when set.
pub const PASSED_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM"];

struct Group(Option<i32>);

impl Group {
    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.0 {
            let _ = killpg(Pid::from_raw(pgid), sig);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // Whatever happens to the future running the step (a stage timeout, a panic), its processes die with it.
        self.signal(Signal::SIGKILL);
    }
}

/// Read a stream line by line into the log. A line longer than [`MAX_LINE`] bytes is cut into pieces of that
/// size, so a step printing one enormous line costs bounded memory.
async fn pump<R: AsyncRead + Unpin>(r: R, stream: &'static str, log: &dyn Feedback) {
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => {
                if !line.is_empty() {
                    log.line(stream, &String::from_utf8_lossy(&line)).await;
                }
                return;
            }
        };
        let (n, ends_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let take = n.min(MAX_LINE - line.len());
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if (ends_line && take == n) || line.len() >= MAX_LINE {
            log.line(stream, &String::from_utf8_lossy(&line)).await;
            line.clear();
        }
    }
}

/// The absolute path of `program` along the child's `PATH` (as `execvp` would find it), looked up once per
/// (PATH, program) pair. Spawning by absolute path lets the standard library use `posix_spawn` (no copy of
/// pipewright's address space, no failed `execve` per `PATH` entry in the child).
pub(crate) fn resolve(program: &std::ffi::OsStr, env: &[(String, String)]) -> std::ffi::OsString {
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::{Mutex, OnceLock};
    if program.as_bytes().contains(&b'/') {
        return program.to_os_string();
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or("/usr/bin:/bin");
    static CACHE: OnceLock<Mutex<HashMap<(String, std::ffi::OsString), std::ffi::OsString>>> = OnceLock::new();
    let key = (path.to_string(), program.to_os_string());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return hit.clone();
    }
    let found = std::env::split_paths(path)
        .map(|d| d.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(std::path::PathBuf::into_os_string);
    // Not found: the name as given (the spawn then fails with the usual "not found").
    let resolved = found.unwrap_or_else(|| program.to_os_string());
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, resolved.clone());
    resolved
}

/// Run a process to its end, its timeout, or an abort.
pub async fn run(
    spec: Spec<'_>,
    log: &dyn Feedback,
    timeout: Option<Duration>,
    mut abort: watch::Receiver<bool>,
    grace: Duration,
) -> Exit {
    let mut cmd = Command::new(resolve(&spec.program, &spec.env));
    cmd.args(&spec.args)
        .current_dir(spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Exit::SpawnFailed(format!("cannot start `{}`: {e}", spec.program.to_string_lossy())),
    };
    let group = Group(child.id().map(|p| p as i32));
    // Whoever takes the execution over must be able to stop this group: the engine records it.
    if let Some(p) = group.0.and_then(crate::owner::process_of) {
        log.started(p).await;
    }
    let out = child.stdout.take();
    let err = child.stderr.take();
    let readers = async {
        tokio::join!(
            async {
                if let Some(o) = out {
                    pump(o, "stdout", log).await
                }
            },
            async {
                if let Some(e) = err {
                    pump(e, "stderr", log).await
                }
            }
        )
    };
    tokio::pin!(readers);
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let aborted = crate::steps::wait_abort(&mut abort);
    tokio::pin!(aborted);

    let mut readers_done = false;
    // Lines buffered while the process is quiet are stored within a second (live logs, `logs --follow`).
    let mut tick = tokio::time::interval(crate::logs::FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status = loop {
        tokio::select! {
            s = child.wait() => break Ok(s),
            _ = tick.tick() => log.tick().await,
            _ = &mut readers, if !readers_done => readers_done = true,
            _ = &mut deadline => break Err(Exit::TimedOut),
            _ = &mut aborted => break Err(Exit::Aborted),
        }
    };
    // Stop the group: after a timeout / abort, politely first; after a normal exit, whatever it left behind.
    group.signal(Signal::SIGTERM);
    let stopped = async {
        let _ = child.wait().await;
        if !readers_done {
            readers.await;
        }
    };
    if tokio::time::timeout(grace, stopped).await.is_err() {
        group.signal(Signal::SIGKILL);
    }
    drop(group);
    match status {
        Ok(Ok(s)) => {
            use std::os::unix::process::ExitStatusExt;
            Exit::Code(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
        }
        Ok(Err(e)) => Exit::SpawnFailed(format!("waiting for the process failed: {e}")),
        Err(exit) => exit,
    }
}
