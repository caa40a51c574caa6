-- 0011_sql_enqueue_tiers: receiptq.enqueue() adds the tier's priority offset and
-- is counted in the statistics, as a send from Python is.
--
-- The tier policy lives in the workers' settings (RECEIPTQ_TIERS); the database
-- needs its offsets to store a job sent from SQL at the priority a Python send
-- would give it. receiptq.tiers holds them: seeded with the default policy here,
-- replaced by each worker process with its own policy when it starts consuming.

-- tiers: the workers' tier policy (the last worker to start wrote it).
CREATE TABLE receiptq.tiers (
    name            text        PRIMARY KEY,
    priority_offset integer     NOT NULL,   -- added to the priority of the tier's jobs
    weight          float8      NOT NULL CHECK (weight > 0),  -- its fair share of claims
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO receiptq.tiers (name, priority_offset, weight)
VALUES ('enterprise', 0, 6), ('pro', 10, 3), ('free', 20, 1);

-- sql_sends: one row per job sent by receiptq.enqueue(), until a worker's
-- heartbeat folds them into stats_minute.enqueued. Counting straight into
-- stats_minute would lock its row of the minute, queue and actor until the
-- sender's transaction ends, so every transaction whose trigger enqueues the
-- same actor would wait for the one before it. Inserts into this table never
-- wait, and a rolled-back send leaves no row: it is never counted. No key: rows
-- are taken by ctid, with SKIP LOCKED, so two workers never fold a row twice.
CREATE TABLE receiptq.sql_sends (
    minute timestamptz NOT NULL DEFAULT date_trunc('minute', now()),
    queue  text        NOT NULL,
    actor  text        NOT NULL
);

-- receiptq.enqueue (0003), with the tier's priority offset and the count.
-- Send a Dramatiq message from SQL (a trigger, pg_cron). Builds the message
-- exactly as PostgresBroker stores it (queue_name, actor_name, args, kwargs,
-- options, message_id, message_timestamp) and inserts the job; the jobs insert
-- trigger wakes the workers when the transaction commits. Options carry
-- priority, and tier, user_id and unique_key when given. max_retries bounds the
-- deliveries of the first run (lease rescues) until the worker's own retry
-- applies the actor's setting. A tier must name a tier of receiptq.tiers (the
-- workers' policy); its priority offset is added to priority, as the broker
-- does: the message keeps the priority given, the job row the effective one.
-- Returns the message id, or NULL when a job with the same unique_key is
-- queued or running already (the new one is dropped, as the broker does).
-- Bad input raises SQLSTATE 22023 (invalid_parameter_value) or 22004
-- (null_value_not_allowed) naming the argument, and nothing is written.
CREATE OR REPLACE FUNCTION receiptq.enqueue(
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
    offset_ integer := 0;
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

    IF tier IS NOT NULL THEN
        SELECT t.priority_offset INTO offset_ FROM receiptq.tiers AS t WHERE t.name = tier;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'receiptq.enqueue: unknown tier %; known tiers: %', quote_literal(tier),
                (SELECT coalesce(string_agg(t.name, ', ' ORDER BY t.priority_offset, t.name), 'none')
                 FROM receiptq.tiers AS t)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'receiptq.tiers holds the tiers of RECEIPTQ_TIERS as the workers '
                             'last started with it';
        END IF;
        IF priority::bigint + offset_ NOT BETWEEN -2147483648 AND 2147483647 THEN
            RAISE EXCEPTION 'receiptq.enqueue: priority % with the tier''s offset is out of range',
                priority
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
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
    VALUES (new_id, queue, actor, priority + offset_, now() + delay, max_retries + 1,
            tier, user_id, unique_key, message)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO receiptq.sql_sends (queue, actor) VALUES (queue, actor);
    RETURN new_id;
END
$$;
