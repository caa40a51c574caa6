-- Named queries of the dashboard, the Prometheus metrics and `receiptq top`
-- (read by receiptq.monitor and receiptq.web).

-- name: job_waiting_by_tier
-- Queued jobs per tier (NULL: no tier) as of one clock reading: ready, scheduled,
-- running, and the age of the oldest ready job.
SELECT tier,
       count(*) FILTER (WHERE state = 'queued' AND run_at <= %(now)s)::integer AS queued,
       count(*) FILTER (WHERE state = 'queued' AND run_at > %(now)s)::integer AS scheduled,
       count(*) FILTER (WHERE state = 'running')::integer AS running,
       extract(epoch FROM %(now)s::timestamptz
                          - min(run_at) FILTER (WHERE state = 'queued' AND run_at <= %(now)s)
              )::float8 AS oldest_ready_s
FROM receiptq.jobs
GROUP BY tier
ORDER BY tier NULLS LAST;

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
