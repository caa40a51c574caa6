-- Named queries on receiptq.jobs. Each block starts with "-- name: <name>"
-- and a one-line purpose; parameters are psycopg named placeholders.

-- name: job_enqueue
-- Insert one job; if its message id is already in the table (Dramatiq's Retries
-- re-sends the running message), put that row back to queued instead, so the
-- pending ack of the old delivery (which matches on attempt and state) leaves it
-- alone. Only the worker holding the row (or nobody, while it is queued) may
-- re-queue it: a late retry from a worker that lost its lease is dropped. A
-- duplicate unique_key is dropped. Returns one row when the job was stored,
-- saying whether it was a re-queue.
WITH requeued AS (
    UPDATE receiptq.jobs
    SET state = 'queued',
        run_at = coalesce(%(run_at)s, now() + make_interval(secs => %(delay_s)s)),
        priority = %(priority)s,
        max_attempts = %(max_attempts)s,
        message = %(message)s::jsonb,
        lease_owner = NULL,
        lease_expires_at = NULL,
        started_at = NULL
    WHERE message_id = %(message_id)s
      AND (state = 'queued' OR lease_owner = %(worker_id)s)
    RETURNING id
),
inserted AS (
    INSERT INTO receiptq.jobs (message_id, queue, actor, priority, run_at, max_attempts,
                               tier, user_id, unique_key, message)
    SELECT %(message_id)s, %(queue)s, %(actor)s, %(priority)s,
           coalesce(%(run_at)s, now() + make_interval(secs => %(delay_s)s)),
           %(max_attempts)s, %(tier)s, %(user_id)s, %(unique_key)s, %(message)s::jsonb
    WHERE NOT EXISTS (SELECT 1 FROM requeued)
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT id, true AS requeued FROM requeued
UNION ALL
SELECT id, false FROM inserted;

-- name: job_enqueue_many
-- Insert many new jobs in one statement (arrays, one element per job, in send
-- order); duplicates of a queued or running message id or unique_key are dropped.
-- Returns how many were stored per (queue, actor). The arrays travel in binary
-- (the b placeholders): psycopg escapes a text array element by element, which
-- cost more than the insert.
-- User rounds (migration 0006) are assigned here for the whole batch, as the row
-- trigger would assign them one job after the other: a user's k-th job due now
-- in a class gets greatest(the user's last round, the class's first round - 1, 0)
-- + k, with two index probes per distinct user instead of per job (0012: the
-- trigger then skips these rows). A job not due yet keeps round 0.
WITH m AS MATERIALIZED (
    SELECT m.message_id, m.queue, m.actor, m.priority,
           coalesce(m.run_at, now() + make_interval(secs => m.delay_s)) AS run_at,
           m.max_attempts, m.tier, m.user_id, m.unique_key, m.message, m.ord,
           coalesce(m.tier, '') AS cls,
           m.user_id IS NOT NULL
               AND coalesce(m.run_at, now() + make_interval(secs => m.delay_s)) <= now()
               AS rounds
    FROM unnest(%(message_ids)b::text[], %(queues)b::text[], %(actors)b::text[],
                %(priorities)b::integer[], %(run_ats)b::timestamptz[], %(delays_s)b::float8[],
                %(max_attempts)b::integer[], %(tiers)b::text[], %(user_ids)b::text[],
                %(unique_keys)b::text[], %(messages)b::text[])
         WITH ORDINALITY AS m(message_id, queue, actor, priority, run_at, delay_s,
                              max_attempts, tier, user_id, unique_key, message, ord)
),
users AS (
    SELECT u.queue, u.cls, u.user_id,
           greatest((SELECT j.user_round FROM receiptq.jobs AS j
                     WHERE j.queue = u.queue AND coalesce(j.tier, '') = u.cls
                       AND j.user_id = u.user_id AND j.state = 'queued' AND j.user_round > 0
                     ORDER BY j.user_round DESC LIMIT 1),
                    (SELECT j.user_round - 1 FROM receiptq.jobs AS j
                     WHERE j.queue = u.queue AND coalesce(j.tier, '') = u.cls
                       AND j.state = 'queued' AND j.user_round > 0
                       AND j.user_round < 9223372036854775807  -- its index (0012)
                     ORDER BY j.user_round LIMIT 1),
                    0) AS base
    FROM (SELECT DISTINCT queue, cls, user_id FROM m WHERE rounds) AS u
),
stored AS (
    INSERT INTO receiptq.jobs (message_id, queue, actor, priority, run_at, max_attempts,
                               tier, user_id, unique_key, message, user_round)
    SELECT m.message_id, m.queue, m.actor, m.priority, m.run_at, m.max_attempts, m.tier,
           m.user_id, m.unique_key, m.message::jsonb,
           CASE WHEN m.rounds
                THEN u.base + row_number() OVER (PARTITION BY m.queue, m.cls, m.user_id, m.rounds
                                                 ORDER BY m.ord)
                ELSE 0 END
    FROM m LEFT JOIN users AS u
        ON m.rounds AND u.queue = m.queue AND u.cls = m.cls AND u.user_id = m.user_id
    ORDER BY m.ord
    ON CONFLICT DO NOTHING
    RETURNING queue, actor
)
SELECT queue, actor, count(*)::integer AS jobs FROM stored GROUP BY queue, actor;

-- name: job_copy_new
-- Store new jobs due now with COPY: the server stores a bulk send in half the time
-- of job_enqueue_many's INSERT from arrays (pg/sending.py). Only for jobs with no
-- delay, no eta and no unique key: run_at and enqueued_at take their defaults (the
-- server's now(), as job_enqueue_many's). A job with a user comes with its round
-- (job_user_round_bases), so the row trigger skips it (0012). A message id already
-- in the table fails the whole COPY; the sender then stores the batch with
-- job_enqueue_many, which drops the duplicates. The statement trigger notifies
-- once per queue, as for an INSERT.
COPY receiptq.jobs (message_id, queue, actor, priority, max_attempts, tier, user_id,
                    user_round, message)
FROM STDIN;

-- name: job_user_round_bases
-- For a bulk send that COPYs jobs with users: per (queue, class, user), the round
-- its k-th job due now follows, base + k, as job_enqueue_many and the row trigger
-- assign them: greatest(the user's last round, the class's first round - 1, 0).
-- Each probe reads one index entry (0012); a class's first round is read once
-- (MATERIALIZED: inlined, its subquery ran once per user).
WITH u AS MATERIALIZED (
    SELECT * FROM unnest(%(queues)b::text[], %(classes)b::text[], %(user_ids)b::text[])
                  AS u(queue, cls, user_id)
),
classes AS MATERIALIZED (
    SELECT c.queue, c.cls,
           (SELECT j.user_round - 1 FROM receiptq.jobs AS j
            WHERE j.queue = c.queue AND coalesce(j.tier, '') = c.cls
              AND j.state = 'queued' AND j.user_round > 0
              AND j.user_round < 9223372036854775807
            ORDER BY j.user_round LIMIT 1) AS first
    FROM (SELECT DISTINCT queue, cls FROM u) AS c
)
SELECT u.queue, u.cls, u.user_id,
       greatest((SELECT j.user_round FROM receiptq.jobs AS j
                 WHERE j.queue = u.queue AND coalesce(j.tier, '') = u.cls
                   AND j.user_id = u.user_id AND j.state = 'queued' AND j.user_round > 0
                 ORDER BY j.user_round DESC LIMIT 1),
                c.first, 0) AS base
FROM u JOIN classes AS c ON c.queue = u.queue AND c.cls = u.cls;

-- name: job_claim_batch
-- Claim up to `limit` ready jobs of a queue for one worker: fair share across the
-- tier classes, caps and pause honoured (receiptq.claim_jobs, migration 0002);
-- each claim counts one more attempt.
SELECT id, attempt, priority, run_at, actor, tier, message, due_at, user_round, idle,
       now() AS claimed_at
FROM receiptq.claim_jobs(%(queue)s, %(worker_id)s, %(lease_s)s, %(limit)s,
                         %(classes)s::text[], %(passes)s::float8[], %(weights)s::float8[],
                         %(quotas)s::integer[]);

-- name: job_claim_classes
-- The claim's fast path, for a queue that is neither paused nor capped (the
-- claimer checks this every poll interval): take exactly quotas[i] ready jobs of
-- class classes[i] ('' = no tier), each class in (priority, user_round, run_at,
-- id) order (user rounds: migration 0006).
-- The claimer's stride arithmetic (receiptq.tiers.quotas) chose the quotas, so
-- no window function, sort or plpgsql is needed; a class that returns nothing is
-- idle. A queue that is paused or capped (or has a capped actor) meanwhile gets
-- nothing here (claim_jobs honours those), so a cap is never exceeded.
-- LATERAL ... LIMIT: one probe of the claim index per class, whatever the
-- statistics say. A queue with jobs not due yet takes job_claim_classes_later.
WITH claimable AS (
    SELECT x.id
    FROM unnest(%(classes)s::text[], %(quotas)s::integer[]) AS c(cls, quota)
    CROSS JOIN LATERAL (
        SELECT j.id
        FROM receiptq.jobs AS j
        WHERE j.queue = %(queue)s AND coalesce(j.tier, '') = c.cls
          AND j.state = 'queued' AND j.run_at <= now()
        ORDER BY j.priority, j.user_round, j.run_at, j.id
        LIMIT c.quota
        FOR UPDATE SKIP LOCKED
    ) AS x
    WHERE c.quota > 0
      AND NOT EXISTS (SELECT 1 FROM receiptq.queue_settings AS s
                      WHERE s.queue = %(queue)s AND (s.paused OR s.max_running IS NOT NULL))
      AND NOT EXISTS (SELECT 1 FROM receiptq.actor_caps AS a WHERE a.queue = %(queue)s)
)
UPDATE receiptq.jobs AS j
SET state = 'running',
    attempt = j.attempt + 1,
    lease_owner = %(worker_id)s,
    lease_expires_at = now() + make_interval(secs => %(lease_s)s),
    started_at = now()
FROM claimable
WHERE j.id = claimable.id
RETURNING j.id, j.attempt, j.priority, j.run_at, j.actor, coalesce(j.tier, '') AS tier,
          j.message::text AS message,
          extract(epoch FROM greatest(j.run_at, j.enqueued_at))::float8 AS due_at,
          j.user_round, j.started_at AS claimed_at;

-- name: job_claim_plain
-- The claim's fast path for the untiered class alone, on a queue that is neither
-- paused nor capped: job_claim_classes for one class, as a plain CTE (no unnest,
-- no LATERAL: a third cheaper for a single claimer under PostgreSQL's default plan
-- caching, and the statement the steady-latency figures were measured with). A
-- queue with jobs not due yet takes job_claim_classes_later.
WITH claimable AS (
    SELECT id
    FROM receiptq.jobs
    WHERE queue = %(queue)s AND coalesce(tier, '') = ''
      AND state = 'queued' AND run_at <= now()
      AND NOT EXISTS (SELECT 1 FROM receiptq.queue_settings AS s
                      WHERE s.queue = %(queue)s AND (s.paused OR s.max_running IS NOT NULL))
      AND NOT EXISTS (SELECT 1 FROM receiptq.actor_caps AS a WHERE a.queue = %(queue)s)
    ORDER BY priority, user_round, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE receiptq.jobs AS j
SET state = 'running',
    attempt = j.attempt + 1,
    lease_owner = %(worker_id)s,
    lease_expires_at = now() + make_interval(secs => %(lease_s)s),
    started_at = now()
FROM claimable
WHERE j.id = claimable.id
RETURNING j.id, j.attempt, j.priority, j.run_at, j.actor, coalesce(j.tier, '') AS tier,
          j.message::text AS message,
          extract(epoch FROM greatest(j.run_at, j.enqueued_at))::float8 AS due_at,
          j.user_round, j.started_at AS claimed_at;

-- name: job_claim_classes_later
-- job_claim_classes for a queue that has jobs not due yet (queue_claim_path's
-- `later`), which wait at round 0 of their (class, priority): after its round-0
-- jobs due now and before its users' rounds, so one scan in claim order steps
-- over every one of them whenever a class's quota is not met by the round-0 jobs
-- due now (10 ms a claim with 100,000 scheduled). Here the claim walks the
-- (class, priority) groups queued (a skip scan of the claim index, one probe per
-- group) and reads in each two ranges of the index: its round-0 jobs due now, then
-- its rounds from 1 on; each read stops once the class's quota is met. The same
-- jobs in the same order as job_claim_classes (test_claim_later), at twice its
-- planning time, so it is used only when jobs not due yet are queued; the plain
-- path's claims take it too then, for the untiered class alone.
WITH RECURSIVE groups AS (
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
),
claimable AS (
    SELECT x.id
    FROM unnest(%(classes)s::text[], %(quotas)s::integer[]) AS c(cls, quota)
    CROSS JOIN LATERAL (
        SELECT y.id
        FROM groups AS g
        CROSS JOIN LATERAL (
            SELECT f.id FROM (
                SELECT j.id FROM receiptq.jobs AS j
                WHERE j.queue = %(queue)s AND coalesce(j.tier, '') = g.cls
                  AND j.state = 'queued' AND j.priority = g.priority
                  AND j.user_round = 0 AND j.run_at <= now()
                ORDER BY j.run_at, j.id
                LIMIT c.quota
                FOR UPDATE SKIP LOCKED) AS f
            UNION ALL
            SELECT r.id FROM (
                SELECT j.id FROM receiptq.jobs AS j
                WHERE j.queue = %(queue)s AND coalesce(j.tier, '') = g.cls
                  AND j.state = 'queued' AND j.priority <= g.priority
                  AND (j.priority, j.user_round) > (g.priority, 0) AND j.run_at <= now()
                ORDER BY j.priority, j.user_round, j.run_at, j.id
                LIMIT c.quota
                FOR UPDATE SKIP LOCKED) AS r
        ) AS y
        WHERE g.cls = c.cls
        LIMIT c.quota
    ) AS x
    WHERE c.quota > 0
      AND NOT EXISTS (SELECT 1 FROM receiptq.queue_settings AS s
                      WHERE s.queue = %(queue)s AND (s.paused OR s.max_running IS NOT NULL))
      AND NOT EXISTS (SELECT 1 FROM receiptq.actor_caps AS a WHERE a.queue = %(queue)s)
)
UPDATE receiptq.jobs AS j
SET state = 'running',
    attempt = j.attempt + 1,
    lease_owner = %(worker_id)s,
    lease_expires_at = now() + make_interval(secs => %(lease_s)s),
    started_at = now()
FROM claimable
WHERE j.id = claimable.id
RETURNING j.id, j.attempt, j.priority, j.run_at, j.actor, coalesce(j.tier, '') AS tier,
          j.message::text AS message,
          extract(epoch FROM greatest(j.run_at, j.enqueued_at))::float8 AS due_at,
          j.user_round, j.started_at AS claimed_at;

-- name: job_seconds_until_due
-- Seconds until the next queued job of a queue is due (NULL when none is queued):
-- a skip scan of the claim index, one probe per distinct (tier, priority). Jobs
-- not due yet all have round 0 (migration 0006), so the first entry of each
-- (tier, priority) is its earliest job not due yet, if it has one.
WITH RECURSIVE firsts AS (
    (SELECT coalesce(tier, '') AS cls, priority, run_at
     FROM receiptq.jobs
     WHERE queue = %(queue)s AND state = 'queued'
     ORDER BY coalesce(tier, ''), priority, user_round, run_at, id
     LIMIT 1)
    UNION ALL
    SELECT next.cls, next.priority, next.run_at
    FROM firsts,
         LATERAL (SELECT coalesce(tier, '') AS cls, priority, run_at
                  FROM receiptq.jobs
                  WHERE queue = %(queue)s AND state = 'queued'
                    AND (coalesce(tier, ''), priority) > (firsts.cls, firsts.priority)
                  ORDER BY coalesce(tier, ''), priority, user_round, run_at, id
                  LIMIT 1) AS next
)
SELECT extract(epoch FROM min(run_at) - now())::float8 AS seconds FROM firsts;

-- name: job_tier_classes
-- The distinct tier classes ('' = no tier) queued in a queue (skip scan).
WITH RECURSIVE classes AS (
    (SELECT coalesce(tier, '') AS cls
     FROM receiptq.jobs
     WHERE queue = %(queue)s AND state = 'queued'
     ORDER BY coalesce(tier, '')
     LIMIT 1)
    UNION ALL
    SELECT next.cls
    FROM classes,
         LATERAL (SELECT coalesce(tier, '') AS cls
                  FROM receiptq.jobs
                  WHERE queue = %(queue)s AND state = 'queued'
                    AND coalesce(tier, '') > classes.cls
                  ORDER BY coalesce(tier, '')
                  LIMIT 1) AS next
)
SELECT cls FROM classes;

-- name: job_ack_batch
-- Finish deliveries: delete each job still running the acked attempt. A job that
-- was re-queued meanwhile (a retry) has another state or attempt and stays. The
-- arrays travel in binary (the b placeholders), as job_enqueue_many's.
DELETE FROM receiptq.jobs AS j
USING unnest(%(ids)b::bigint[], %(attempts)b::integer[]) AS a(id, attempt)
WHERE j.id = a.id AND j.attempt = a.attempt AND j.state = 'running';

-- name: job_dead_letter
-- Move one running delivery to the dead letters with the error that killed it.
WITH dead AS (
    DELETE FROM receiptq.jobs
    WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'running'
    RETURNING *
)
INSERT INTO receiptq.dead_letters (message_id, queue, actor, priority, message, attempts,
                                   max_attempts, reason, error_type, error, traceback, tier,
                                   user_id, enqueued_at)
SELECT message_id, queue, actor, priority, message, attempt, max_attempts, %(reason)s, %(error_type)s,
       %(error)s, %(traceback)s, tier, user_id, enqueued_at
FROM dead
RETURNING id;

-- name: job_requeue_unstarted
-- Give back deliveries a worker claimed but never started (graceful shutdown):
-- queued again at once, and the attempt the claim counted is returned. run_at and
-- the user round stay as they were, so each job keeps its place in line.
UPDATE receiptq.jobs AS j
SET state = 'queued',
    attempt = greatest(j.attempt - 1, 0),
    lease_owner = NULL,
    lease_expires_at = NULL,
    started_at = NULL
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS a(id, attempt)
WHERE j.id = a.id AND j.attempt = a.attempt AND j.state = 'running';

-- name: job_unseen_claims
-- The jobs of a queue that a claim of this worker took and whose answer never
-- arrived (the connection was lost as the claim committed): its rows that are
-- running, not held here, and claimed after the last claim whose answer did arrive
-- (`after`, the database's time of that claim; NULL: none did). Every earlier claim
-- of the queue here came back, so a row it took is held or being settled, never
-- named here. The worker gives them back with job_requeue_unstarted.
SELECT id, attempt
FROM receiptq.jobs
WHERE state = 'running' AND lease_owner = %(worker_id)s AND queue = %(queue)s
  AND started_at > coalesce(%(after)s::timestamptz, '-infinity'::timestamptz)
  AND NOT id = ANY(%(held)s::bigint[]);

-- name: job_postpone
-- Put a delivery that did not run back to queued until a later time, giving back
-- the attempt its claim counted (e.g. its service's circuit breaker is open).
UPDATE receiptq.jobs
SET state = 'queued',
    run_at = now() + make_interval(secs => %(delay_s)s),
    attempt = greatest(attempt - 1, 0),
    lease_owner = NULL,
    lease_expires_at = NULL,
    started_at = NULL
WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'running';

-- name: job_extend_leases
-- Heartbeat: push back the leases of the deliveries this worker still holds in
-- memory (a delivery it gave up on keeps its lease running out, and is rescued).
-- A row another statement has locked is skipped, never waited for: the lock is
-- an ack batch or a requeue (the row is leaving "running"), and waiting could
-- deadlock with an ack batch, which locks the same rows in another order. A row
-- skipped once is renewed by the next beat, two beats before its lease runs out.
WITH held AS (
    SELECT id
    FROM receiptq.jobs
    WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running' AND lease_owner = %(worker_id)s
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE receiptq.jobs AS j
SET lease_expires_at = now() + make_interval(secs => %(lease_s)s)
FROM held
WHERE j.id = held.id;

-- name: job_rescue_expired
-- Jobs whose worker stopped renewing the lease: back to queued, or to the dead
-- letters once the attempts are used up. The calling worker's own deliveries in
-- flight are never rescued (its renewal may just be late). A rescued job keeps its
-- run_at and user round, so it goes back to the place in line it had when it was
-- claimed (a job at the head of the line runs next), not behind the backlog sent
-- while its worker was dying. Returns how many of each.
WITH expired AS (
    SELECT id
    FROM receiptq.jobs
    WHERE state = 'running' AND lease_expires_at < now()
      AND NOT (lease_owner = %(worker_id)s AND id = ANY(%(ids)s::bigint[]))
    FOR UPDATE SKIP LOCKED
),
dead AS (
    DELETE FROM receiptq.jobs AS j
    USING expired
    WHERE j.id = expired.id AND j.max_attempts IS NOT NULL AND j.attempt >= j.max_attempts
    RETURNING j.*
),
buried AS (
    INSERT INTO receiptq.dead_letters (message_id, queue, actor, priority, message, attempts,
                                       max_attempts, reason, error_type, error, tier, user_id,
                                       enqueued_at)
    SELECT message_id, queue, actor, priority, message, attempt, max_attempts, 'worker lost',
           'WorkerLost', 'the worker running this job stopped renewing its lease '
                         || '(' || coalesce(lease_owner, '?') || ')',
           tier, user_id, enqueued_at
    FROM dead
    RETURNING queue, actor
),
requeued AS (
    UPDATE receiptq.jobs AS j
    SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
    FROM expired
    WHERE j.id = expired.id AND NOT (j.max_attempts IS NOT NULL AND j.attempt >= j.max_attempts)
    RETURNING j.queue, j.actor
)
SELECT 'requeued' AS outcome, queue, actor, count(*)::integer AS jobs FROM requeued GROUP BY queue, actor
UNION ALL
SELECT 'dead', queue, actor, count(*)::integer FROM buried GROUP BY queue, actor;

-- name: job_flush_queue
-- Drop every unfinished job of one queue (Dramatiq's broker.flush).
DELETE FROM receiptq.jobs WHERE queue = %(queue)s;

-- name: job_flush_all
-- Drop every unfinished job of the given queues (Dramatiq's broker.flush_all).
DELETE FROM receiptq.jobs WHERE queue = ANY(%(queues)s::text[]);

-- name: job_count_unfinished
-- Jobs of a queue not finished yet (queued, scheduled or running): broker.join waits for 0.
SELECT count(*)::integer AS jobs FROM receiptq.jobs WHERE queue = %(queue)s;

-- name: job_counts_by_queue_and_tier
-- Live counts per queue and tier (NULL: no tier) as of one clock reading (the
-- monitor's `now`): ready, scheduled for later, running (a worker thread started
-- it), reserved (claimed by a worker process, not started), and the age of the
-- oldest ready job. The monitor sums them per queue and per tier.
WITH held AS (
    SELECT queue, tier, count(started_at)::integer AS running,
           count(*) FILTER (WHERE started_at IS NULL)::integer AS reserved
    FROM receiptq.claimed_jobs
    GROUP BY queue, tier
),
waiting AS (
    SELECT queue, tier,
           count(*) FILTER (WHERE state = 'queued' AND run_at <= %(now)s)::integer AS queued,
           count(*) FILTER (WHERE state = 'queued' AND run_at > %(now)s)::integer AS scheduled,
           extract(epoch FROM %(now)s::timestamptz
                              - min(run_at) FILTER (WHERE state = 'queued' AND run_at <= %(now)s)
                  )::float8 AS oldest_ready_s
    FROM receiptq.jobs
    GROUP BY queue, tier
)
SELECT w.queue, w.tier, w.queued, w.scheduled, coalesce(h.running, 0) AS running,
       coalesce(h.reserved, 0) AS reserved, w.oldest_ready_s
FROM waiting AS w
LEFT JOIN held AS h ON h.queue = w.queue AND h.tier IS NOT DISTINCT FROM w.tier
ORDER BY w.queue, w.tier NULLS LAST;

-- name: job_count_ready_or_running
-- Jobs ready now or running in the given queues (NULL: every queue); `receiptq
-- process --burst` stops the workers once this is 0.
SELECT count(*)::integer AS jobs
FROM receiptq.jobs
WHERE (state = 'running' OR run_at <= now())
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]));
