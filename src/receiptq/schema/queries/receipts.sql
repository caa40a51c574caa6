-- Named queries of the receipt application (schema "receiptq_app", created by its own
-- migration chain, schema/receipts_migrations): receiptq/services/receipts.py, the receipt
-- actors, `receiptq receipts|users|transactions` and the demo.

-- name: user_upsert
-- Add a user, or change the tier of the user with this email.
INSERT INTO receiptq_app.users (email, tier) VALUES (%(email)s, %(tier)s)
ON CONFLICT (email) DO UPDATE SET tier = EXCLUDED.tier
RETURNING id, email, tier;

-- name: user_get
-- One user by id.
SELECT id, email, tier FROM receiptq_app.users WHERE id = %(id)s;

-- name: user_get_by_email
-- One user by email.
SELECT id, email, tier FROM receiptq_app.users WHERE email = %(email)s;

-- name: user_list
-- Every user, oldest first.
SELECT id, email, tier FROM receiptq_app.users ORDER BY id;

-- name: receipt_insert
-- Store an uploaded receipt (its image in the row, or the path of its file).
INSERT INTO receiptq_app.receipts (user_id, image, image_path)
VALUES (%(user_id)s, %(image)s, %(image_path)s)
RETURNING id;

-- name: receipt_image
-- A receipt's image (bytes or path) and its status, for OCR.
SELECT id, user_id, status, image, image_path FROM receiptq_app.receipts WHERE id = %(id)s;

-- name: receipt_get
-- A receipt without its image, with its match and the matched transaction, if any
-- (whether it is stuck: receipt_list, which `receipts show` asks with its id).
SELECT r.id, r.user_id, u.email, r.status, r.reason, r.merchant, r.purchased_on, r.total,
       r.currency, r.raw_text, r.created_at, r.updated_at,
       m.score, m.transaction_id, t.posted_on AS transaction_posted_on,
       t.amount AS transaction_amount, t.currency AS transaction_currency,
       t.description AS transaction_description
FROM receiptq_app.receipts r
JOIN receiptq_app.users u ON u.id = r.user_id
LEFT JOIN receiptq_app.matches m ON m.receipt_id = r.id
LEFT JOIN receiptq_app.bank_transactions t ON t.id = m.transaction_id
WHERE r.id = %(id)s;

-- name: receipt_lock
-- Lock one receipt's row until the transaction ends (`receiptq receipts retry`).
SELECT id FROM receiptq_app.receipts WHERE id = %(id)s FOR UPDATE;

-- name: receipt_list
-- Receipts, newest first, with their match score: all, or one (id), some (ids), one
-- status, and/or only the stuck ones. A receipt is stuck when it is not finished (uploaded, read,
-- matched, unmatched) and no job of its pipeline is queued or running: nothing will
-- move it on. dead_letter_* is then the newest dead letter of its pipeline, or NULL when
-- none is left (purged, or never queued). Set-based: one pass over the pipeline's jobs
-- and dead letters, however many receipts are listed.
WITH steps AS (
    -- The pipeline's jobs (queued or running) and dead letters; a job sorts as the newest.
    SELECT NULL::bigint AS dead_letter_id, actor, message, NULL AS error,
           'infinity'::timestamptz AS failed_at
    FROM receiptq.jobs
    WHERE actor IN ('ocr_receipt', 'match_receipt', 'send_email')
    UNION ALL
    SELECT id, actor, message, concat_ws(': ', error_type, error), failed_at
    FROM receiptq.dead_letters
    WHERE actor IN ('ocr_receipt', 'match_receipt', 'send_email')
),
newest AS (
    -- Per receipt id (the first argument; send_email's is in its context, the third):
    -- a job if one is left, else the newest dead letter. A bigint key, so that it
    -- merge-joins with the receipts in id order; an argument that is no id gives NULL.
    SELECT DISTINCT ON (k.receipt_id) k.receipt_id, s.dead_letter_id, s.actor, s.error
    FROM steps AS s
    CROSS JOIN LATERAL (
        SELECT CASE s.actor WHEN 'send_email' THEN s.message -> 'args' -> 2 ->> 'receipt_id'
                            ELSE s.message -> 'args' ->> 0 END AS arg
    ) AS a
    CROSS JOIN LATERAL (
        SELECT CASE WHEN a.arg ~ '^[0-9]{1,18}$' THEN a.arg::bigint END AS receipt_id
    ) AS k
    ORDER BY k.receipt_id, s.failed_at DESC, s.dead_letter_id DESC
),
listed AS (
    SELECT r.id, r.user_id, u.email, r.status, r.reason, r.merchant, r.purchased_on,
           r.total, r.currency, m.score, m.transaction_id, r.updated_at,
           f.unfinished AND (p.receipt_id IS NULL OR p.dead_letter_id IS NOT NULL) AS stuck,
           p.dead_letter_id, p.actor AS dead_letter_actor, p.error AS dead_letter_error
    FROM receiptq_app.receipts r
    JOIN receiptq_app.users u ON u.id = r.user_id
    LEFT JOIN receiptq_app.matches m ON m.receipt_id = r.id
    CROSS JOIN LATERAL (
        SELECT r.status IN ('uploaded', 'read', 'matched', 'unmatched') AS unfinished
    ) AS f
    LEFT JOIN newest p ON f.unfinished AND p.receipt_id = r.id
    WHERE (%(id)s::bigint IS NULL OR r.id = %(id)s)
      AND (%(ids)s::bigint[] IS NULL OR r.id = ANY(%(ids)s))
      AND (%(status)s::text IS NULL OR r.status = %(status)s)
)
SELECT * FROM listed
WHERE stuck OR NOT %(stuck)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: receipt_status_counts
-- How many receipts are in each status: all, or those with these ids.
SELECT status, count(*)::bigint AS receipts
FROM receiptq_app.receipts
WHERE %(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s)
GROUP BY status;

-- name: receipt_set_read
-- Store what OCR read, once: only an uploaded receipt moves to read.
UPDATE receiptq_app.receipts
SET status = 'read', reason = NULL, merchant = %(merchant)s, purchased_on = %(purchased_on)s,
    total = %(total)s, currency = %(currency)s, raw_text = %(raw_text)s, updated_at = now()
WHERE id = %(id)s AND status = 'uploaded';

-- name: receipt_set_failed
-- Give up on a receipt that cannot be processed, with the reason (not once it is past OCR).
UPDATE receiptq_app.receipts
SET status = 'failed', reason = %(reason)s, updated_at = now()
WHERE id = %(id)s AND status IN ('uploaded', 'read');

-- name: receipt_set_outcome
-- Record the matching outcome (matched or unmatched, with the reason) of a read receipt.
UPDATE receiptq_app.receipts
SET status = %(status)s, reason = %(reason)s, updated_at = now()
WHERE id = %(id)s AND status = 'read';

-- name: receipt_set_notified
-- The user was emailed the outcome of a matched or unmatched receipt.
UPDATE receiptq_app.receipts
SET status = 'notified', updated_at = now()
WHERE id = %(id)s AND status IN ('matched', 'unmatched');

-- name: transaction_insert
-- Store one bank transaction of a user.
INSERT INTO receiptq_app.bank_transactions (user_id, posted_on, amount, currency, description)
VALUES (%(user_id)s, %(posted_on)s, %(amount)s, %(currency)s, %(description)s)
RETURNING id;

-- name: transaction_list
-- Bank transactions, newest posting first: all, or one user's.
SELECT t.id, t.user_id, u.email, t.posted_on, t.amount, t.currency, t.description,
       m.receipt_id
FROM receiptq_app.bank_transactions t
JOIN receiptq_app.users u ON u.id = t.user_id
LEFT JOIN receiptq_app.matches m ON m.transaction_id = t.id
WHERE %(user_id)s::bigint IS NULL OR t.user_id = %(user_id)s
ORDER BY t.posted_on DESC, t.id DESC
LIMIT %(limit)s;

-- name: transaction_candidates
-- A user's transactions that no other receipt has claimed, to match a receipt against.
SELECT t.id, t.posted_on, t.amount, t.currency, t.description
FROM receiptq_app.bank_transactions t
LEFT JOIN receiptq_app.matches m ON m.transaction_id = t.id
WHERE t.user_id = %(user_id)s AND (m.receipt_id IS NULL OR m.receipt_id = %(receipt_id)s)
ORDER BY t.id;

-- name: match_insert
-- Record the transaction a receipt matched (once per receipt).
INSERT INTO receiptq_app.matches (receipt_id, transaction_id, score)
VALUES (%(receipt_id)s, %(transaction_id)s, %(score)s)
ON CONFLICT (receipt_id) DO NOTHING;

-- name: email_sent
-- Whether an email with this dedupe key was sent already.
SELECT id, sent_at FROM receiptq_app.emails WHERE dedupe_key = %(dedupe_key)s;

-- name: email_record
-- Note that an email was sent (a second record of the same key is ignored).
INSERT INTO receiptq_app.emails (user_id, template, dedupe_key, recipient, subject)
VALUES (%(user_id)s, %(template)s, %(dedupe_key)s, %(recipient)s, %(subject)s)
ON CONFLICT (dedupe_key) DO NOTHING;

-- name: email_count
-- How many emails were sent.
SELECT count(*)::bigint AS emails FROM receiptq_app.emails;

-- name: app_delete_emails_of_domain
-- The demo's reset (1/4): emails of the users whose address is in a domain.
DELETE FROM receiptq_app.emails
WHERE user_id IN (SELECT id FROM receiptq_app.users WHERE email LIKE '%%@' || %(domain)s);

-- name: app_delete_receipts_of_domain
-- The demo's reset (2/4): their receipts (and so their matches).
DELETE FROM receiptq_app.receipts
WHERE user_id IN (SELECT id FROM receiptq_app.users WHERE email LIKE '%%@' || %(domain)s);

-- name: app_delete_transactions_of_domain
-- The demo's reset (3/4): their bank transactions.
DELETE FROM receiptq_app.bank_transactions
WHERE user_id IN (SELECT id FROM receiptq_app.users WHERE email LIKE '%%@' || %(domain)s);

-- name: app_delete_users_of_domain
-- The demo's reset (4/4): the users themselves.
DELETE FROM receiptq_app.users WHERE email LIKE '%%@' || %(domain)s;
