-- Named queries of the receipt application (schema "app", see 0005_receipts_app.sql):
-- receiptq/services/receipts.py, the receipt actors, `receiptq receipts|users` and the demo.

-- name: user_upsert
-- Add a user, or change the tier of the user with this email.
INSERT INTO app.users (email, tier) VALUES (%(email)s, %(tier)s)
ON CONFLICT (email) DO UPDATE SET tier = EXCLUDED.tier
RETURNING id, email, tier;

-- name: user_get
-- One user by id.
SELECT id, email, tier FROM app.users WHERE id = %(id)s;

-- name: user_get_by_email
-- One user by email.
SELECT id, email, tier FROM app.users WHERE email = %(email)s;

-- name: user_list
-- Every user, oldest first.
SELECT id, email, tier FROM app.users ORDER BY id;

-- name: receipt_insert
-- Store an uploaded receipt (its image in the row, or the path of its file).
INSERT INTO app.receipts (user_id, image, image_path)
VALUES (%(user_id)s, %(image)s, %(image_path)s)
RETURNING id;

-- name: receipt_image
-- A receipt's image (bytes or path) and its status, for OCR.
SELECT id, user_id, status, image, image_path FROM app.receipts WHERE id = %(id)s;

-- name: receipt_get
-- A receipt without its image, with its match and the matched transaction, if any,
-- and the newest dead letter of its OCR or matching job (a receipt stuck there).
SELECT r.id, r.user_id, u.email, r.status, r.reason, r.merchant, r.purchased_on, r.total,
       r.currency, r.raw_text, r.created_at, r.updated_at,
       m.score, m.transaction_id, t.posted_on AS transaction_posted_on,
       t.amount AS transaction_amount, t.currency AS transaction_currency,
       t.description AS transaction_description,
       dl.id AS dead_letter_id, dl.actor AS dead_letter_actor,
       dl.error_type AS dead_letter_error_type, dl.error AS dead_letter_error
FROM app.receipts r
JOIN app.users u ON u.id = r.user_id
LEFT JOIN app.matches m ON m.receipt_id = r.id
LEFT JOIN app.bank_transactions t ON t.id = m.transaction_id
LEFT JOIN LATERAL (
    SELECT d.id, d.actor, d.error_type, d.error
    FROM receiptq.dead_letters AS d
    WHERE d.actor IN ('ocr_receipt', 'match_receipt')
      AND d.message -> 'args' ->> 0 = r.id::text
    ORDER BY d.failed_at DESC
    LIMIT 1
) AS dl ON true
WHERE r.id = %(id)s;

-- name: receipt_list
-- Receipts, newest first, optionally in one status, with their match score.
SELECT r.id, r.user_id, u.email, r.status, r.reason, r.merchant, r.purchased_on, r.total,
       r.currency, m.score, m.transaction_id, r.updated_at
FROM app.receipts r
JOIN app.users u ON u.id = r.user_id
LEFT JOIN app.matches m ON m.receipt_id = r.id
WHERE (%(status)s::text IS NULL OR r.status = %(status)s)
ORDER BY r.id DESC
LIMIT %(limit)s;

-- name: receipt_status_counts
-- How many receipts are in each status.
SELECT status, count(*)::bigint AS receipts FROM app.receipts GROUP BY status;

-- name: receipt_set_read
-- Store what OCR read, once: only an uploaded receipt moves to read.
UPDATE app.receipts
SET status = 'read', reason = NULL, merchant = %(merchant)s, purchased_on = %(purchased_on)s,
    total = %(total)s, currency = %(currency)s, raw_text = %(raw_text)s, updated_at = now()
WHERE id = %(id)s AND status = 'uploaded';

-- name: receipt_set_failed
-- Give up on a receipt that cannot be processed, with the reason (not once it is past OCR).
UPDATE app.receipts
SET status = 'failed', reason = %(reason)s, updated_at = now()
WHERE id = %(id)s AND status IN ('uploaded', 'read');

-- name: receipt_set_outcome
-- Record the matching outcome (matched or unmatched, with the reason) of a read receipt.
UPDATE app.receipts
SET status = %(status)s, reason = %(reason)s, updated_at = now()
WHERE id = %(id)s AND status = 'read';

-- name: receipt_set_notified
-- The user was emailed the outcome of a matched or unmatched receipt.
UPDATE app.receipts
SET status = 'notified', updated_at = now()
WHERE id = %(id)s AND status IN ('matched', 'unmatched');

-- name: transaction_insert
-- Store one bank transaction of a user.
INSERT INTO app.bank_transactions (user_id, posted_on, amount, currency, description)
VALUES (%(user_id)s, %(posted_on)s, %(amount)s, %(currency)s, %(description)s)
RETURNING id;

-- name: transaction_candidates
-- A user's transactions that no other receipt has claimed, to match a receipt against.
SELECT t.id, t.posted_on, t.amount, t.currency, t.description
FROM app.bank_transactions t
LEFT JOIN app.matches m ON m.transaction_id = t.id
WHERE t.user_id = %(user_id)s AND (m.receipt_id IS NULL OR m.receipt_id = %(receipt_id)s)
ORDER BY t.id;

-- name: match_insert
-- Record the transaction a receipt matched (once per receipt).
INSERT INTO app.matches (receipt_id, transaction_id, score)
VALUES (%(receipt_id)s, %(transaction_id)s, %(score)s)
ON CONFLICT (receipt_id) DO NOTHING;

-- name: email_sent
-- Whether an email with this dedupe key was sent already.
SELECT id, sent_at FROM app.emails WHERE dedupe_key = %(dedupe_key)s;

-- name: email_record
-- Note that an email was sent (a second record of the same key is ignored).
INSERT INTO app.emails (user_id, template, dedupe_key, recipient, subject)
VALUES (%(user_id)s, %(template)s, %(dedupe_key)s, %(recipient)s, %(subject)s)
ON CONFLICT (dedupe_key) DO NOTHING;

-- name: email_count
-- How many emails were sent.
SELECT count(*)::bigint AS emails FROM app.emails;

-- name: app_delete_emails_of_domain
-- The demo's reset (1/4): emails of the users whose address is in a domain.
DELETE FROM app.emails
WHERE user_id IN (SELECT id FROM app.users WHERE email LIKE '%%@' || %(domain)s);

-- name: app_delete_receipts_of_domain
-- The demo's reset (2/4): their receipts (and so their matches).
DELETE FROM app.receipts
WHERE user_id IN (SELECT id FROM app.users WHERE email LIKE '%%@' || %(domain)s);

-- name: app_delete_transactions_of_domain
-- The demo's reset (3/4): their bank transactions.
DELETE FROM app.bank_transactions
WHERE user_id IN (SELECT id FROM app.users WHERE email LIKE '%%@' || %(domain)s);

-- name: app_delete_users_of_domain
-- The demo's reset (4/4): the users themselves.
DELETE FROM app.users WHERE email LIKE '%%@' || %(domain)s;
