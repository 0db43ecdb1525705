-- Node status transitions are recorded by the database itself, so writing a node is one statement.
CREATE TRIGGER nodes_insert_transition AFTER INSERT ON nodes
BEGIN
    INSERT INTO transitions (execution_id, node_id, from_status, to_status, reason, at)
    VALUES (NEW.execution_id, NEW.id, NULL, NEW.status, COALESCE(NEW.failure, NEW.skip_reason),
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER nodes_update_transition AFTER UPDATE OF status ON nodes
WHEN OLD.status <> NEW.status
BEGIN
    INSERT INTO transitions (execution_id, node_id, from_status, to_status, reason, at)
    VALUES (NEW.execution_id, NEW.id, OLD.status, NEW.status, COALESCE(NEW.failure, NEW.skip_reason),
            CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
