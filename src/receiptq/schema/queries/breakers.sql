-- Named queries on receiptq.breakers (shared circuit-breaker state).

-- name: breaker_register
-- Create a breaker's row closed, or refresh its settings; returns its state. An
-- open breaker keeps its reset_timeout_s: it times the current opening.
INSERT INTO receiptq.breakers (name, fail_max, reset_timeout_s)
VALUES (%(name)s, %(fail_max)s, %(reset_timeout_s)s)
ON CONFLICT (name) DO UPDATE
SET fail_max = excluded.fail_max,
    reset_timeout_s = CASE WHEN breakers.state = 'open' THEN breakers.reset_timeout_s
                           ELSE excluded.reset_timeout_s END
RETURNING state;

-- name: breaker_get
-- One breaker's state and counters, and when it may half-open if open.
SELECT name, state, fail_counter, success_counter, opened_at,
       opened_at + make_interval(secs => reset_timeout_s) AS half_open_at
FROM receiptq.breakers
WHERE name = %(name)s;

-- name: breaker_set_state
-- Move a breaker to a state (pybreaker decides the transition).
UPDATE receiptq.breakers SET state = %(state)s, updated_at = now() WHERE name = %(name)s;

-- name: breaker_add_failure
-- Count one more consecutive failure.
UPDATE receiptq.breakers SET fail_counter = fail_counter + 1, updated_at = now()
WHERE name = %(name)s;

-- name: breaker_reset_failures
-- A success (or a close) resets the consecutive failures; no write when already 0.
UPDATE receiptq.breakers SET fail_counter = 0, updated_at = now()
WHERE name = %(name)s AND fail_counter <> 0;

-- name: breaker_add_success
-- Count one more consecutive success while half-open.
UPDATE receiptq.breakers SET success_counter = success_counter + 1, updated_at = now()
WHERE name = %(name)s;

-- name: breaker_reset_successes
-- Forget the successes counted while half-open; no write when already 0.
UPDATE receiptq.breakers SET success_counter = 0, updated_at = now()
WHERE name = %(name)s AND success_counter <> 0;

-- name: breaker_mark_opened
-- Note when the breaker opened, on the database clock (one clock for every host),
-- and how long this opening lasts (the opening process's reset timeout).
UPDATE receiptq.breakers
SET opened_at = now(), reset_timeout_s = %(reset_timeout_s)s, updated_at = now()
WHERE name = %(name)s;

-- name: breaker_open_wait
-- Milliseconds until the latest of the named open breakers may half-open
-- (NULL when none of them is open with its reset timeout still running).
SELECT ceil(extract(epoch FROM max(opened_at + make_interval(secs => reset_timeout_s)) - now())
            * 1000)::bigint AS wait_ms
FROM receiptq.breakers
WHERE name = ANY(%(names)s::text[]) AND state = 'open'
  AND opened_at + make_interval(secs => reset_timeout_s) > now();

-- name: breaker_list
-- Every breaker for `receiptq status`, with when an open one may half-open.
SELECT name, state, fail_counter, fail_max, reset_timeout_s, opened_at,
       CASE WHEN state = 'open' THEN opened_at + make_interval(secs => reset_timeout_s) END
           AS closes_at
FROM receiptq.breakers
ORDER BY name;

-- name: breaker_reset
-- Close breakers at once (an operator's reset: counters zeroed, opened_at cleared),
-- by names or all; returns each one closed with the state it was in.
UPDATE receiptq.breakers AS b
SET state = 'closed', fail_counter = 0, success_counter = 0, opened_at = NULL,
    updated_at = now()
FROM (SELECT name, state FROM receiptq.breakers
      WHERE %(all)s OR name = ANY(%(names)s::text[])
      FOR UPDATE) AS previous
WHERE b.name = previous.name
RETURNING b.name, previous.state AS previous_state;

-- name: breaker_force_open
-- Open a breaker now for for_s seconds (an operator's maintenance window), on the
-- database clock: every process refuses its calls until then, then half-opens it.
UPDATE receiptq.breakers
SET state = 'open', opened_at = now(), reset_timeout_s = %(for_s)s, success_counter = 0,
    updated_at = now()
WHERE name = %(name)s
RETURNING name;
