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

-- name: queue_settings_prune
-- Drop a queue's settings row once it holds nothing (running, no cap, no prefetch):
-- a queue without a row is running and uncapped, and a mistyped name leaves no trace.
DELETE FROM receiptq.queue_settings
WHERE queue = %(queue)s AND NOT paused AND max_running IS NULL AND prefetch IS NULL;

-- name: queue_reset
-- Remove every setting of a queue: pause, cap and its actors' caps. Says how many
-- rows of each went.
WITH caps AS (
    DELETE FROM receiptq.actor_caps WHERE queue = %(queue)s RETURNING actor
),
settings AS (
    DELETE FROM receiptq.queue_settings WHERE queue = %(queue)s RETURNING queue
)
SELECT (SELECT count(*) FROM settings)::integer AS settings,
       (SELECT count(*) FROM caps)::integer AS actor_caps;

-- name: queue_seen
-- Whether a queue is known: it has jobs, dead letters, statistics, settings, or a
-- worker consumes it. A setting for any other name is most likely a typo.
SELECT EXISTS (SELECT 1 FROM receiptq.jobs WHERE queue = %(queue)s)
       OR EXISTS (SELECT 1 FROM receiptq.dead_letters WHERE queue = %(queue)s)
       OR EXISTS (SELECT 1 FROM receiptq.stats_minute WHERE queue = %(queue)s)
       OR EXISTS (SELECT 1 FROM receiptq.queue_settings WHERE queue = %(queue)s)
       OR EXISTS (SELECT 1 FROM receiptq.actor_caps WHERE queue = %(queue)s)
       OR EXISTS (SELECT 1 FROM receiptq.workers WHERE %(queue)s = ANY (queues)) AS seen;

-- name: queue_settings_list
-- Every queue's settings (pause, cap, prefetch); the monitor adds the live counts.
SELECT queue, paused, max_running, prefetch, updated_at
FROM receiptq.queue_settings
ORDER BY queue;

-- name: queue_claim_path
-- How a queue must be claimed: restricted (paused, capped, or with a capped
-- actor: through claim_jobs), whether it has queued jobs with a tier (claims
-- shared across the classes), its prefetch setting (migration 0008), and whether
-- it has jobs not due yet (`later`: then the claims take job_claim_classes_later,
-- which never reads them). Later: per (class, priority) queued (a skip scan), the
-- last round-0 job, where the jobs not due yet wait (two probes a group).
-- Tiered: the greatest class queued, the last entry of the queue in the claim
-- index (one probe; each consumer asks every poll interval). An EXISTS of a tiered
-- job was planned as a scan of the table that, on an untiered queue, read every
-- queued job to find none: 250 ms a poll with a million queued.
SELECT EXISTS (SELECT 1 FROM receiptq.queue_settings AS s
               WHERE s.queue = %(queue)s AND (s.paused OR s.max_running IS NOT NULL))
       OR EXISTS (SELECT 1 FROM receiptq.actor_caps AS c WHERE c.queue = %(queue)s)
           AS restricted,
       coalesce((SELECT coalesce(j.tier, '') FROM receiptq.jobs AS j
                 WHERE j.queue = %(queue)s AND j.state = 'queued'
                 ORDER BY coalesce(j.tier, '') DESC
                 LIMIT 1), '') > '' AS tiered,
       (SELECT s.prefetch FROM receiptq.queue_settings AS s
        WHERE s.queue = %(queue)s) AS prefetch,
       EXISTS (WITH RECURSIVE groups AS (
                   (SELECT coalesce(j.tier, '') AS cls, j.priority
                    FROM receiptq.jobs AS j
                    WHERE j.queue = %(queue)s AND j.state = 'queued'
                    ORDER BY coalesce(j.tier, ''), j.priority
                    LIMIT 1)
                   UNION ALL
                   SELECT n.cls, n.priority
                   FROM groups AS g,
                        LATERAL (SELECT coalesce(j.tier, '') AS cls, j.priority
                                 FROM receiptq.jobs AS j
                                 WHERE j.queue = %(queue)s AND j.state = 'queued'
                                   AND (coalesce(j.tier, ''), j.priority) > (g.cls, g.priority)
                                 ORDER BY coalesce(j.tier, ''), j.priority
                                 LIMIT 1) AS n
               )
               SELECT 1 FROM groups AS g
               WHERE (SELECT j.run_at FROM receiptq.jobs AS j
                      WHERE j.queue = %(queue)s AND coalesce(j.tier, '') = g.cls
                        AND j.state = 'queued' AND j.priority = g.priority
                        AND j.user_round = 0
                      ORDER BY j.run_at DESC, j.id DESC
                      LIMIT 1) > now()) AS later;

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
-- Every actor cap, with the actor's claimed jobs on the queue (what the cap
-- counts): running (started by a worker thread) and reserved (not started).
SELECT c.queue, c.actor, c.max_running, c.updated_at,
       count(h.started_at)::integer AS running,
       count(h.id) FILTER (WHERE h.started_at IS NULL)::integer AS reserved
FROM receiptq.actor_caps AS c
LEFT JOIN receiptq.claimed_jobs AS h ON h.queue = c.queue AND h.actor = c.actor
GROUP BY c.queue, c.actor
ORDER BY c.queue, c.actor;

-- name: actor_seen_on_queue
-- Whether a job of an actor was ever seen on a queue (queued, running, dead or
-- counted in the statistics): a cap set elsewhere would never apply.
SELECT EXISTS (SELECT 1 FROM receiptq.jobs WHERE queue = %(queue)s AND actor = %(actor)s)
       OR EXISTS (SELECT 1 FROM receiptq.dead_letters
                  WHERE queue = %(queue)s AND actor = %(actor)s)
       OR EXISTS (SELECT 1 FROM receiptq.stats_minute
                  WHERE queue = %(queue)s AND actor = %(actor)s) AS seen;
