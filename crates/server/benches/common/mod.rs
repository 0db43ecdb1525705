//! What the server benchmarks share: a SQLite store holding `n` executions in project `default/default`
//! (half of pipeline `bench`, half of `other`; a third of them selective), written by four tasks at once.

use std::sync::Arc;
use std::time::Instant;
use store::{Journal, Mode, NewExecution, SqliteStore};

/// A store in `dir` with `n` executions.
pub async fn seeded(dir: &std::path::Path, n: u64) -> Arc<SqliteStore> {
    let store = Arc::new(SqliteStore::open(dir).await.unwrap());
    let t = Instant::now();
    let version = store.save_pipeline("default", "default", "bench", "pipeline: {}").await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(4) {
                let selective = i.is_multiple_of(3);
                store
                    .create_execution(NewExecution {
                        org: "default".into(),
                        project: "default".into(),
                        pipeline: if i.is_multiple_of(2) { "bench".into() } else { "other".into() },
                        pipeline_version: version,
                        mode: if selective { Mode::Selective } else { Mode::Full },
                        triggered_by: "bench".into(),
                        inputs: serde_json::json!({"pipeline.variables.version": {"value": format!("1.0.{i}"), "source": "Given"}}),
                        selected_stages: if selective { vec!["build".into(), "deploy".into()] } else { vec![] },
                        snapshot: String::new(),
                        source_file: None,
                        parent_id: None,
                        original_id: None,
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("stored {n} executions in {:.1}s", t.elapsed().as_secs_f64());
    store
}
