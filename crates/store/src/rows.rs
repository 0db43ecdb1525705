//! Rows to records, once for every SQL backend: [`Cols`] reads a column by name from a SQLite or a
//! PostgreSQL row, and each `*_row` function builds one of `domain`'s records from it, so the backends
//! cannot read a stored execution, node or token differently.

use crate::{Result, StoreError};
use domain::*;
use sqlx::Row;
use std::str::FromStr;

/// A row's columns by name, as the four shapes the store uses.
pub(crate) trait Cols {
    /// A text column.
    fn s(&self, c: &str) -> String;
    /// A text column that may be NULL.
    fn os(&self, c: &str) -> Option<String>;
    /// An integer column.
    fn i(&self, c: &str) -> i64;
    /// An integer column that may be NULL.
    fn oi(&self, c: &str) -> Option<i64>;
    /// An integer column that may be missing from the row.
    fn maybe_i(&self, c: &str) -> Option<i64>;
}

macro_rules! cols {
    ($row:ty) => {
        impl Cols for $row {
            fn s(&self, c: &str) -> String {
                self.get(c)
            }
            fn os(&self, c: &str) -> Option<String> {
                self.get(c)
            }
            fn i(&self, c: &str) -> i64 {
                self.get(c)
            }
            fn oi(&self, c: &str) -> Option<i64> {
                self.get(c)
            }
            fn maybe_i(&self, c: &str) -> Option<i64> {
                self.try_get::<Option<i64>, _>(c).ok().flatten()
            }
        }
    };
}

#[cfg(feature = "sqlite")]
cols!(sqlx::sqlite::SqliteRow);
#[cfg(feature = "postgres")]
cols!(sqlx::postgres::PgRow);

pub(crate) fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{e} in `{s}`")))
}

pub(crate) fn parse<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(StoreError::Corrupt)
}

/// A value as the JSON text a column holds.
pub(crate) fn text_of<T: serde::Serialize>(v: &T, empty: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| empty.into())
}

/// The one execution an id prefix matched (at most two looked up): none and several are errors that say
/// what to do.
pub(crate) fn one_execution(mut found: Vec<Execution>, id_or_prefix: &str) -> Result<Execution> {
    match found.len() {
        0 => Err(StoreError::NotFound(format!(
            "no execution `{id_or_prefix}`; `pipewright history` lists the executions"
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(StoreError::NotFound(format!("`{id_or_prefix}` matches several executions; give more of the id"))),
    }
}

pub(crate) fn chunk_row(r: &impl Cols) -> LogChunk {
    LogChunk { cursor: r.i("cursor"), node_id: r.s("node_id"), seq: r.i("seq"), data: r.s("data") }
}

pub(crate) fn execution_row(r: &impl Cols) -> Result<Execution> {
    Ok(Execution {
        id: r.s("id"),
        org: r.s("org"),
        project: r.s("project"),
        pipeline: r.s("pipeline"),
        pipeline_version: r.i("pipeline_version"),
        sequence_id: r.i("sequence_id"),
        status: parse(&r.s("status"))?,
        mode: parse(&r.s("mode"))?,
        triggered_by: r.s("triggered_by"),
        inputs: json(&r.s("inputs"))?,
        selected_stages: json(&r.s("selected_stages"))?,
        snapshot: r.s("snapshot"),
        source_file: r.os("source_file"),
        parent_id: r.os("parent_id"),
        original_id: r.os("original_id"),
        failure: r.os("failure"),
        created_at: r.i("created_at"),
        started_at: r.oi("started_at"),
        ended_at: r.oi("ended_at"),
    })
}

pub(crate) fn node_row(r: &impl Cols) -> Result<Node> {
    Ok(Node {
        id: r.s("id"),
        execution_id: r.s("execution_id"),
        parent_id: r.os("parent_id"),
        kind: match r.s("kind").as_str() {
            "stage" => NodeKind::Stage,
            "step_group" => NodeKind::StepGroup,
            "step" => NodeKind::Step,
            other => return Err(StoreError::Corrupt(format!("unknown node kind `{other}`"))),
        },
        identifier: r.s("identifier"),
        name: r.s("name"),
        path: r.s("path"),
        position: r.i("position"),
        attempt: r.i("attempt"),
        status: parse(&r.s("status"))?,
        started_at: r.oi("started_at"),
        ended_at: r.oi("ended_at"),
        failure: r.os("failure"),
        skip_reason: r.os("skip_reason"),
        outputs: json(&r.s("outputs"))?,
        reused_from: r.os("reused_from"),
    })
}

pub(crate) fn transition_row(r: &impl Cols) -> Transition {
    Transition {
        id: r.i("id"),
        node_id: r.os("node_id"),
        from: r.os("from_status"),
        to: r.s("to_status"),
        reason: r.os("reason"),
        at: r.i("at"),
    }
}

pub(crate) fn decision_row(r: &impl Cols) -> Result<Decision> {
    Ok(Decision {
        execution_id: r.s("execution_id"),
        node_id: r.s("node_id"),
        action: r.s("action").parse().map_err(StoreError::Corrupt)?,
        by: r.s("by"),
        comment: r.os("comment"),
        inputs: json(&r.s("inputs"))?,
        at: r.i("at"),
    })
}

pub(crate) fn record_row(r: &impl Cols) -> Result<Record> {
    Ok(Record {
        kind: r.s("kind"),
        org: r.s("org"),
        project: r.s("project"),
        identifier: r.s("identifier"),
        body: json(&r.s("body"))?,
        created_at: r.i("created_at"),
        updated_at: r.i("updated_at"),
    })
}

pub(crate) fn token_row(r: &impl Cols) -> Token {
    Token {
        id: r.s("id"),
        name: r.s("name"),
        principal_kind: r.s("principal_kind"),
        principal_id: r.s("principal_id"),
        principal_org: r.s("principal_org"),
        principal_project: r.s("principal_project"),
        hash: r.s("hash"),
        created_at: r.i("created_at"),
        expires_at: r.oi("expires_at"),
        revoked_at: r.oi("revoked_at"),
        principal_uid: r.os("principal_uid"),
    }
}

pub(crate) fn audit_row(r: &impl Cols) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.i("id"),
        at: r.i("at"),
        principal: r.s("principal"),
        action: r.s("action"),
        resource_type: r.s("resource_type"),
        resource: r.s("resource"),
        org: r.s("org"),
        project: r.s("project"),
        address: r.s("address"),
        detail: json(&r.s("detail"))?,
    })
}

pub(crate) fn task_row(r: &impl Cols) -> Result<TaskRecord> {
    Ok(TaskRecord {
        id: r.s("id"),
        execution_id: r.s("execution_id"),
        stage_key: r.s("stage_key"),
        selectors: json(&r.s("selectors"))?,
        payload: r.s("payload"),
        state: parse(&r.s("state"))?,
        agent: r.os("agent"),
        lease_until: r.oi("lease_until"),
        report: r.os("report"),
        cancel: r.i("cancel") != 0,
        acked: r.i("acked") != 0,
        created_at: r.i("created_at"),
        claimed_at: r.oi("claimed_at"),
        ended_at: r.oi("ended_at"),
    })
}

pub(crate) fn agent_row(r: &impl Cols) -> Result<AgentRecord> {
    Ok(AgentRecord {
        name: r.s("name"),
        tags: json(&r.s("tags"))?,
        version: r.s("version"),
        state: r.s("state"),
        last_seen: r.i("last_seen"),
        principal: r.s("principal"),
        org: r.s("org"),
        project: r.s("project"),
        running: r.maybe_i("running").unwrap_or(0),
    })
}
