-- One owner per execution: the process running it holds a lease it renews by heartbeat; when the lease ends
-- without the execution ending, another process takes it over. Step process groups are recorded so the new
-- owner can stop a step that outlived its owner before it runs the step again.
ALTER TABLE executions ADD COLUMN owner TEXT;
ALTER TABLE executions ADD COLUMN lease_until INTEGER;
CREATE INDEX executions_unowned ON executions (lease_until) WHERE status NOT IN
  ('Success', 'Failed', 'Aborted', 'Expired', 'IgnoreFailed', 'Skipped', 'ApprovalRejected');
CREATE TABLE step_processes (
  execution_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  host TEXT NOT NULL,
  pgid INTEGER NOT NULL,
  started INTEGER NOT NULL,
  PRIMARY KEY (execution_id, node_id)
);
