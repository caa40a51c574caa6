-- Named queries of `receiptq demo` (receiptq/tools/demo/database.py). The demo marks what it
-- creates: its users' email addresses are in one domain, and every message it sends
-- carries the option receiptq_demo (its run's id), which its jobs and dead letters keep.
-- It counts and deletes only rows so marked.

-- name: demo_database_exists
-- Whether the demo's own database exists on this server.
SELECT EXISTS (SELECT FROM pg_database WHERE datname = 'receiptq_demo') AS present;

-- name: demo_database_create
-- Create the demo's own database, next to the one a URL names.
CREATE DATABASE receiptq_demo;

-- name: demo_tables_present
-- Which tables that may hold other data exist (looked at before the demo migrates).
SELECT to_regclass('receiptq.jobs') IS NOT NULL AS jobs,
       to_regclass('receiptq.dead_letters') IS NOT NULL AS dead_letters,
       to_regclass('receiptq_app.receipts') IS NOT NULL AS receipts;

-- name: demo_foreign_jobs
-- How many jobs, in any queue, no demo sent.
SELECT count(*)::bigint AS n FROM receiptq.jobs WHERE NOT (message -> 'options' ? 'receiptq_demo');

-- name: demo_foreign_receipts
-- How many receipts belong to users outside the demo's email domain.
SELECT count(*)::bigint AS n
FROM receiptq_app.receipts AS r
JOIN receiptq_app.users AS u ON u.id = r.user_id
WHERE u.email NOT LIKE '%%@' || %(domain)s;

-- name: demo_foreign_receipts_0_1
-- The same in receiptq 0.1's tables (schema app, until `receiptq receipts migrate`).
SELECT count(*)::bigint AS n
FROM app.receipts AS r
JOIN app.users AS u ON u.id = r.user_id
WHERE u.email NOT LIKE '%%@' || %(domain)s;

-- name: demo_jobs_delete
-- The demo's reset: the jobs earlier demos sent and left (any run, any queue).
DELETE FROM receiptq.jobs WHERE message -> 'options' ? 'receiptq_demo';

-- name: demo_run_jobs
-- One run's jobs left, per queue: due, scheduled (due later), claimed by a worker.
SELECT queue,
       count(*) FILTER (WHERE state = 'queued' AND run_at <= now())::bigint AS queued,
       count(*) FILTER (WHERE state = 'queued' AND run_at > now())::bigint AS scheduled,
       count(*) FILTER (WHERE state = 'running')::bigint AS running
FROM receiptq.jobs
WHERE message -> 'options' ->> 'receiptq_demo' = %(run)s
GROUP BY queue;
