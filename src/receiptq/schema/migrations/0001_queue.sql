-- 0001_queue: the job queue's tables. Append-only: later changes go in new files.
--
-- Everything lives in the schema "receiptq" so that an application's own
-- tables sit beside it without clashes.

CREATE SCHEMA IF NOT EXISTS receiptq;

-- jobs: the hot table. One row per job that is not finished yet; a finished
-- job leaves (its ack deletes the row; a dead job moves to dead_letters), so
-- the table stays as small as the backlog.
--
-- States:
--   queued   waiting to run. run_at in the future means scheduled (a delayed
--            send, or a retry waiting for its backoff); run_at <= now() means
--            ready, and the claim hands it out.
--   running  claimed by a worker (lease_owner) until lease_expires_at; the
--            worker's heartbeat extends the lease. An expired lease means the
--            worker died: any live worker puts the job back to queued, or to
--            dead_letters once attempts reach max_attempts.
CREATE TABLE receiptq.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       text        NOT NULL UNIQUE,   -- Dramatiq's message id
    queue            text        NOT NULL,          -- canonical queue name (never a .DQ name)
    actor            text        NOT NULL,
    priority         integer     NOT NULL DEFAULT 0, -- lower runs first, as in Dramatiq
    state            text        NOT NULL DEFAULT 'queued'
                                 CHECK (state IN ('queued', 'running')),
    run_at           timestamptz NOT NULL DEFAULT now(), -- not handed out before this
    attempt          integer     NOT NULL DEFAULT 0, -- deliveries so far (the claim adds one)
    max_attempts     integer,                        -- deliveries allowed; NULL: no limit
    lease_owner      text,                           -- workers.id of the claimer
    lease_expires_at timestamptz,
    started_at       timestamptz,                    -- when the current delivery was claimed
    tier             text,                           -- the user's tier, when known
    user_id          text,
    unique_key       text,                           -- at most one queued-or-running job per key
    message          jsonb       NOT NULL,           -- the Dramatiq message, as JSON
    enqueued_at      timestamptz NOT NULL DEFAULT now()
);

-- Serves the claim: ready rows of one queue and tier class ('' = no tier) in
-- (priority, run_at, id) order. Also "when is the next job due" (one probe per
-- distinct tier and priority). It is the
-- only index on queued rows on purpose: a second one, e.g. on (queue, run_at),
-- tempts the planner into scan-then-sort claims when statistics are stale.
CREATE INDEX jobs_claim_idx ON receiptq.jobs (queue, (coalesce(tier, '')), priority, run_at, id)
    WHERE state = 'queued';
-- Serves lease extension and the rescue of expired leases (few rows: in flight only).
CREATE INDEX jobs_lease_idx ON receiptq.jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_unique_key_idx ON receiptq.jobs (unique_key)
    WHERE unique_key IS NOT NULL;

-- The table churns (insert, update, delete per job): vacuum it early and often.
ALTER TABLE receiptq.jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    fillfactor = 90
);

-- Wakes consumers: one NOTIFY per inserting statement and queue. The payload is
-- 'tiered:' || queue when a new job has a tier (the consumer then claims through
-- the fair claim function), else the queue name when a new job is due now, else
-- 'later:' || queue (all scheduled: the consumer re-reads when the next job is
-- due). Postgres folds equal notifications of one transaction into one, so a
-- transaction notifies at most once per queue and kind.
CREATE FUNCTION receiptq.notify_inserted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    queue_name text;
    due_now    boolean;
    tiered     boolean;
BEGIN
    FOR queue_name, due_now, tiered IN
        SELECT queue, bool_or(run_at <= now()), bool_or(coalesce(tier, '') > '')
        FROM new_jobs GROUP BY queue
    LOOP
        PERFORM pg_notify('receiptq', CASE WHEN tiered THEN 'tiered:' || queue_name
                                           WHEN due_now THEN queue_name
                                           ELSE 'later:' || queue_name END);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert
    AFTER INSERT ON receiptq.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION receiptq.notify_inserted_jobs();

-- A job put back to queued and due now (a retry without backoff, a rescued or
-- requeued job) wakes consumers too.
CREATE FUNCTION receiptq.notify_requeued_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('receiptq', NEW.queue);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_requeue
    AFTER UPDATE OF state ON receiptq.jobs
    FOR EACH ROW
    WHEN (OLD.state = 'running' AND NEW.state = 'queued' AND NEW.run_at <= now())
    EXECUTE FUNCTION receiptq.notify_requeued_job();

-- dead_letters: jobs that will not run again by themselves: attempts used up,
-- a permanent error, message.fail(), an unknown actor, an undecodable row, or
-- a worker lost on the last attempt. `receiptq dead-letter retry` puts one
-- back into jobs as a fresh series of attempts.
CREATE TABLE receiptq.dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  text        NOT NULL,
    queue       text        NOT NULL,
    actor       text        NOT NULL,
    priority    integer     NOT NULL DEFAULT 0,
    message     jsonb       NOT NULL,
    attempts    integer     NOT NULL,   -- deliveries made before it died
    max_attempts integer,               -- the job's limit, kept for a retry
    reason      text        NOT NULL,   -- failed | unknown actor | undecodable | worker lost
    error_type  text,
    error       text,
    traceback   text,
    tier        text,
    user_id     text,
    enqueued_at timestamptz,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_failed_at_idx ON receiptq.dead_letters (failed_at);
CREATE INDEX dead_letters_actor_idx ON receiptq.dead_letters (actor, failed_at);
CREATE INDEX dead_letters_queue_idx ON receiptq.dead_letters (queue);

-- stats_minute: per-minute counters per queue and actor, written in batches by
-- the brokers (never one row update per job). Histograms are bucket counts over
-- receiptq.stats.BUCKET_BOUNDS_MS (upper bounds in ms, the last is unbounded),
-- enough for p50/p95/p99 estimates.
--   enqueued       jobs sent (counted by the sending process)
--   succeeded      deliveries that finished without an exception
--   failed         deliveries that raised (each one: retried or dead-lettered after)
--   retried        failed deliveries that were scheduled to run again
--   dead_lettered  jobs moved to dead_letters
--   postponed      deliveries put back unrun, no attempt used (e.g. breaker open)
CREATE TABLE receiptq.stats_minute (
    minute          timestamptz NOT NULL,
    queue           text        NOT NULL,
    actor           text        NOT NULL,
    enqueued        bigint      NOT NULL DEFAULT 0,
    succeeded       bigint      NOT NULL DEFAULT 0,
    failed          bigint      NOT NULL DEFAULT 0,
    retried         bigint      NOT NULL DEFAULT 0,
    dead_lettered   bigint      NOT NULL DEFAULT 0,
    postponed       bigint      NOT NULL DEFAULT 0,
    run_ms_sum      double precision NOT NULL DEFAULT 0,   -- run time of finished deliveries
    run_ms_hist     integer[]   NOT NULL DEFAULT '{}',
    latency_ms_sum  double precision NOT NULL DEFAULT 0,   -- due (run_at or enqueue) to start
    latency_ms_hist integer[]   NOT NULL DEFAULT '{}',
    PRIMARY KEY (minute, queue, actor)
);

-- Element-wise sum of two histograms (arrays of bucket counts, any lengths).
CREATE FUNCTION receiptq.hist_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

-- workers: one row per live worker process (a broker that consumes), kept
-- fresh by its heartbeat; rows whose heartbeat stopped long ago are removed by
-- the other workers.
CREATE TABLE receiptq.workers (
    id                text        PRIMARY KEY,   -- host:pid:random
    host              text        NOT NULL,
    pid               integer     NOT NULL,
    queues            text[]      NOT NULL DEFAULT '{}',
    in_flight         integer     NOT NULL DEFAULT 0,   -- jobs claimed and not yet acked
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);
