-- Named queries of the chaos run (receiptq/tools/chaos/run.py) and of its worker-side
-- actor (receiptq/tools/chaos/worker.py). They only touch the chaos-only schema "chaos", which
-- exists in the throwaway database of the chaos run's own server and nowhere else.

-- name: chaos_setup
-- The chaos-only table: one row per finished run of a job (a job run twice, e.g.
-- after its worker was killed between its record and its ack, has two rows), with
-- when it started and finished (epoch seconds) in which process.
CREATE SCHEMA IF NOT EXISTS chaos;
CREATE TABLE IF NOT EXISTS chaos.runs (
    job_no      integer NOT NULL,
    pid         integer NOT NULL,
    started_at  float8  NOT NULL,
    finished_at float8  NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_job_no_idx ON chaos.runs (job_no, started_at);

-- name: chaos_record_run
-- A job ran to its end (recorded before its ack).
INSERT INTO chaos.runs (job_no, pid, started_at, finished_at)
VALUES (%(job_no)s, %(pid)s, %(started_at)s, %(finished_at)s);

-- name: chaos_progress
-- Jobs that ran at least once, jobs left in the queue, dead letters.
SELECT (SELECT count(DISTINCT job_no) FROM chaos.runs)::integer AS done,
       (SELECT count(*) FROM receiptq.jobs)::integer AS left_in_queue,
       (SELECT count(*) FROM receiptq.dead_letters)::integer AS dead_lettered;

-- name: chaos_held_by
-- The jobs that worker processes (by pid) hold now: claimed under their lease.
-- lease_owner is "host:pid:nonce" (receiptq.pg.heartbeat.new_worker_id).
SELECT (message -> 'args' ->> 0)::integer AS job_no
FROM receiptq.jobs
WHERE state = 'running'
  AND split_part(lease_owner, ':', 2)::integer = ANY(%(pids)s::integer[]);

-- name: chaos_first_runs_after
-- For each of the given jobs, the start of its first run that began after a moment.
SELECT job_no, min(started_at) AS started_at
FROM chaos.runs
WHERE job_no = ANY(%(job_nos)s::integer[]) AND started_at > %(after)s
GROUP BY job_no;

-- name: chaos_first_start_after
-- The start of the first run (of any job) that began after a moment (NULL: none yet).
SELECT min(started_at) AS started_at FROM chaos.runs WHERE started_at > %(after)s;

-- name: chaos_most_held
-- The most jobs any live worker process says it holds (its heartbeat's in_flight).
SELECT coalesce(max(in_flight), 0)::integer AS held FROM receiptq.workers;
