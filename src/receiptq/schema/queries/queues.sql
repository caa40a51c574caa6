-- Named queries on receiptq.queue_settings (pause, concurrency caps).

-- name: queue_pause
-- Stop handing out a queue's jobs (they keep being accepted).
INSERT INTO receiptq.queue_settings AS s (queue, paused) VALUES (%(queue)s, true)
ON CONFLICT (queue) DO UPDATE SET paused = true, updated_at = now();

-- name: queue_resume
-- Hand out a paused queue's jobs again.
INSERT INTO receiptq.queue_settings AS s (queue, paused) VALUES (%(queue)s, false)
ON CONFLICT (queue) DO UPDATE SET paused = false, updated_at = now();

-- name: queue_set_cap
-- Cap (or, with NULL, uncap) the jobs of a queue running at once across all workers.
INSERT INTO receiptq.queue_settings AS s (queue, max_running) VALUES (%(queue)s, %(max_running)s)
ON CONFLICT (queue) DO UPDATE SET max_running = excluded.max_running, updated_at = now();

-- name: queue_settings_list
-- Every queue with settings, with its live running count.
SELECT s.queue, s.paused, s.max_running, s.updated_at,
       (SELECT count(*) FROM receiptq.jobs AS j
        WHERE j.queue = s.queue AND j.state = 'running')::integer AS running
FROM receiptq.queue_settings AS s
ORDER BY s.queue;

-- name: queue_claim_path
-- How a queue must be claimed: restricted (paused or capped: through claim_jobs),
-- and whether it has queued jobs with a tier (claims shared across the classes).
SELECT EXISTS (SELECT 1 FROM receiptq.queue_settings AS s
               WHERE s.queue = %(queue)s AND (s.paused OR s.max_running IS NOT NULL))
           AS restricted,
       EXISTS (SELECT 1 FROM receiptq.jobs AS j
               WHERE j.queue = %(queue)s AND j.state = 'queued'
                 AND coalesce(j.tier, '') > '') AS tiered;
