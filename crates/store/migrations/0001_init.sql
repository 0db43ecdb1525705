-- pipewright's execution history. Times are Unix milliseconds; JSON columns hold serde_json text.
CREATE TABLE pipelines (
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    identifier TEXT NOT NULL,
    version INTEGER NOT NULL,
    yaml TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org, project, identifier, version)
);

CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    pipeline_version INTEGER NOT NULL,
    sequence_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    mode TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    inputs TEXT NOT NULL,
    selected_stages TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    source_file TEXT,
    parent_id TEXT REFERENCES executions(id),
    original_id TEXT REFERENCES executions(id),
    failure TEXT,
    abort_requested INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    UNIQUE (org, project, pipeline, sequence_id)
);
CREATE INDEX executions_by_pipeline ON executions (pipeline, created_at DESC);
CREATE INDEX executions_by_time ON executions (created_at DESC);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions(id),
    parent_id TEXT,
    kind TEXT NOT NULL,
    identifier TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    position INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    failure TEXT,
    skip_reason TEXT,
    outputs TEXT NOT NULL,
    reused_from TEXT
);
CREATE INDEX nodes_by_execution ON nodes (execution_id, position);

CREATE TABLE log_chunks (
    node_id TEXT NOT NULL REFERENCES nodes(id),
    execution_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE INDEX log_chunks_by_execution ON log_chunks (execution_id, node_id, seq);

CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    node_id TEXT,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX transitions_by_execution ON transitions (execution_id, id);

CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    by TEXT NOT NULL,
    comment TEXT,
    inputs TEXT NOT NULL,
    at INTEGER NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX decisions_pending ON decisions (execution_id, node_id, consumed);
