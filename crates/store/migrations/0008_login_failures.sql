-- Failed logins per key (a user name, or a name and a client address) in the current window, kept in the
-- store so every server on one database counts the same failures.
CREATE TABLE login_failures (
  key TEXT PRIMARY KEY,
  count INTEGER NOT NULL,
  since INTEGER NOT NULL
);
CREATE INDEX login_failures_by_since ON login_failures (since);
