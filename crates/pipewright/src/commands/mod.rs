//! One module per CLI command; each exposes `run(…) -> anyhow::Result<ExitCode>`. Shared helpers (opening the
//! store, formatting times and durations) live here.

pub mod admin;
pub mod agent;
pub mod decide;
pub mod history;
pub mod logs;
pub mod plan;
pub mod remote;
pub mod rerun;
pub mod run;
pub mod schema;
pub mod secret;
pub mod serve;
pub mod show;
pub mod validate;

use crate::{IsolationMode, NetworkMode, StateArgs, StepArgs};
use engine::sandbox::{Isolation, Sandbox, StepUser};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{Client, Store};

/// Open the history: the local SQLite file or the PostgreSQL database given with `--database-url-file` (or
/// `PIPEWRIGHT_DATABASE_URL`), or the server given with `--server` (which serves reading it and asking running
/// executions for things).
pub async fn open_store(state: &StateArgs) -> anyhow::Result<Arc<dyn Client>> {
    if let Some(remote) = remote::Remote::from_state(state)? {
        anyhow::ensure!(
            state.database_url.get().is_none(),
            "--server and a database URL (--database-url-file, PIPEWRIGHT_DATABASE_URL) both say where the history is; give one of them"
        );
        return Ok(Arc::new(remote::RemoteStore(remote)));
    }
    let local: Arc<dyn Client> = open_local(state).await?;
    Ok(local)
}

/// The store this process keeps state in, all of it (to run executions here): the state directory's SQLite
/// file, or the PostgreSQL database given with `--database-url-file` (or `PIPEWRIGHT_DATABASE_URL`).
pub async fn open_local(state: &StateArgs) -> anyhow::Result<Arc<dyn Store>> {
    Ok(store::open(state.database_url.get(), &state.state_dir).await?)
}

/// The step isolation the flags ask for, checked against this kernel, with the state directory (`0700`) and the
/// work root (`<state-dir>/work`) locked down. Returns the isolation and the work root.
pub fn isolation(a: &StepArgs, state_dir: &Path, default_network: NetworkMode) -> anyhow::Result<(Isolation, PathBuf)> {
    let state_dir = std::path::absolute(state_dir)?;
    let mut work_root = state_dir.join("work");
    let iso = match a.step_isolation.unwrap_or(IsolationMode::Landlock) {
        IsolationMode::None => {
            anyhow::ensure!(
                a.step_user.is_none() && a.step_read_paths.is_empty() && a.step_network.is_none(),
                "--step-user, --step-read-path and --step-network apply to isolated steps; drop them or drop --step-isolation none"
            );
            eprintln!(
                "warning: step isolation is OFF (--step-isolation none): steps run with pipewright's own rights and can read and change its state directory, database and keys"
            );
            Isolation::None
        }
        IsolationMode::Landlock => {
            let root = nix::unistd::geteuid().is_root();
            let user = match (&a.step_user, root) {
                (Some(u), true) => Some(StepUser::lookup(u).map_err(anyhow::Error::msg)?),
                (None, true) => Some(StepUser::lookup("nobody").map_err(anyhow::Error::msg)?),
                (Some(_), false) => anyhow::bail!(
                    "--step-user needs pipewright to run as root; steps already run as your own user, confined"
                ),
                (None, false) => None,
            };
            // The step user must be able to pass through to its workspace; below a private directory (a
            // state directory under /root, say) it cannot, and workspaces go where it can.
            if let Some(u) = &user
                && !engine::sandbox::reachable_by(state_dir.parent().unwrap_or(Path::new("/")), u)
            {
                work_root = engine::sandbox::fallback_work_root(&state_dir);
                if let Some(parent) = work_root.parent() {
                    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(parent)?;
                    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
                }
            }
            // The small launcher next to this binary when it is there (it starts faster), else this binary.
            let me = std::env::current_exe()?;
            let small = me.with_file_name("pipewright-step");
            let launcher = if small.is_file() { small } else { me };
            let mut sandbox = Sandbox::new(launcher, &a.step_read_paths, user, &[state_dir.clone(), work_root.clone()]);
            sandbox.network = step_network(a.step_network, default_network, root)?.engine();
            sandbox.probe().map_err(|e| anyhow::anyhow!("step isolation is not available: {e}"))?;
            if sandbox.network != engine::sandbox::Network::Host {
                // Made once at start, so that a missing slirp4netns or ip is said now, not at the first step.
                engine::sandbox::StageNet::open(&sandbox).map_err(|e| {
                    anyhow::anyhow!("the step network `{}` is not available: {e}", sandbox.network.name())
                })?;
            }
            Isolation::Landlock(sandbox)
        }
    };
    engine::sandbox::prepare_dirs(&state_dir, &work_root, &iso)?;
    Ok((iso, work_root))
}

/// The step network: as given, else the command's default — except that without root only `host` is
/// possible (the stage's namespaces need it), which an explicit other mode is refused for and a default
/// falls back to, loudly. `host` always says what it means.
fn step_network(given: Option<NetworkMode>, default: NetworkMode, root: bool) -> anyhow::Result<NetworkMode> {
    let mode = match (given, root) {
        (Some(m), false) if m != NetworkMode::Host => anyhow::bail!(
            "--step-network {} needs pipewright to run as root (the stage's network namespace is made by root); use --step-network host",
            m.engine().name()
        ),
        (Some(m), _) => m,
        (None, true) => default,
        (None, false) => NetworkMode::Host,
    };
    if mode == NetworkMode::Host && default != NetworkMode::Host {
        eprintln!(
            "warning: steps share this host's network (--step-network host): every service listening on this host, on loopback too, is reachable from them"
        );
    }
    Ok(mode)
}

/// `2026-11-25 14:03:07` (UTC) for a time in Unix milliseconds.
pub fn when(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else { return "-".into() };
    t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default()
}

/// `1.2s`, `3m04s` for the time between two instants (to now when not ended).
pub fn duration(start: Option<i64>, end: Option<i64>) -> String {
    let Some(start) = start else { return "-".into() };
    millis_text(end.unwrap_or_else(store::now_ms) - start)
}

/// A duration as [`duration`] writes it.
pub fn duration_text(d: std::time::Duration) -> String {
    millis_text(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis_text(ms: i64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}
