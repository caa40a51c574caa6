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
-- Workers with the age of their last heartbeat.
SELECT id, host, pid, queues, in_flight, started_at, last_heartbeat_at,
       cpu_percent, memory_percent, db_connections_percent, throttled_reason,
       extract(epoch FROM now() - last_heartbeat_at)::float8 AS heartbeat_age_s
FROM receiptq.workers
ORDER BY started_at;
