-- Named queries of `receiptq bench` (receiptq/tools/bench/) and of its worker-side
-- recorder (receiptq/tools/bench/worker.py). They only touch the bench-only schema
-- "bench", which exists in the throwaway benchmark database and nowhere else:
-- it is not part of the migrations.

-- name: bench_setup
-- The bench-only tables, created by `receiptq bench` in the benchmark database.
--   bench.boots    one row per worker process: when its Dramatiq worker booted
--                  (before_worker_boot, epoch seconds); the drain is timed from the first.
--   bench.results  one row per flush of a worker process's recorder (every ~50 ms):
--                  how many no-op jobs ran, when each started (epoch seconds) and its
--                  enqueue-to-start latency (ms) and its label (the tier workload's
--                  tier or priority; '' otherwise), as parallel arrays.
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.boots (
    pid       integer NOT NULL,
    booted_at float8  NOT NULL
);
CREATE TABLE IF NOT EXISTS bench.results (
    pid        integer  NOT NULL,
    done       integer  NOT NULL,
    last_at    float8   NOT NULL,
    started    float8[] NOT NULL,
    latency_ms float8[] NOT NULL,
    labels     text[]   NOT NULL
);

-- name: bench_record_boot
-- A worker process booted its Dramatiq worker.
INSERT INTO bench.boots (pid, booted_at) VALUES (%(pid)s, %(booted_at)s);

-- name: bench_record_results
-- One flush of a worker process's recorder.
INSERT INTO bench.results (pid, done, last_at, started, latency_ms, labels)
VALUES (%(pid)s, %(done)s, %(last_at)s, %(started)s::float8[], %(latency_ms)s::float8[],
        %(labels)s::text[]);

-- name: bench_first_boot
-- When the first worker process booted (NULL until one did).
SELECT min(booted_at) AS booted_at FROM bench.boots;

-- name: bench_progress
-- Jobs run so far, and when the last of them started.
SELECT coalesce(sum(done), 0)::bigint AS done, max(last_at) AS last_at FROM bench.results;

-- name: bench_window
-- The jobs that started up to a time (epoch seconds), with their latencies (ms).
SELECT count(*)::bigint AS done, coalesce(array_agg(r.latency_ms), '{}') AS latencies_ms
FROM bench.results, unnest(started, latency_ms) AS r(started, latency_ms)
WHERE r.started <= %(until)s;

-- name: bench_reset
-- Forget the figures recorded so far (after the warm-up).
DELETE FROM bench.results;

-- name: bench_label_figures
-- Per label (tier workload): jobs run; jobs started while every label still had
-- work waiting, i.e. up to the start of the last job of the label that ran out
-- first; and the nearest-rank p50/p95 wait (ms) from max(enqueue, since),
-- the workers' start, to the job's start.
WITH jobs AS (
    SELECT r.label, r.started,
           greatest(0, r.started - greatest(r.started - r.latency_ms / 1000, %(since)s))
               * 1000 AS wait_ms
    FROM bench.results, unnest(labels, started, latency_ms) AS r(label, started, latency_ms)
),
saturation AS (
    SELECT min(l.last_start) AS until
    FROM (SELECT max(started) AS last_start FROM jobs GROUP BY label) AS l
)
SELECT j.label,
       count(*)::bigint AS done,
       count(*) FILTER (WHERE j.started <= s.until)::bigint AS saturated,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY j.wait_ms) AS wait_p50_ms,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY j.wait_ms) AS wait_p95_ms
FROM jobs AS j CROSS JOIN saturation AS s
GROUP BY j.label
ORDER BY j.label;
