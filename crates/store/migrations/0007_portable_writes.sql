-- Writes any SQL database can do the same way: an execution's sequence number comes from a counter row per
-- pipeline (taken in the same transaction that inserts the execution), and node transitions are recorded by
-- the store's own code right after the statement that changes the node, not by triggers; an execution's
-- status change returns the status it replaced (kept in `prev_status`), so it reads nothing before it writes.
CREATE TABLE sequences (
  org TEXT NOT NULL,
  project TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  last_sequence INTEGER NOT NULL,
  PRIMARY KEY (org, project, pipeline)
);
INSERT INTO sequences (org, project, pipeline, last_sequence)
  SELECT org, project, pipeline, MAX(sequence_id) FROM executions GROUP BY org, project, pipeline;
DROP TRIGGER nodes_insert_transition;
DROP TRIGGER nodes_update_transition;
ALTER TABLE executions ADD COLUMN prev_status TEXT;
