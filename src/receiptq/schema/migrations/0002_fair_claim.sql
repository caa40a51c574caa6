-- 0002_fair_claim: per-queue pause and concurrency caps, worker resource figures,
-- and the claim as one function (fair share across tiers, caps, pause).

-- queue_settings: operator settings of a queue; a queue without a row is
-- running and uncapped.
--   paused       the queue keeps accepting jobs but hands none out
--   max_running  at most this many of its jobs are running (claimed and not yet
--                finished) across all workers at any moment; NULL: no cap
CREATE TABLE receiptq.queue_settings (
    queue       text        PRIMARY KEY,
    paused      boolean     NOT NULL DEFAULT false,
    max_running integer     CHECK (max_running IS NULL OR max_running >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What each worker process measured of itself at its last heartbeat, and why it
-- stopped claiming (NULL while it claims normally).
ALTER TABLE receiptq.workers
    ADD COLUMN cpu_percent     real,
    ADD COLUMN memory_percent  real,
    ADD COLUMN db_connections_percent real,
    ADD COLUMN throttled_reason text;

-- claim_jobs: claim up to p_limit ready jobs of a queue for one worker.
--   * nothing while the queue is paused;
--   * with a cap, under a per-queue advisory lock (so two claimers cannot both
--     fill the last slots), at most max_running minus the jobs running now;
--   * across the claim classes p_classes (tiers; '' = no tier), the ready jobs
--     with the smallest pass + rank / weight (stride scheduling, see
--     receiptq/tiers.py), within a class in (priority, run_at, id) order.
--     p_quotas bounds how many candidates each class locks: the claimer's own
--     stride arithmetic says how many each class can win (at least 1, which
--     also tells whether an idle class has work again), so a claim locks about
--     p_limit rows, not p_limit per class.
-- Each returned row also carries the classes that had no ready job this claimer
-- could take (idle), so that it can keep its passes honest.
CREATE FUNCTION receiptq.claim_jobs(
    p_queue   text,
    p_worker  text,
    p_lease_s float8,
    p_limit   integer,
    p_classes text[],
    p_passes  float8[],
    p_weights float8[],
    p_quotas  integer[]
) RETURNS TABLE (id bigint, attempt integer, priority integer, run_at timestamptz,
                 actor text, tier text, message text, due_at float8, idle text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_paused  boolean;
    v_cap     integer;
    v_limit   integer := p_limit;
    v_running integer;
BEGIN
    SELECT s.paused, s.max_running INTO v_paused, v_cap
    FROM receiptq.queue_settings AS s WHERE s.queue = p_queue;
    IF v_paused THEN
        RETURN;
    END IF;
    IF v_cap IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(72635410, hashtext(p_queue));  -- (receiptq caps, queue)
        SELECT count(*) INTO v_running
        FROM receiptq.jobs AS j WHERE j.queue = p_queue AND j.state = 'running';
        v_limit := least(v_limit, v_cap - v_running);
        IF v_limit <= 0 THEN
            RETURN;
        END IF;
    END IF;

    -- LATERAL ... LIMIT: one index probe per class, whatever the statistics say.
    RETURN QUERY
    WITH classes AS (
        SELECT c.cls, c.pass, c.weight, c.quota
        FROM unnest(p_classes, p_passes, p_weights, p_quotas) AS c(cls, pass, weight, quota)
    ),
    candidates AS (
        SELECT c.cls, x.id, x.priority, x.run_at,
               c.pass + (row_number() OVER (PARTITION BY c.cls
                                            ORDER BY x.priority, x.run_at, x.id)) / c.weight
                   AS vtime
        FROM classes AS c
        CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.run_at
            FROM receiptq.jobs AS j
            WHERE j.queue = p_queue AND coalesce(j.tier, '') = c.cls
              AND j.state = 'queued' AND j.run_at <= now()
            ORDER BY j.priority, j.run_at, j.id
            LIMIT least(v_limit, c.quota)
            FOR UPDATE SKIP LOCKED
        ) AS x
    ),
    idle AS (
        -- classes with no ready job this claimer could take
        SELECT coalesce(array_agg(c.cls), '{}') AS classes
        FROM classes AS c
        WHERE NOT EXISTS (SELECT 1 FROM candidates AS k WHERE k.cls = c.cls)
    ),
    chosen AS (
        SELECT k.id FROM candidates AS k
        ORDER BY k.vtime, k.priority, k.run_at, k.id
        LIMIT v_limit
    )
    UPDATE receiptq.jobs AS j
    SET state = 'running',
        attempt = j.attempt + 1,
        lease_owner = p_worker,
        lease_expires_at = now() + make_interval(secs => p_lease_s),
        started_at = now()
    FROM chosen
    WHERE j.id = chosen.id
    RETURNING j.id, j.attempt, j.priority, j.run_at, j.actor, coalesce(j.tier, ''),
              j.message::text, extract(epoch FROM greatest(j.run_at, j.enqueued_at))::float8,
              (SELECT idle.classes FROM idle);
END
$$;
