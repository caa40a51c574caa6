-- The queue's schema (``receiptq``) as the migrations in schema/migrations/ leave it:
-- every table, index, constraint, function, trigger and view in one file, to read.
-- Generated: do not edit. Databases are set up and upgraded by the migrations
-- (`receiptq db migrate`), never from this file. Regenerate after adding a migration:
--   python -m receiptq.tools.schema_dump > src/receiptq/schema/schema.sql
-- (tests/integration/test_schema_sql.py fails until it matches the migrations.)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: receiptq; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA receiptq;

--
-- Name: assign_user_round(); Type: FUNCTION; Schema: receiptq; Owner: -
--

CREATE FUNCTION receiptq.assign_user_round() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.run_at > now() THEN
        NEW.user_round := 0;
    ELSIF TG_OP = 'INSERT' THEN
        NEW.user_round := greatest(
            (SELECT j.user_round FROM receiptq.jobs AS j
             WHERE j.queue = NEW.queue AND coalesce(j.tier, '') = coalesce(NEW.tier, '')
               AND j.user_id = NEW.user_id AND j.state = 'queued' AND j.user_round > 0
             ORDER BY j.user_round DESC LIMIT 1),
            (SELECT j.user_round - 1 FROM receiptq.jobs AS j
             WHERE j.queue = NEW.queue AND coalesce(j.tier, '') = coalesce(NEW.tier, '')
               AND j.state = 'queued' AND j.user_round > 0
               AND j.user_round < 9223372036854775807
             ORDER BY j.user_round LIMIT 1),
            0) + 1;
    END IF;
    RETURN NEW;
END
$$;

--
-- Name: claim_jobs(text, text, double precision, integer, text[], double precision[], double precision[], integer[]); Type: FUNCTION; Schema: receiptq; Owner: -
--

CREATE FUNCTION receiptq.claim_jobs(p_queue text, p_worker text, p_lease_s double precision, p_limit integer, p_classes text[], p_passes double precision[], p_weights double precision[], p_quotas integer[]) RETURNS TABLE(id bigint, attempt integer, priority integer, run_at timestamp with time zone, actor text, tier text, message text, due_at double precision, user_round bigint, idle text[])
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: enqueue(text, text, jsonb, jsonb, integer, interval, text, text, text, integer); Type: FUNCTION; Schema: receiptq; Owner: -
--

CREATE FUNCTION receiptq.enqueue(actor text, queue text, args jsonb, kwargs jsonb DEFAULT '{}'::jsonb, priority integer DEFAULT 0, delay interval DEFAULT '00:00:00'::interval, tier text DEFAULT NULL::text, user_id text DEFAULT NULL::text, unique_key text DEFAULT NULL::text, max_retries integer DEFAULT 20) RETURNS text
    LANGUAGE plpgsql
    AS $_$
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
$_$;

--
-- Name: hist_add(integer[], integer[]); Type: FUNCTION; Schema: receiptq; Owner: -
--

CREATE FUNCTION receiptq.hist_add(a integer[], b integer[]) RETURNS integer[]
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

--
-- Name: notify_inserted_jobs(); Type: FUNCTION; Schema: receiptq; Owner: -
--

CREATE FUNCTION receiptq.notify_inserted_jobs() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: notify_requeued_job(); Type: FUNCTION; Schema: receiptq; Owner: -
--

CREATE FUNCTION receiptq.notify_requeued_job() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('receiptq', NEW.queue);
    RETURN NULL;
END
$$;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: actor_caps; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.actor_caps (
    queue text NOT NULL,
    actor text NOT NULL,
    max_running integer NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT actor_caps_max_running_check CHECK ((max_running >= 0))
);

--
-- Name: breakers; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.breakers (
    name text NOT NULL,
    state text DEFAULT 'closed'::text NOT NULL,
    fail_counter integer DEFAULT 0 NOT NULL,
    success_counter integer DEFAULT 0 NOT NULL,
    opened_at timestamp with time zone,
    fail_max integer NOT NULL,
    reset_timeout_s double precision NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    trial_owner text,
    trial_expires_at timestamp with time zone,
    CONSTRAINT breakers_state_check CHECK ((state = ANY (ARRAY['closed'::text, 'open'::text, 'half-open'::text])))
);

--
-- Name: jobs; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.jobs (
    id bigint NOT NULL,
    message_id text NOT NULL,
    queue text NOT NULL,
    actor text NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    state text DEFAULT 'queued'::text NOT NULL,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    attempt integer DEFAULT 0 NOT NULL,
    max_attempts integer,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    started_at timestamp with time zone,
    tier text,
    user_id text,
    unique_key text,
    message jsonb NOT NULL,
    enqueued_at timestamp with time zone DEFAULT now() NOT NULL,
    user_round bigint DEFAULT 0 NOT NULL,
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['queued'::text, 'running'::text])))
)
WITH (autovacuum_vacuum_scale_factor='0.01', autovacuum_analyze_scale_factor='0.02', fillfactor='90');

--
-- Name: workers; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.workers (
    id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[] DEFAULT '{}'::text[] NOT NULL,
    in_flight integer DEFAULT 0 NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    last_heartbeat_at timestamp with time zone DEFAULT now() NOT NULL,
    cpu_percent real,
    memory_percent real,
    db_connections_percent real,
    throttled_reason text,
    started_job_ids bigint[] DEFAULT '{}'::bigint[] NOT NULL,
    started_attempts integer[] DEFAULT '{}'::integer[] NOT NULL,
    started_ats timestamp with time zone[] DEFAULT '{}'::timestamp with time zone[] NOT NULL
);

--
-- Name: claimed_jobs; Type: VIEW; Schema: receiptq; Owner: -
--

CREATE VIEW receiptq.claimed_jobs AS
 SELECT j.id,
    j.queue,
    j.actor,
    j.tier,
    j.attempt,
    j.lease_owner,
    j.started_at AS claimed_at,
    s.started_at
   FROM (receiptq.jobs j
     LEFT JOIN ( SELECT w.id AS worker_id,
            d.job_id,
            d.attempt,
            d.started_at
           FROM receiptq.workers w,
            LATERAL UNNEST(w.started_job_ids, w.started_attempts, w.started_ats) d(job_id, attempt, started_at)) s ON (((s.job_id = j.id) AND (s.attempt = j.attempt) AND (s.worker_id = j.lease_owner))))
  WHERE (j.state = 'running'::text);

--
-- Name: dead_letters; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.dead_letters (
    id bigint NOT NULL,
    message_id text NOT NULL,
    queue text NOT NULL,
    actor text NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    message jsonb NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer,
    reason text NOT NULL,
    error_type text,
    error text,
    traceback text,
    tier text,
    user_id text,
    enqueued_at timestamp with time zone,
    failed_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: dead_letters_id_seq; Type: SEQUENCE; Schema: receiptq; Owner: -
--

ALTER TABLE receiptq.dead_letters ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME receiptq.dead_letters_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: imported_messages; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.imported_messages (
    message_id text NOT NULL,
    source text NOT NULL,
    source_state text NOT NULL,
    imported_as text NOT NULL,
    imported_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT imported_messages_imported_as_check CHECK ((imported_as = ANY (ARRAY['job'::text, 'dead_letter'::text])))
);

--
-- Name: jobs_id_seq; Type: SEQUENCE; Schema: receiptq; Owner: -
--

ALTER TABLE receiptq.jobs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME receiptq.jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: migrations; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.migrations (
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: periodic_ticks; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.periodic_ticks (
    actor text NOT NULL,
    tick_at timestamp with time zone NOT NULL,
    enqueued_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: queue_settings; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.queue_settings (
    queue text NOT NULL,
    paused boolean DEFAULT false NOT NULL,
    max_running integer,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    prefetch integer,
    CONSTRAINT queue_settings_max_running_check CHECK (((max_running IS NULL) OR (max_running >= 0))),
    CONSTRAINT queue_settings_prefetch_check CHECK (((prefetch IS NULL) OR (prefetch >= 1)))
);

--
-- Name: rate_limits; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.rate_limits (
    key text NOT NULL,
    value bigint NOT NULL,
    expires_at timestamp with time zone NOT NULL
);

--
-- Name: results; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.results (
    key text NOT NULL,
    value bytea NOT NULL,
    stored_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL
);

--
-- Name: sql_sends; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.sql_sends (
    minute timestamp with time zone DEFAULT date_trunc('minute'::text, now()) NOT NULL,
    queue text NOT NULL,
    actor text NOT NULL
);

--
-- Name: stats_minute; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.stats_minute (
    minute timestamp with time zone NOT NULL,
    queue text NOT NULL,
    actor text NOT NULL,
    enqueued bigint DEFAULT 0 NOT NULL,
    succeeded bigint DEFAULT 0 NOT NULL,
    failed bigint DEFAULT 0 NOT NULL,
    retried bigint DEFAULT 0 NOT NULL,
    dead_lettered bigint DEFAULT 0 NOT NULL,
    postponed bigint DEFAULT 0 NOT NULL,
    run_ms_sum double precision DEFAULT 0 NOT NULL,
    run_ms_hist integer[] DEFAULT '{}'::integer[] NOT NULL,
    latency_ms_sum double precision DEFAULT 0 NOT NULL,
    latency_ms_hist integer[] DEFAULT '{}'::integer[] NOT NULL
);

--
-- Name: tiers; Type: TABLE; Schema: receiptq; Owner: -
--

CREATE TABLE receiptq.tiers (
    name text NOT NULL,
    priority_offset integer NOT NULL,
    weight double precision NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT tiers_weight_check CHECK ((weight > (0)::double precision))
);

--
-- Name: actor_caps actor_caps_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.actor_caps
    ADD CONSTRAINT actor_caps_pkey PRIMARY KEY (queue, actor);

--
-- Name: breakers breakers_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.breakers
    ADD CONSTRAINT breakers_pkey PRIMARY KEY (name);

--
-- Name: dead_letters dead_letters_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.dead_letters
    ADD CONSTRAINT dead_letters_pkey PRIMARY KEY (id);

--
-- Name: imported_messages imported_messages_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.imported_messages
    ADD CONSTRAINT imported_messages_pkey PRIMARY KEY (message_id);

--
-- Name: jobs jobs_message_id_key; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.jobs
    ADD CONSTRAINT jobs_message_id_key UNIQUE (message_id);

--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);

--
-- Name: migrations migrations_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (name);

--
-- Name: periodic_ticks periodic_ticks_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.periodic_ticks
    ADD CONSTRAINT periodic_ticks_pkey PRIMARY KEY (actor, tick_at);

--
-- Name: queue_settings queue_settings_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.queue_settings
    ADD CONSTRAINT queue_settings_pkey PRIMARY KEY (queue);

--
-- Name: rate_limits rate_limits_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.rate_limits
    ADD CONSTRAINT rate_limits_pkey PRIMARY KEY (key);

--
-- Name: results results_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.results
    ADD CONSTRAINT results_pkey PRIMARY KEY (key);

--
-- Name: stats_minute stats_minute_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.stats_minute
    ADD CONSTRAINT stats_minute_pkey PRIMARY KEY (minute, queue, actor);

--
-- Name: tiers tiers_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.tiers
    ADD CONSTRAINT tiers_pkey PRIMARY KEY (name);

--
-- Name: workers workers_pkey; Type: CONSTRAINT; Schema: receiptq; Owner: -
--

ALTER TABLE ONLY receiptq.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (id);

--
-- Name: dead_letters_actor_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX dead_letters_actor_idx ON receiptq.dead_letters USING btree (actor, failed_at);

--
-- Name: dead_letters_failed_at_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX dead_letters_failed_at_idx ON receiptq.dead_letters USING btree (failed_at);

--
-- Name: dead_letters_queue_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX dead_letters_queue_idx ON receiptq.dead_letters USING btree (queue);

--
-- Name: jobs_claim_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX jobs_claim_idx ON receiptq.jobs USING btree (queue, COALESCE(tier, ''::text), priority, user_round, run_at, id) WHERE (state = 'queued'::text);

--
-- Name: jobs_class_round_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX jobs_class_round_idx ON receiptq.jobs USING btree (queue, COALESCE(tier, ''::text), user_round) WHERE ((state = 'queued'::text) AND (user_round > 0) AND (user_round < '9223372036854775807'::bigint));

--
-- Name: jobs_lease_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX jobs_lease_idx ON receiptq.jobs USING btree (lease_expires_at) WHERE (state = 'running'::text);

--
-- Name: jobs_unique_key_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE UNIQUE INDEX jobs_unique_key_idx ON receiptq.jobs USING btree (unique_key) WHERE (unique_key IS NOT NULL);

--
-- Name: jobs_user_round_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX jobs_user_round_idx ON receiptq.jobs USING btree (queue, COALESCE(tier, ''::text), user_id, user_round) WHERE ((state = 'queued'::text) AND (user_round > 0));

--
-- Name: periodic_ticks_tick_at_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX periodic_ticks_tick_at_idx ON receiptq.periodic_ticks USING btree (tick_at);

--
-- Name: rate_limits_expires_at_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX rate_limits_expires_at_idx ON receiptq.rate_limits USING btree (expires_at);

--
-- Name: results_expires_idx; Type: INDEX; Schema: receiptq; Owner: -
--

CREATE INDEX results_expires_idx ON receiptq.results USING btree (expires_at);

--
-- Name: jobs jobs_notify_insert; Type: TRIGGER; Schema: receiptq; Owner: -
--

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON receiptq.jobs REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION receiptq.notify_inserted_jobs();

--
-- Name: jobs jobs_notify_requeue; Type: TRIGGER; Schema: receiptq; Owner: -
--

CREATE TRIGGER jobs_notify_requeue AFTER UPDATE OF state ON receiptq.jobs FOR EACH ROW WHEN (((old.state = 'running'::text) AND (new.state = 'queued'::text) AND (new.run_at <= now()))) EXECUTE FUNCTION receiptq.notify_requeued_job();

--
-- Name: jobs jobs_user_round_delay; Type: TRIGGER; Schema: receiptq; Owner: -
--

CREATE TRIGGER jobs_user_round_delay BEFORE UPDATE OF run_at ON receiptq.jobs FOR EACH ROW WHEN (((new.user_round > 0) AND (new.run_at > now()))) EXECUTE FUNCTION receiptq.assign_user_round();

--
-- Name: jobs jobs_user_round_insert; Type: TRIGGER; Schema: receiptq; Owner: -
--

CREATE TRIGGER jobs_user_round_insert BEFORE INSERT ON receiptq.jobs FOR EACH ROW WHEN (((new.user_id IS NOT NULL) AND (new.user_round = 0))) EXECUTE FUNCTION receiptq.assign_user_round();
