-- 0009_breaker_trials: one trial call at a time while a breaker is half-open.
--
-- A half-open breaker lets one call through, whatever the number of processes
-- and threads: the caller that takes the trial (trial_owner, a token per call,
-- until trial_expires_at) calls the service; every other caller is refused, and
-- its job is postponed, until the trial resolves. A success closes the breaker
-- (or, short of pybreaker's success_threshold, frees the trial for the next
-- caller), a failure opens it again; both clear the trial. A trial whose worker
-- died keeps the breaker half-open until trial_expires_at; then the next caller
-- takes the trial.
ALTER TABLE receiptq.breakers
    ADD COLUMN trial_owner      text,         -- the caller making the trial call
    ADD COLUMN trial_expires_at timestamptz;  -- when another caller may take the trial
