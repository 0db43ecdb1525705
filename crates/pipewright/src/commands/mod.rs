//! One module per CLI command; each exposes `run(…) -> anyhow::Result<ExitCode>`. Shared helpers (opening the
//! store, formatting times and durations) live here.

pub mod admin;
pub mod decide;
pub mod history;
pub mod logs;
pub mod plan;
pub mod remote;
pub mod rerun;
pub mod run;
pub mod schema;
pub mod serve;
pub mod show;
pub mod validate;

use crate::StateArgs;
use std::sync::Arc;
use store::{SqliteStore, Store};

/// Open the state store: the local SQLite file, or the server given with `--server`.
pub async fn open_store(state: &StateArgs) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(remote) = remote::Remote::from_state(state)? {
        return Ok(Arc::new(remote::RemoteStore(remote)));
    }
    Ok(Arc::new(SqliteStore::open(&state.state_dir).await?))
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
    let ms = end.unwrap_or_else(store::now_ms) - start;
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}
