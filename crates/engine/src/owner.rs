//! One owner per execution. The process running an execution holds a lease in the store and renews it by
//! heartbeat; when it dies the lease runs out and another process may take the execution over
//! (`Engine::resume`). Step process groups are recorded with their leader's start time, so the new owner can
//! stop a step that outlived its owner — after checking that the group is still that step's, not a reused pid
//! — before the step runs again.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::sync::Arc;
use std::time::Duration;
use store::{StepProcess, Store, now_ms};

/// This host's name, as recorded with step processes.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A name for this process as an execution owner: host, pid and a random part (pids are reused).
pub fn owner_id() -> String {
    format!("{}/{}/{}", host(), std::process::id(), ulid::Ulid::new())
}

/// Whether an owner (as [`owner_id`] names it) is a process of this host that no longer runs: its execution
/// can be taken over at once instead of when its lease runs out. A pid in use may be another process's by
/// now: then the owner is not known dead and its lease decides.
pub fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.split('/');
    let (Some(h), Some(pid)) = (parts.next(), parts.next().and_then(|p| p.parse::<i64>().ok())) else { return false };
    if h != host() || pid == i64::from(std::process::id()) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has ended too.
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) == Some("Z"),
        Err(_) => true,
    }
}

/// The start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22), if it exists.
pub fn proc_start(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after its closing one are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a recorded step process is still running here, as the same process (not a reused pid, not a
/// zombie waiting for its new parent to reap it).
pub fn still_running(p: &StepProcess) -> bool {
    if p.host != host() || proc_start(p.pgid) != Some(p.started) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pgid)).unwrap_or_default();
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|state| state != "Z")
}

/// The record of the process group a step just started in (this host, its id, its leader's start time).
pub fn process_of(pgid: i32) -> Option<StepProcess> {
    let started = proc_start(i64::from(pgid))?;
    Some(StepProcess { host: host(), pgid: i64::from(pgid), started })
}

/// Stop the process group of a step whose owner died, if it still runs here: SIGTERM, then SIGKILL after
/// `grace`. Returns whether there was one to stop.
pub async fn stop_orphan(
    store: &Arc<dyn Store>,
    execution_id: &str,
    node_id: &str,
    grace: Duration,
    fence: &store::Fence,
) -> bool {
    let Ok(recorded) = store.step_processes(execution_id).await else { return false };
    let Some((_, p)) = recorded.into_iter().find(|(n, _)| n == node_id) else { return false };
    let stopped = if still_running(&p) {
        let group = Pid::from_raw(p.pgid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        // The group's leader is watched through /proc (it is not our child): poll its existence, bounded.
        while still_running(&p) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = killpg(group, Signal::SIGKILL);
        true
    } else {
        false
    };
    let _ = store.drop_step_process(execution_id, node_id, fence).await;
    stopped
}

/// Take an execution for `owner` for one lease: when nobody holds it, its owner's lease ran out, or its
/// owner was a process of this host that is gone (then its lease is void, whatever it says). Returns the
/// claim's epoch (the fence of the owner's writes), or None when another owner holds it.
pub async fn claim(store: &dyn Store, id: &str, owner: &str, lease: Duration) -> store::Result<Option<i64>> {
    if let Some(epoch) = store.claim_execution(id, owner, now_ms(), until(lease)).await? {
        return Ok(Some(epoch));
    }
    match store.lease(id).await? {
        // A claim as of the end of time: any lease has run out by then.
        Some((held_by, _)) if owner_is_dead(&held_by) => store.claim_execution(id, owner, i64::MAX, until(lease)).await,
        _ => Ok(None),
    }
}

/// What an owner's heartbeat does after a renewal: a pure function of how it went and how long ago the
/// last renewal went through. Taken over: give the hold up at once. The store unreachable: keep trying
/// until two thirds of the lease have passed since the last renewal, then give the hold up — stop the steps
/// and write nothing more — before the lease can run out for anyone else.
pub fn after_renewal(renewed: Option<bool>, since_renewed: Duration, lease: Duration) -> Renewal {
    match renewed {
        Some(true) => Renewal::Held,
        Some(false) => Renewal::GiveUp,
        None if since_renewed >= lease * 2 / 3 => Renewal::GiveUp,
        None => Renewal::Retry,
    }
}

/// See [`after_renewal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed.
    Held,
    /// Not renewed this time; try again at the next beat.
    Retry,
    /// The hold is lost, or can no longer be trusted: stop acting.
    GiveUp,
}

/// How long a lease lasts: `PIPEWRIGHT_LEASE_SECONDS`, or 15 seconds.
pub fn lease_from_env() -> Duration {
    std::env::var("PIPEWRIGHT_LEASE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(15), Duration::from_secs_f64)
}

/// The lease's end for a lease starting now.
pub fn until(lease: Duration) -> i64 {
    now_ms() + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_gives_up_its_hold_before_its_lease_can_run_out() {
        let lease = Duration::from_secs(3);
        let ms = Duration::from_millis;
        let table = [
            (Some(true), ms(2900), Renewal::Held),
            (Some(false), ms(0), Renewal::GiveUp),
            (None, ms(0), Renewal::Retry),
            (None, ms(1999), Renewal::Retry),
            (None, ms(2000), Renewal::GiveUp),
            (None, ms(10_000), Renewal::GiveUp),
        ];
        for (renewed, since, want) in table {
            assert_eq!(after_renewal(renewed, since, lease), want, "{renewed:?} after {since:?}");
        }
    }

    #[test]
    fn this_process_is_recognised_and_a_wrong_start_time_is_not() {
        let me = i64::from(std::process::id());
        let started = proc_start(me).expect("our own start time");
        assert!(still_running(&StepProcess { host: host(), pgid: me, started }));
        assert!(!still_running(&StepProcess { host: host(), pgid: me, started: started + 1 }));
        assert!(!still_running(&StepProcess { host: "elsewhere".into(), pgid: me, started }));
        assert_eq!(proc_start(i64::from(i32::MAX)), None);
    }

    #[test]
    fn dead_owners_are_told_from_live_ones() {
        let cases = [
            (format!("{}/{}/01J", host(), std::process::id()), false),
            (format!("{}/1/01J", host()), false),
            (format!("{}/{}/01J", host(), i32::MAX), true),
            (format!("elsewhere/{}/01J", i32::MAX), false),
            ("garbage".to_string(), false),
        ];
        for (owner, dead) in cases {
            assert_eq!(owner_is_dead(&owner), dead, "{owner}");
        }
    }
}
