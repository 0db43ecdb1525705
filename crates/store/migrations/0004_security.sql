-- A token is bound to the immutable internal id of its principal (a user or service account), so a token
-- never attaches to a principal created later with the same identifier.
ALTER TABLE tokens ADD COLUMN principal_uid TEXT;
CREATE INDEX log_chunks_by_execution_only ON log_chunks (execution_id);
CREATE INDEX decisions_by_execution ON decisions (execution_id);
