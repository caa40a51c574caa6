-- Named queries for resolving a user's tier (receiptq.middleware.tier_resolver).

-- name: user_tier
-- The tier of one user of the receipt app (NULL when the user is unknown).
SELECT tier FROM receiptq_app.users WHERE id::text = %(user_id)s;

-- name: tiers_replace
-- Replace the tier policy receiptq.enqueue() reads with a worker's (RECEIPTQ_TIERS):
-- tiers it does not name go, rows that would not change are not written.
WITH gone AS (
    DELETE FROM receiptq.tiers AS t WHERE t.name <> ALL (%(names)s::text[])
)
INSERT INTO receiptq.tiers AS t (name, priority_offset, weight)
SELECT p.name, p.priority_offset, p.weight
FROM unnest(%(names)s::text[], %(offsets)s::integer[], %(weights)s::float8[])
    AS p(name, priority_offset, weight)
ON CONFLICT (name) DO UPDATE
SET priority_offset = excluded.priority_offset, weight = excluded.weight, updated_at = now()
WHERE (t.priority_offset, t.weight) IS DISTINCT FROM (excluded.priority_offset, excluded.weight);
