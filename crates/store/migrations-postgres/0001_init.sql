-- pipewright's state on PostgreSQL: the same tables as the SQLite store's migrations 0001-0007 end with.
-- Times are Unix milliseconds (BIGINT); JSON columns hold serde_json text, so a value reads back byte for
-- byte as it was written (key order kept). Identifiers and names sort as bytes (COLLATE "C"), as SQLite
-- sorts them: an id prefix is a range over the primary key, and listings come in the same order on both.
-- Log chunks and transitions take their cursor from an identity column; writes to one execution's log and
-- transitions are serialized by an advisory lock per execution, so cursors commit in order.
CREATE TABLE pipelines (
    org TEXT COLLATE "C" NOT NULL,
    project TEXT COLLATE "C" NOT NULL,
    identifier TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    yaml TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org, project, identifier, version)
);

CREATE TABLE executions (
    id TEXT COLLATE "C" PRIMARY KEY,
    org TEXT COLLATE "C" NOT NULL,
    project TEXT COLLATE "C" NOT NULL,
    pipeline TEXT COLLATE "C" NOT NULL,
    pipeline_version BIGINT NOT NULL,
    sequence_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    prev_status TEXT,
    mode TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    inputs TEXT NOT NULL,
    selected_stages TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    source_file TEXT,
    parent_id TEXT COLLATE "C" REFERENCES executions(id),
    original_id TEXT COLLATE "C" REFERENCES executions(id),
    failure TEXT,
    abort_requested BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    owner TEXT,
    lease_until BIGINT,
    UNIQUE (org, project, pipeline, sequence_id)
);
CREATE INDEX executions_by_time ON executions (created_at DESC, id DESC);
CREATE INDEX executions_by_project ON executions (org, project, created_at DESC, id DESC);
CREATE INDEX executions_by_project_pipeline ON executions (org, project, pipeline, created_at DESC, id DESC);
CREATE INDEX executions_by_project_status ON executions (org, project, status, created_at DESC, id DESC);
CREATE INDEX executions_by_project_pipeline_status
  ON executions (org, project, pipeline, status, created_at DESC, id DESC);
CREATE INDEX executions_by_original ON executions (original_id);
CREATE INDEX executions_unfinished ON executions (created_at) WHERE status NOT IN
  ('Success', 'Failed', 'Aborted', 'Expired', 'IgnoreFailed', 'Skipped', 'ApprovalRejected');
CREATE INDEX executions_unowned ON executions (lease_until) WHERE status NOT IN
  ('Success', 'Failed', 'Aborted', 'Expired', 'IgnoreFailed', 'Skipped', 'ApprovalRejected');

CREATE TABLE sequences (
    org TEXT COLLATE "C" NOT NULL,
    project TEXT COLLATE "C" NOT NULL,
    pipeline TEXT COLLATE "C" NOT NULL,
    last_sequence BIGINT NOT NULL,
    PRIMARY KEY (org, project, pipeline)
);

CREATE TABLE nodes (
    id TEXT COLLATE "C" PRIMARY KEY,
    execution_id TEXT COLLATE "C" NOT NULL REFERENCES executions(id),
    parent_id TEXT,
    kind TEXT NOT NULL,
    identifier TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    position BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    status TEXT NOT NULL,
    started_at BIGINT,
    ended_at BIGINT,
    failure TEXT,
    skip_reason TEXT,
    outputs TEXT NOT NULL,
    reused_from TEXT
);
CREATE INDEX nodes_by_execution ON nodes (execution_id, position);

CREATE TABLE log_chunks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id TEXT COLLATE "C" NOT NULL REFERENCES nodes(id),
    execution_id TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (node_id, seq)
);
CREATE INDEX log_chunks_by_execution ON log_chunks (execution_id, id);

CREATE TABLE transitions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id TEXT COLLATE "C" NOT NULL,
    node_id TEXT,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX transitions_by_execution ON transitions (execution_id, id);

CREATE TABLE decisions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id TEXT COLLATE "C" NOT NULL,
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    by TEXT NOT NULL,
    comment TEXT,
    inputs TEXT NOT NULL,
    at BIGINT NOT NULL,
    consumed BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX decisions_pending ON decisions (execution_id, node_id, consumed);

CREATE TABLE step_processes (
    execution_id TEXT COLLATE "C" NOT NULL,
    node_id TEXT COLLATE "C" NOT NULL,
    host TEXT NOT NULL,
    pgid BIGINT NOT NULL,
    started BIGINT NOT NULL,
    PRIMARY KEY (execution_id, node_id)
);

CREATE TABLE records (
    kind TEXT COLLATE "C" NOT NULL,
    org TEXT COLLATE "C" NOT NULL,
    project TEXT COLLATE "C" NOT NULL,
    identifier TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, org, project, identifier)
);

CREATE TABLE tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    principal_kind TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    principal_org TEXT NOT NULL,
    principal_project TEXT NOT NULL,
    principal_uid TEXT,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX tokens_by_principal ON tokens (principal_kind, principal_id);

CREATE TABLE audit (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    address TEXT NOT NULL,
    detail TEXT NOT NULL
);

CREATE TABLE login_failures (
    key TEXT COLLATE "C" PRIMARY KEY,
    count BIGINT NOT NULL,
    since BIGINT NOT NULL
);
CREATE INDEX login_failures_by_since ON login_failures (since);

-- Step attempts handed to remote agents; `selectors_arr` holds the selectors as an array, so a claim finds
-- the tasks an agent's tags cover with `<@` and skips those another claimer has locked.
CREATE TABLE tasks (
    id TEXT COLLATE "C" PRIMARY KEY,
    execution_id TEXT COLLATE "C" NOT NULL,
    stage_key TEXT COLLATE "C" NOT NULL,
    selectors TEXT NOT NULL,
    selectors_arr TEXT[] NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    agent TEXT,
    lease_until BIGINT,
    report TEXT,
    cancel BIGINT NOT NULL DEFAULT 0,
    acked BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    claimed_at BIGINT,
    ended_at BIGINT
);
CREATE INDEX tasks_queued ON tasks (created_at) WHERE state = 'queued';
CREATE INDEX tasks_claimed ON tasks (lease_until) WHERE state = 'claimed';
CREATE INDEX tasks_by_execution ON tasks (execution_id);
CREATE INDEX tasks_held ON tasks (agent) WHERE state = 'claimed';
CREATE TABLE task_output (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id TEXT COLLATE "C" NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX task_output_by_task ON task_output (task_id, id);
CREATE TABLE stage_agents (
    stage_key TEXT COLLATE "C" PRIMARY KEY,
    agent TEXT NOT NULL
);
CREATE TABLE agents (
    name TEXT COLLATE "C" PRIMARY KEY,
    tags TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    principal TEXT NOT NULL
);
