//! The store's contract, as one generic suite over `dyn Store`: what any backend must do, whatever its
//! database — one owner per execution (claims that two processes never both win, leases, orphans), history
//! filters and paging, sequence numbers under concurrency, node transitions, log order and paging, decisions
//! taken exactly once, execution inputs set one path at a time, step process records, records, tokens. Both
//! backends run it: SQLite on a fresh file, PostgreSQL on a fresh database per test (created through
//! `PIPEWRIGHT_TEST_POSTGRES`, by default the local server's `postgres` database, and dropped after).

use std::sync::Arc;
use store::{
    Decision, ExecutionQuery, Keep, Mode, NewExecution, Node, NodeKind, PgStore, Record, RecordKey, Scratch,
    SqliteStore, Status, StepProcess, Store, Token, now_ms,
};

fn new_exec(pipeline: &str) -> NewExecution {
    NewExecution {
        org: "o".into(),
        project: "p".into(),
        pipeline: pipeline.into(),
        pipeline_version: 1,
        mode: Mode::Full,
        triggered_by: "me".into(),
        inputs: serde_json::json!({}),
        selected_stages: vec![],
        snapshot: "pipeline: {}".into(),
        source_file: None,
        parent_id: None,
        original_id: None,
    }
}

fn node(exec: &str, id: &str, path: &str, status: Status) -> Node {
    Node {
        id: id.into(),
        execution_id: exec.into(),
        parent_id: None,
        kind: NodeKind::Step,
        identifier: path.into(),
        name: path.into(),
        path: path.into(),
        position: 0,
        attempt: 1,
        status,
        started_at: None,
        ended_at: None,
        failure: None,
        skip_reason: None,
        outputs: serde_json::Map::new(),
        reused_from: None,
    }
}

/// The suite: each function takes a fresh, empty store.
mod suite {
    use super::*;

    pub async fn ownership_is_exclusive(s: Arc<dyn Store>) {
        let e = s.create_execution(new_exec("a")).await.unwrap();
        let now = now_ms();
        let first = s.claim_execution(&e.id, "A", now, now + 1000).await.unwrap();
        assert!(first.is_some(), "an unowned execution is claimed");
        assert_eq!(s.claim_execution(&e.id, "A", now, now + 2000).await.unwrap(), first, "its owner claims it again");
        assert!(
            s.claim_execution(&e.id, "B", now + 500, now + 3000).await.unwrap().is_none(),
            "not while the lease lasts"
        );
        let a = store::Fence::owner("A", first.unwrap());
        let b_guess = store::Fence::owner("B", first.unwrap());
        assert!(!s.renew_lease(&e.id, &b_guess, now + 9000).await.unwrap(), "only the owner renews");
        assert!(s.renew_lease(&e.id, &a, now + 4000).await.unwrap());
        assert_eq!(s.lease(&e.id).await.unwrap(), Some(("A".into(), Some(now + 4000))));
        // Once the lease has run out, another process takes it at a higher epoch; the former owner can no
        // longer renew.
        let second = s.claim_execution(&e.id, "B", now + 4001, now_ms() + 60_000).await.unwrap().unwrap();
        assert!(second > first.unwrap(), "a new owner raises the epoch");
        assert!(!s.renew_lease(&e.id, &a, now + 9000).await.unwrap());
        assert_eq!(s.lease(&e.id).await.unwrap().map(|l| l.0), Some("B".into()));
        // An ended execution is nobody's to take.
        let b = store::Fence::owner("B", second);
        s.set_execution_status(&e.id, Status::Success, None, &b).await.unwrap();
        assert!(s.claim_execution(&e.id, "C", i64::MAX, i64::MAX).await.unwrap().is_none());
    }

    pub async fn a_stale_owners_writes_are_refused_and_an_ended_execution_stays_ended(s: Arc<dyn Store>) {
        let e = s.create_execution(new_exec("a")).await.unwrap();
        let now = now_ms();
        // A holds it, stalls past its lease, and B takes it over.
        let a = store::Fence::owner("A", s.claim_execution(&e.id, "A", now, now + 10).await.unwrap().unwrap());
        s.set_execution_status(&e.id, Status::Running, None, &a).await.unwrap();
        let mut n = node(&e.id, "n1", "a.s", Status::Running);
        s.put_node(&n, &a).await.unwrap();
        let b_epoch = s.claim_execution(&e.id, "B", now + 20, now_ms() + 60_000).await.unwrap().unwrap();
        let b = store::Fence::owner("B", b_epoch);
        // Everything A writes now is refused, and nothing of it is stored.
        let fenced = |r: store::Result<()>| matches!(r, Err(store::StoreError::Fenced(_)));
        n.status = Status::Failed;
        assert!(fenced(s.put_node(&n, &a).await), "a stale owner's node");
        assert!(fenced(s.set_execution_status(&e.id, Status::Failed, Some("aborted"), &a).await), "its status");
        assert!(fenced(s.append_log(&e.id, "n1", 1, "stale line\n", &a).await), "its log");
        assert!(fenced(s.set_execution_input(&e.id, "x", &serde_json::json!(1), &a).await), "its inputs");
        let p = store::StepProcess { host: "h".into(), pgid: 1, started: 1 };
        assert!(fenced(s.put_step_process(&e.id, "n1", &p, &a).await), "its process");
        assert!(fenced(s.drop_step_process(&e.id, "", &a).await), "its processes");
        assert!(matches!(s.take_decision(&e.id, "n1", &a).await, Err(store::StoreError::Fenced(_))), "decisions");
        // Nor may anyone who does not hold it write while B's lease lasts.
        assert!(fenced(s.set_execution_status(&e.id, Status::Aborted, None, &store::Fence::unowned()).await));
        assert_eq!(s.execution(&e.id).await.unwrap().status, Status::Running);
        assert_eq!(s.nodes(&e.id).await.unwrap()[0].status, Status::Running);
        assert!(s.logs(&e.id, None).await.unwrap().is_empty());
        // B's writes go through; a fence given up refuses at once, in every clone.
        s.append_log(&e.id, "n1", 1, "b's line\n", &b).await.unwrap();
        n.status = Status::Success;
        s.put_node(&n, &b).await.unwrap();
        s.set_execution_status(&e.id, Status::Success, None, &b).await.unwrap();
        // An ended execution keeps its final status, whoever writes.
        assert!(fenced(s.set_execution_status(&e.id, Status::Running, None, &b).await), "Success → Running");
        assert!(fenced(s.set_execution_status(&e.id, Status::Failed, None, &b).await), "Success → Failed");
        assert_eq!(s.execution(&e.id).await.unwrap().status, Status::Success);
        let given_up = b.clone();
        given_up.lose();
        assert!(fenced(s.append_log(&e.id, "n1", 2, "after\n", &b).await));
    }

    pub async fn claims_race_to_one_winner(s: Arc<dyn Store>) {
        let e = s.create_execution(new_exec("a")).await.unwrap();
        let now = now_ms();
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let (s, id) = (s.clone(), e.id.clone());
                tokio::spawn(async move {
                    s.claim_execution(&id, &format!("P{i}"), now, now + 60_000).await.unwrap().is_some()
                })
            })
            .collect();
        let mut won = 0;
        for t in tries {
            won += usize::from(t.await.unwrap());
        }
        assert_eq!(won, 1, "exactly one of eight concurrent claims wins");
    }

    pub async fn orphans_are_the_unowned_and_the_expired(s: Arc<dyn Store>) {
        let now = now_ms();
        let unowned = s.create_execution(new_exec("a")).await.unwrap();
        let live = s.create_execution(new_exec("a")).await.unwrap();
        let expired = s.create_execution(new_exec("a")).await.unwrap();
        let ended = s.create_execution(new_exec("a")).await.unwrap();
        s.claim_execution(&live.id, "L", now, now + 60_000).await.unwrap();
        s.claim_execution(&expired.id, "X", now, now + 10).await.unwrap();
        let e_epoch = s.claim_execution(&ended.id, "E", now, now + 10).await.unwrap().unwrap();
        s.set_execution_status(&ended.id, Status::Failed, None, &store::Fence::owner("E", e_epoch)).await.unwrap();
        let ids = |v: Vec<store::Execution>| {
            let mut v: Vec<String> = v.into_iter().map(|e| e.id).collect();
            v.sort();
            v
        };
        let mut want = vec![unowned.id.clone(), expired.id.clone()];
        want.sort();
        // Unowned executions count once they are older than the grace given.
        assert_eq!(ids(s.orphaned(now + 100, now + 100_000).await.unwrap()), want);
        assert_eq!(ids(s.orphaned(now + 100, 0).await.unwrap()), vec![expired.id.clone()]);
        assert!(s.orphaned(now, 0).await.unwrap().is_empty(), "nothing has expired yet");
    }

    pub async fn sequence_numbers_are_unique_under_concurrency(s: Arc<dyn Store>) {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.create_execution(new_exec("a")).await.unwrap().sequence_id })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=16).collect::<Vec<i64>>());
        assert_eq!(s.create_execution(new_exec("b")).await.unwrap().sequence_id, 1, "per pipeline");
    }

    pub async fn history_filters_and_pages(s: Arc<dyn Store>) {
        let mut made = Vec::new();
        for i in 0..7 {
            let mut n = new_exec(if i % 2 == 0 { "a" } else { "b" });
            if i == 5 {
                n.mode = Mode::Selective;
            }
            let e = s.create_execution(n).await.unwrap();
            if i % 3 == 0 {
                s.set_execution_status(&e.id, Status::Failed, None, &store::Fence::unowned()).await.unwrap();
            }
            made.push(e);
        }
        let q = |f: &dyn Fn(&mut ExecutionQuery)| {
            let mut q = ExecutionQuery { org: Some("o".into()), project: Some("p".into()), ..Default::default() };
            f(&mut q);
            q
        };
        let all = s.executions(&q(&|_| {})).await.unwrap();
        assert_eq!(all.len(), 7);
        assert!(all.windows(2).all(|w| (w[0].created_at, &w[0].id) >= (w[1].created_at, &w[1].id)), "newest first");
        assert_eq!(s.executions(&q(&|q| q.pipeline = Some("a".into()))).await.unwrap().len(), 4);
        assert_eq!(s.executions(&q(&|q| q.status = Some(Status::Failed))).await.unwrap().len(), 3);
        let failed_a = s
            .executions(&q(&|q| {
                q.pipeline = Some("a".into());
                q.status = Some(Status::Failed);
            }))
            .await
            .unwrap();
        assert_eq!(failed_a.len(), 2);
        assert_eq!(s.executions(&q(&|q| q.mode = Some(Mode::Selective))).await.unwrap().len(), 1);
        assert!(s.executions(&q(&|q| q.project = Some("other".into()))).await.unwrap().is_empty());
        // Cursor paging walks everything once.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = s
                .executions(&q(&|q| {
                    q.limit = Some(3);
                    q.before = before.clone();
                }))
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            before = page.last().map(|e| (e.created_at, e.id.clone()));
            seen.extend(page.into_iter().map(|e| e.id));
        }
        let mut want: Vec<String> = made.iter().map(|e| e.id.clone()).collect();
        want.sort();
        seen.sort();
        assert_eq!(seen, want);
    }

    pub async fn node_changes_are_recorded_as_transitions(s: Arc<dyn Store>) {
        let e = s.create_execution(new_exec("a")).await.unwrap();
        for st in [Status::Queued, Status::Running, Status::Running, Status::Success] {
            s.put_node(&node(&e.id, "n1", "a.s", st), &store::Fence::unowned()).await.unwrap();
        }
        let nodes = s.nodes(&e.id).await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].status, Status::Success);
        let t: Vec<(Option<String>, String)> = s
            .transitions(&e.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.node_id.as_deref() == Some("n1"))
            .map(|t| (t.from, t.to))
            .collect();
        assert_eq!(
            t,
            [
                (None, "Queued".into()),
                (Some("Queued".into()), "Running".into()),
                (Some("Running".into()), "Success".into())
            ],
            "a status change is one transition; the same status again is none"
        );
        let all = s.transitions(&e.id).await.unwrap();
        let after = s.transitions_after(&e.id, all[0].id, 100).await.unwrap();
        assert_eq!(after.len(), all.len() - 1);
    }

    pub async fn logs_keep_their_order_and_page(s: Arc<dyn Store>) {
        let e = s.create_execution(new_exec("a")).await.unwrap();
        s.put_node(&node(&e.id, "n1", "a.s", Status::Running), &store::Fence::unowned()).await.unwrap();
        for i in 1..=5 {
            s.append_log(&e.id, "n1", i, &format!("1\tstdout\tline {i}\n"), &store::Fence::unowned()).await.unwrap();
        }
        let all = s.logs(&e.id, None).await.unwrap();
        assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let first = s.logs_after(&e.id, 0, 2).await.unwrap();
        assert_eq!(first.len(), 2);
        let rest = s.logs_after(&e.id, first[1].cursor, 100).await.unwrap();
        assert_eq!(rest.iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(s.logs(&e.id, Some(&["nope".into()])).await.unwrap().is_empty());
    }

    pub async fn a_follower_never_skips_a_log_chunk(s: Arc<dyn Store>) {
        // Four writers append to four nodes of one execution at once while a follower pages with its
        // cursor, as a live log does: it must see every chunk, each once, cursors rising.
        let e = s.create_execution(new_exec("a")).await.unwrap();
        for w in 0..4 {
            s.put_node(&node(&e.id, &format!("n{w}"), &format!("a.s{w}"), Status::Running), &store::Fence::unowned())
                .await
                .unwrap();
        }
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (s, id) = (s.clone(), e.id.clone());
                tokio::spawn(async move {
                    for i in 1..=60 {
                        s.append_log(&id, &format!("n{w}"), i, &format!("line {i}\n"), &store::Fence::unowned())
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        let (mut seen, mut cursor) = (Vec::new(), 0);
        let mut done = false;
        loop {
            let page = s.logs_after(&e.id, cursor, 17).await.unwrap();
            for c in &page {
                assert!(c.cursor > cursor, "cursors rise");
                cursor = c.cursor;
                seen.push((c.node_id.clone(), c.seq));
            }
            if page.is_empty() {
                if done {
                    break;
                }
                done = writers.iter().all(|w| w.is_finished());
                tokio::task::yield_now().await;
            }
        }
        for w in writers {
            w.await.unwrap();
        }
        seen.sort();
        let mut want: Vec<_> = (0..4).flat_map(|w| (1..=60).map(move |i| (format!("n{w}"), i))).collect();
        want.sort();
        assert_eq!(seen, want, "every chunk once");
        // A chunk written again (a retried write) is not stored twice.
        s.append_log(&e.id, "n0", 1, "line 1\n", &store::Fence::unowned()).await.unwrap();
        assert_eq!(s.logs(&e.id, Some(&["n0".into()])).await.unwrap().len(), 60);
    }

    pub async fn pipeline_versions_follow_changes(s: Arc<dyn Store>) {
        assert_eq!(s.save_pipeline("o", "p", "a", "v: 1").await.unwrap(), 1);
        assert_eq!(s.save_pipeline("o", "p", "a", "v: 1").await.unwrap(), 1, "unchanged keeps its version");
        assert_eq!(s.save_pipeline("o", "p", "a", "v: 2").await.unwrap(), 2);
        assert_eq!(s.save_pipeline("o", "p", "b", "v: 1").await.unwrap(), 1, "per pipeline");
        assert_eq!(s.pipeline_yaml("o", "p", "a", 1).await.unwrap(), "v: 1");
        assert!(s.pipeline_yaml("o", "p", "a", 9).await.is_err());
        // Savers at once each get a version of their own.
        let saves: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.save_pipeline("o", "p", "c", &format!("v: {i}")).await.unwrap() })
            })
            .collect();
        let mut versions = Vec::new();
        for h in saves {
            versions.push(h.await.unwrap());
        }
        versions.sort();
        assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    }

    pub async fn history_is_deleted_by_scope(s: Arc<dyn Store>) {
        let mut other = new_exec("a");
        other.project = "q".into();
        let kept = s.create_execution(other).await.unwrap();
        let gone = s.create_execution(new_exec("a")).await.unwrap();
        s.put_node(&node(&gone.id, "g1", "a.s", Status::Running), &store::Fence::unowned()).await.unwrap();
        s.append_log(&gone.id, "g1", 1, "x\n", &store::Fence::unowned()).await.unwrap();
        s.save_pipeline("o", "p", "a", "v: 1").await.unwrap();
        assert_eq!(s.delete_history("o", Some("p")).await.unwrap(), 1);
        assert!(s.execution(&gone.id).await.is_err());
        assert!(s.logs(&gone.id, None).await.unwrap().is_empty());
        assert!(s.pipeline_yaml("o", "p", "a", 1).await.is_err());
        assert_eq!(s.execution(&kept.id).await.unwrap().project, "q");
        // The audit trail pages newest first.
        for i in 0..3 {
            s.audit(&store::AuditEvent {
                id: 0,
                at: i,
                principal: "user:alice".into(),
                action: format!("a{i}"),
                resource_type: "pipeline".into(),
                resource: "x".into(),
                org: "o".into(),
                project: "p".into(),
                address: "127.0.0.1".into(),
                detail: serde_json::json!({"i": i}),
            })
            .await
            .unwrap();
        }
        let page = s.audit_events(&store::AuditQuery { limit: Some(2), ..Default::default() }).await.unwrap();
        assert_eq!(page.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["a2", "a1"]);
        let rest = s.audit_events(&store::AuditQuery { before: Some(page[1].id), ..Default::default() }).await.unwrap();
        assert_eq!(rest.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["a0"]);
        assert_eq!(rest[0].detail, serde_json::json!({"i": 0}));
    }

    pub async fn login_failures_are_counted_per_window(s: Arc<dyn Store>) {
        assert_eq!(s.login_failures("alice@1.2.3.4", 0).await.unwrap(), 0);
        for n in 1..=3 {
            assert_eq!(s.count_login_failure("alice@1.2.3.4", 1_000 + n, 0).await.unwrap(), n);
        }
        assert_eq!(s.login_failures("alice@1.2.3.4", 0).await.unwrap(), 3);
        assert_eq!(s.login_failures("alice@1.2.3.4", 1_002).await.unwrap(), 0, "a window begun earlier is over");
        assert_eq!(s.count_login_failure("bob", 1_000, 0).await.unwrap(), 1, "keys count apart");
        // A failure after the window starts a new one.
        assert_eq!(s.count_login_failure("alice@1.2.3.4", 70_000, 10_000).await.unwrap(), 1);
        assert_eq!(s.login_failures("alice@1.2.3.4", 10_000).await.unwrap(), 1);
        assert_eq!(s.login_failures("bob", 0).await.unwrap(), 0, "ended windows are forgotten");
        s.clear_login_failures("alice@1.2.3.4").await.unwrap();
        assert_eq!(s.login_failures("alice@1.2.3.4", 0).await.unwrap(), 0);
        // Failures counted at once are all counted.
        let hits: Vec<_> = (0..10)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.count_login_failure("carol", 80_000, 20_000).await.unwrap() })
            })
            .collect();
        for h in hits {
            h.await.unwrap();
        }
        assert_eq!(s.login_failures("carol", 20_000).await.unwrap(), 10);
    }

    pub async fn tasks_go_to_one_agent_by_tags_and_stage(s: Arc<dyn Store>) {
        let task = |id: &str, stage: &str, sel: &[&str]| store::NewTask {
            id: id.into(),
            execution_id: "e".into(),
            stage_key: format!("e/{stage}"),
            selectors: sel.iter().map(|x| x.to_string()).collect(),
            payload: format!("sealed {id}"),
            org: "default".into(),
            project: "default".into(),
        };
        let agent = |name: &str, org: &str, project: &str| store::AgentRecord {
            name: name.into(),
            tags: vec![],
            version: String::new(),
            state: "active".into(),
            last_seen: 0,
            principal: "admin".into(),
            org: org.into(),
            project: project.into(),
            running: 0,
        };
        let hold = |agent: &'static str, lease: &'static str| store::Holder { agent, lease };
        let (none, linux): (Vec<String>, Vec<String>) = (vec![], vec!["linux".into(), "docker".into()]);
        let now = now_ms();
        let (a, b) = (agent("a", "", ""), agent("b", "default", "default"));
        assert!(s.register_agent(&a, "hash-a").await.unwrap());
        assert!(s.register_agent(&b, "hash-b").await.unwrap());
        // A name is registered once; the credential finds its agent, and nothing finds an empty one.
        assert!(!s.register_agent(&agent("b", "", ""), "hash-intruder").await.unwrap());
        let found = s.agent_by_secret("hash-b").await.unwrap().unwrap();
        assert_eq!((found.name.as_str(), found.project.as_str()), ("b", "default"));
        assert!(s.agent_by_secret("hash-intruder").await.unwrap().is_none());
        assert!(s.agent_by_secret("").await.unwrap().is_none());
        assert!(s.set_agent_secret("b", "hash-b2").await.unwrap());
        assert!(s.agent_by_secret("hash-b").await.unwrap().is_none(), "the old credential is gone");
        assert!(!s.set_agent_secret("nobody", "x").await.unwrap());
        s.agent_seen("a", "1", now).await.unwrap();
        s.agent_seen("b", "1", now).await.unwrap();
        s.enqueue_task(&task("t1", "s1", &["linux"])).await.unwrap();
        s.enqueue_task(&task("t2", "s2", &[])).await.unwrap();
        s.enqueue_task(&task("t3", "s2", &[])).await.unwrap();
        s.enqueue_task(&task("t3", "s2", &[])).await.unwrap();
        // An agent of another project takes nothing of this one.
        let stranger = agent("c", "default", "other");
        assert!(s.register_agent(&stranger, "hash-c").await.unwrap());
        assert!(s.claim_task(&stranger, &linux, "lc", now, now + 1000, now - 5000).await.unwrap().is_none());
        let got = s.claim_task(&a, &none, "la1", now, now + 1000, now - 5000).await.unwrap().unwrap();
        assert_eq!((got.id.as_str(), got.payload.as_str()), ("t2", "sealed t2"), "tags must cover the selectors");
        assert_eq!(got.state, store::TaskState::Claimed);
        let got = s.claim_task(&b, &linux, "lb1", now, now + 1000, now - 5000).await.unwrap().unwrap();
        assert_eq!(got.id, "t1");
        assert!(
            s.claim_task(&b, &linux, "lb2", now, now + 1000, now - 5000).await.unwrap().is_none(),
            "a stage another live agent holds waits for it"
        );
        assert_eq!(s.claim_task(&a, &none, "la3", now, now + 1000, now - 5000).await.unwrap().unwrap().id, "t3");
        let agents = s.agents().await.unwrap();
        assert_eq!(
            agents.iter().map(|a| (a.name.as_str(), a.running)).collect::<Vec<_>>(),
            [("a", 2), ("b", 1), ("c", 0)]
        );
        // Renewing, output, cancelling, reporting: only by the holder, with the lease of its claim.
        assert_eq!(s.renew_task("t2", hold("a", "la1"), now + 2000).await.unwrap(), Some(false));
        assert_eq!(s.renew_task("t2", hold("b", "la1"), now + 2000).await.unwrap(), None);
        assert_eq!(s.renew_task("t2", hold("a", "la3"), now + 2000).await.unwrap(), None, "another claim's lease");
        assert!(s.append_task_output("t2", hold("a", "la1"), "1\tstdout\thello\n").await.unwrap());
        assert!(!s.append_task_output("t2", hold("b", "la1"), "nope").await.unwrap());
        assert!(!s.append_task_output("t2", hold("a", "lb1"), "nope").await.unwrap());
        assert!(s.append_task_output("t2", hold("a", "la1"), "2\tstdout\tbye\n").await.unwrap());
        let out = s.task_output_after("t2", 0, 1).await.unwrap();
        assert_eq!(out.len(), 1);
        let rest = s.task_output_after("t2", out[0].0, 10).await.unwrap();
        assert_eq!(rest.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(), ["2\tstdout\tbye\n"]);
        s.cancel_task("t2", now).await.unwrap();
        assert_eq!(s.renew_task("t2", hold("a", "la1"), now + 2000).await.unwrap(), Some(true), "asked to stop");
        assert!(!s.finish_task("t2", hold("b", "la1"), "{}", now).await.unwrap(), "not b's");
        assert!(!s.finish_task("t2", hold("a", "la3"), "{}", now).await.unwrap(), "not this claim's");
        assert!(s.finish_task("t2", hold("a", "la1"), "{\"end\":\"aborted\"}", now).await.unwrap());
        let t2 = s.task("t2").await.unwrap().unwrap();
        assert_eq!((t2.state, t2.payload.as_str()), (store::TaskState::Done, ""), "no payload kept once done");
        assert!(!s.finish_task("t2", hold("a", "la1"), "{}", now).await.unwrap(), "reported once");
        // A queued task cancelled ends at once.
        s.enqueue_task(&task("t4", "s4", &["gpu"])).await.unwrap();
        s.cancel_task("t4", now).await.unwrap();
        assert_eq!(s.task("t4").await.unwrap().unwrap().state, store::TaskState::Cancelled);
        // A lease that ran out after the agent started the task (renewed it once): the task is lost, and its
        // agent's late report is refused.
        assert_eq!(s.renew_task("t1", hold("b", "lb1"), now + 1000).await.unwrap(), Some(false));
        assert_eq!(s.renew_task("t3", hold("a", "la3"), now + 1000).await.unwrap(), Some(false));
        let mut lost = s.expire_tasks(now + 1500).await.unwrap();
        lost.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(lost.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["t1", "t3"]);
        assert!(lost.iter().all(|t| t.state == store::TaskState::Lost));
        assert!(!s.finish_task("t1", hold("b", "lb1"), "{}", now).await.unwrap(), "a late report is refused");
        assert_eq!(s.renew_task("t1", hold("b", "lb1"), now + 5000).await.unwrap(), None);
        // A task its agent never confirmed goes back to the queue when the lease runs out (it never ran), and
        // the next claim's lease is the only one that counts.
        s.enqueue_task(&task("t6", "s6", &[])).await.unwrap();
        assert_eq!(s.claim_task(&b, &linux, "lb6", now, now + 1000, now - 5000).await.unwrap().unwrap().id, "t6");
        let back = s.expire_tasks(now + 1500).await.unwrap();
        assert_eq!(
            back.iter().map(|t| (t.id.as_str(), t.state)).collect::<Vec<_>>(),
            [("t6", store::TaskState::Queued)]
        );
        assert_eq!(back[0].agent, None);
        assert_eq!(back[0].payload, "sealed t6", "still there to run");
        assert!(!s.finish_task("t6", hold("b", "lb6"), "{}", now).await.unwrap());
        assert_eq!(s.claim_task(&b, &linux, "lb7", now, now + 60_000, now - 5000).await.unwrap().unwrap().id, "t6");
        assert_eq!(s.renew_task("t6", hold("b", "lb6"), now + 60_000).await.unwrap(), None, "the earlier claim");
        assert_eq!(s.renew_task("t6", hold("b", "lb7"), now + 60_000).await.unwrap(), Some(false));
        // A revoked agent's tasks are taken from it at once, and it claims nothing more; a draining one
        // claims nothing either.
        s.enqueue_task(&task("t5", "s5", &[])).await.unwrap();
        assert_eq!(s.claim_task(&a, &none, "la5", now, now + 60_000, now - 5000).await.unwrap().unwrap().id, "t5");
        assert_eq!(s.renew_task("t5", hold("a", "la5"), now + 60_000).await.unwrap(), Some(false));
        assert!(s.set_agent_state("a", "revoked").await.unwrap());
        assert!(!s.set_agent_state("nobody", "revoked").await.unwrap());
        let taken = s.expire_tasks(now).await.unwrap();
        assert_eq!(
            taken.iter().map(|t| (t.id.as_str(), t.state)).collect::<Vec<_>>(),
            [("t5", store::TaskState::Lost)]
        );
        assert_eq!(s.agents().await.unwrap()[0].state, "revoked");
        s.enqueue_task(&task("t7", "s7", &[])).await.unwrap();
        assert!(s.claim_task(&a, &none, "la7", now, now + 60_000, now - 5000).await.unwrap().is_none(), "revoked");
        assert!(s.set_agent_state("b", "draining").await.unwrap());
        assert!(s.claim_task(&b, &linux, "lb8", now, now + 60_000, now - 5000).await.unwrap().is_none(), "draining");
        s.cancel_task("t7", now).await.unwrap();
        // Agents claiming at once take every task exactly once.
        for i in 0..24 {
            s.enqueue_task(&task(&format!("p{i:02}"), &format!("p{i}"), &[])).await.unwrap();
        }
        let claimers: Vec<_> = (0..4)
            .map(|w| {
                let s = s.clone();
                let me = agent(&format!("w{w}"), "", "");
                tokio::spawn(async move {
                    assert!(s.register_agent(&me, &format!("hash-{}", me.name)).await.unwrap());
                    s.agent_seen(&me.name, "1", now_ms()).await.unwrap();
                    let mut got = Vec::new();
                    while let Some(t) = s.claim_task(&me, &[], "l", now_ms(), now_ms() + 60_000, 0).await.unwrap() {
                        got.push(t.id);
                    }
                    got
                })
            })
            .collect();
        let mut all = Vec::new();
        for c in claimers {
            all.extend(c.await.unwrap());
        }
        all.sort();
        assert_eq!(all, (0..24).map(|i| format!("p{i:02}")).collect::<Vec<_>>());
    }

    pub async fn a_decision_is_taken_exactly_once(s: Arc<dyn Store>) {
        let e = s.create_execution(new_exec("a")).await.unwrap();
        s.put_node(&node(&e.id, "n1", "a.s", Status::InterventionWaiting), &store::Fence::unowned()).await.unwrap();
        s.put_decision(&Decision {
            execution_id: e.id.clone(),
            node_id: "n1".into(),
            action: "retry".parse().unwrap(),
            by: "me".into(),
            comment: None,
            inputs: serde_json::json!({}),
            at: now_ms(),
        })
        .await
        .unwrap();
        let takers: Vec<_> = (0..6)
            .map(|_| {
                let (s, id) = (s.clone(), e.id.clone());
                tokio::spawn(async move { s.take_decision(&id, "n1", &store::Fence::unowned()).await.unwrap() })
            })
            .collect();
        let mut got = 0;
        for t in takers {
            got += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(got, 1, "six concurrent takers, one decision");
    }

    pub async fn execution_inputs_are_set_one_path_at_a_time(s: Arc<dyn Store>) {
        let mut new = new_exec("a");
        new.inputs = serde_json::json!({"pipeline.variables.v": {"value": "1", "source": "Given"}});
        let e = s.create_execution(new).await.unwrap();
        let path = "pipeline.stages.deploy.variables.region";
        let asked = serde_json::json!({"source": "ExecutionInput", "pending": true, "owner": "pipeline.stages.deploy"});
        s.set_execution_input(&e.id, path, &asked, &store::Fence::unowned()).await.unwrap();
        let given = serde_json::json!({"source": "ExecutionInput", "value": "eu \"west\"", "by": "ana"});
        s.set_execution_input(&e.id, path, &given, &store::Fence::unowned()).await.unwrap();
        let inputs = s.execution(&e.id).await.unwrap().inputs;
        assert_eq!(inputs[path], given, "the path is one key, dots and all, and the last write wins");
        assert_eq!(inputs["pipeline.variables.v"]["value"], "1", "other inputs are kept");
        assert!(
            s.set_execution_input("nope", path, &given, &store::Fence::unowned()).await.is_err(),
            "an unknown execution is an error"
        );
    }

    pub async fn step_processes_are_recorded_and_forgotten(s: Arc<dyn Store>) {
        let e = s.create_execution(new_exec("a")).await.unwrap();
        let p = |pgid| StepProcess { host: "h".into(), pgid, started: 42 };
        s.put_step_process(&e.id, "n1", &p(10), &store::Fence::unowned()).await.unwrap();
        s.put_step_process(&e.id, "n2", &p(20), &store::Fence::unowned()).await.unwrap();
        s.put_step_process(&e.id, "n1", &p(11), &store::Fence::unowned()).await.unwrap();
        let mut got = s.step_processes(&e.id).await.unwrap();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, [("n1".into(), p(11)), ("n2".into(), p(20))]);
        s.drop_step_process(&e.id, "n1", &store::Fence::unowned()).await.unwrap();
        assert_eq!(s.step_processes(&e.id).await.unwrap().len(), 1);
        s.drop_step_process(&e.id, "", &store::Fence::unowned()).await.unwrap();
        assert!(s.step_processes(&e.id).await.unwrap().is_empty());
    }

    pub async fn records_are_created_replaced_and_deleted(s: Arc<dyn Store>) {
        let r = |id: &str, project: &str, v: i64| Record {
            kind: "service".into(),
            org: "o".into(),
            project: project.into(),
            identifier: id.into(),
            body: serde_json::json!({"v": v}),
            created_at: 1,
            updated_at: 1,
        };
        assert!(s.put_record(&r("x", "p", 1), false).await.unwrap());
        assert!(!s.put_record(&r("x", "p", 2), false).await.unwrap(), "no silent overwrite");
        assert_eq!(s.record("service", "o", "p", "x").await.unwrap().unwrap().body["v"], 1);
        assert!(s.put_record(&r("x", "p", 3), true).await.unwrap());
        assert_eq!(s.record("service", "o", "p", "x").await.unwrap().unwrap().body["v"], 3);
        s.put_record(&r("a", "p", 1), false).await.unwrap();
        s.put_record(&r("y", "q", 1), false).await.unwrap();
        let ids: Vec<String> =
            s.records("service", Some("o"), Some("p")).await.unwrap().into_iter().map(|r| r.identifier).collect();
        assert_eq!(ids, ["a", "x"], "ordered by identifier, one project");
        assert!(s.delete_record("service", "o", "p", "x").await.unwrap());
        assert!(!s.delete_record("service", "o", "p", "x").await.unwrap());
        assert_eq!(s.records("service", Some("o"), None).await.unwrap().len(), 2);
    }

    pub async fn the_last_guarded_record_is_never_deleted(s: Arc<dyn Store>) {
        let binding = |id: &str, org: &str, role: &str| Record {
            kind: "role_binding".into(),
            org: org.into(),
            project: "".into(),
            identifier: id.into(),
            body: serde_json::json!({"role": role, "principal": {"kind": "user", "id": id}}),
            created_at: 1,
            updated_at: 1,
        };
        let keep = Keep { kind: "role_binding".into(), field: "role".into(), value: "_account_admin".into() };
        for (id, org, role) in [
            ("a1", "", "_account_admin"),
            ("a2", "", "_account_admin"),
            ("o1", "o", "_account_admin"),
            ("v", "", "_account_viewer"),
        ] {
            s.put_record(&binding(id, org, role), false).await.unwrap();
        }
        let key = |id: &str, org: &str| RecordKey {
            kind: "role_binding".into(),
            org: org.into(),
            project: "".into(),
            identifier: id.into(),
        };
        // An organization's binding of the same role does not count: it is not at the account.
        let both = [key("a1", ""), key("a2", "")];
        assert_eq!(s.delete_records_keeping(&both, &keep).await.unwrap(), None, "both account admins at once");
        assert_eq!(s.records("role_binding", Some(""), None).await.unwrap().len(), 3, "nothing deleted");
        assert_eq!(s.delete_records_keeping(&[key("v", ""), key("o1", "o")], &keep).await.unwrap(), Some(2));
        // Two concurrent deletes of the last two: exactly one wins, whatever the order.
        let (x, y) =
            tokio::join!(s.delete_records_keeping(&both[..1], &keep), s.delete_records_keeping(&both[1..], &keep));
        let wins = [x.unwrap(), y.unwrap()].iter().filter(|r| r.is_some()).count();
        assert_eq!(wins, 1);
        assert_eq!(s.records("role_binding", Some(""), None).await.unwrap().len(), 1, "one admin left");
    }

    pub async fn tokens_are_found_by_hash_and_revoked(s: Arc<dyn Store>) {
        let t = Token {
            id: "t1".into(),
            name: "ci".into(),
            principal_kind: "user".into(),
            principal_id: "alice".into(),
            principal_org: String::new(),
            principal_project: String::new(),
            hash: "h1".into(),
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            principal_uid: None,
        };
        s.put_token(&t).await.unwrap();
        assert_eq!(s.token_by_hash("h1").await.unwrap().unwrap().id, "t1");
        assert!(s.token_by_hash("h2").await.unwrap().is_none());
        s.bind_token("t1", "uid-1").await.unwrap();
        assert_eq!(s.token_by_hash("h1").await.unwrap().unwrap().principal_uid.as_deref(), Some("uid-1"));
        assert!(s.revoke_token("t1").await.unwrap());
        assert!(!s.revoke_token("t1").await.unwrap(), "revoked once");
        assert!(s.token_by_hash("h1").await.unwrap().unwrap().revoked_at.is_some());
        assert_eq!(s.tokens(Some(("user", "alice"))).await.unwrap().len(), 1);
        assert!(s.tokens(Some(("user", "bob"))).await.unwrap().is_empty());
    }
}

/// Runs every suite function against a backend (one invocation per backend).
macro_rules! backend {
    ($backend:ident => $make:expr ; $($test:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let (_keep, s) = $make.await;
                    if let Some(s) = s {
                        suite::$test(s).await;
                    }
                }
            )*
        }
    };
}

/// A fresh PostgreSQL database. Where none can be reached, the test fails under CI (`CI` set) and is
/// skipped, saying so, elsewhere.
async fn postgres() -> (Option<Scratch>, Option<Arc<dyn Store>>) {
    let admin = Scratch::admin_url();
    match Scratch::create(&admin).await {
        Ok(db) => {
            let s: Arc<dyn Store> = Arc::new(PgStore::open(db.url()).await.unwrap());
            (Some(db), Some(s))
        }
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: no PostgreSQL for the conformance suite ({e})");
            (None, None)
        }
        Err(e) => panic!("the conformance suite needs PostgreSQL under CI: {e}"),
    }
}
async fn sqlite() -> (tempfile::TempDir, Option<Arc<dyn Store>>) {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    (dir, Some(s))
}

/// The whole suite for one backend.
macro_rules! every_test {
    ($backend:ident => $make:expr) => {
        backend! {
            $backend => $make;
            ownership_is_exclusive,
            a_stale_owners_writes_are_refused_and_an_ended_execution_stays_ended,
            claims_race_to_one_winner,
            orphans_are_the_unowned_and_the_expired,
            sequence_numbers_are_unique_under_concurrency,
            history_filters_and_pages,
            node_changes_are_recorded_as_transitions,
            logs_keep_their_order_and_page,
            a_decision_is_taken_exactly_once,
            execution_inputs_are_set_one_path_at_a_time,
            step_processes_are_recorded_and_forgotten,
            records_are_created_replaced_and_deleted,
            the_last_guarded_record_is_never_deleted,
            tokens_are_found_by_hash_and_revoked,
            a_follower_never_skips_a_log_chunk,
            pipeline_versions_follow_changes,
            history_is_deleted_by_scope,
            login_failures_are_counted_per_window,
            tasks_go_to_one_agent_by_tags_and_stage,
        }
    };
}

every_test!(sqlite => super::sqlite());
every_test!(postgres => super::postgres());
