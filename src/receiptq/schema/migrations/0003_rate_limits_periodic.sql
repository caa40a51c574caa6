-- 0003_rate_limits_periodic: rate limiter state, periodic ticks, and
-- receiptq.enqueue() for jobs sent by the database itself.

-- rate_limits: the state of Dramatiq's rate limiters and barriers
-- (receiptq.rate_limits.PostgresRateLimiterBackend). One row per key:
--   counters  ConcurrentRateLimiter slots in use, BucketRateLimiter and
--             WindowRateLimiter counts per bucket ("key@<time>"), a Barrier's
--             parties still to come;
--   events    a key that wait_notify() signalled ("<barrier>@events"): while
--             the row lives, wait() on that key returns at once.
-- A row whose expires_at has passed no longer exists for the limiters: every
-- statement treats it as absent (and replaces it), and the retention job
-- deletes such rows in batches. Updates are single-statement upserts, so
-- concurrent processes never lose an increment.
CREATE TABLE receiptq.rate_limits (
    key        text        PRIMARY KEY,
    value      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
-- Serves the pruning of expired keys.
CREATE INDEX rate_limits_expires_at_idx ON receiptq.rate_limits (expires_at);

-- periodic_ticks: one row per (periodic actor, scheduler tick) ever enqueued,
-- inserted in the same transaction as the tick's job. Its primary key makes a
-- second scheduler (two run side by side during a deploy) unable to enqueue
-- the same tick again, even after the first tick's job has finished and left
-- receiptq.jobs. tick_at is the tick's minute in UTC. Rows older than the
-- statistics retention are pruned by the retention job.
CREATE TABLE receiptq.periodic_ticks (
    actor       text        NOT NULL,
    tick_at     timestamptz NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, tick_at)
);
CREATE INDEX periodic_ticks_tick_at_idx ON receiptq.periodic_ticks (tick_at);

-- Retention (receiptq.actors.periodic.retention_cleanup, hourly): rows of
-- stats_minute older than RECEIPTQ_STATS_RETENTION_DAYS (14), dead_letters
-- older than RECEIPTQ_DEAD_LETTER_RETENTION_DAYS (30), periodic_ticks older
-- than the statistics retention and expired rate_limits keys are deleted in
-- batches of RECEIPTQ_RETENTION_BATCH_SIZE rows (queries/retention.sql), so no
-- single statement holds locks on a large part of a table.

-- receiptq.enqueue: send a Dramatiq message from SQL (a trigger, pg_cron).
-- Builds the message exactly as PostgresBroker stores it (queue_name,
-- actor_name, args, kwargs, options, message_id, message_timestamp) and
-- inserts the job; the jobs insert trigger wakes the workers when the
-- transaction commits. Options carry priority, and tier, user_id and
-- unique_key when given. max_retries bounds the deliveries of the first run
-- (lease rescues) until the worker's own retry applies the actor's setting.
-- A tier must name a tier of the workers' policy (RECEIPTQ_TIERS): the claim
-- only serves those. Its priority offset is not added here (the policy lives in
-- the workers' settings): pass the effective priority.
-- Returns the message id, or NULL when a job with the same unique_key is
-- queued or running already (the new one is dropped, as the broker does).
-- Bad input raises SQLSTATE 22023 (invalid_parameter_value) or 22004
-- (null_value_not_allowed) naming the argument, and nothing is written.
CREATE FUNCTION receiptq.enqueue(
    actor       text,
    queue       text,
    args        jsonb,
    kwargs      jsonb    DEFAULT '{}',
    priority    integer  DEFAULT 0,
    delay       interval DEFAULT '0',
    tier        text     DEFAULT NULL,
    user_id     text     DEFAULT NULL,
    unique_key  text     DEFAULT NULL,
    max_retries integer  DEFAULT 20
) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    new_id  text := gen_random_uuid()::text;
    options jsonb;
    message jsonb;
BEGIN
    IF actor IS NULL OR length(actor) = 0 OR length(actor) > 256 THEN
        RAISE EXCEPTION 'receiptq.enqueue: actor must be a name of 1 to 256 characters, got %',
            coalesce(quote_literal(actor), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The rule of receiptq.config.QUEUE_NAME_PATTERN; .DQ/.XQ are Dramatiq's own queues.
    IF queue IS NULL OR queue !~ '^[A-Za-z_][A-Za-z0-9._-]{0,127}$'
       OR queue ~ '\.(DQ|XQ)$' THEN
        RAISE EXCEPTION 'receiptq.enqueue: invalid queue name %', coalesce(quote_literal(queue), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use letters, digits, ''.'', ''_'' or ''-'', starting with a letter '
                         'or ''_'', at most 128 characters, not ending in .DQ or .XQ';
    END IF;
    IF args IS NULL OR jsonb_typeof(args) <> 'array' THEN
        RAISE EXCEPTION 'receiptq.enqueue: args must be a JSON array, got %',
            coalesce(jsonb_typeof(args), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kwargs IS NULL OR jsonb_typeof(kwargs) <> 'object' THEN
        RAISE EXCEPTION 'receiptq.enqueue: kwargs must be a JSON object, got %',
            coalesce(jsonb_typeof(kwargs), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF priority IS NULL THEN
        RAISE EXCEPTION 'receiptq.enqueue: priority must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF delay IS NULL OR delay < interval '0' THEN
        RAISE EXCEPTION 'receiptq.enqueue: delay must be an interval >= 0, got %',
            coalesce(delay::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_retries IS NOT NULL AND max_retries < 0 THEN
        RAISE EXCEPTION 'receiptq.enqueue: max_retries must be >= 0, got %', max_retries
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(tier) NOT BETWEEN 1 AND 256 OR length(user_id) NOT BETWEEN 1 AND 256
       OR length(unique_key) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'receiptq.enqueue: tier, user_id and unique_key must have 1 to 256 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    options := jsonb_strip_nulls(jsonb_build_object(
        'priority', priority, 'tier', tier, 'user_id', user_id, 'unique_key', unique_key));
    message := jsonb_build_object(
        'queue_name', queue,
        'actor_name', actor,
        'args', args,
        'kwargs', kwargs,
        'options', options,
        'message_id', new_id,
        'message_timestamp', floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    IF octet_length(message::text) > 1048576 THEN
        RAISE EXCEPTION 'receiptq.enqueue: the message is % bytes, over the limit of 1 MiB',
            octet_length(message::text)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'store large data in a table and send its id';
    END IF;

    INSERT INTO receiptq.jobs (message_id, queue, actor, priority, run_at, max_attempts,
                               tier, user_id, unique_key, message)
    VALUES (new_id, queue, actor, priority, now() + delay, max_retries + 1,
            tier, user_id, unique_key, message)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN new_id;
END
$$;
