-- The server's records: organizations, projects, pipeline heads, entities, secrets, users, service accounts,
-- roles, resource groups and role bindings share one table keyed by kind and scope (org, project; '' for
-- none); API tokens and the audit trail have their own. Executions get an index per project for history.
CREATE TABLE records (
    kind TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    identifier TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, org, project, identifier)
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    principal_kind TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    principal_org TEXT NOT NULL,
    principal_project TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX tokens_by_principal ON tokens (principal_kind, principal_id);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource TEXT NOT NULL,
    org TEXT NOT NULL,
    project TEXT NOT NULL,
    address TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (at DESC);

CREATE INDEX executions_by_project ON executions (org, project, created_at DESC, id DESC);
CREATE INDEX executions_unfinished ON executions (status) WHERE status NOT IN
    ('Success', 'Failed', 'Aborted', 'Expired', 'IgnoreFailed', 'Skipped', 'ApprovalRejected');
CREATE INDEX executions_by_original ON executions (original_id);
