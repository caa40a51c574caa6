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
-- Every queue with settings or a capped actor, with its live running count.
WITH queues AS (
    SELECT queue FROM receiptq.queue_settings
    UNION
    SELECT queue FROM receiptq.actor_caps
)
SELECT q.queue, coalesce(s.paused, false) AS paused, s.max_running, s.prefetch, s.updated_at,
       (SELECT count(*) FROM receiptq.jobs AS j
        WHERE j.queue = q.queue AND j.state = 'running')::integer AS running
FROM queues AS q
LEFT JOIN receiptq.queue_settings AS s ON s.queue = q.queue
ORDER BY q.queue;

-- name: queue_claim_path
-- How a queue must be claimed: restricted (paused, capped, or with a capped
-- actor: through claim_jobs), whether it has queued jobs with a tier (claims
-- shared across the classes), and its prefetch setting (migration 0008).
SELECT EXISTS (SELECT 1 FROM receiptq.queue_settings AS s
               WHERE s.queue = %(queue)s AND (s.paused OR s.max_running IS NOT NULL))
       OR EXISTS (SELECT 1 FROM receiptq.actor_caps AS c WHERE c.queue = %(queue)s)
           AS restricted,
       EXISTS (SELECT 1 FROM receiptq.jobs AS j
               WHERE j.queue = %(queue)s AND j.state = 'queued'
                 AND coalesce(j.tier, '') > '') AS tiered,
       (SELECT s.prefetch FROM receiptq.queue_settings AS s
        WHERE s.queue = %(queue)s) AS prefetch;

-- name: queue_set_prefetch
-- Set (or, with NULL, remove) the jobs of a queue one worker process holds at most.
INSERT INTO receiptq.queue_settings AS s (queue, prefetch) VALUES (%(queue)s, %(prefetch)s)
ON CONFLICT (queue) DO UPDATE SET prefetch = excluded.prefetch, updated_at = now();

-- name: actor_cap_set
-- Cap the running jobs of one actor of a queue across all workers (claim_jobs
-- enforces it, migration 0006).
INSERT INTO receiptq.actor_caps AS c (queue, actor, max_running)
VALUES (%(queue)s, %(actor)s, %(max_running)s)
ON CONFLICT (queue, actor) DO UPDATE SET max_running = excluded.max_running, updated_at = now();

-- name: actor_cap_clear
-- Remove an actor's cap.
DELETE FROM receiptq.actor_caps WHERE queue = %(queue)s AND actor = %(actor)s;

-- name: actor_caps_list
-- Every actor cap, with the actor's live running count.
SELECT c.queue, c.actor, c.max_running, c.updated_at,
       (SELECT count(*) FROM receiptq.jobs AS j
        WHERE j.queue = c.queue AND j.actor = c.actor AND j.state = 'running')::integer
           AS running
FROM receiptq.actor_caps AS c
ORDER BY c.queue, c.actor;

-- name: actor_seen_on_queue
-- Whether a job of an actor was ever seen on a queue (queued, running, dead or
-- counted in the statistics): a cap set elsewhere would never apply.
SELECT EXISTS (SELECT 1 FROM receiptq.jobs WHERE queue = %(queue)s AND actor = %(actor)s)
       OR EXISTS (SELECT 1 FROM receiptq.dead_letters
                  WHERE queue = %(queue)s AND actor = %(actor)s)
       OR EXISTS (SELECT 1 FROM receiptq.stats_minute
                  WHERE queue = %(queue)s AND actor = %(actor)s) AS seen;
