-- Named queries on receiptq.workers.

-- name: worker_register
-- Record a worker process that starts consuming (or refresh its row).
INSERT INTO receiptq.workers (id, host, pid, queues)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s)
ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, last_heartbeat_at = now();

-- name: worker_heartbeat
-- A worker is alive: refresh its heartbeat, queues, in-flight count, resource
-- figures and throttling reason.
UPDATE receiptq.workers
SET last_heartbeat_at = now(), queues = %(queues)s, in_flight = %(in_flight)s,
    cpu_percent = %(cpu_percent)s, memory_percent = %(memory_percent)s,
    db_connections_percent = %(db_connections_percent)s,
    throttled_reason = %(throttled_reason)s
WHERE id = %(id)s
RETURNING id;

-- name: worker_refresh
-- Between heartbeats: the queues a worker consumes and the deliveries its threads
-- started and not finished (migration 0007), each start given as seconds ago so
-- that it is stored on the database's clock.
UPDATE receiptq.workers
SET queues = %(queues)s,
    started_job_ids = %(job_ids)s::bigint[],
    started_attempts = %(attempts)s::integer[],
    started_ats = ARRAY(SELECT now() - make_interval(secs => a.age_s)
                        FROM unnest(%(ages_s)s::float8[]) WITH ORDINALITY AS a(age_s, n)
                        ORDER BY a.n)
WHERE id = %(id)s;

-- name: db_connections_percent
-- The share of the server's connection slots in use, in percent.
SELECT 100.0 * (SELECT count(*) FROM pg_stat_activity)
       / current_setting('max_connections')::float8 AS percent;

-- name: worker_remove
-- A worker stopped cleanly.
DELETE FROM receiptq.workers WHERE id = %(id)s;

-- name: worker_remove_stale
-- Forget workers whose heartbeat stopped longer ago than `stale_s` seconds.
DELETE FROM receiptq.workers
WHERE last_heartbeat_at < now() - make_interval(secs => %(stale_s)s)
RETURNING id;

-- name: worker_list
-- Workers with the age of their last heartbeat as of one clock reading (the
-- monitor's `now`) and the jobs each holds: running (a thread started them) and
-- reserved (claimed, not started).
WITH held AS (
    SELECT lease_owner, count(started_at)::integer AS running,
           count(*) FILTER (WHERE started_at IS NULL)::integer AS reserved
    FROM receiptq.claimed_jobs
    GROUP BY lease_owner
)
SELECT w.id, w.host, w.pid, w.queues, w.started_at, w.last_heartbeat_at,
       w.cpu_percent, w.memory_percent, w.db_connections_percent, w.throttled_reason,
       coalesce(h.running, 0) AS running, coalesce(h.reserved, 0) AS reserved,
       extract(epoch FROM %(now)s::timestamptz - w.last_heartbeat_at)::float8
           AS heartbeat_age_s
FROM receiptq.workers AS w
LEFT JOIN held AS h ON h.lease_owner = w.id
ORDER BY w.started_at;
