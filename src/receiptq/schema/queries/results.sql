-- Named queries on receiptq.results (the Dramatiq results backend).

-- name: result_store
-- Store (or replace) a result until its TTL runs out, and wake blocking readers.
WITH stored AS (
    INSERT INTO receiptq.results (key, value, stored_at, expires_at)
    VALUES (%(key)s, %(value)s, now(), now() + make_interval(secs => %(ttl_s)s))
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, stored_at = excluded.stored_at,
                                    expires_at = excluded.expires_at
    RETURNING key
)
SELECT pg_notify('receiptq_results', key) FROM stored;

-- name: result_get
-- A result that has not expired yet.
SELECT value FROM receiptq.results WHERE key = %(key)s AND expires_at > now();

-- name: result_prune
-- Delete up to `limit` expired results; returns how many went.
WITH expired AS (
    SELECT key FROM receiptq.results WHERE expires_at <= now()
    ORDER BY expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM receiptq.results AS r USING expired WHERE r.key = expired.key;

-- name: result_listen
-- Subscribe a blocking reader to result writes (payload: the message key).
LISTEN receiptq_results;
