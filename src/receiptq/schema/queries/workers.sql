-- Named queries on receiptq.workers.

-- name: worker_register
-- Record a worker process that starts consuming (or refresh its row).
INSERT INTO receiptq.workers (id, host, pid, queues)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s)
ON CONFLICT (id) DO UPDATE SET queues = excluded.queues, last_heartbeat_at = now();

-- name: worker_heartbeat
-- A worker is alive: refresh its heartbeat, queues and in-flight count.
UPDATE receiptq.workers
SET last_heartbeat_at = now(), queues = %(queues)s, in_flight = %(in_flight)s
WHERE id = %(id)s
RETURNING id;

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
       extract(epoch FROM now() - last_heartbeat_at)::float8 AS heartbeat_age_s
FROM receiptq.workers
ORDER BY started_at;
