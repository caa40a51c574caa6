-- 0006_user_rounds_actor_caps: fairness between the users of one tier class,
-- and concurrency caps per actor.
--
-- Without it, one user's 50,000 queued receipts delay another user's first
-- receipt of the same tier and priority by all 50,000. With it, a job sent with a
-- user_id and due at once gets a round: one more than the user's last queued
-- round in its queue and tier class, and at least the class's current round (the
-- smallest round queued). Within a class the claim takes jobs in (priority,
-- user_round, run_at, id) order, so the users' queued jobs interleave, one per
-- user per round, and a user who has nothing queued starts at the current round:
-- their first job waits behind at most one job per other user with work in the
-- class (of its priority or better), not behind anyone's backlog.
--
-- Jobs without a user_id, and jobs that are not due yet when sent or put back
-- (a delayed send, a retry waiting for its backoff, a job postponed by an open
-- breaker) have round 0: they go first among the jobs of their class and
-- priority once due, in run_at order, as before rounds existed. So every queued
-- job with a round above 0 is due, and the smallest of those rounds is where the
-- class stands now.

ALTER TABLE receiptq.jobs ADD COLUMN user_round bigint NOT NULL DEFAULT 0;

-- The claim index gains user_round after priority (same name, same role; the
-- migration is one transaction, so no claim runs without it).
DROP INDEX receiptq.jobs_claim_idx;
CREATE INDEX jobs_claim_idx
    ON receiptq.jobs (queue, (coalesce(tier, '')), priority, user_round, run_at, id)
    WHERE state = 'queued';

-- Serve the round of a new job: a user's last round, and the class's current
-- round. Only jobs with a round are in them.
CREATE INDEX jobs_user_round_idx
    ON receiptq.jobs (queue, (coalesce(tier, '')), user_id, user_round)
    WHERE state = 'queued' AND user_round > 0;
CREATE INDEX jobs_class_round_idx
    ON receiptq.jobs (queue, (coalesce(tier, '')), user_round)
    WHERE state = 'queued' AND user_round > 0;

-- Rows of one INSERT statement see the rows it inserted before them (a BEFORE
-- ROW trigger's queries do), so a bulk send of one user's jobs gets consecutive
-- rounds.
CREATE FUNCTION receiptq.assign_user_round() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.run_at > now() THEN
        NEW.user_round := 0;
    ELSIF TG_OP = 'INSERT' THEN
        NEW.user_round := greatest(
            (SELECT max(j.user_round) FROM receiptq.jobs AS j
             WHERE j.queue = NEW.queue AND coalesce(j.tier, '') = coalesce(NEW.tier, '')
               AND j.user_id = NEW.user_id AND j.state = 'queued' AND j.user_round > 0),
            (SELECT min(j.user_round) - 1 FROM receiptq.jobs AS j
             WHERE j.queue = NEW.queue AND coalesce(j.tier, '') = coalesce(NEW.tier, '')
               AND j.state = 'queued' AND j.user_round > 0),
            0) + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_user_round_insert
    BEFORE INSERT ON receiptq.jobs
    FOR EACH ROW WHEN (NEW.user_id IS NOT NULL)
    EXECUTE FUNCTION receiptq.assign_user_round();

-- A job put back to wait (retry with backoff, postponed) loses its round.
CREATE TRIGGER jobs_user_round_delay
    BEFORE UPDATE OF run_at ON receiptq.jobs
    FOR EACH ROW WHEN (NEW.user_round > 0 AND NEW.run_at > now())
    EXECUTE FUNCTION receiptq.assign_user_round();

-- Actor caps: a queue cap (queue_settings.max_running) bounds all of a queue's
-- jobs; an actor cap bounds the running jobs of one actor of a queue (e.g. at
-- most 4 ocr_receipt jobs on a queue that other actors share). Both are enforced
-- at claim time by claim_jobs under advisory locks, so no number of workers ever
-- exceeds them; a queue with an actor cap is always claimed through claim_jobs.
CREATE TABLE receiptq.actor_caps (
    queue       text        NOT NULL,
    actor       text        NOT NULL,
    max_running integer     NOT NULL CHECK (max_running >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, actor)
);

-- claim_jobs (0002) with the rounds in each class's order, each row's round, and
-- actor caps: for each capped actor of the queue, in name order after the queue
-- cap's lock (one lock order for every claimer, so no deadlock), an advisory
-- lock, then its running count. A claim takes no job of an actor at its cap (the
-- candidates skip it) and at most the slots left of the others.
DROP FUNCTION receiptq.claim_jobs(text, text, float8, integer, text[], float8[], float8[],
                                  integer[]);
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
                 actor text, tier text, message text, due_at float8, user_round bigint,
                 idle text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_paused  boolean;
    v_cap     integer;
    v_limit   integer := p_limit;
    v_running integer;
    v_capped  record;
    v_actors  text[] := '{}';   -- capped actors of the queue ...
    v_left    integer[] := '{}'; -- ... and how many more of each may run
    v_full    text[] := '{}';   -- capped actors with no slot left
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
    FOR v_capped IN
        SELECT c.actor, c.max_running FROM receiptq.actor_caps AS c
        WHERE c.queue = p_queue ORDER BY c.actor
    LOOP
        -- (receiptq actor caps, queue/actor)
        PERFORM pg_advisory_xact_lock(72635411, hashtext(p_queue || '/' || v_capped.actor));
        SELECT count(*) INTO v_running
        FROM receiptq.jobs AS j
        WHERE j.queue = p_queue AND j.actor = v_capped.actor AND j.state = 'running';
        v_actors := v_actors || v_capped.actor;
        v_left := v_left || greatest(v_capped.max_running - v_running, 0);
        IF v_capped.max_running <= v_running THEN
            v_full := v_full || v_capped.actor;
        END IF;
    END LOOP;

    RETURN QUERY
    WITH classes AS (
        SELECT c.cls, c.pass, c.weight, c.quota
        FROM unnest(p_classes, p_passes, p_weights, p_quotas) AS c(cls, pass, weight, quota)
    ),
    candidates AS (
        SELECT c.cls, x.id, x.priority, x.run_at, x.actor,
               c.pass + (row_number() OVER (PARTITION BY c.cls
                                            ORDER BY x.priority, x.user_round, x.run_at, x.id))
                        / c.weight AS vtime
        FROM classes AS c
        CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.user_round, j.run_at, j.actor
            FROM receiptq.jobs AS j
            WHERE j.queue = p_queue AND coalesce(j.tier, '') = c.cls
              AND j.state = 'queued' AND j.run_at <= now()
              AND j.actor <> ALL (v_full)
            ORDER BY j.priority, j.user_round, j.run_at, j.id
            LIMIT least(v_limit, c.quota)
            FOR UPDATE SKIP LOCKED
        ) AS x
    ),
    idle AS (
        SELECT coalesce(array_agg(c.cls), '{}') AS classes
        FROM classes AS c
        WHERE NOT EXISTS (SELECT 1 FROM candidates AS k WHERE k.cls = c.cls)
    ),
    within_caps AS (
        SELECT k.*
        FROM (SELECT k.*, row_number() OVER (PARTITION BY k.actor
                                             ORDER BY k.vtime, k.priority, k.run_at, k.id) AS nth
              FROM candidates AS k) AS k
        LEFT JOIN unnest(v_actors, v_left) AS a(actor, slots) ON a.actor = k.actor
        WHERE a.slots IS NULL OR k.nth <= a.slots
    ),
    chosen AS (
        SELECT k.id FROM within_caps AS k
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
              j.user_round, (SELECT idle.classes FROM idle);
END
$$;
