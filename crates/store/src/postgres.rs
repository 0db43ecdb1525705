//! The PostgreSQL implementation of every store role, for servers and agents that share one database: a
//! connection pool, migrations of its own (`migrations-postgres/`, run under sqlx's advisory lock so
//! replicas starting together migrate once), each write one statement where it can be, and every call
//! retried with backoff while the database is unreachable (a restart, a failover), so a server rides out
//! a database restart instead of failing the executions it runs.
//!
//! Retrying is safe because every write is idempotent when repeated after a commit whose answer was lost:
//! a node or status written again finds its own status and records no second transition, a log chunk is
//! unique by node and sequence number, an execution's id is chosen before it is inserted.
//!
//! Cursors: log chunks and transitions of one execution are written under an advisory lock per execution
//! (`pg_advisory_xact_lock`), so their identity values are taken and committed in order; a live stream that
//! reads "after cursor N" never skips a row that commits later with a smaller cursor.

use crate::rows::*;
use crate::{Directory, Feed, History, Journal, Leases, Requests, Result, StoreError, Tasks};
use async_trait::async_trait;
use domain::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Postgres, QueryBuilder};
use std::str::FromStr;
use std::time::Duration;

/// The store in a PostgreSQL database (`postgres://…`).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Wake-ups about tasks, this process's and (through `LISTEN`) every other's.
    signals: std::sync::Arc<crate::Signals>,
}

/// The channel task news goes on: `q:<agent holding the stage>` when a task is queued, `e:<id>` when one ends.
const CHANNEL: &str = "pipewright_tasks";

/// Forward other processes' task news to `signals` while the store lives: a connection of its own listens,
/// and after it was lost (news may have been missed) everyone is woken to look again.
fn listen(pool: PgPool, signals: std::sync::Weak<crate::Signals>) {
    tokio::spawn(async move {
        loop {
            if let Ok(mut l) = sqlx::postgres::PgListener::connect_with(&pool).await
                && l.listen(CHANNEL).await.is_ok()
            {
                // Connected again: what was sent meanwhile is unknown, so everyone looks again.
                match signals.upgrade() {
                    Some(s) => s.everything(),
                    None => return,
                }
                while let Ok(n) = l.recv().await {
                    match signals.upgrade() {
                        Some(s) => s.dispatch(n.payload()),
                        None => return,
                    }
                }
            }
            if signals.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// Count one failed login: a new key starts at 1, a window that began before `since` starts again.
const LOGIN_FAILED: &str = "INSERT INTO login_failures (key, count, since) VALUES ($1, 1, $2)
     ON CONFLICT (key) DO UPDATE SET
       count = CASE WHEN login_failures.since < $3 THEN 1 ELSE login_failures.count + 1 END,
       since = CASE WHEN login_failures.since < $3 THEN $2 ELSE login_failures.since END
     RETURNING count";

/// The statuses an execution ends in, as SQL.
const FINAL: &str = "('Success', 'Failed', 'Aborted', 'Expired', 'IgnoreFailed', 'Skipped', 'ApprovalRejected')";

/// How long calls keep retrying while the database cannot be reached.
const RIDE_OUT: Duration = Duration::from_secs(90);

/// A URL as it may be shown: without its password.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Whether an error means the database could not be reached (or is restarting), so the call may be tried
/// again, rather than that the call itself was wrong.
fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // 08: connection exception; 57P01-03: shutdown, crash, starting up; 40001 / 40P01: serialization
            // failure and deadlock, which a retry resolves.
            c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01"
        }),
        _ => false,
    }
}

/// Run `$work` (an expression giving a future of `Result<T, sqlx::Error>`), again with backoff while the
/// database cannot be reached, for up to [`RIDE_OUT`].
macro_rules! again {
    ($work:expr) => {{
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            match $work.await {
                Err(e) if transient(&e) && start.elapsed() < RIDE_OUT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => break other,
            }
        }
    }};
}

/// The `f` CTE of a fenced write: the execution's row (locked `FOR SHARE`, so no claim comes between) when
/// the fence is its current hold. `id` is the parameter number of the execution id, `first` that of the
/// first of the fence's four parameters (bound by [`bind_fence`]): mode, owner, epoch, now. The same rule as
/// `Fence::admits`.
fn fence_cte(id: usize, first: usize) -> String {
    let (m, o, e, now) = (first, first + 1, first + 2, first + 3);
    format!(
        "f AS (SELECT 1 FROM executions WHERE id = ${id}
           AND ((${m} = 'o' AND owner = ${o} AND lease_epoch = ${e})
             OR (${m} = 'u' AND (owner IS NULL OR lease_until IS NULL OR lease_until < ${now})))
           FOR SHARE)"
    )
}

/// Bind a fence's four parameters (see [`fence_cte`]).
fn bind_fence<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    fence: &'q Fence,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (m, o, e) = fence.params();
    q.bind(m).bind(o).bind(e).bind(now_ms())
}

/// [`bind_fence`] for a scalar query.
fn bind_fence_scalar<'q, T>(
    q: sqlx::query::QueryScalar<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>,
    fence: &'q Fence,
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments> {
    let (m, o, e) = fence.params();
    q.bind(m).bind(o).bind(e).bind(now_ms())
}

/// The error of a write its fence did not admit (or of an execution that does not exist).
fn refused(id: &str) -> StoreError {
    StoreError::Fenced(format!(
        "execution `{id}` is not held by this process (another one took it over, or it does not exist): the \
         write was refused"
    ))
}

/// A fence given up already: refused before anything is sent.
fn given_up(id: &str, fence: &Fence) -> Result<()> {
    if fence.is_lost() {
        return Err(StoreError::Fenced(format!("execution `{id}`: this process gave up its hold on it")));
    }
    Ok(())
}

impl PgStore {
    /// Whether `fence` is execution `id`'s current hold (a check for the writes that run as transactions).
    async fn check_fence(&self, conn: &mut sqlx::PgConnection, id: &str, fence: &Fence, lock: &str) -> Result<()> {
        given_up(id, fence)?;
        let row: Option<(Option<String>, i64, Option<i64>)> =
            sqlx::query_as(&format!("SELECT owner, lease_epoch, lease_until FROM executions WHERE id = $1 {lock}"))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        let Some((owner, epoch, until)) = row else { return Err(StoreError::NotFound(format!("no execution `{id}`"))) };
        if fence.admits(owner.as_deref(), epoch, until, now_ms()) { Ok(()) } else { Err(refused(id)) }
    }

    /// Connect to the database at `url` and bring its schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let shown = redact(url);
        let fail = |message: String| StoreError::Open { path: shown.clone(), message };
        let opts = PgConnectOptions::from_str(url).map_err(|e| {
            fail(format!("{e}; write it as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (--database-url)"))
        })?;
        let opts = opts.application_name("pipewright").disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| {
                fail(format!(
                    "{e}; is PostgreSQL running and the database created? Check --database-url / PIPEWRIGHT_DATABASE_URL"
                ))
            })?;
        MIGRATOR.run(&pool).await.map_err(|e| {
            fail(format!("{e}; the database was written by another pipewright version, or is not pipewright's"))
        })?;
        let signals = std::sync::Arc::new(crate::Signals::default());
        listen(pool.clone(), std::sync::Arc::downgrade(&signals));
        Ok(PgStore { pool, signals })
    }
}

async fn execution_on(pool: &PgPool, id_or_prefix: &str) -> Result<Execution> {
    let exact = again!(sqlx::query("SELECT * FROM executions WHERE id = $1").bind(id_or_prefix).fetch_optional(pool))?;
    if let Some(exact) = exact {
        return execution_row(&exact);
    }
    one_execution(by_prefix(pool, id_or_prefix, 2).await?, id_or_prefix)
}

/// Executions whose id starts with `prefix`: a range over the primary key (ids are upper-case ULIDs and sort
/// as bytes; `~` sorts after every digit and letter).
async fn by_prefix(pool: &PgPool, prefix: &str, limit: i64) -> Result<Vec<Execution>> {
    let prefix = prefix.to_ascii_uppercase();
    let upper = format!("{prefix}~");
    let rows = again!(
        sqlx::query("SELECT * FROM executions WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3")
            .bind(&prefix)
            .bind(&upper)
            .bind(limit)
            .fetch_all(pool)
    )?;
    rows.iter().map(execution_row).collect()
}

#[async_trait]
impl History for PgStore {
    async fn pipeline_yaml(&self, org: &str, project: &str, identifier: &str, version: i64) -> Result<String> {
        let yaml: Option<String> = again!(
            sqlx::query_scalar(
                "SELECT yaml FROM pipelines WHERE org = $1 AND project = $2 AND identifier = $3 AND version = $4",
            )
            .bind(org)
            .bind(project)
            .bind(identifier)
            .bind(version)
            .fetch_optional(&self.pool)
        )?;
        yaml.ok_or_else(|| StoreError::NotFound(format!("pipeline `{identifier}` version {version} is not stored")))
    }
    async fn execution(&self, id_or_prefix: &str) -> Result<Execution> {
        execution_on(&self.pool, id_or_prefix).await
    }
    async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<Execution>> {
        // Only the filters given are in the statement, so the planner can use the index that fits them
        // (org, project, [pipeline,] [status,] time): rows come newest first without a sort.
        let build = || {
            let mut sql = QueryBuilder::<Postgres>::new(
                "SELECT id, org, project, pipeline, pipeline_version, sequence_id, status, mode, triggered_by, inputs,
                   selected_stages, '' AS snapshot, source_file, parent_id, original_id, failure, created_at,
                   started_at, ended_at
                 FROM executions WHERE true",
            );
            if let Some(org) = &q.org {
                sql.push(" AND org = ").push_bind(org.clone());
            }
            if let Some(project) = &q.project {
                sql.push(" AND project = ").push_bind(project.clone());
            }
            if let Some(pipeline) = &q.pipeline {
                sql.push(" AND pipeline = ").push_bind(pipeline.clone());
            }
            if let Some(status) = q.status {
                sql.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(chain) = &q.chain_of {
                sql.push(" AND (id = ").push_bind(chain.clone()).push(" OR original_id = ").push_bind(chain.clone());
                sql.push(")");
            }
            if let Some(mode) = q.mode {
                sql.push(" AND mode = ").push_bind(mode.as_str());
            }
            if let Some(who) = &q.triggered_by {
                sql.push(" AND triggered_by = ").push_bind(who.clone());
            }
            if let Some(since) = q.since {
                sql.push(" AND created_at >= ").push_bind(since);
            }
            if let Some(until) = q.until {
                sql.push(" AND created_at < ").push_bind(until);
            }
            if let Some((at, id)) = &q.before {
                sql.push(" AND (created_at, id) < (").push_bind(*at).push(", ").push_bind(id.clone()).push(")");
            }
            sql.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(q.limit.unwrap_or(50));
            sql
        };
        let rows = again!(async {
            let mut sql = build();
            sql.build().fetch_all(&self.pool).await
        })?;
        rows.iter().map(execution_row).collect()
    }
    async fn nodes(&self, execution_id: &str) -> Result<Vec<Node>> {
        let rows = again!(
            sqlx::query("SELECT * FROM nodes WHERE execution_id = $1 ORDER BY position")
                .bind(execution_id)
                .fetch_all(&self.pool)
        )?;
        rows.iter().map(node_row).collect()
    }
    async fn logs(&self, execution_id: &str, node_ids: Option<&[String]>) -> Result<Vec<LogChunk>> {
        let rows = again!(
            sqlx::query(
                "SELECT l.id AS cursor, l.node_id, l.seq, l.data FROM log_chunks l JOIN nodes n ON n.id = l.node_id
                 WHERE l.execution_id = $1 ORDER BY n.position, l.seq",
            )
            .bind(execution_id)
            .fetch_all(&self.pool)
        )?;
        Ok(rows.iter().map(chunk_row).filter(|c| node_ids.is_none_or(|ids| ids.contains(&c.node_id))).collect())
    }
    async fn transitions(&self, execution_id: &str) -> Result<Vec<Transition>> {
        let rows = again!(
            sqlx::query("SELECT * FROM transitions WHERE execution_id = $1 ORDER BY id")
                .bind(execution_id)
                .fetch_all(&self.pool)
        )?;
        Ok(rows.iter().map(transition_row).collect())
    }
}

#[async_trait]
impl Requests for PgStore {
    async fn request_abort(&self, id: &str) -> Result<bool> {
        let e = self.execution(id).await?;
        if e.status.is_final() {
            return Ok(false);
        }
        again!(sqlx::query("UPDATE executions SET abort_requested = 1 WHERE id = $1").bind(&e.id).execute(&self.pool))?;
        Ok(true)
    }
    async fn put_decision(&self, d: &Decision) -> Result<()> {
        let inputs = text_of(&d.inputs, "{}");
        again!(
            sqlx::query(
                "INSERT INTO decisions (execution_id, node_id, kind, action, by, comment, inputs, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&d.execution_id)
            .bind(&d.node_id)
            .bind(d.action.kind().as_str())
            .bind(d.action.as_str())
            .bind(&d.by)
            .bind(&d.comment)
            .bind(&inputs)
            .bind(d.at)
            .execute(&self.pool)
        )?;
        Ok(())
    }
}

#[async_trait]
impl Journal for PgStore {
    async fn save_pipeline(&self, org: &str, project: &str, identifier: &str, yaml: &str) -> Result<i64> {
        // Under a lock per pipeline (taken first, so the newest version is read after any other saver
        // committed): the newest version when its YAML is this one, else a new version.
        let key = format!("{org}/{project}/{identifier}");
        let version: i64 = again!(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(2, hashtext($1))").bind(&key).execute(&mut *tx).await?;
            let last: Option<(i64, String)> = sqlx::query_as(
                "SELECT version, yaml FROM pipelines WHERE org = $1 AND project = $2 AND identifier = $3
                 ORDER BY version DESC LIMIT 1",
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
                "INSERT INTO pipelines (org, project, identifier, version, yaml, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
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
        })?;
        Ok(version)
    }
    async fn create_execution(&self, e: NewExecution) -> Result<Execution> {
        // The id is chosen here, so a call repeated after a lost answer finds the execution it made.
        let id = ulid::Ulid::new().to_string();
        let inputs = text_of(&e.inputs, "{}");
        let selected = text_of(&e.selected_stages, "[]");
        let row = again!(async {
            let mut tx = self.pool.begin().await?;
            if let Some(row) =
                sqlx::query("SELECT * FROM executions WHERE id = $1").bind(&id).fetch_optional(&mut *tx).await?
            {
                return Ok(row);
            }
            // The pipeline's counter row, bumped in the transaction that inserts the execution (it stays
            // locked until the commit): no two executions of a pipeline get the same number.
            let sequence: i64 = sqlx::query_scalar(
                "INSERT INTO sequences (org, project, pipeline, last_sequence) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (org, project, pipeline) DO UPDATE SET last_sequence = sequences.last_sequence + 1
                 RETURNING last_sequence",
            )
            .bind(&e.org)
            .bind(&e.project)
            .bind(&e.pipeline)
            .fetch_one(&mut *tx)
            .await?;
            let now = now_ms();
            let row = sqlx::query(
                "INSERT INTO executions (id, org, project, pipeline, pipeline_version, sequence_id, status, mode,
                   triggered_by, inputs, selected_stages, snapshot, source_file, parent_id, original_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'Queued', $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 RETURNING *",
            )
            .bind(&id)
            .bind(&e.org)
            .bind(&e.project)
            .bind(&e.pipeline)
            .bind(e.pipeline_version)
            .bind(sequence)
            .bind(e.mode.as_str())
            .bind(&e.triggered_by)
            .bind(&inputs)
            .bind(&selected)
            .bind(&e.snapshot)
            .bind(&e.source_file)
            .bind(&e.parent_id)
            .bind(&e.original_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO transitions (execution_id, to_status, at) VALUES ($1, 'Queued', $2)")
                .bind(&id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(row)
        })?;
        execution_row(&row)
    }
    async fn set_execution_status(&self, id: &str, status: Status, failure: Option<&str>, fence: &Fence) -> Result<()> {
        // One statement: the update says what the status was (`prev_status`), and the transition is
        // recorded only when it changed — so a repeat after a lost answer records nothing twice. Only under
        // the execution's current hold, and never once it has ended.
        given_up(id, fence)?;
        let now = now_ms();
        let (up, held): (i64, i64) = again!(
            bind_fence(
                sqlx::query(&format!(
                    "WITH l AS (SELECT pg_advisory_xact_lock(1, hashtext($5))),
                 {f},
                 up AS (UPDATE executions SET prev_status = status, status = $1, failure = COALESCE($2, failure),
                          started_at = CASE WHEN started_at IS NULL AND $1 = 'Running' THEN $3 ELSE started_at END,
                          ended_at = CASE WHEN $4 THEN $3 ELSE NULL END
                        WHERE id = $5 AND status NOT IN {FINAL} AND EXISTS (SELECT 1 FROM l)
                          AND EXISTS (SELECT 1 FROM f)
                        RETURNING prev_status),
                 ins AS (INSERT INTO transitions (execution_id, from_status, to_status, reason, at)
                         SELECT $5, prev_status, $1, $2, $3 FROM up WHERE prev_status IS DISTINCT FROM $1)
                 SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM f)",
                    f = fence_cte(5, 6)
                ))
                .bind(status.as_str())
                .bind(failure)
                .bind(now)
                .bind(status.is_final())
                .bind(id),
                fence
            )
            .map(|r: sqlx::postgres::PgRow| (sqlx::Row::get(&r, 0), sqlx::Row::get(&r, 1)))
            .fetch_one(&self.pool)
        )?;
        match (up, held) {
            (0, 0) => Err(refused(id)),
            (0, _) => Err(StoreError::Fenced(format!("execution `{id}` has ended; its status stays as it is"))),
            _ => Ok(()),
        }
    }
    async fn set_execution_input(&self, id: &str, path: &str, value: &serde_json::Value, fence: &Fence) -> Result<()> {
        // Read, change and write the inputs in one transaction with the row locked: the JSON text keeps its
        // key order, as on SQLite. Only under the execution's current hold.
        given_up(id, fence)?;
        let done = again!(async {
            let mut tx = self.pool.begin().await?;
            let row: Option<(String, Option<String>, i64, Option<i64>)> = sqlx::query_as(
                "SELECT inputs, owner, lease_epoch, lease_until FROM executions WHERE id = $1 FOR UPDATE",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((inputs, owner, epoch, until)) = row else { return Ok(None) };
            if !fence.admits(owner.as_deref(), epoch, until, now_ms()) {
                return Ok(Some(false));
            }
            let mut map: serde_json::Value = serde_json::from_str(&inputs).unwrap_or_else(|_| serde_json::json!({}));
            if !map.is_object() {
                map = serde_json::json!({});
            }
            map.as_object_mut().expect("an object").insert(path.replace('"', ""), value.clone());
            sqlx::query("UPDATE executions SET inputs = $1 WHERE id = $2")
                .bind(text_of(&map, "{}"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(true))
        })?;
        match done {
            Some(true) => Ok(()),
            Some(false) => Err(refused(id)),
            None => Err(StoreError::NotFound(format!("no execution `{id}`"))),
        }
    }
    async fn put_node(&self, n: &Node, fence: &Fence) -> Result<()> {
        // One statement inserts or updates the node and, when its status changed, records the transition
        // (the status it had is read in the same statement) — under the execution's current hold only.
        given_up(&n.execution_id, fence)?;
        let outputs = text_of(&n.outputs, "{}");
        let now = now_ms();
        let held: i64 = again!(
            bind_fence_scalar(
                sqlx::query_scalar(&format!(
                    "WITH l AS (SELECT pg_advisory_xact_lock(1, hashtext($2))),
                 {f},
                 prev AS (SELECT status FROM nodes WHERE id = $1),
                 up AS (INSERT INTO nodes (id, execution_id, parent_id, kind, identifier, name, path, position,
                          attempt, status, started_at, ended_at, failure, skip_reason, outputs, reused_from)
                        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 FROM l, f
                        ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempt = excluded.attempt,
                          started_at = excluded.started_at, ended_at = excluded.ended_at,
                          failure = excluded.failure, skip_reason = excluded.skip_reason,
                          outputs = excluded.outputs, reused_from = excluded.reused_from
                        RETURNING 1),
                 tr AS (INSERT INTO transitions (execution_id, node_id, from_status, to_status, reason, at)
                        SELECT $2, $1, (SELECT status FROM prev), $10, COALESCE($13, $14), $17 FROM up
                        WHERE (SELECT status FROM prev) IS DISTINCT FROM $10)
                 SELECT count(*) FROM f",
                    f = fence_cte(2, 18)
                ))
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
                .bind(&outputs)
                .bind(&n.reused_from)
                .bind(now),
                fence
            )
            .fetch_one(&self.pool)
        )?;
        if held == 0 { Err(refused(&n.execution_id)) } else { Ok(()) }
    }
    async fn append_log(&self, execution_id: &str, node_id: &str, seq: i64, data: &str, fence: &Fence) -> Result<()> {
        given_up(execution_id, fence)?;
        let held: i64 = again!(
            bind_fence_scalar(
                sqlx::query_scalar(&format!(
                    "WITH {f},
                 ins AS (INSERT INTO log_chunks (node_id, execution_id, seq, data)
                   SELECT $1, $2, $3, $4 FROM (SELECT pg_advisory_xact_lock(1, hashtext($2))) l, f
                   ON CONFLICT (node_id, seq) DO NOTHING RETURNING 1)
                 SELECT count(*) FROM f",
                    f = fence_cte(2, 5)
                ))
                .bind(node_id)
                .bind(execution_id)
                .bind(seq)
                .bind(data),
                fence
            )
            .fetch_one(&self.pool)
        )?;
        if held == 0 { Err(refused(execution_id)) } else { Ok(()) }
    }
    async fn abort_requested(&self, id: &str) -> Result<bool> {
        let v: Option<i64> = again!(
            sqlx::query_scalar("SELECT abort_requested FROM executions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
        )?;
        Ok(v == Some(1))
    }
    async fn take_decision(&self, execution_id: &str, node_id: &str, fence: &Fence) -> Result<Option<Decision>> {
        // One statement marks the oldest pending decision taken and returns it; a decision another taker has
        // locked is skipped, and one taken meanwhile is not taken again. Only under the current hold.
        given_up(execution_id, fence)?;
        let row = again!(
            bind_fence(
                sqlx::query(&format!(
                    "WITH {f} UPDATE decisions SET consumed = 1
                 WHERE consumed = 0 AND id = (SELECT id FROM decisions
                   WHERE execution_id = $1 AND node_id = $2 AND consumed = 0
                   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                   AND EXISTS (SELECT 1 FROM f)
                 RETURNING *",
                    f = fence_cte(1, 3)
                ))
                .bind(execution_id)
                .bind(node_id),
                fence
            )
            .fetch_optional(&self.pool)
        )?;
        match row {
            Some(r) => decision_row(&r).map(Some),
            None => {
                // Nothing pending, or not this process's to take: say which.
                let mut conn = self.pool.acquire().await?;
                self.check_fence(&mut conn, execution_id, fence, "").await?;
                Ok(None)
            }
        }
    }
    async fn put_step_process(&self, execution_id: &str, node_id: &str, p: &StepProcess, fence: &Fence) -> Result<()> {
        given_up(execution_id, fence)?;
        let held: i64 = again!(
            bind_fence_scalar(
                sqlx::query_scalar(&format!(
                    "WITH {f},
                 w AS (INSERT INTO step_processes (execution_id, node_id, host, pgid, started)
                   SELECT $1, $2, $3, $4, $5 FROM f
                   ON CONFLICT (execution_id, node_id) DO UPDATE SET host = excluded.host, pgid = excluded.pgid,
                     started = excluded.started RETURNING 1)
                 SELECT count(*) FROM f",
                    f = fence_cte(1, 6)
                ))
                .bind(execution_id)
                .bind(node_id)
                .bind(&p.host)
                .bind(p.pgid)
                .bind(p.started),
                fence
            )
            .fetch_one(&self.pool)
        )?;
        if held == 0 { Err(refused(execution_id)) } else { Ok(()) }
    }
    async fn drop_step_process(&self, execution_id: &str, node_id: &str, fence: &Fence) -> Result<()> {
        given_up(execution_id, fence)?;
        let held: i64 = again!(
            bind_fence_scalar(
                sqlx::query_scalar(&format!(
                    "WITH {f},
                 d AS (DELETE FROM step_processes WHERE execution_id = $1 AND ($2 = '' OR node_id = $2)
                   AND EXISTS (SELECT 1 FROM f) RETURNING 1)
                 SELECT count(*) FROM f",
                    f = fence_cte(1, 3)
                ))
                .bind(execution_id)
                .bind(node_id),
                fence
            )
            .fetch_one(&self.pool)
        )?;
        if held == 0 { Err(refused(execution_id)) } else { Ok(()) }
    }
    async fn step_processes(&self, execution_id: &str) -> Result<Vec<(String, StepProcess)>> {
        let rows: Vec<(String, String, i64, i64)> = again!(
            sqlx::query_as("SELECT node_id, host, pgid, started FROM step_processes WHERE execution_id = $1")
                .bind(execution_id)
                .fetch_all(&self.pool)
        )?;
        Ok(rows.into_iter().map(|(n, host, pgid, started)| (n, StepProcess { host, pgid, started })).collect())
    }
}

#[async_trait]
impl Feed for PgStore {
    async fn executions_by_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<Execution>> {
        by_prefix(&self.pool, prefix, limit).await
    }
    async fn transitions_after(&self, execution_id: &str, after: i64, limit: i64) -> Result<Vec<Transition>> {
        let rows = again!(
            sqlx::query("SELECT * FROM transitions WHERE execution_id = $1 AND id > $2 ORDER BY id LIMIT $3")
                .bind(execution_id)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
        )?;
        Ok(rows.iter().map(transition_row).collect())
    }
    async fn logs_after(&self, execution_id: &str, after: i64, limit: i64) -> Result<Vec<LogChunk>> {
        let rows = again!(
            sqlx::query(
                "SELECT id AS cursor, node_id, seq, data FROM log_chunks WHERE execution_id = $1 AND id > $2
                 ORDER BY id LIMIT $3",
            )
            .bind(execution_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
        )?;
        Ok(rows.iter().map(chunk_row).collect())
    }
}

#[async_trait]
impl Leases for PgStore {
    async fn claim_execution(&self, id: &str, owner: &str, now: i64, until: i64) -> Result<Option<i64>> {
        // One UPDATE: a second claimer waits for the first's row lock, then finds the row no longer matches;
        // a fenced write holding the row `FOR SHARE` finishes first. A new owner raises the epoch.
        let epoch: Option<i64> = again!(
            sqlx::query_scalar(&format!(
                "UPDATE executions SET
                   lease_epoch = CASE WHEN owner IS NOT DISTINCT FROM $1 THEN lease_epoch ELSE lease_epoch + 1 END,
                   owner = $1, lease_until = $2
                 WHERE id = $3 AND status NOT IN {FINAL}
                   AND (owner IS NULL OR owner = $1 OR lease_until IS NULL OR lease_until < $4)
                 RETURNING lease_epoch"
            ))
            .bind(owner)
            .bind(until)
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
        )?;
        Ok(epoch)
    }
    async fn renew_lease(&self, id: &str, fence: &Fence, until: i64) -> Result<bool> {
        let Hold::Owner { owner, epoch } = fence.hold() else { return Ok(false) };
        if fence.is_lost() {
            return Ok(false);
        }
        let r = again!(
            sqlx::query("UPDATE executions SET lease_until = $1 WHERE id = $2 AND owner = $3 AND lease_epoch = $4")
                .bind(until)
                .bind(id)
                .bind(owner)
                .bind(epoch)
                .execute(&self.pool)
        )?;
        Ok(r.rows_affected() == 1)
    }
    async fn lease(&self, id: &str) -> Result<Option<(String, Option<i64>)>> {
        let row: Option<(Option<String>, Option<i64>)> = again!(
            sqlx::query_as("SELECT owner, lease_until FROM executions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
        )?;
        Ok(row.and_then(|(o, l)| o.map(|o| (o, l))))
    }
    async fn orphaned(&self, now: i64, unowned_before: i64) -> Result<Vec<Execution>> {
        let rows = again!(
            sqlx::query(&format!(
                "SELECT * FROM executions WHERE status NOT IN {FINAL}
                   AND ((owner IS NULL AND created_at < $1) OR lease_until < $2)
                 ORDER BY created_at"
            ))
            .bind(unowned_before)
            .bind(now)
            .fetch_all(&self.pool)
        )?;
        rows.iter().map(execution_row).collect()
    }
}

#[async_trait]
impl Directory for PgStore {
    async fn put_record(&self, r: &Record, replace: bool) -> Result<bool> {
        let body = text_of(&r.body, "{}");
        let sql = if replace {
            "INSERT INTO records (kind, org, project, identifier, body, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (kind, org, project, identifier) DO UPDATE SET body = excluded.body,
               updated_at = excluded.updated_at"
        } else {
            "INSERT INTO records (kind, org, project, identifier, body, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (kind, org, project, identifier) DO NOTHING"
        };
        let done = again!(
            sqlx::query(sql)
                .bind(&r.kind)
                .bind(&r.org)
                .bind(&r.project)
                .bind(&r.identifier)
                .bind(&body)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(&self.pool)
        )?;
        Ok(done.rows_affected() > 0)
    }
    async fn record(&self, kind: &str, org: &str, project: &str, identifier: &str) -> Result<Option<Record>> {
        let row = again!(
            sqlx::query("SELECT * FROM records WHERE kind = $1 AND org = $2 AND project = $3 AND identifier = $4")
                .bind(kind)
                .bind(org)
                .bind(project)
                .bind(identifier)
                .fetch_optional(&self.pool)
        )?;
        row.as_ref().map(record_row).transpose()
    }
    async fn records(&self, kind: &str, org: Option<&str>, project: Option<&str>) -> Result<Vec<Record>> {
        let rows = again!(
            sqlx::query(
                "SELECT * FROM records WHERE kind = $1 AND ($2::text IS NULL OR org = $2)
                   AND ($3::text IS NULL OR project = $3)
                 ORDER BY org, project, identifier",
            )
            .bind(kind)
            .bind(org)
            .bind(project)
            .fetch_all(&self.pool)
        )?;
        rows.iter().map(record_row).collect()
    }
    async fn delete_record(&self, kind: &str, org: &str, project: &str, identifier: &str) -> Result<bool> {
        let done = again!(
            sqlx::query("DELETE FROM records WHERE kind = $1 AND org = $2 AND project = $3 AND identifier = $4")
                .bind(kind)
                .bind(org)
                .bind(project)
                .bind(identifier)
                .execute(&self.pool)
        )?;
        Ok(done.rows_affected() > 0)
    }
    async fn delete_records_keeping(&self, keys: &[RecordKey], keep: &Keep) -> Result<Option<u64>> {
        let done = again!(async {
            let mut tx = self.pool.begin().await?;
            // Every change guarded by this `keep` queues here, so each sees the others' deletions.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('keep:' || $1 || ':' || $2 || ':' || $3))")
                .bind(&keep.kind)
                .bind(&keep.field)
                .bind(&keep.value)
                .execute(&mut *tx)
                .await?;
            let count = "SELECT COUNT(*) FROM records WHERE kind = $1 AND org = '' AND (body::jsonb ->> $2) = $3";
            let before: i64 = sqlx::query_scalar(count)
                .bind(&keep.kind)
                .bind(&keep.field)
                .bind(&keep.value)
                .fetch_one(&mut *tx)
                .await?;
            let mut n = 0;
            for k in keys {
                n += sqlx::query(
                    "DELETE FROM records WHERE kind = $1 AND org = $2 AND project = $3 AND identifier = $4",
                )
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
                return Ok::<_, sqlx::Error>(None);
            }
            tx.commit().await?;
            Ok(Some(n))
        })?;
        Ok(done)
    }
    async fn delete_scope(&self, org: &str, project: Option<&str>) -> Result<u64> {
        let done = again!(
            sqlx::query("DELETE FROM records WHERE org = $1 AND ($2::text IS NULL OR project = $2)")
                .bind(org)
                .bind(project)
                .execute(&self.pool)
        )?;
        Ok(done.rows_affected())
    }
    async fn put_token(&self, t: &Token) -> Result<()> {
        again!(
            sqlx::query(
                "INSERT INTO tokens (id, name, principal_kind, principal_id, principal_org, principal_project, hash,
                   created_at, expires_at, revoked_at, principal_uid)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (id) DO NOTHING",
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
            .execute(&self.pool)
        )?;
        Ok(())
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
        let row = again!(sqlx::query("SELECT * FROM tokens WHERE hash = $1").bind(hash).fetch_optional(&self.pool))?;
        Ok(row.as_ref().map(token_row))
    }
    async fn tokens(&self, principal: Option<(&str, &str)>) -> Result<Vec<Token>> {
        let (kind, id) = principal.map_or((None, None), |(k, i)| (Some(k), Some(i)));
        let rows = again!(
            sqlx::query(
                "SELECT * FROM tokens WHERE ($1::text IS NULL OR principal_kind = $1)
                   AND ($2::text IS NULL OR principal_id = $2)
                 ORDER BY created_at, id",
            )
            .bind(kind)
            .bind(id)
            .fetch_all(&self.pool)
        )?;
        Ok(rows.iter().map(token_row).collect())
    }
    async fn revoke_token(&self, id: &str) -> Result<bool> {
        let done = again!(
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
        )?;
        Ok(done.rows_affected() > 0)
    }
    async fn bind_token(&self, id: &str, principal_uid: &str) -> Result<()> {
        again!(
            sqlx::query("UPDATE tokens SET principal_uid = $1 WHERE id = $2")
                .bind(principal_uid)
                .bind(id)
                .execute(&self.pool)
        )?;
        Ok(())
    }
    async fn delete_history(&self, org: &str, project: Option<&str>) -> Result<u64> {
        // One transaction; PostgreSQL reclaims the deleted rows' space on its next vacuum.
        let done = again!(async {
            let mut tx = self.pool.begin().await?;
            const IN_SCOPE: &str = "(SELECT id FROM executions WHERE org = $1 AND ($2::text IS NULL OR project = $2))";
            sqlx::query(&format!(
                "DELETE FROM task_output WHERE task_id IN (SELECT id FROM tasks WHERE execution_id IN {IN_SCOPE})"
            ))
            .bind(org)
            .bind(project)
            .execute(&mut *tx)
            .await?;
            for table in ["log_chunks", "decisions", "transitions", "nodes", "step_processes", "tasks"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE execution_id IN {IN_SCOPE}"))
                    .bind(org)
                    .bind(project)
                    .execute(&mut *tx)
                    .await?;
            }
            let done = sqlx::query("DELETE FROM executions WHERE org = $1 AND ($2::text IS NULL OR project = $2)")
                .bind(org)
                .bind(project)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM pipelines WHERE org = $1 AND ($2::text IS NULL OR project = $2)")
                .bind(org)
                .bind(project)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected())
        })?;
        Ok(done)
    }
    async fn audit(&self, e: &AuditEvent) -> Result<()> {
        let detail = text_of(&e.detail, "{}");
        again!(
            sqlx::query(
                "INSERT INTO audit (at, principal, action, resource_type, resource, org, project, address, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(e.at)
            .bind(&e.principal)
            .bind(&e.action)
            .bind(&e.resource_type)
            .bind(&e.resource)
            .bind(&e.org)
            .bind(&e.project)
            .bind(&e.address)
            .bind(&detail)
            .execute(&self.pool)
        )?;
        Ok(())
    }
    async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let rows = again!(
            sqlx::query(
                "SELECT * FROM audit WHERE ($1::text IS NULL OR principal = $1)
                   AND ($2::text IS NULL OR resource_type = $2) AND ($3::bigint IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(&q.principal)
            .bind(&q.resource_type)
            .bind(q.before)
            .bind(q.limit.unwrap_or(100))
            .fetch_all(&self.pool)
        )?;
        rows.iter().map(audit_row).collect()
    }
    async fn login_failures(&self, key: &str, since: i64) -> Result<i64> {
        let n: Option<i64> = again!(
            sqlx::query_scalar("SELECT count FROM login_failures WHERE key = $1 AND since >= $2")
                .bind(key)
                .bind(since)
                .fetch_optional(&self.pool)
        )?;
        Ok(n.unwrap_or(0))
    }
    async fn count_login_failure(&self, key: &str, now: i64, since: i64) -> Result<i64> {
        again!(
            sqlx::query("DELETE FROM login_failures WHERE since < $1 AND key <> $2")
                .bind(since)
                .bind(key)
                .execute(&self.pool)
        )?;
        let n: i64 = again!(sqlx::query_scalar(LOGIN_FAILED).bind(key).bind(now).bind(since).fetch_one(&self.pool))?;
        Ok(n)
    }
    async fn clear_login_failures(&self, key: &str) -> Result<()> {
        again!(sqlx::query("DELETE FROM login_failures WHERE key = $1").bind(key).execute(&self.pool))?;
        Ok(())
    }
}

/// The agents' columns with the tasks each holds.
const AGENTS: &str =
    "SELECT a.*, (SELECT count(*) FROM tasks t WHERE t.agent = a.name AND t.state = 'claimed') AS running
     FROM agents a";

#[async_trait]
impl Tasks for PgStore {
    async fn enqueue_task(&self, t: &NewTask) -> Result<()> {
        let selectors = text_of(&t.selectors, "[]");
        // Queued and announced in one statement, naming the agent that holds the task's stage, if any.
        let held: Option<(String, String)> = again!(
            sqlx::query_as(
                "WITH ins AS (INSERT INTO tasks (id, execution_id, stage_key, selectors, selectors_arr, payload,
                               state, created_at, org, project)
                             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9) ON CONFLICT (id) DO NOTHING
                             RETURNING stage_key),
                 held AS (SELECT COALESCE((SELECT agent FROM stage_agents WHERE stage_key = $3), '') AS agent)
                 SELECT held.agent, pg_notify('pipewright_tasks', 'q:' || held.agent)::text FROM ins, held",
            )
            .bind(&t.id)
            .bind(&t.execution_id)
            .bind(&t.stage_key)
            .bind(&selectors)
            .bind(&t.selectors)
            .bind(&t.payload)
            .bind(now_ms())
            .bind(&t.org)
            .bind(&t.project)
            .fetch_optional(&self.pool)
        )?;
        if let Some((agent, _)) = held {
            self.signals.queued(Some(&agent));
        }
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
        // One statement: the oldest queued task this agent's tags cover whose stage no other live agent
        // holds, skipping rows another claimer has locked, is claimed and its stage taken for this agent.
        // Two claimers of two tasks of one new stage both reach the stage row: the second waits for the
        // first to commit, finds the stage held (`held` 0), and gives its task back to try another.
        for _ in 0..4 {
            let row = again!(
                sqlx::query(
                    "WITH pick AS (SELECT t.id FROM tasks t
                       WHERE t.state = 'queued' AND t.selectors_arr <@ $2::text[]
                         AND EXISTS (SELECT 1 FROM agents WHERE name = $1 AND state = 'active')
                         AND ($6 = '' OR t.org = $6) AND ($7 = '' OR t.project = $7)
                         AND NOT EXISTS (SELECT 1 FROM stage_agents sa JOIN agents a ON a.name = sa.agent
                           WHERE sa.stage_key = t.stage_key AND sa.agent <> $1 AND a.state <> 'revoked'
                             AND a.last_seen > $5)
                       ORDER BY t.created_at LIMIT 1 FOR UPDATE SKIP LOCKED),
                     up AS (UPDATE tasks SET state = 'claimed', agent = $1, lease_until = $4, claimed_at = $3,
                         lease_hash = $8
                       FROM pick WHERE tasks.id = pick.id RETURNING tasks.*),
                     sa AS (INSERT INTO stage_agents (stage_key, agent) SELECT stage_key, $1 FROM up
                       ON CONFLICT (stage_key) DO UPDATE SET agent = excluded.agent
                         WHERE stage_agents.agent = excluded.agent OR NOT EXISTS (SELECT 1 FROM agents a
                           WHERE a.name = stage_agents.agent AND a.state <> 'revoked' AND a.last_seen > $5)
                       RETURNING agent)
                     SELECT up.*, (SELECT count(*) FROM sa) AS held FROM up",
                )
                .bind(&agent.name)
                .bind(tags)
                .bind(now)
                .bind(until)
                .bind(alive_after)
                .bind(&agent.org)
                .bind(&agent.project)
                .bind(lease)
                .fetch_optional(&self.pool)
            )?;
            let Some(row) = row else { return Ok(None) };
            let held: i64 = sqlx::Row::get(&row, "held");
            let t = task_row(&row)?;
            if held > 0 {
                return Ok(Some(t));
            }
            again!(
                sqlx::query(
                    "UPDATE tasks SET state = 'queued', agent = NULL, lease_until = NULL, claimed_at = NULL,
                       lease_hash = ''
                     WHERE id = $1 AND agent = $2 AND state = 'claimed'",
                )
                .bind(&t.id)
                .bind(&agent.name)
                .execute(&self.pool)
            )?;
        }
        Ok(None)
    }
    async fn renew_task(&self, id: &str, holder: Holder<'_>, until: i64) -> Result<Option<bool>> {
        let cancel: Option<i64> = again!(
            sqlx::query_scalar(
                "WITH seen AS (UPDATE agents SET last_seen = $4 WHERE name = $3)
                 UPDATE tasks SET lease_until = $1, acked = 1
                 WHERE id = $2 AND agent = $3 AND lease_hash = $5 AND state = 'claimed'
                 RETURNING cancel",
            )
            .bind(until)
            .bind(id)
            .bind(holder.agent)
            .bind(now_ms())
            .bind(holder.lease)
            .fetch_optional(&self.pool)
        )?;
        Ok(cancel.map(|c| c != 0))
    }
    async fn append_task_output(&self, id: &str, holder: Holder<'_>, data: &str) -> Result<bool> {
        let done = again!(
            sqlx::query(
                "INSERT INTO task_output (task_id, data) SELECT $1, $3 FROM tasks
                 WHERE id = $1 AND agent = $2 AND lease_hash = $4 AND state = 'claimed'",
            )
            .bind(id)
            .bind(holder.agent)
            .bind(data)
            .bind(holder.lease)
            .execute(&self.pool)
        )?;
        Ok(done.rows_affected() == 1)
    }
    async fn task_output_after(&self, id: &str, after: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        Ok(again!(
            sqlx::query_as("SELECT id, data FROM task_output WHERE task_id = $1 AND id > $2 ORDER BY id LIMIT $3")
                .bind(id)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
        )?)
    }
    async fn finish_task(&self, id: &str, holder: Holder<'_>, report: &str, now: i64) -> Result<bool> {
        let done: Option<String> = again!(
            sqlx::query_scalar(
                "WITH up AS (UPDATE tasks SET state = 'done', report = $1, ended_at = $2, payload = ''
                             WHERE id = $3 AND agent = $4 AND lease_hash = $5 AND state = 'claimed' RETURNING id)
                 SELECT pg_notify('pipewright_tasks', 'e:' || id)::text FROM up",
            )
            .bind(report)
            .bind(now)
            .bind(id)
            .bind(holder.agent)
            .bind(holder.lease)
            .fetch_optional(&self.pool)
        )?;
        self.signals.ended(id);
        Ok(done.is_some())
    }
    async fn task(&self, id: &str) -> Result<Option<TaskRecord>> {
        let row = again!(sqlx::query("SELECT * FROM tasks WHERE id = $1").bind(id).fetch_optional(&self.pool))?;
        row.as_ref().map(task_row).transpose()
    }
    async fn cancel_task(&self, id: &str, now: i64) -> Result<()> {
        again!(
            sqlx::query(
                "WITH up AS (UPDATE tasks SET cancel = 1,
                               state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
                               ended_at = CASE WHEN state = 'queued' THEN $2 ELSE ended_at END,
                               payload = CASE WHEN state = 'queued' THEN '' ELSE payload END
                             WHERE id = $1 AND state IN ('queued', 'claimed') RETURNING id)
                 SELECT pg_notify('pipewright_tasks', 'e:' || id)::text FROM up",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
        )?;
        self.signals.ended(id);
        Ok(())
    }
    async fn expire_tasks(&self, now: i64) -> Result<Vec<TaskRecord>> {
        let rows = again!(
            sqlx::query(
                "WITH up AS (UPDATE tasks SET state = CASE WHEN acked = 1 THEN 'lost' ELSE 'queued' END,
                   ended_at = CASE WHEN acked = 1 THEN $1 END,
                   payload = CASE WHEN acked = 1 THEN '' ELSE payload END,
                   agent = CASE WHEN acked = 1 THEN agent END,
                   lease_until = CASE WHEN acked = 1 THEN lease_until END,
                   claimed_at = CASE WHEN acked = 1 THEN claimed_at END
                 WHERE state = 'claimed' AND (lease_until < $1
                   OR agent IN (SELECT name FROM agents WHERE state = 'revoked'))
                 RETURNING *)
                 SELECT up.*, pg_notify('pipewright_tasks',
                   CASE WHEN up.state = 'lost' THEN 'e:' || up.id ELSE 'q:' END)::text AS notified
                 FROM up",
            )
            .bind(now)
            .fetch_all(&self.pool)
        )?;
        let expired: Vec<TaskRecord> = rows.iter().map(task_row).collect::<Result<_>>()?;
        self.signals.expired(&expired);
        Ok(expired)
    }
    async fn register_agent(&self, a: &AgentRecord, secret: &str) -> Result<bool> {
        let tags = text_of(&a.tags, "[]");
        let done = again!(
            sqlx::query(
                "INSERT INTO agents (name, tags, version, state, last_seen, principal, org, project, secret_hash)
                 VALUES ($1, $2, '', 'active', 0, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&a.name)
            .bind(&tags)
            .bind(&a.principal)
            .bind(&a.org)
            .bind(&a.project)
            .bind(secret)
            .execute(&self.pool)
        )?;
        Ok(done.rows_affected() == 1)
    }
    async fn set_agent_secret(&self, name: &str, secret: &str) -> Result<bool> {
        let done = again!(
            sqlx::query("UPDATE agents SET secret_hash = $1 WHERE name = $2")
                .bind(secret)
                .bind(name)
                .execute(&self.pool)
        )?;
        Ok(done.rows_affected() == 1)
    }
    async fn agent_by_secret(&self, secret: &str) -> Result<Option<AgentRecord>> {
        if secret.is_empty() {
            return Ok(None);
        }
        let row =
            again!(sqlx::query("SELECT * FROM agents WHERE secret_hash = $1").bind(secret).fetch_optional(&self.pool))?;
        row.as_ref().map(agent_row).transpose()
    }
    async fn agent_seen(&self, name: &str, version: &str, now: i64) -> Result<()> {
        again!(
            sqlx::query("UPDATE agents SET version = $1, last_seen = $2 WHERE name = $3")
                .bind(version)
                .bind(now)
                .bind(name)
                .execute(&self.pool)
        )?;
        Ok(())
    }
    async fn agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = again!(sqlx::query(&format!("{AGENTS} ORDER BY a.name")).fetch_all(&self.pool))?;
        rows.iter().map(agent_row).collect()
    }
    fn signals(&self) -> &crate::Signals {
        &self.signals
    }
    async fn set_agent_state(&self, name: &str, state: &str) -> Result<bool> {
        let done = again!(
            sqlx::query("UPDATE agents SET state = $1 WHERE name = $2").bind(state).bind(name).execute(&self.pool)
        )?;
        Ok(done.rows_affected() == 1)
    }
}

/// A throwaway database on a PostgreSQL server, for tests and benchmarks: created empty under a fresh
/// name, dropped (with any connections still open to it) when the value is dropped.
#[derive(Debug)]
pub struct Scratch {
    admin: String,
    name: String,
    url: String,
}

impl Scratch {
    /// The server tests and benchmarks make their databases on: `PIPEWRIGHT_TEST_POSTGRES`, else the local
    /// server's `postgres` database.
    pub fn admin_url() -> String {
        std::env::var("PIPEWRIGHT_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// Create a fresh database through `admin_url` (a database on the server the caller may create
    /// databases from, such as `postgres://postgres@127.0.0.1:5432/postgres`).
    pub async fn create(admin_url: &str) -> Result<Scratch> {
        let name = format!("pw_{}", ulid::Ulid::new().to_string().to_ascii_lowercase());
        let opts = PgConnectOptions::from_str(admin_url)
            .map_err(|e| StoreError::Open { path: redact(admin_url), message: e.to_string() })?;
        let mut admin = opts.clone().connect().await.map_err(|e| StoreError::Open {
            path: redact(admin_url),
            message: format!("{e}; start PostgreSQL, or point PIPEWRIGHT_TEST_POSTGRES at one"),
        })?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await?;
        let url = opts.database(&name).to_url_lossy().to_string();
        Ok(Scratch { admin: admin_url.to_string(), name, url })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Dropped from sync code, maybe inside a runtime: a thread of its own with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut c = PgConnectOptions::from_str(&admin).ok()?.connect().await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await.ok()
            })
        })
        .join();
    }
}
