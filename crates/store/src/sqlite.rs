//! The SQLite implementation of [`Store`]: one WAL-mode database file under the state directory, migrations
//! embedded in the binary, a busy timeout so several `pipewright` processes can share the file, and clear
//! errors for an unwritable directory or a file that is not a pipewright database.

use crate::model::*;
use crate::{Result, Store, StoreError, now_ms};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The store in `<state-dir>/pipewright.db`.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn open_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Open { path: path.display().to_string(), message: message.into() }
}

impl SqliteStore {
    /// Open (creating if needed) the store in `state_dir`.
    pub async fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            open_err(state_dir, format!("{e}; choose a writable directory with --state-dir or PIPEWRIGHT_STATE_DIR"))
        })?;
        let path = state_dir.join("pipewright.db");
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(60))
            .foreign_keys(true);
        // Two processes opening a new state directory at once must not both create the schema: migrations run
        // under an exclusive lock on a file beside the database (released when `_guard` drops).
        let lock_path = state_dir.join("pipewright.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| open_err(&lock_path, e.to_string()))?;
        let _guard = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| open_err(&lock_path, e.to_string()))?
            .map_err(|e| open_err(&lock_path, e.to_string()))?;
        let pool =
            SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.map_err(|e| explain(&path, e))?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => explain(&path, e),
            other => open_err(
                &path,
                format!("{other}; the database was written by another pipewright version or is damaged"),
            ),
        })?;
        Ok(SqliteStore { pool, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn explain(path: &Path, e: sqlx::Error) -> StoreError {
    let msg = e.to_string();
    if msg.contains("not a database") || msg.contains("malformed") {
        open_err(
            path,
            format!(
                "{msg}: the file is not a pipewright database or is damaged; nothing was changed. Move it aside to start a new history"
            ),
        )
    } else if msg.contains("readonly")
        || msg.contains("read-only")
        || msg.contains("unable to open")
        || msg.contains("permission")
    {
        open_err(path, format!("{msg}; choose a writable directory with --state-dir or PIPEWRIGHT_STATE_DIR"))
    } else {
        StoreError::Database(e)
    }
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{e} in `{s}`")))
}

fn parse<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(StoreError::Corrupt)
}

fn execution_row(r: &SqliteRow) -> Result<Execution> {
    Ok(Execution {
        id: r.get("id"),
        org: r.get("org"),
        project: r.get("project"),
        pipeline: r.get("pipeline"),
        pipeline_version: r.get("pipeline_version"),
        sequence_id: r.get("sequence_id"),
        status: parse(r.get("status"))?,
        mode: parse(r.get("mode"))?,
        triggered_by: r.get("triggered_by"),
        inputs: json(r.get("inputs"))?,
        selected_stages: json(r.get("selected_stages"))?,
        snapshot: r.get("snapshot"),
        source_file: r.get("source_file"),
        parent_id: r.get("parent_id"),
        original_id: r.get("original_id"),
        failure: r.get("failure"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
    })
}

fn node_row(r: &SqliteRow) -> Result<Node> {
    Ok(Node {
        id: r.get("id"),
        execution_id: r.get("execution_id"),
        parent_id: r.get("parent_id"),
        kind: match r.get::<&str, _>("kind") {
            "stage" => NodeKind::Stage,
            "step_group" => NodeKind::StepGroup,
            "step" => NodeKind::Step,
            other => return Err(StoreError::Corrupt(format!("unknown node kind `{other}`"))),
        },
        identifier: r.get("identifier"),
        name: r.get("name"),
        path: r.get("path"),
        position: r.get("position"),
        attempt: r.get("attempt"),
        status: parse(r.get("status"))?,
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
        failure: r.get("failure"),
        skip_reason: r.get("skip_reason"),
        outputs: json(r.get("outputs"))?,
        reused_from: r.get("reused_from"),
    })
}

// Every read-then-write transaction starts with `BEGIN IMMEDIATE`: it takes the write lock up front, so two
// writers queue on the busy timeout instead of deadlocking on a lock upgrade (SQLITE_BUSY at once).
#[async_trait]
impl Store for SqliteStore {
    async fn save_pipeline(&self, org: &str, project: &str, identifier: &str, yaml: &str) -> Result<i64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let last: Option<(i64, String)> = sqlx::query_as(
            "SELECT version, yaml FROM pipelines WHERE org = ? AND project = ? AND identifier = ? ORDER BY version DESC LIMIT 1",
        )
        .bind(org)
        .bind(project)
        .bind(identifier)
        .fetch_optional(&mut *tx)
        .await?;
        let version = match last {
            Some((v, y)) if y == yaml => return Ok(v),
            Some((v, _)) => v + 1,
            None => 1,
        };
        sqlx::query(
            "INSERT INTO pipelines (org, project, identifier, version, yaml, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(org)
        .bind(project)
        .bind(identifier)
        .bind(version)
        .bind(yaml)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn pipeline_yaml(&self, org: &str, project: &str, identifier: &str, version: i64) -> Result<String> {
        sqlx::query_scalar(
            "SELECT yaml FROM pipelines WHERE org = ? AND project = ? AND identifier = ? AND version = ?",
        )
        .bind(org)
        .bind(project)
        .bind(identifier)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pipeline `{identifier}` version {version} is not stored")))
    }

    async fn create_execution(&self, e: NewExecution) -> Result<Execution> {
        let id = ulid::Ulid::new().to_string();
        let now = now_ms();
        let inputs = serde_json::to_string(&e.inputs).unwrap_or_else(|_| "{}".into());
        let selected = serde_json::to_string(&e.selected_stages).unwrap_or_else(|_| "[]".into());
        // The sequence number is computed inside the INSERT, which holds SQLite's write lock: no two
        // executions of a pipeline get the same number, whichever process creates them.
        sqlx::query(
            "INSERT INTO executions (id, org, project, pipeline, pipeline_version, sequence_id, status, mode, triggered_by,
               inputs, selected_stages, snapshot, source_file, parent_id, original_id, created_at)
             VALUES (?, ?, ?, ?, ?,
               (SELECT COALESCE(MAX(sequence_id), 0) + 1 FROM executions WHERE org = ? AND project = ? AND pipeline = ?),
               'Queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&e.org)
        .bind(&e.project)
        .bind(&e.pipeline)
        .bind(e.pipeline_version)
        .bind(&e.org)
        .bind(&e.project)
        .bind(&e.pipeline)
        .bind(e.mode.as_str())
        .bind(&e.triggered_by)
        .bind(inputs)
        .bind(selected)
        .bind(&e.snapshot)
        .bind(&e.source_file)
        .bind(&e.parent_id)
        .bind(&e.original_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        sqlx::query("INSERT INTO transitions (execution_id, to_status, at) VALUES (?, 'Queued', ?)")
            .bind(&id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.execution(&id).await
    }

    async fn set_execution_status(&self, id: &str, status: Status, failure: Option<&str>) -> Result<()> {
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let from: Option<String> =
            sqlx::query_scalar("SELECT status FROM executions WHERE id = ?").bind(id).fetch_optional(&mut *tx).await?;
        let Some(from) = from else { return Err(StoreError::NotFound(format!("no execution `{id}`"))) };
        sqlx::query(
            "UPDATE executions SET status = ?, failure = COALESCE(?, failure),
               started_at = CASE WHEN started_at IS NULL AND ? = 'Running' THEN ? ELSE started_at END,
               ended_at = CASE WHEN ? THEN ? ELSE NULL END
             WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(failure)
        .bind(status.as_str())
        .bind(now)
        .bind(status.is_final())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if from != status.as_str() {
            sqlx::query(
                "INSERT INTO transitions (execution_id, from_status, to_status, reason, at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(&from)
            .bind(status.as_str())
            .bind(failure)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn execution(&self, id_or_prefix: &str) -> Result<Execution> {
        let rows = sqlx::query("SELECT * FROM executions WHERE id = ? OR id LIKE ? ORDER BY id LIMIT 3")
            .bind(id_or_prefix)
            .bind(format!("{}%", id_or_prefix.replace(['%', '_'], "")))
            .fetch_all(&self.pool)
            .await?;
        if let Some(exact) = rows.iter().find(|r| r.get::<&str, _>("id") == id_or_prefix) {
            return execution_row(exact);
        }
        match rows.as_slice() {
            [] => Err(StoreError::NotFound(format!(
                "no execution `{id_or_prefix}`; `pipewright history` lists the executions"
            ))),
            [one] => execution_row(one),
            _ => Err(StoreError::NotFound(format!("`{id_or_prefix}` matches several executions; give more of the id"))),
        }
    }

    async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<Execution>> {
        let rows = sqlx::query(
            "SELECT * FROM executions WHERE (? IS NULL OR pipeline = ?) AND (? IS NULL OR status = ?)
               AND (? IS NULL OR id = ? OR original_id = ?)
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(&q.pipeline)
        .bind(&q.pipeline)
        .bind(q.status.map(Status::as_str))
        .bind(q.status.map(Status::as_str))
        .bind(&q.chain_of)
        .bind(&q.chain_of)
        .bind(&q.chain_of)
        .bind(q.limit.unwrap_or(50))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(execution_row).collect()
    }

    async fn put_node(&self, n: &Node) -> Result<()> {
        // One statement (autocommit); the transition is recorded by a trigger (migration 0002).
        let outputs = serde_json::to_string(&n.outputs).unwrap_or_else(|_| "{}".into());
        sqlx::query(
            "INSERT INTO nodes (id, execution_id, parent_id, kind, identifier, name, path, position, attempt, status,
               started_at, ended_at, failure, skip_reason, outputs, reused_from)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempt = excluded.attempt,
               started_at = excluded.started_at, ended_at = excluded.ended_at, failure = excluded.failure,
               skip_reason = excluded.skip_reason, outputs = excluded.outputs, reused_from = excluded.reused_from",
        )
        .bind(&n.id)
        .bind(&n.execution_id)
        .bind(&n.parent_id)
        .bind(n.kind.as_str())
        .bind(&n.identifier)
        .bind(&n.name)
        .bind(&n.path)
        .bind(n.position)
        .bind(n.attempt)
        .bind(n.status.as_str())
        .bind(n.started_at)
        .bind(n.ended_at)
        .bind(&n.failure)
        .bind(&n.skip_reason)
        .bind(outputs)
        .bind(&n.reused_from)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn nodes(&self, execution_id: &str) -> Result<Vec<Node>> {
        let rows = sqlx::query("SELECT * FROM nodes WHERE execution_id = ? ORDER BY position")
            .bind(execution_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_row).collect()
    }

    async fn append_log(&self, execution_id: &str, node_id: &str, seq: i64, data: &str) -> Result<()> {
        sqlx::query("INSERT INTO log_chunks (node_id, execution_id, seq, data) VALUES (?, ?, ?, ?)")
            .bind(node_id)
            .bind(execution_id)
            .bind(seq)
            .bind(data)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn logs(&self, execution_id: &str, node_ids: Option<&[String]>) -> Result<Vec<LogChunk>> {
        let rows = sqlx::query(
            "SELECT l.node_id, l.seq, l.data FROM log_chunks l JOIN nodes n ON n.id = l.node_id
             WHERE l.execution_id = ? ORDER BY n.position, l.seq",
        )
        .bind(execution_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| LogChunk { node_id: r.get("node_id"), seq: r.get("seq"), data: r.get("data") })
            .filter(|c| node_ids.is_none_or(|ids| ids.contains(&c.node_id)))
            .collect())
    }

    async fn request_abort(&self, id: &str) -> Result<bool> {
        let e = self.execution(id).await?;
        if e.status.is_final() {
            return Ok(false);
        }
        sqlx::query("UPDATE executions SET abort_requested = 1 WHERE id = ?").bind(&e.id).execute(&self.pool).await?;
        Ok(true)
    }

    async fn abort_requested(&self, id: &str) -> Result<bool> {
        let v: Option<i64> = sqlx::query_scalar("SELECT abort_requested FROM executions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v == Some(1))
    }

    async fn put_decision(&self, d: &Decision) -> Result<()> {
        sqlx::query(
            "INSERT INTO decisions (execution_id, node_id, kind, action, by, comment, inputs, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.execution_id)
        .bind(&d.node_id)
        .bind(&d.kind)
        .bind(&d.action)
        .bind(&d.by)
        .bind(&d.comment)
        .bind(serde_json::to_string(&d.inputs).unwrap_or_else(|_| "{}".into()))
        .bind(d.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn take_decision(&self, execution_id: &str, node_id: &str) -> Result<Option<Decision>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "SELECT * FROM decisions WHERE execution_id = ? AND node_id = ? AND consumed = 0 ORDER BY id LIMIT 1",
        )
        .bind(execution_id)
        .bind(node_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = row else { return Ok(None) };
        sqlx::query("UPDATE decisions SET consumed = 1 WHERE id = ?")
            .bind(r.get::<i64, _>("id"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Decision {
            execution_id: r.get("execution_id"),
            node_id: r.get("node_id"),
            kind: r.get("kind"),
            action: r.get("action"),
            by: r.get("by"),
            comment: r.get("comment"),
            inputs: json(r.get("inputs"))?,
            at: r.get("at"),
        }))
    }

    async fn transitions(&self, execution_id: &str) -> Result<Vec<Transition>> {
        let rows = sqlx::query("SELECT * FROM transitions WHERE execution_id = ? ORDER BY id")
            .bind(execution_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Transition {
                node_id: r.get("node_id"),
                from: r.get("from_status"),
                to: r.get("to_status"),
                reason: r.get("reason"),
                at: r.get("at"),
            })
            .collect())
    }
}
