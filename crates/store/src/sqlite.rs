//! The SQLite implementation of every store role: one WAL-mode database file under the state directory,
//! migrations embedded in the binary, one held writer connection and a pool of readers, a busy timeout so
//! several `pipewright` processes can share the file, and clear errors for an unwritable directory or a file
//! that is not a pipewright database.

use crate::rows::*;
use crate::{Directory, Feed, History, Journal, Leases, Requests, Result, StoreError, Tasks};
use async_trait::async_trait;
use domain::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqlitePool};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The store in `<state-dir>/pipewright.db`.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Reads.
    pool: SqlitePool,
    /// Writes (one connection).
    /// The one connection every write goes through, held rather than pooled: a pool hands a connection back
    /// through a task of its own, which costs about 0.1 ms a statement on the engine's path.
    writer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    /// The last status this store wrote of each node not yet finished (so a node's transition needs no read).
    statuses: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// Wake-ups about tasks written through this store.
    signals: Arc<crate::Signals>,
    path: PathBuf,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

fn open_err(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Open { path: path.display().to_string(), message: message.into() }
}

/// Count one failed login: a new key starts at 1, a window that began before `since` starts again.
const LOGIN_FAILED: &str = "INSERT INTO login_failures (key, count, since) VALUES (?1, 1, ?2)
     ON CONFLICT (key) DO UPDATE SET
       count = CASE WHEN login_failures.since < ?3 THEN 1 ELSE login_failures.count + 1 END,
       since = CASE WHEN login_failures.since < ?3 THEN ?2 ELSE login_failures.since END
     RETURNING count";

/// The statuses an execution or node ends in, as SQL.
const FINAL: &str = "('Success', 'Failed', 'Aborted', 'Expired', 'IgnoreFailed', 'Skipped', 'ApprovalRejected')";

impl SqliteStore {
    /// Open (creating if needed) the store in `state_dir`.
    pub async fn open(state_dir: &Path) -> Result<Self> {
        // Private: only pipewright's own user may enter a new state directory.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(state_dir).map_err(|e| {
                open_err(
                    state_dir,
                    format!("{e}; choose a writable directory with --state-dir or PIPEWRIGHT_STATE_DIR"),
                )
            })?;
        }
        let path = state_dir.join("pipewright.db");
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(60))
            .foreign_keys(true)
            // Pages are read through a memory map (no read call per page, shared between connections).
            .pragma("mmap_size", "268435456");
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
        // Writes go through one connection (SQLite runs one writer at a time anyway), so its page cache stays
        // warm instead of being invalidated by the other connections' writes; reads use a pool of three.
        let mut writer = opts.connect().await.map_err(|e| explain(&path, e))?;
        MIGRATOR.run(&mut writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => explain(&path, e),
            other => open_err(
                &path,
                format!("{other}; the database was written by another pipewright version or is damaged"),
            ),
        })?;
        // The database and its journal are readable by pipewright's own user only.
        for f in ["pipewright.db", "pipewright.db-wal", "pipewright.db-shm", "pipewright.lock"] {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(state_dir.join(f), std::fs::Permissions::from_mode(0o600));
        }
        let pool =
            SqlitePoolOptions::new().max_connections(3).connect_with(opts).await.map_err(|e| explain(&path, e))?;
        Ok(SqliteStore {
            pool,
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            statuses: Arc::default(),
            signals: Arc::default(),
            path,
        })
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

/// Run a unit of work to its end even when the caller stops waiting for it: a request cancelled in the middle
/// of a transaction must never hand its connection back to the pool with the transaction still open.
async fn detached<T, F>(work: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(work).await.unwrap_or_else(|e| Err(StoreError::Corrupt(format!("a store task stopped: {e}"))))
}

async fn execution_on(pool: &SqlitePool, id_or_prefix: &str) -> Result<Execution> {
    if let Some(exact) =
        sqlx::query("SELECT * FROM executions WHERE id = ?").bind(id_or_prefix).fetch_optional(pool).await?
    {
        return execution_row(&exact);
    }
    one_execution(by_prefix(pool, id_or_prefix, 2).await?, id_or_prefix)
}

/// Executions whose id starts with `prefix`, as a range over the primary key (ids are upper-case ULIDs; `~`
/// sorts after every digit and letter), so the lookup uses the index instead of scanning the history.
async fn by_prefix(pool: &SqlitePool, prefix: &str, limit: i64) -> Result<Vec<Execution>> {
    let prefix = prefix.to_ascii_uppercase();
    let rows = sqlx::query("SELECT * FROM executions WHERE id >= ? AND id < ? ORDER BY id LIMIT ?")
        .bind(&prefix)
        .bind(format!("{prefix}~"))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(execution_row).collect()
}

// Every read-then-write transaction starts with `BEGIN IMMEDIATE`: it takes the write lock up front, so two
// writers queue on the busy timeout instead of deadlocking on a lock upgrade (SQLITE_BUSY at once).
#[async_trait]
impl History for SqliteStore {
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
    async fn execution(&self, id_or_prefix: &str) -> Result<Execution> {
        execution_on(&self.pool, id_or_prefix).await
    }
    async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<Execution>> {
        // Only the filters given are in the statement, so SQLite can use the index that fits them (an
        // `(? IS NULL OR col = ?)` form would hide every index and sort the whole table): (org, project,
        // [pipeline,] [status,] time) indexes yield rows newest first (migration 0005). Mode and who filter
        // those rows — `+col` keeps SQLite from preferring another index and sorting all it finds.
        let mut sql = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT id, org, project, pipeline, pipeline_version, sequence_id, status, mode, triggered_by, inputs,
               selected_stages, '' AS snapshot, source_file, parent_id, original_id, failure, created_at, started_at,
               ended_at
             FROM executions WHERE 1 = 1",
        );
        if let Some(org) = &q.org {
            sql.push(" AND org = ").push_bind(org);
        }
        if let Some(project) = &q.project {
            sql.push(" AND project = ").push_bind(project);
        }
        if let Some(pipeline) = &q.pipeline {
            sql.push(" AND pipeline = ").push_bind(pipeline);
        }
        if let Some(status) = q.status {
            sql.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(chain) = &q.chain_of {
            sql.push(" AND (id = ").push_bind(chain).push(" OR original_id = ").push_bind(chain).push(")");
        }
        if let Some(mode) = q.mode {
            sql.push(" AND +mode = ").push_bind(mode.as_str());
        }
        if let Some(who) = &q.triggered_by {
            sql.push(" AND +triggered_by = ").push_bind(who);
        }
        if let Some(since) = q.since {
            sql.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = q.until {
            sql.push(" AND created_at < ").push_bind(until);
        }
        if let Some((at, id)) = &q.before {
            sql.push(" AND (created_at, id) < (").push_bind(*at).push(", ").push_bind(id).push(")");
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(q.limit.unwrap_or(50));
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(execution_row).collect()
    }
    async fn nodes(&self, execution_id: &str) -> Result<Vec<Node>> {
        let rows = sqlx::query("SELECT * FROM nodes WHERE execution_id = ? ORDER BY position")
            .bind(execution_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_row).collect()
    }
    async fn logs(&self, execution_id: &str, node_ids: Option<&[String]>) -> Result<Vec<LogChunk>> {
        let rows = sqlx::query(
            "SELECT l.rowid AS cursor, l.node_id, l.seq, l.data FROM log_chunks l JOIN nodes n ON n.id = l.node_id
             WHERE l.execution_id = ? ORDER BY n.position, l.seq",
        )
        .bind(execution_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(chunk_row).filter(|c| node_ids.is_none_or(|ids| ids.contains(&c.node_id))).collect())
    }
    async fn transitions(&self, execution_id: &str) -> Result<Vec<Transition>> {
        let rows = sqlx::query("SELECT * FROM transitions WHERE execution_id = ? ORDER BY id")
            .bind(execution_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(transition_row).collect())
    }
}

#[async_trait]
impl Requests for SqliteStore {
    async fn request_abort(&self, id: &str) -> Result<bool> {
        let e = self.execution(id).await?;
        if e.status.is_final() {
            return Ok(false);
        }
        sqlx::query("UPDATE executions SET abort_requested = 1 WHERE id = ?")
            .bind(&e.id)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(true)
    }
    async fn put_decision(&self, d: &Decision) -> Result<()> {
        sqlx::query(
            "INSERT INTO decisions (execution_id, node_id, kind, action, by, comment, inputs, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&d.execution_id)
        .bind(&d.node_id)
        .bind(d.action.kind().as_str())
        .bind(d.action.as_str())
        .bind(&d.by)
        .bind(&d.comment)
        .bind(serde_json::to_string(&d.inputs).unwrap_or_else(|_| "{}".into()))
        .bind(d.at)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Journal for SqliteStore {
    async fn save_pipeline(&self, org: &str, project: &str, identifier: &str, yaml: &str) -> Result<i64> {
        let writer = self.writer.clone();
        let org = org.to_owned();
        let project = project.to_owned();
        let identifier = identifier.to_owned();
        let yaml = yaml.to_owned();
        detached(async move {
            let mut conn = writer.lock().await;
            let org = org.as_str();
            let project = project.as_str();
            let identifier = identifier.as_str();
            let yaml = yaml.as_str();
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
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
        })
        .await
    }
    async fn create_execution(&self, e: NewExecution) -> Result<Execution> {
        let writer = self.writer.clone();
        detached(async move {
            let mut conn = writer.lock().await;
            let id = ulid::Ulid::new().to_string();
            let now = now_ms();
            let inputs = serde_json::to_string(&e.inputs).unwrap_or_else(|_| "{}".into());
            let selected = serde_json::to_string(&e.selected_stages).unwrap_or_else(|_| "[]".into());
            let mut tx = conn.begin().await?;
            // The pipeline's counter row, bumped in the transaction that inserts the execution: no two
            // executions of a pipeline get the same number, whichever process creates them.
            let sequence: i64 = sqlx::query_scalar(
                "INSERT INTO sequences (org, project, pipeline, last_sequence) VALUES (?, ?, ?, 1)
                 ON CONFLICT (org, project, pipeline) DO UPDATE SET last_sequence = sequences.last_sequence + 1
                 RETURNING last_sequence",
            )
            .bind(&e.org)
            .bind(&e.project)
            .bind(&e.pipeline)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO executions (id, org, project, pipeline, pipeline_version, sequence_id, status, mode, triggered_by,
                   inputs, selected_stages, snapshot, source_file, parent_id, original_id, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, 'Queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&id)
            .bind(&e.org)
            .bind(&e.project)
            .bind(&e.pipeline)
            .bind(e.pipeline_version)
            .bind(sequence)
            .bind(e.mode.as_str())
            .bind(&e.triggered_by)
            .bind(inputs)
            .bind(selected)
            .bind(&e.snapshot)
            .bind(&e.source_file)
            .bind(&e.parent_id)
            .bind(&e.original_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO transitions (execution_id, to_status, at) VALUES (?, 'Queued', ?)")
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let row = sqlx::query("SELECT * FROM executions WHERE id = ?").bind(&id).fetch_one(&mut *conn).await?;
            execution_row(&row)
        })
        .await
    }
    async fn set_execution_status(&self, id: &str, status: Status, failure: Option<&str>, fence: &Fence) -> Result<()> {
        let writer = self.writer.clone();
        let id = id.to_owned();
        let failure = failure.map(str::to_owned);
        let fence = fence.clone();
        detached(async move {
            let mut conn = writer.lock().await;
            let id = id.as_str();
            let failure = failure.as_deref();
            let now = now_ms();
            check_fence(&mut conn, id, &fence).await?;
            // The update says what the status was (kept in `prev_status`): no read before the write, so any
            // SQL database runs this the same way. An execution that ended keeps its status.
            let mut tx = conn.begin().await?;
            let from: Option<String> = sqlx::query_scalar(&format!(
                "UPDATE executions SET prev_status = status, status = ?, failure = COALESCE(?, failure),
                   started_at = CASE WHEN started_at IS NULL AND ? = 'Running' THEN ? ELSE started_at END,
                   ended_at = CASE WHEN ? THEN ? ELSE NULL END
                 WHERE id = ? AND status NOT IN {FINAL}
                 RETURNING prev_status"
            ))
            .bind(status.as_str())
            .bind(failure)
            .bind(status.as_str())
            .bind(now)
            .bind(status.is_final())
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(from) = from else {
                return Err(StoreError::Fenced(format!("execution `{id}` has ended; its status stays as it is")));
            };
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
        })
        .await
    }
    async fn set_execution_input(&self, id: &str, path: &str, value: &serde_json::Value, fence: &Fence) -> Result<()> {
        let writer = self.writer.clone();
        let fence = fence.clone();
        let id = id.to_owned();
        // A path is a JSON object key (`pipeline.stages.deploy.variables.replicas`), quoted as one.
        let key = format!("$.\"{}\"", path.replace('"', ""));
        let value = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        detached(async move {
            let mut conn = writer.lock().await;
            check_fence(&mut conn, &id, &fence).await?;
            let done = sqlx::query("UPDATE executions SET inputs = json_set(inputs, ?, json(?)) WHERE id = ?")
                .bind(&key)
                .bind(&value)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("no execution `{id}`")));
            }
            Ok(())
        })
        .await
    }
    async fn put_node(&self, n: &Node, fence: &Fence) -> Result<()> {
        // The node, then — when its status changed — its transition: two autocommit statements on the held
        // writer connection (a transaction's BEGIN and COMMIT would double the cost of the engine's most
        // frequent write). The status a node had is known without reading it: this store remembers the last
        // status it wrote of every unfinished node; a node it has not written (a new one, or one of an
        // execution taken over) is inserted, and only if it exists already is its status read. Were the
        // process to die between the two statements, the node would be right and one transition missing.
        let writer = self.writer.clone();
        let known = self.statuses.clone();
        let n = n.clone();
        let fence = fence.clone();
        detached(async move {
            let mut conn = writer.lock().await;
            check_fence(&mut conn, &n.execution_id, &fence).await?;
            let cached = known.lock().unwrap_or_else(|e| e.into_inner()).get(&n.id).cloned();
            let from = match cached {
                Some(prev) => {
                    update_node(&mut conn, &n).await?;
                    Some(prev)
                }
                None => match insert_node(&mut conn, &n).await {
                    Ok(()) => None,
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        let prev: Option<String> = sqlx::query_scalar("SELECT status FROM nodes WHERE id = ?")
                            .bind(&n.id)
                            .fetch_optional(&mut *conn)
                            .await?;
                        update_node(&mut conn, &n).await?;
                        prev
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            if from.as_deref() != Some(n.status.as_str()) {
                sqlx::query(
                    "INSERT INTO transitions (execution_id, node_id, from_status, to_status, reason, at)
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&n.execution_id)
                .bind(&n.id)
                .bind(from)
                .bind(n.status.as_str())
                .bind(n.failure.as_ref().or(n.skip_reason.as_ref()))
                .bind(now_ms())
                .execute(&mut *conn)
                .await?;
            }
            let mut k = known.lock().unwrap_or_else(|e| e.into_inner());
            if n.status.is_final() {
                k.remove(&n.id);
            } else {
                k.insert(n.id.clone(), n.status.as_str().to_string());
            }
            Ok(())
        })
        .await
    }
    async fn append_log(&self, execution_id: &str, node_id: &str, seq: i64, data: &str, fence: &Fence) -> Result<()> {
        let mut conn = self.writer.lock().await;
        check_fence(&mut conn, execution_id, fence).await?;
        sqlx::query(
            "INSERT INTO log_chunks (node_id, execution_id, seq, data) VALUES (?, ?, ?, ?)
             ON CONFLICT (node_id, seq) DO NOTHING",
        )
        .bind(node_id)
        .bind(execution_id)
        .bind(seq)
        .bind(data)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
    async fn abort_requested(&self, id: &str) -> Result<bool> {
        let v: Option<i64> = sqlx::query_scalar("SELECT abort_requested FROM executions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v == Some(1))
    }
    async fn take_decision(&self, execution_id: &str, node_id: &str, fence: &Fence) -> Result<Option<Decision>> {
        // One statement marks the oldest pending decision taken and returns it: two takers never get the same.
        let mut conn = self.writer.lock().await;
        check_fence(&mut conn, execution_id, fence).await?;
        let row = sqlx::query(
            "UPDATE decisions SET consumed = 1
             WHERE id = (SELECT id FROM decisions WHERE execution_id = ? AND node_id = ? AND consumed = 0
                         ORDER BY id LIMIT 1)
             RETURNING *",
        )
        .bind(execution_id)
        .bind(node_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(r) = row else { return Ok(None) };
        decision_row(&r).map(Some)
    }
    async fn put_step_process(&self, execution_id: &str, node_id: &str, p: &StepProcess, fence: &Fence) -> Result<()> {
        let mut conn = self.writer.lock().await;
        check_fence(&mut conn, execution_id, fence).await?;
        sqlx::query(
            "INSERT INTO step_processes (execution_id, node_id, host, pgid, started) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (execution_id, node_id) DO UPDATE SET host = excluded.host, pgid = excluded.pgid,
               started = excluded.started",
        )
        .bind(execution_id)
        .bind(node_id)
        .bind(&p.host)
        .bind(p.pgid)
        .bind(p.started)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
    async fn drop_step_process(&self, execution_id: &str, node_id: &str, fence: &Fence) -> Result<()> {
        let mut conn = self.writer.lock().await;
        check_fence(&mut conn, execution_id, fence).await?;
        sqlx::query("DELETE FROM step_processes WHERE execution_id = ?1 AND (?2 = '' OR node_id = ?2)")
            .bind(execution_id)
            .bind(node_id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
    async fn step_processes(&self, execution_id: &str) -> Result<Vec<(String, StepProcess)>> {
        let rows: Vec<(String, String, i64, i64)> =
            sqlx::query_as("SELECT node_id, host, pgid, started FROM step_processes WHERE execution_id = ?")
                .bind(execution_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(n, host, pgid, started)| (n, StepProcess { host, pgid, started })).collect())
    }
}

#[async_trait]
impl Feed for SqliteStore {
    async fn executions_by_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<Execution>> {
        by_prefix(&self.pool, prefix, limit).await
    }
    async fn transitions_after(&self, execution_id: &str, after: i64, limit: i64) -> Result<Vec<Transition>> {
        let rows = sqlx::query("SELECT * FROM transitions WHERE execution_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(execution_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(transition_row).collect())
    }
    async fn logs_after(&self, execution_id: &str, after: i64, limit: i64) -> Result<Vec<LogChunk>> {
        let rows = sqlx::query(
            "SELECT rowid AS cursor, node_id, seq, data FROM log_chunks WHERE execution_id = ? AND rowid > ?
             ORDER BY rowid LIMIT ?",
        )
        .bind(execution_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(chunk_row).collect())
    }
}

#[async_trait]
impl Leases for SqliteStore {
    async fn claim_execution(&self, id: &str, owner: &str, now: i64, until: i64) -> Result<Option<i64>> {
        let epoch: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE executions SET lease_epoch = CASE WHEN owner IS ?1 THEN lease_epoch ELSE lease_epoch + 1 END,
               owner = ?1, lease_until = ?2
             WHERE id = ?3 AND status NOT IN {FINAL}
               AND (owner IS NULL OR owner = ?1 OR lease_until IS NULL OR lease_until < ?4)
             RETURNING lease_epoch"
        ))
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *self.writer.lock().await)
        .await?;
        Ok(epoch)
    }
    async fn renew_lease(&self, id: &str, fence: &Fence, until: i64) -> Result<bool> {
        let Hold::Owner { owner, epoch } = fence.hold() else { return Ok(false) };
        if fence.is_lost() {
            return Ok(false);
        }
        // On a connection of the pool, not the writer: a renewal must not wait behind every write queued by
        // hundreds of running steps (its owner gives up its hold when a renewal is late), and SQLite takes
        // its write lock per statement, so it gets in between them.
        let r = sqlx::query("UPDATE executions SET lease_until = ? WHERE id = ? AND owner = ? AND lease_epoch = ?")
            .bind(until)
            .bind(id)
            .bind(owner)
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
    async fn lease(&self, id: &str) -> Result<Option<(String, Option<i64>)>> {
        let row: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT owner, lease_until FROM executions WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(o, l)| o.map(|o| (o, l))))
    }
    async fn orphaned(&self, now: i64, unowned_before: i64) -> Result<Vec<Execution>> {
        let rows = sqlx::query(&format!(
            "SELECT id, org, project, pipeline, pipeline_version, sequence_id, status, mode, triggered_by, inputs,
               selected_stages, snapshot, source_file, parent_id, original_id, failure, created_at, started_at,
               ended_at
             FROM executions WHERE status NOT IN {FINAL}
               AND ((owner IS NULL AND created_at < ?1) OR lease_until < ?2)
             ORDER BY created_at"
        ))
        .bind(unowned_before)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(execution_row).collect()
    }
}

#[async_trait]
impl Directory for SqliteStore {
    async fn put_record(&self, r: &Record, replace: bool) -> Result<bool> {
        let body = serde_json::to_string(&r.body).unwrap_or_else(|_| "{}".into());
        let sql = if replace {
            "INSERT INTO records (kind, org, project, identifier, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (kind, org, project, identifier) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at"
        } else {
            "INSERT INTO records (kind, org, project, identifier, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (kind, org, project, identifier) DO NOTHING"
        };
        let done = sqlx::query(sql)
            .bind(&r.kind)
            .bind(&r.org)
            .bind(&r.project)
            .bind(&r.identifier)
            .bind(body)
            .bind(r.created_at)
            .bind(r.updated_at)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(done.rows_affected() > 0)
    }
    async fn record(&self, kind: &str, org: &str, project: &str, identifier: &str) -> Result<Option<Record>> {
        let row = sqlx::query("SELECT * FROM records WHERE kind = ? AND org = ? AND project = ? AND identifier = ?")
            .bind(kind)
            .bind(org)
            .bind(project)
            .bind(identifier)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record_row).transpose()
    }
    async fn records(&self, kind: &str, org: Option<&str>, project: Option<&str>) -> Result<Vec<Record>> {
        let rows = sqlx::query(
            "SELECT * FROM records WHERE kind = ? AND (? IS NULL OR org = ?) AND (? IS NULL OR project = ?)
             ORDER BY org, project, identifier",
        )
        .bind(kind)
        .bind(org)
        .bind(org)
        .bind(project)
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_row).collect()
    }
    async fn delete_record(&self, kind: &str, org: &str, project: &str, identifier: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM records WHERE kind = ? AND org = ? AND project = ? AND identifier = ?")
            .bind(kind)
            .bind(org)
            .bind(project)
            .bind(identifier)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(done.rows_affected() > 0)
    }
    async fn delete_records_keeping(&self, keys: &[RecordKey], keep: &Keep) -> Result<Option<u64>> {
        let writer = self.writer.clone();
        let (keys, keep) = (keys.to_vec(), keep.clone());
        detached(async move {
            let mut conn = writer.lock().await;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let count =
                "SELECT COUNT(*) FROM records WHERE kind = ? AND org = '' AND json_extract(body, '$.' || ?) = ?";
            let before: i64 = sqlx::query_scalar(count)
                .bind(&keep.kind)
                .bind(&keep.field)
                .bind(&keep.value)
                .fetch_one(&mut *tx)
                .await?;
            let mut n = 0;
            for k in &keys {
                n += sqlx::query("DELETE FROM records WHERE kind = ? AND org = ? AND project = ? AND identifier = ?")
                    .bind(&k.kind)
                    .bind(&k.org)
                    .bind(&k.project)
                    .bind(&k.identifier)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            let left: i64 = sqlx::query_scalar(count)
                .bind(&keep.kind)
                .bind(&keep.field)
                .bind(&keep.value)
                .fetch_one(&mut *tx)
                .await?;
            if before > 0 && left == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            tx.commit().await?;
            Ok(Some(n))
        })
        .await
    }
    async fn delete_scope(&self, org: &str, project: Option<&str>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM records WHERE org = ? AND (? IS NULL OR project = ?)")
            .bind(org)
            .bind(project)
            .bind(project)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(done.rows_affected())
    }
    async fn put_token(&self, t: &Token) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, name, principal_kind, principal_id, principal_org, principal_project, hash,
               created_at, expires_at, revoked_at, principal_uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.principal_kind)
        .bind(&t.principal_id)
        .bind(&t.principal_org)
        .bind(&t.principal_project)
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .bind(&t.principal_uid)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = ?").bind(hash).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(token_row))
    }
    async fn tokens(&self, principal: Option<(&str, &str)>) -> Result<Vec<Token>> {
        let (kind, id) = principal.map_or((None, None), |(k, i)| (Some(k), Some(i)));
        let rows = sqlx::query(
            "SELECT * FROM tokens WHERE (?1 IS NULL OR principal_kind = ?1) AND (?2 IS NULL OR principal_id = ?2)
             ORDER BY created_at, id",
        )
        .bind(kind)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(token_row).collect())
    }
    async fn revoke_token(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(done.rows_affected() > 0)
    }
    async fn bind_token(&self, id: &str, principal_uid: &str) -> Result<()> {
        sqlx::query("UPDATE tokens SET principal_uid = ? WHERE id = ?")
            .bind(principal_uid)
            .bind(id)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }
    async fn delete_history(&self, org: &str, project: Option<&str>) -> Result<u64> {
        let writer = self.writer.clone();
        let (org, project) = (org.to_string(), project.map(str::to_string));
        detached(async move {
            let mut conn = writer.lock().await;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            // A deleted project's history is overwritten, not left readable in free pages (only here: it
            // costs every write when always on).
            sqlx::query("PRAGMA secure_delete = ON").execute(&mut *tx).await?;
            const IN_SCOPE: &str = "(SELECT id FROM executions WHERE org = ?1 AND (?2 IS NULL OR project = ?2))";
            sqlx::query(&format!(
                "DELETE FROM task_output WHERE task_id IN (SELECT id FROM tasks WHERE execution_id IN {IN_SCOPE})"
            ))
            .bind(&org)
            .bind(&project)
            .execute(&mut *tx)
            .await?;
            for table in ["log_chunks", "decisions", "transitions", "nodes", "tasks"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE execution_id IN {IN_SCOPE}"))
                    .bind(&org)
                    .bind(&project)
                    .execute(&mut *tx)
                    .await?;
            }
            let done = sqlx::query("DELETE FROM executions WHERE org = ?1 AND (?2 IS NULL OR project = ?2)")
                .bind(&org)
                .bind(&project)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM pipelines WHERE org = ?1 AND (?2 IS NULL OR project = ?2)")
                .bind(&org)
                .bind(&project)
                .execute(&mut *tx)
                .await?;
            sqlx::query("PRAGMA secure_delete = OFF").execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        })
        .await
    }
    async fn audit(&self, e: &AuditEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, principal, action, resource_type, resource, org, project, address, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(&e.principal)
        .bind(&e.action)
        .bind(&e.resource_type)
        .bind(&e.resource)
        .bind(&e.org)
        .bind(&e.project)
        .bind(&e.address)
        .bind(serde_json::to_string(&e.detail).unwrap_or_else(|_| "{}".into()))
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }
    async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM audit WHERE (?1 IS NULL OR principal = ?1) AND (?2 IS NULL OR resource_type = ?2)
               AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
        )
        .bind(&q.principal)
        .bind(&q.resource_type)
        .bind(q.before)
        .bind(q.limit.unwrap_or(100))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_row).collect()
    }
    async fn login_failures(&self, key: &str, since: i64) -> Result<i64> {
        let n: Option<i64> = sqlx::query_scalar("SELECT count FROM login_failures WHERE key = ? AND since >= ?")
            .bind(key)
            .bind(since)
            .fetch_optional(&self.pool)
            .await?;
        Ok(n.unwrap_or(0))
    }
    async fn count_login_failure(&self, key: &str, now: i64, since: i64) -> Result<i64> {
        let mut conn = self.writer.lock().await;
        sqlx::query("DELETE FROM login_failures WHERE since < ? AND key <> ?")
            .bind(since)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        let n: i64 = sqlx::query_scalar(LOGIN_FAILED).bind(key).bind(now).bind(since).fetch_one(&mut *conn).await?;
        Ok(n)
    }
    async fn clear_login_failures(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE key = ?")
            .bind(key)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }
}

/// The agents' columns with the tasks each holds.
const AGENTS: &str =
    "SELECT a.*, (SELECT count(*) FROM tasks t WHERE t.agent = a.name AND t.state = 'claimed') AS running
     FROM agents a";

// One writer connection: a claim reads the candidates and takes one inside one immediate transaction, so
// no other writer (of this or another process) comes between.
#[async_trait]
impl Tasks for SqliteStore {
    async fn enqueue_task(&self, t: &NewTask) -> Result<()> {
        sqlx::query(
            "INSERT INTO tasks (id, execution_id, stage_key, selectors, payload, state, created_at, org, project)
             VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.execution_id)
        .bind(&t.stage_key)
        .bind(text_of(&t.selectors, "[]"))
        .bind(&t.payload)
        .bind(now_ms())
        .bind(&t.org)
        .bind(&t.project)
        .execute(&mut *self.writer.lock().await)
        .await?;
        let held: Option<String> = sqlx::query_scalar("SELECT agent FROM stage_agents WHERE stage_key = ?")
            .bind(&t.stage_key)
            .fetch_optional(&self.pool)
            .await?;
        self.signals.queued(held.as_deref());
        Ok(())
    }
    async fn claim_task(
        &self,
        agent: &AgentRecord,
        tags: &[String],
        lease: &str,
        now: i64,
        until: i64,
        alive_after: i64,
    ) -> Result<Option<TaskRecord>> {
        let writer = self.writer.clone();
        let (name, org, project, tags, lease) =
            (agent.name.clone(), agent.org.clone(), agent.project.clone(), tags.to_vec(), lease.to_string());
        detached(async move {
            let mut conn = writer.lock().await;
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let candidates = sqlx::query(
                "SELECT t.* FROM tasks t WHERE t.state = 'queued'
                   AND EXISTS (SELECT 1 FROM agents WHERE name = ?1 AND state = 'active')
                   AND (?3 = '' OR t.org = ?3) AND (?4 = '' OR t.project = ?4)
                   AND NOT EXISTS (SELECT 1 FROM stage_agents sa JOIN agents a ON a.name = sa.agent
                     WHERE sa.stage_key = t.stage_key AND sa.agent <> ?1 AND a.state <> 'revoked' AND a.last_seen > ?2)
                 ORDER BY t.created_at",
            )
            .bind(&name)
            .bind(alive_after)
            .bind(&org)
            .bind(&project)
            .fetch_all(&mut *tx)
            .await?;
            for row in &candidates {
                let t = task_row(row)?;
                if !t.selectors.iter().all(|s| tags.contains(s)) {
                    continue;
                }
                sqlx::query(
                    "UPDATE tasks SET state = 'claimed', agent = ?, lease_until = ?, claimed_at = ?, lease_hash = ?
                     WHERE id = ?",
                )
                .bind(&name)
                .bind(until)
                .bind(now)
                .bind(&lease)
                .bind(&t.id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO stage_agents (stage_key, agent) VALUES (?, ?)
                     ON CONFLICT (stage_key) DO UPDATE SET agent = excluded.agent",
                )
                .bind(&t.stage_key)
                .bind(&name)
                .execute(&mut *tx)
                .await?;
                let row = sqlx::query("SELECT * FROM tasks WHERE id = ?").bind(&t.id).fetch_one(&mut *tx).await?;
                tx.commit().await?;
                return task_row(&row).map(Some);
            }
            tx.commit().await?;
            Ok(None)
        })
        .await
    }
    async fn renew_task(&self, id: &str, holder: Holder<'_>, until: i64) -> Result<Option<bool>> {
        sqlx::query("UPDATE agents SET last_seen = ? WHERE name = ?")
            .bind(now_ms())
            .bind(holder.agent)
            .execute(&mut *self.writer.lock().await)
            .await?;
        let cancel: Option<i64> = sqlx::query_scalar(
            "UPDATE tasks SET lease_until = ?, acked = 1
             WHERE id = ? AND agent = ? AND lease_hash = ? AND state = 'claimed'
             RETURNING cancel",
        )
        .bind(until)
        .bind(id)
        .bind(holder.agent)
        .bind(holder.lease)
        .fetch_optional(&mut *self.writer.lock().await)
        .await?;
        Ok(cancel.map(|c| c != 0))
    }
    async fn append_task_output(&self, id: &str, holder: Holder<'_>, data: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO task_output (task_id, data) SELECT ?1, ?3 FROM tasks
             WHERE id = ?1 AND agent = ?2 AND lease_hash = ?4 AND state = 'claimed'",
        )
        .bind(id)
        .bind(holder.agent)
        .bind(data)
        .bind(holder.lease)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(done.rows_affected() == 1)
    }
    async fn task_output_after(&self, id: &str, after: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as("SELECT id, data FROM task_output WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }
    async fn finish_task(&self, id: &str, holder: Holder<'_>, report: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET state = 'done', report = ?, ended_at = ?, payload = ''
             WHERE id = ? AND agent = ? AND lease_hash = ? AND state = 'claimed'",
        )
        .bind(report)
        .bind(now)
        .bind(id)
        .bind(holder.agent)
        .bind(holder.lease)
        .execute(&mut *self.writer.lock().await)
        .await?;
        self.signals.ended(id);
        Ok(done.rows_affected() == 1)
    }
    async fn task(&self, id: &str) -> Result<Option<TaskRecord>> {
        let row = sqlx::query("SELECT * FROM tasks WHERE id = ?").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(task_row).transpose()
    }
    async fn cancel_task(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET cancel = 1,
               ended_at = CASE WHEN state = 'queued' THEN ?2 ELSE ended_at END,
               payload = CASE WHEN state = 'queued' THEN '' ELSE payload END,
               state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END
             WHERE id = ?1 AND state IN ('queued', 'claimed')",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *self.writer.lock().await)
        .await?;
        self.signals.ended(id);
        Ok(())
    }
    async fn expire_tasks(&self, now: i64) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(
            "UPDATE tasks SET state = CASE WHEN acked = 1 THEN 'lost' ELSE 'queued' END,
               ended_at = CASE WHEN acked = 1 THEN ?1 END,
               payload = CASE WHEN acked = 1 THEN '' ELSE payload END,
               agent = CASE WHEN acked = 1 THEN agent END,
               lease_until = CASE WHEN acked = 1 THEN lease_until END,
               claimed_at = CASE WHEN acked = 1 THEN claimed_at END
             WHERE state = 'claimed' AND (lease_until < ?1
               OR agent IN (SELECT name FROM agents WHERE state = 'revoked'))
             RETURNING *",
        )
        .bind(now)
        .fetch_all(&mut *self.writer.lock().await)
        .await?;
        let expired: Vec<TaskRecord> = rows.iter().map(task_row).collect::<Result<_>>()?;
        self.signals.expired(&expired);
        Ok(expired)
    }
    async fn register_agent(&self, a: &AgentRecord, secret: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO agents (name, tags, version, state, last_seen, principal, org, project, secret_hash)
             VALUES (?, ?, '', 'active', 0, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&a.name)
        .bind(text_of(&a.tags, "[]"))
        .bind(&a.principal)
        .bind(&a.org)
        .bind(&a.project)
        .bind(secret)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(done.rows_affected() == 1)
    }
    async fn set_agent_secret(&self, name: &str, secret: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE agents SET secret_hash = ? WHERE name = ?")
            .bind(secret)
            .bind(name)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(done.rows_affected() == 1)
    }
    async fn agent_by_secret(&self, secret: &str) -> Result<Option<AgentRecord>> {
        if secret.is_empty() {
            return Ok(None);
        }
        let row =
            sqlx::query("SELECT * FROM agents WHERE secret_hash = ?").bind(secret).fetch_optional(&self.pool).await?;
        row.as_ref().map(agent_row).transpose()
    }
    async fn agent_seen(&self, name: &str, version: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE agents SET version = ?, last_seen = ? WHERE name = ?")
            .bind(version)
            .bind(now)
            .bind(name)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }
    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query(&format!("{AGENTS} ORDER BY a.name")).fetch_all(&self.pool).await?;
        rows.iter().map(agent_row).collect()
    }
    fn signals(&self) -> &crate::Signals {
        &self.signals
    }
    async fn set_agent_state(&self, name: &str, state: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE agents SET state = ? WHERE name = ?")
            .bind(state)
            .bind(name)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Refuse a journal write whose fence is not the execution's current hold (read on the writer connection,
/// which every write of this store goes through, so no claim comes between the check and the write).
async fn check_fence(conn: &mut SqliteConnection, id: &str, fence: &Fence) -> Result<()> {
    if fence.is_lost() {
        return Err(StoreError::Fenced(format!("execution `{id}`: this process gave up its hold on it")));
    }
    let row: Option<(Option<String>, i64, Option<i64>)> =
        sqlx::query_as("SELECT owner, lease_epoch, lease_until FROM executions WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((owner, epoch, until)) = row else { return Err(StoreError::NotFound(format!("no execution `{id}`"))) };
    if fence.admits(owner.as_deref(), epoch, until, now_ms()) {
        Ok(())
    } else {
        Err(StoreError::Fenced(format!(
            "execution `{id}` is held by {}: this process's write was refused",
            owner.unwrap_or_else(|| "nobody".into())
        )))
    }
}

/// Insert a new node.
async fn insert_node(conn: &mut SqliteConnection, n: &Node) -> std::result::Result<(), sqlx::Error> {
    let outputs = serde_json::to_string(&n.outputs).unwrap_or_else(|_| "{}".into());
    sqlx::query(
        "INSERT INTO nodes (id, execution_id, parent_id, kind, identifier, name, path, position, attempt, status,
           started_at, ended_at, failure, skip_reason, outputs, reused_from)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .execute(conn)
    .await?;
    Ok(())
}

/// Update what changes of an existing node.
async fn update_node(conn: &mut SqliteConnection, n: &Node) -> Result<()> {
    let outputs = serde_json::to_string(&n.outputs).unwrap_or_else(|_| "{}".into());
    sqlx::query(
        "UPDATE nodes SET status = ?, attempt = ?, started_at = ?, ended_at = ?, failure = ?, skip_reason = ?,
           outputs = ?, reused_from = ?
         WHERE id = ?",
    )
    .bind(n.status.as_str())
    .bind(n.attempt)
    .bind(n.started_at)
    .bind(n.ended_at)
    .bind(&n.failure)
    .bind(&n.skip_reason)
    .bind(outputs)
    .bind(&n.reused_from)
    .bind(&n.id)
    .execute(conn)
    .await?;
    Ok(())
}
