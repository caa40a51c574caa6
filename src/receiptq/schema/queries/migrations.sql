-- Named queries of the migration runner (receiptq.db.migrate).

-- name: migration_lock
-- Serialize migration runs across processes and hosts (transaction-scoped lock).
SELECT pg_advisory_xact_lock(7263541001);

-- name: migration_bootstrap
-- The table that records applied migrations; created before any migration runs.
CREATE SCHEMA IF NOT EXISTS receiptq;
CREATE TABLE IF NOT EXISTS receiptq.migrations (
    name       text PRIMARY KEY,          -- file name without .sql, e.g. 0001_queue
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migration_applied
-- Names of the migrations already applied.
SELECT name FROM receiptq.migrations ORDER BY name;

-- name: migration_record
-- Record one applied migration.
INSERT INTO receiptq.migrations (name) VALUES (%(name)s);
