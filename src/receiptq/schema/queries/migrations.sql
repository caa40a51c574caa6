-- Named queries of the migration runner (receiptq.db.migrate): one record per chain.

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

-- name: migration_table_exists
-- Whether a chain's record table exists (a database never migrated has none).
SELECT to_regclass(%(table)s) IS NOT NULL AS present;

-- name: receipts_migration_bootstrap
-- The receipt app's schema and its record of applied migrations (its own chain).
CREATE SCHEMA IF NOT EXISTS receiptq_app;
CREATE TABLE IF NOT EXISTS receiptq_app.migrations (
    name       text PRIMARY KEY,          -- file name without .sql, e.g. 0001_receipts_schema
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: receipts_migration_applied
-- Names of the receipt app's migrations already applied.
SELECT name FROM receiptq_app.migrations ORDER BY name;

-- name: receipts_migration_record
-- Record one applied migration of the receipt app.
INSERT INTO receiptq_app.migrations (name) VALUES (%(name)s);

-- name: migration_record_script
-- Record one applied migration in a script printed for another tool to run (`receiptq
-- db sql`): {table} is the chain's record, {name} the migration, quoted by psycopg.
INSERT INTO {table} (name) VALUES ({name});
