-- Named queries of `receiptq import dramatiq-pg` (receiptq.import_dramatiq_pg).
-- {source} is dramatiq-pg's queue table (schema and table name as psycopg
-- identifiers, from --from-schema and --from-prefix); dramatiq-pg's schema.sql
-- defines it: message_id uuid primary key, queue_name, state (queued, consumed,
-- rejected, done), mtime, message jsonb, result, result_ttl.

-- name: dramatiq_pg_source_columns
-- The columns of dramatiq-pg's queue table (no rows when there is no such table).
SELECT column_name::text AS name
FROM information_schema.columns
WHERE table_schema = %(schema)s AND table_name = %(table)s;

-- name: dramatiq_pg_open_connections
-- Connections dramatiq-pg has open on this database (its pools set the application
-- name 'dramatiq-pg'): its workers or senders are still running.
SELECT count(*)::integer AS connections
FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'dramatiq-pg'
  AND pid <> pg_backend_pid();

-- name: dramatiq_pg_counts
-- How many rows dramatiq-pg's table holds per queue name and state (the progress
-- bar's total, and the done rows an import leaves alone).
SELECT queue_name, state::text AS state, count(*)::bigint AS messages
FROM {source}
GROUP BY queue_name, state;

-- name: dramatiq_pg_batch
-- The next rows to import (any state but done), in message id order after the
-- previous batch's last id; locked until the batch commits, so that nothing
-- changes a row between this read and its import (or its deletion with --move).
SELECT message_id::text AS source_id, queue_name, state::text AS state, mtime,
       message::text AS message
FROM {source}
WHERE state IS DISTINCT FROM 'done'
  AND (%(after)s::uuid IS NULL OR message_id > %(after)s::uuid)
ORDER BY message_id
LIMIT %(limit)s
FOR UPDATE;

-- name: dramatiq_pg_present
-- Which of these message ids receiptq holds already: imported before (the job may
-- have run and left since), or a job of that id.
SELECT message_id FROM receiptq.imported_messages WHERE message_id = ANY(%(message_ids)s::text[])
UNION
SELECT message_id FROM receiptq.jobs WHERE message_id = ANY(%(message_ids)s::text[]);

-- name: dramatiq_pg_insert_jobs
-- Store imported messages as queued jobs (arrays, one element per job), due at
-- run_at (the message's eta), else when it was sent (sent_at, never later than
-- now), so that an imported backlog keeps its order; Dramatiq's retry count
-- becomes the attempts made so far. A message id or unique_key that is queued or
-- running already is left out. Returns the message ids stored.
INSERT INTO receiptq.jobs (message_id, queue, actor, priority, run_at, attempt, max_attempts,
                           tier, user_id, unique_key, message)
SELECT m.message_id, m.queue, m.actor, m.priority,
       coalesce(m.run_at, least(m.sent_at, now()), now()), m.attempt, m.max_attempts,
       m.tier, m.user_id, m.unique_key, m.message::jsonb
FROM unnest(%(message_ids)s::text[], %(queues)s::text[], %(actors)s::text[],
            %(priorities)s::integer[], %(run_ats)s::timestamptz[], %(sent_ats)s::timestamptz[],
            %(attempts)s::integer[], %(max_attempts)s::integer[], %(tiers)s::text[],
            %(user_ids)s::text[], %(unique_keys)s::text[], %(messages)s::text[])
     AS m(message_id, queue, actor, priority, run_at, sent_at, attempt, max_attempts, tier,
          user_id, unique_key, message)
ON CONFLICT DO NOTHING
RETURNING message_id;

-- name: dramatiq_pg_insert_dead_letters
-- Store imported rejected messages as dead letters (arrays, one element per
-- message), failed when dramatiq-pg last touched them. Returns the message ids.
INSERT INTO receiptq.dead_letters (message_id, queue, actor, priority, message, attempts,
                                   max_attempts, reason, error_type, error, traceback, tier,
                                   user_id, enqueued_at, failed_at)
SELECT m.message_id, m.queue, m.actor, m.priority, m.message::jsonb, m.attempts,
       m.max_attempts, %(reason)s, m.error_type, m.error, m.traceback, m.tier, m.user_id,
       m.enqueued_at, coalesce(m.failed_at, now())
FROM unnest(%(message_ids)s::text[], %(queues)s::text[], %(actors)s::text[],
            %(priorities)s::integer[], %(messages)s::text[], %(attempts)s::integer[],
            %(max_attempts)s::integer[], %(error_types)s::text[], %(errors)s::text[],
            %(tracebacks)s::text[], %(tiers)s::text[], %(user_ids)s::text[],
            %(enqueued_ats)s::timestamptz[], %(failed_ats)s::timestamptz[])
     AS m(message_id, queue, actor, priority, message, attempts, max_attempts, error_type,
          error, traceback, tier, user_id, enqueued_at, failed_at)
RETURNING message_id;

-- name: dramatiq_pg_record_imports
-- Remember the message ids just imported, so that no later import adds them again.
INSERT INTO receiptq.imported_messages (message_id, source, source_state, imported_as)
SELECT m.message_id, %(source)s, m.source_state, m.imported_as
FROM unnest(%(message_ids)s::text[], %(source_states)s::text[], %(imported_as)s::text[])
     AS m(message_id, source_state, imported_as)
ON CONFLICT DO NOTHING;

-- name: dramatiq_pg_delete_moved
-- With --move: delete from dramatiq-pg's table the rows receiptq now holds (never
-- a done row, never a row that was skipped).
DELETE FROM {source}
WHERE message_id = ANY(%(source_ids)s::uuid[]) AND state IS DISTINCT FROM 'done';
