-- 0012_bulk_user_rounds: a bulk send assigns its jobs' user rounds itself.
--
-- The row trigger of 0006 computes a job's round with two index probes per row,
-- which made a bulk send of jobs with a user_id four times slower than one
-- without. job_enqueue_many now computes the rounds of a whole batch at once
-- (two probes per distinct user, not per job) and stores them; the trigger runs
-- only for a job stored with no round (user_round = 0): single sends,
-- receiptq.enqueue() from SQL, and a bulk send's jobs that are not due yet
-- (which the trigger keeps at round 0, as before).
DROP TRIGGER jobs_user_round_insert ON receiptq.jobs;
CREATE TRIGGER jobs_user_round_insert
    BEFORE INSERT ON receiptq.jobs
    FOR EACH ROW WHEN (NEW.user_id IS NOT NULL AND NEW.user_round = 0)
    EXECUTE FUNCTION receiptq.assign_user_round();

-- A user's last round must be read from jobs_user_round_idx. Without statistics
-- (a table analyzed while it was empty, or autovacuum off) the planner costed
-- jobs_class_round_idx the same and took it, reading every queued round of the
-- class to find one user's: a bulk send to 1,000 users fell to 6,800 jobs/s,
-- and each single send's trigger did the same. The class index now carries a
-- bound in its predicate that only the class probe states, so that a user's
-- probe can never be planned on it; and both probes read one index entry
-- (ORDER BY ... LIMIT 1), where max() read every round of the user.
DROP INDEX receiptq.jobs_class_round_idx;
CREATE INDEX jobs_class_round_idx
    ON receiptq.jobs (queue, (coalesce(tier, '')), user_round)
    WHERE state = 'queued' AND user_round > 0 AND user_round < 9223372036854775807;

CREATE OR REPLACE FUNCTION receiptq.assign_user_round() RETURNS trigger
LANGUAGE plpgsql AS $$
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
