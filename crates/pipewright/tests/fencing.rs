//! Fencing, as real processes: two servers and two agents on a PostgreSQL of the test's own, a 2 s lease,
//! and the database crashed (`pg_ctl -m immediate`) for longer than the lease while steps run. Every owner
//! that cannot renew gives its hold up in time (the servers' executions, the agents' steps), so that when the
//! database is back, whoever takes over is alone: no step ever runs twice at once, no execution moves from a
//! final status to another, and every execution ends Success.

mod common;
use common::{Agent, OwnPostgres, pipeline, replica, stage, until};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::Scratch;

const P: &str = "/api/v1/orgs/default/projects/default";

/// How many executions run at once.
const RUNS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_longer_than_the_lease_never_runs_a_step_twice_at_once() {
    let Some(pg) = OwnPostgres::start() else { return };
    let db = Scratch::create(&pg.admin_url()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir.path().join("a"), &db, "2", &["--no-local-executor"]).await;
    let b = replica(&dir.path().join("b"), &db, "2", &["--no-local-executor"]).await;
    let _agents = [
        Agent::register(&a, dir.path(), &a.url, "left", "").await,
        Agent::register(&a, dir.path(), &b.url, "right", "").await,
    ];
    // Execution i's step is `sleep 8.1i` (a command line of its own, seen from outside its namespaces),
    // then a second stage.
    for i in 0..RUNS {
        let yaml = pipeline(&format!("p{i}"), &(stage("a", &format!("'sleep 8.1{i}'")) + &stage("b", "echo done")));
        a.ok(Method::POST, &format!("{P}/pipelines"), Some(yaml)).await;
    }
    // Watch every step process from outside: two of one step alive at once is the failure this test is for.
    let twice = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (twice, watching) = (twice.clone(), watching.clone());
        std::thread::spawn(move || {
            let mut seen = vec![0usize; RUNS];
            while watching.load(Ordering::SeqCst) {
                for (i, most) in seen.iter_mut().enumerate() {
                    let alive = sleepers(&format!("sleep 8.1{i}"));
                    *most = (*most).max(alive);
                    if alive > 1 {
                        twice.store(true, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        })
    };
    let mut ids = Vec::new();
    for i in 0..RUNS {
        let via = if i % 2 == 0 { &a } else { &b };
        let e = via.ok(Method::POST, &format!("{P}/pipelines/p{i}/execute"), Some(json!({}))).await;
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    until("every first step to run on an agent", Duration::from_secs(60), || async {
        (0..RUNS).all(|i| sleepers(&format!("sleep 8.1{i}")) == 1)
    })
    .await;
    // The database crashes for 4 s: twice the lease, and less than a step lasts.
    pg.ctl_with("stop", "immediate");
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.ctl("start");
    let mut again = 0;
    for (i, id) in ids.iter().enumerate() {
        let via = if i % 2 == 0 { &b } else { &a };
        let done = via.wait_end(&via.token, id).await;
        assert_eq!(done["execution"]["status"], "Success", "{done}");
        again += done["nodes"].as_array().unwrap().iter().filter(|n| n["path"] == "a.s" && n["attempt"] != 1).count();
        let t = via.ok(Method::GET, &format!("/api/v1/executions/{id}/transitions"), None).await;
        let items = t.as_array().unwrap();
        let ended: Vec<&Value> = items
            .iter()
            .filter(|t| t["node_id"].is_null())
            .filter(|t| ["Success", "Failed", "Aborted", "Expired"].contains(&t["from"].as_str().unwrap_or("")))
            .collect();
        assert!(ended.is_empty(), "execution {id} left a final status: {ended:?}");
    }
    // The outage did cut the running steps off (they ran again after it), and still none ran twice at once.
    assert!(again > 0, "no step was cut off by the outage: the test did not test anything");
    watching.store(false, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert!(!twice.load(Ordering::SeqCst), "a step ran twice at once: {seen:?}");
    assert!(seen.iter().all(|n| *n == 1), "{seen:?}");
}

/// The `sleep` processes with this exact command line.
fn sleepers(cmdline: &str) -> usize {
    let want = format!("{}\0", cmdline.replace(' ', "\0"));
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
                .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
                .filter(|e| {
                    // A zombie has ended.
                    std::fs::read_to_string(e.path().join("stat"))
                        .is_ok_and(|s| s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next()) != Some("Z"))
                })
                .count()
        })
        .unwrap_or(0)
}
