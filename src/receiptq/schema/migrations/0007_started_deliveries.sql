-- 0007_started_deliveries: tell running jobs from reserved ones.
--
-- A worker process claims jobs in batches (its prefetch) and hands them to its
-- threads one by one, so a claimed job (state 'running') is either running (a
-- worker thread started it) or reserved (claimed by the process, waiting for a
-- free thread). Only the process knows when a thread starts a delivery; writing
-- that into each job row would cost a write per job on the hot path. Instead the
-- worker's own row lists the deliveries its threads have started and not
-- finished, refreshed by its heartbeat thread when they changed (at most about
-- once a second), so monitoring lags a start or an end by about a second.

-- The deliveries the worker's threads started, as three arrays of one length:
-- the job ids, the attempt of each, and when each started (the database's clock).
ALTER TABLE receiptq.workers
    ADD COLUMN started_job_ids  bigint[]      NOT NULL DEFAULT '{}',
    ADD COLUMN started_attempts integer[]     NOT NULL DEFAULT '{}',
    ADD COLUMN started_ats      timestamptz[] NOT NULL DEFAULT '{}';

-- claimed_jobs: every claimed job with the worker holding it, when it was claimed
-- and, once a thread of that worker started it, when it started (NULL: reserved).
-- A started delivery counts only while the job is still claimed by the same
-- worker for the same attempt, so a worker's list that lags an ack, a retry or a
-- rescue never makes a job count as running.
CREATE VIEW receiptq.claimed_jobs AS
SELECT j.id, j.queue, j.actor, j.tier, j.attempt, j.lease_owner,
       j.started_at AS claimed_at, s.started_at
FROM receiptq.jobs AS j
LEFT JOIN (
    SELECT w.id AS worker_id, d.job_id, d.attempt, d.started_at
    FROM receiptq.workers AS w,
         unnest(w.started_job_ids, w.started_attempts, w.started_ats)
             AS d(job_id, attempt, started_at)
) AS s ON s.job_id = j.id AND s.attempt = j.attempt AND s.worker_id = j.lease_owner
WHERE j.state = 'running';
