-- Named queries on receiptq.rate_limits (receiptq.rate_limits.PostgresRateLimiterBackend).
-- A row whose expires_at has passed counts as absent everywhere; statement_timestamp()
-- is the clock, so a statement that waited for a lock still sees the current time.

-- name: rate_limit_add
-- Create a key with a value unless a live one exists (an expired one is replaced).
-- Returns a row when the key was added.
INSERT INTO receiptq.rate_limits AS r (key, value, expires_at)
VALUES (%(key)s, %(value)s::bigint, statement_timestamp() + %(ttl_ms)s * interval '1 millisecond')
ON CONFLICT (key) DO UPDATE
SET value = excluded.value, expires_at = excluded.expires_at
WHERE r.expires_at <= statement_timestamp()
RETURNING true AS added;

-- name: rate_limit_change
-- Add delta (negative to decrement) to a key, absent or expired counting as 0,
-- only if the result stays within [minimum, maximum] (NULL: unbounded); the key
-- then lives ttl_ms more. One atomic upsert. Returns a row when it changed.
INSERT INTO receiptq.rate_limits AS r (key, value, expires_at)
SELECT %(key)s, %(delta)s::bigint, statement_timestamp() + %(ttl_ms)s * interval '1 millisecond'
WHERE (%(delta)s::bigint >= %(minimum)s::bigint OR %(minimum)s::bigint IS NULL)
      AND (%(delta)s::bigint <= %(maximum)s::bigint OR %(maximum)s::bigint IS NULL)
   OR EXISTS (SELECT 1 FROM receiptq.rate_limits
              WHERE key = %(key)s AND expires_at > statement_timestamp())
ON CONFLICT (key) DO UPDATE
SET value = CASE WHEN r.expires_at > statement_timestamp() THEN r.value ELSE 0 END
            + excluded.value,
    expires_at = excluded.expires_at
WHERE (CASE WHEN r.expires_at > statement_timestamp() THEN r.value ELSE 0 END
       + excluded.value >= %(minimum)s::bigint OR %(minimum)s::bigint IS NULL)
  AND (CASE WHEN r.expires_at > statement_timestamp() THEN r.value ELSE 0 END
       + excluded.value <= %(maximum)s::bigint OR %(maximum)s::bigint IS NULL)
RETURNING true AS changed;

-- name: rate_limit_lock_scopes
-- Serialize sum-then-increment on the same limiters until the transaction ends
-- (one advisory lock per scope, taken in a fixed order so two callers never deadlock).
SELECT pg_advisory_xact_lock(726354, scope_hash)
FROM (SELECT DISTINCT hashtext(scope) AS scope_hash
      FROM unnest(%(scopes)s::text[]) AS scope
      ORDER BY scope_hash) AS scopes;

-- name: rate_limit_incr_within_sum
-- Add amount to a key if the key stays <= maximum and amount plus the live values
-- of `keys` stays <= maximum. Run under rate_limit_lock_scopes. Returns a row when
-- it was incremented.
WITH total AS (
    SELECT coalesce(sum(value), 0) AS value
    FROM receiptq.rate_limits
    WHERE key = ANY(%(keys)s::text[]) AND expires_at > statement_timestamp()
)
INSERT INTO receiptq.rate_limits AS r (key, value, expires_at)
SELECT %(key)s, %(amount)s::bigint, statement_timestamp() + %(ttl_ms)s * interval '1 millisecond'
FROM total
WHERE total.value + %(amount)s::bigint <= %(maximum)s::bigint
  AND (%(amount)s::bigint <= %(maximum)s::bigint
       OR EXISTS (SELECT 1 FROM receiptq.rate_limits
                  WHERE key = %(key)s AND expires_at > statement_timestamp()))
ON CONFLICT (key) DO UPDATE
SET value = CASE WHEN r.expires_at > statement_timestamp() THEN r.value ELSE 0 END
            + excluded.value,
    expires_at = excluded.expires_at
WHERE CASE WHEN r.expires_at > statement_timestamp() THEN r.value ELSE 0 END
      + excluded.value <= %(maximum)s::bigint
RETURNING true AS incremented;

-- name: rate_limit_notify
-- Record an event on a key for ttl_ms (wait() on it returns at once meanwhile) and
-- wake this key's waiters in every process (payload: md5 of the key, any length fits).
WITH event AS (
    INSERT INTO receiptq.rate_limits AS r (key, value, expires_at)
    VALUES (%(key)s, 1, statement_timestamp() + %(ttl_ms)s * interval '1 millisecond')
    ON CONFLICT (key) DO UPDATE
    SET value = CASE WHEN r.expires_at > statement_timestamp() THEN r.value + 1 ELSE 1 END,
        expires_at = excluded.expires_at
    RETURNING key
)
SELECT pg_notify('receiptq_rate_limits', md5(key)) FROM event;

-- name: rate_limit_live_keys
-- Which of the given keys exist and have not expired (events that happened).
SELECT key FROM receiptq.rate_limits
WHERE key = ANY(%(keys)s::text[]) AND expires_at > statement_timestamp();

-- name: rate_limit_listen
-- Subscribe this connection to rate-limit events (payload: md5 of the key).
LISTEN receiptq_rate_limits;

-- name: rate_limit_prune_expired
-- Delete up to batch_size expired keys (retention); returns the rows deleted.
DELETE FROM receiptq.rate_limits
WHERE key IN (SELECT key FROM receiptq.rate_limits
              WHERE expires_at <= statement_timestamp()
              ORDER BY expires_at
              LIMIT %(batch_size)s
              FOR UPDATE SKIP LOCKED);
