-- Named queries of `receiptq bench --workload backlog` (receiptq/tools/bench/backlog.py):
-- fill the throwaway benchmark database with a big backlog in a few set-based
-- statements (a million jobs through enqueue_many would take minutes).

-- name: bench_backlog_fill
-- Insert `count` jobs, numbered `first`.. (0-based), cycling through the templates
-- (one per tier class: the row a real enqueue of one message of that class wrote,
-- see backlog.py), each job with a message id, args and timestamp of its own, due
-- after `delay_s` (plus up to an hour, spread) or at once. With `users` > 0 each job
-- of a class carries the user id 'user-<n>' (n: the job's number in its class, modulo users) and, when due at once, the
-- round the insert trigger of migration 0006 gives it when the jobs are sent in
-- this order into a class with no rounds yet: the user's n-th job has round n (the
-- trigger is off while this runs, backlog.py: it would cost a lookup per row).
-- Rows are inserted in job number order, so ids follow it.
WITH templates AS (
    SELECT *
    FROM unnest(%(tiers)s::text[], %(priorities)s::integer[], %(max_attempts)s::integer[],
                %(messages)s::jsonb[], %(labels)s::text[])
         WITH ORDINALITY AS t(tier, priority, max_attempts, message, label, k)
),
numbered AS (
    SELECT g.i, mod(g.i, c.n) + 1 AS k, g.i / c.n AS nth, gen_random_uuid()::text AS message_id,
           CASE WHEN %(users)s::integer > 0
                THEN 'user-' || mod(g.i / c.n, %(users)s::integer) END AS user_id
    FROM generate_series(%(first)s::bigint, %(first)s::bigint + %(count)s::bigint - 1) AS g(i),
         (SELECT count(*) AS n FROM templates) AS c
)
INSERT INTO receiptq.jobs (message_id, queue, actor, priority, run_at, max_attempts, tier,
                           user_id, message, user_round)
SELECT r.message_id, t.message->>'queue_name', t.message->>'actor_name', t.priority,
       CASE WHEN %(delay_s)s::float8 > 0
            THEN now() + make_interval(secs => %(delay_s)s::float8 + mod(r.i, 3600))
            ELSE now() END,
       t.max_attempts, t.tier, r.user_id,
       t.message || jsonb_build_object(
           'message_id', r.message_id,
           'message_timestamp', %(sent_ms)s::bigint,
           'args', jsonb_build_array(%(sent_at)s::float8, t.label),
           'options', CASE WHEN r.user_id IS NULL THEN t.message->'options'
                           ELSE t.message->'options' || jsonb_build_object('user_id', r.user_id)
                      END),
       CASE WHEN r.user_id IS NULL OR %(delay_s)s::float8 > 0 THEN 0
            ELSE r.nth / %(users)s::integer + 1 END
FROM numbered AS r
JOIN templates AS t USING (k)
ORDER BY r.i;

-- name: bench_backlog_rounds_off
-- The user-round insert trigger off, within the fill's transaction only (the
-- bench's user owns the tables: it created the database and migrated it).
ALTER TABLE receiptq.jobs DISABLE TRIGGER jobs_user_round_insert;

-- name: bench_backlog_rounds_on
-- The user-round insert trigger on again, before the fill's transaction commits.
ALTER TABLE receiptq.jobs ENABLE TRIGGER jobs_user_round_insert;

-- name: bench_backlog_dead_letters
-- `count` dead letters of the templates' jobs, failed over the last hour.
WITH templates AS (
    SELECT *
    FROM unnest(%(tiers)s::text[], %(priorities)s::integer[], %(max_attempts)s::integer[],
                %(messages)s::jsonb[])
         WITH ORDINALITY AS t(tier, priority, max_attempts, message, k)
),
numbered AS (
    SELECT g.i, mod(g.i, c.n) + 1 AS k, gen_random_uuid()::text AS message_id
    FROM generate_series(0, %(count)s::bigint - 1) AS g(i),
         (SELECT count(*) AS n FROM templates) AS c
)
INSERT INTO receiptq.dead_letters (message_id, queue, actor, priority, message, attempts,
                                   max_attempts, reason, error_type, error, traceback, tier,
                                   enqueued_at, failed_at)
SELECT r.message_id, t.message->>'queue_name', t.message->>'actor_name', t.priority,
       t.message || jsonb_build_object('message_id', r.message_id),
       t.max_attempts, t.max_attempts, 'failed', 'RuntimeError',
       'bench: a dead letter of the backlog', 'Traceback (most recent call last): ...',
       t.tier, now() - interval '2 hours', now() - make_interval(secs => mod(r.i, 3600))
FROM numbered AS r
JOIN templates AS t USING (k);

-- name: bench_backlog_analyze
-- Fresh statistics after the fill (autovacuum may be off: the plans must see the backlog).
ANALYZE receiptq.jobs, receiptq.dead_letters;

-- name: bench_backlog_counts
-- The backlog as the fill left it: queued jobs due now and later, and dead letters.
SELECT count(*) FILTER (WHERE run_at <= now())::bigint AS ready,
       count(*) FILTER (WHERE run_at > now())::bigint AS scheduled,
       (SELECT count(*) FROM receiptq.dead_letters)::bigint AS dead_letters
FROM receiptq.jobs
WHERE state = 'queued';

-- name: bench_nth_start
-- When the n-th job (1-based, in start order) of the run started (epoch s; NULL:
-- fewer have run).
SELECT s.started
FROM bench.results, unnest(started) AS s(started)
ORDER BY s.started
OFFSET %(n)s::bigint - 1
LIMIT 1;

-- name: bench_backlog_templates
-- The rows a real enqueue wrote for the given messages (the fill's templates).
SELECT message_id, tier, priority, max_attempts, message
FROM receiptq.jobs
WHERE message_id = ANY(%(message_ids)s::text[]);
