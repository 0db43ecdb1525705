-- Step attempts handed to remote agents (`pipewright agent`), the output they send back, which agent holds
-- each stage (a stage's steps share one workspace), and the agents themselves.
CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  execution_id TEXT NOT NULL,
  stage_key TEXT NOT NULL,
  selectors TEXT NOT NULL,
  payload TEXT NOT NULL,
  state TEXT NOT NULL,
  agent TEXT,
  lease_until INTEGER,
  report TEXT,
  cancel INTEGER NOT NULL DEFAULT 0,
  acked INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  claimed_at INTEGER,
  ended_at INTEGER
);
CREATE INDEX tasks_queued ON tasks (created_at) WHERE state = 'queued';
CREATE INDEX tasks_claimed ON tasks (lease_until) WHERE state = 'claimed';
CREATE INDEX tasks_by_execution ON tasks (execution_id);
CREATE INDEX tasks_held ON tasks (agent) WHERE state = 'claimed';
CREATE TABLE task_output (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  task_id TEXT NOT NULL,
  data TEXT NOT NULL
);
CREATE INDEX task_output_by_task ON task_output (task_id, id);
CREATE TABLE stage_agents (
  stage_key TEXT PRIMARY KEY,
  agent TEXT NOT NULL
);
CREATE TABLE agents (
  name TEXT PRIMARY KEY,
  tags TEXT NOT NULL,
  version TEXT NOT NULL,
  state TEXT NOT NULL,
  last_seen INTEGER NOT NULL,
  principal TEXT NOT NULL
);
