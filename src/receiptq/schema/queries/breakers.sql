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

-- name: breaker_move
-- The shared breaker's transitions: a state and what entering it resets, in one
-- statement (no other process sees half of it): the successes counted while
-- half-open, a trial under way, the failures when it closes; an opening notes
-- when it began (database clock) and how long it lasts (the opener's reset timeout).
UPDATE receiptq.breakers
SET state = %(state)s::text,
    fail_counter = CASE WHEN %(state)s::text = 'closed' THEN 0 ELSE fail_counter END,
    success_counter = 0,
    opened_at = CASE WHEN %(state)s::text = 'open' THEN now() ELSE opened_at END,
    reset_timeout_s = CASE WHEN %(state)s::text = 'open' THEN %(reset_timeout_s)s
                           ELSE reset_timeout_s END,
    trial_owner = NULL,
    trial_expires_at = NULL,
    updated_at = now()
WHERE name = %(name)s;

-- name: breaker_half_open_when_due
-- Half-open an open breaker once its opening is over, in one statement, so that of
-- the processes finding it due at once one makes the transition (a process that
-- is late finds it half-open, or open again after a failed trial, never re-opens
-- it to a second trial); returns the state after.
WITH due AS (
    UPDATE receiptq.breakers
    SET state = 'half-open', success_counter = 0, trial_owner = NULL, trial_expires_at = NULL,
        updated_at = now()
    WHERE name = %(name)s AND state = 'open'
      AND (opened_at IS NULL OR opened_at + make_interval(secs => reset_timeout_s) <= now())
    RETURNING state
)
SELECT state FROM due
UNION ALL
SELECT state FROM receiptq.breakers WHERE name = %(name)s AND NOT EXISTS (SELECT 1 FROM due);

-- name: breaker_claim_trial
-- Take the trial call of a half-open breaker unless another caller holds it (until
-- its trial_expires_at: a trial whose worker died frees it then); returns a row
-- when this caller may call the service.
UPDATE receiptq.breakers
SET trial_owner = %(owner)s, trial_expires_at = now() + make_interval(secs => %(trial_s)s),
    updated_at = now()
WHERE name = %(name)s AND state = 'half-open'
  AND (trial_expires_at IS NULL OR trial_expires_at <= now())
RETURNING name;

-- name: breaker_end_trial
-- Free this caller's trial if the breaker is still half-open after it (a success
-- short of pybreaker's success_threshold), so that the next caller makes the next one.
UPDATE receiptq.breakers SET trial_owner = NULL, trial_expires_at = NULL, updated_at = now()
WHERE name = %(name)s AND trial_owner = %(owner)s;

-- name: breaker_add_failure
-- Count one more consecutive failure, unless the breaker is open: a call that
-- began before another caller opened it does not count a second time.
UPDATE receiptq.breakers SET fail_counter = fail_counter + 1, updated_at = now()
WHERE name = %(name)s AND state <> 'open';

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

-- name: breaker_refusal
-- Of the named breakers, those refusing calls now: open with the opening still on,
-- or half-open with a trial call under way. Returns milliseconds until the latest
-- open one may half-open (0 when only trials are under way) and the longest reset
-- timeout among them (ms); no row when every named breaker takes calls.
SELECT coalesce(ceil(extract(epoch FROM max(opened_at + make_interval(secs => reset_timeout_s))
                                        FILTER (WHERE state = 'open') - now()) * 1000), 0
       )::bigint AS wait_ms,
       ceil(max(reset_timeout_s) * 1000)::bigint AS reset_ms
FROM receiptq.breakers
WHERE name = ANY(%(names)s::text[])
  AND (state = 'open' AND opened_at + make_interval(secs => reset_timeout_s) > now()
       OR state = 'half-open' AND trial_expires_at > now())
HAVING count(*) > 0;

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
    trial_owner = NULL, trial_expires_at = NULL, updated_at = now()
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
    trial_owner = NULL, trial_expires_at = NULL, updated_at = now()
WHERE name = %(name)s
RETURNING name;
