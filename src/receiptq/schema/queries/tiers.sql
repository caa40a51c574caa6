-- Named queries for resolving a user's tier (receiptq.middleware.tier_resolver).

-- name: user_tier
-- The tier of one user of the receipt app (NULL when the user is unknown).
SELECT tier FROM receiptq_app.users WHERE id::text = %(user_id)s;
