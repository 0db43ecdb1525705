-- Agents registered by an administrator: each with its own credential (its SHA-256 hash), a scope (an
-- organization, a project, or neither for the account) and the tags it was given; tasks carry their
-- project's scope, and a claim's lease token (its hash) that every later call about the task must present.
ALTER TABLE agents ADD COLUMN org TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN project TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN secret_hash TEXT NOT NULL DEFAULT '';
CREATE INDEX agents_by_secret ON agents (secret_hash) WHERE secret_hash <> '';
ALTER TABLE tasks ADD COLUMN org TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN project TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN lease_hash TEXT NOT NULL DEFAULT '';
