-- The epoch of an execution's lease: raised whenever another owner claims the execution, and carried by
-- every journal write of the owner (its fence), so a write of an owner that lost the lease is refused.
ALTER TABLE executions ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
