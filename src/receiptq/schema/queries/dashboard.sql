-- Named queries of the dashboard, the Prometheus metrics and `receiptq top`
-- (read by receiptq.monitor and receiptq.web).

-- name: db_read_one_state
-- The first statement of a monitor transaction: every query in it reads the same
-- state of the database, so that counts read by separate queries add up.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- name: job_claimed_list
-- For `receiptq top`: the running jobs, longest running first, then the reserved
-- ones, longest claimed first, at most `limit` of each, with the seconds since
-- each started (running) or was claimed (reserved) as of `now`.
SELECT c.id, c.queue, c.actor, c.attempt, c.lease_owner, c.claimed_at, c.started_at,
       c.elapsed_s, j.message
FROM (
    SELECT *,
           extract(epoch FROM %(now)s::timestamptz - coalesce(started_at, claimed_at))::float8
               AS elapsed_s,
           row_number() OVER (PARTITION BY started_at IS NULL
                              ORDER BY coalesce(started_at, claimed_at), id) AS n
    FROM receiptq.claimed_jobs
) AS c
JOIN receiptq.jobs AS j ON j.id = c.id
WHERE c.n <= %(limit)s
ORDER BY c.started_at IS NULL, c.n;

-- name: job_claimed_counts
-- How many claimed jobs are running and how many reserved, over all queues.
SELECT count(started_at)::integer AS running,
       count(*) FILTER (WHERE started_at IS NULL)::integer AS reserved
FROM receiptq.claimed_jobs;

-- name: stats_totals_by_actor
-- Counters of every queue and actor summed over all the minutes kept (Prometheus counters).
SELECT queue, actor,
       sum(enqueued)::bigint AS enqueued, sum(succeeded)::bigint AS succeeded,
       sum(failed)::bigint AS failed, sum(retried)::bigint AS retried,
       sum(dead_lettered)::bigint AS dead_lettered, sum(postponed)::bigint AS postponed,
       sum(run_ms_sum)::float8 AS run_ms_sum, sum(latency_ms_sum)::float8 AS latency_ms_sum
FROM receiptq.stats_minute
GROUP BY queue, actor
ORDER BY queue, actor;

-- name: stats_histogram_totals_by_actor
-- Run-time and latency histogram buckets of every queue and actor summed over all
-- the minutes kept: one row per (queue, actor, bucket index from 1).
SELECT s.queue, s.actor, b.bucket::integer AS bucket,
       sum(b.run)::bigint AS run, sum(b.latency)::bigint AS latency
FROM receiptq.stats_minute AS s,
     unnest(s.run_ms_hist, s.latency_ms_hist) WITH ORDINALITY AS b(run, latency, bucket)
GROUP BY s.queue, s.actor, b.bucket
ORDER BY s.queue, s.actor, b.bucket;

-- name: dead_letter_search
-- Dead letters, newest first, whose actor and error (type and text) contain the
-- given texts, case-insensitively (NULL or '': any).
SELECT id, message_id, queue, actor, attempts, reason, error_type, error, failed_at
FROM receiptq.dead_letters
WHERE (coalesce(%(actor)s::text, '') = ''
       OR strpos(lower(actor), lower(%(actor)s::text)) > 0)
  AND (coalesce(%(error)s::text, '') = ''
       OR strpos(lower(coalesce(error_type, '') || ': ' || coalesce(error, '')),
                 lower(%(error)s::text)) > 0)
ORDER BY failed_at DESC, id DESC
LIMIT %(limit)s;
