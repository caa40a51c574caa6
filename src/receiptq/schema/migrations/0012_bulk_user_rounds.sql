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
