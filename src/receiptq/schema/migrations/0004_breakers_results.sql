-- 0004_breakers_results: shared circuit-breaker state and the results backend.

-- breakers: one row per circuit breaker (a service such as "ocr" or "email"),
-- shared by every worker process on every host. pybreaker's storage reads and
-- writes it one statement at a time.
--
-- States (pybreaker's):
--   closed     calls go through; fail_counter counts consecutive failures.
--   open       calls are refused until opened_at + reset_timeout_s; jobs that
--              need the service are postponed until then, without using an attempt.
--   half-open  the reset timeout passed: the next call is a trial; success
--              closes the breaker, failure opens it again.
CREATE TABLE receiptq.breakers (
    name            text        PRIMARY KEY,
    state           text        NOT NULL DEFAULT 'closed'
                                CHECK (state IN ('closed', 'open', 'half-open')),
    fail_counter    integer     NOT NULL DEFAULT 0,  -- consecutive failures
    success_counter integer     NOT NULL DEFAULT 0,  -- consecutive successes while half-open
    opened_at       timestamptz,                     -- last time it opened (database clock)
    fail_max        integer     NOT NULL,            -- failures that open it (last process's setting)
    reset_timeout_s float8      NOT NULL,            -- how long it stays open (last process's setting)
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- results: Dramatiq actor results (and stored exceptions) by message key, until
-- expires_at (the result TTL). Expired rows are invisible to readers and pruned
-- in batches by the backend.
CREATE TABLE receiptq.results (
    key        text        PRIMARY KEY,   -- ResultBackend.build_message_key(message)
    value      bytea       NOT NULL,      -- the wrapped result, as the backend's encoder wrote it
    stored_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- Serves pruning of expired results.
CREATE INDEX results_expires_idx ON receiptq.results (expires_at);
