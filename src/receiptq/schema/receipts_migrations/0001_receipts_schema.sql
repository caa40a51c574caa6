-- The receipt application's own tables, in schema "receiptq_app": the receipt app's
-- migration chain (`receiptq receipts migrate`, the demo), apart from the queue's schema
-- "receiptq", so that a database that only runs jobs never gets them.
--
--   receiptq_app.users              who submits receipts; tier drives the jobs' priority.
--   receiptq_app.receipts           one uploaded receipt image and where it is in the pipeline:
--                                     uploaded   stored, OCR not done yet
--                                     read       OCR done: merchant, date, total, currency parsed
--                                     matched    a bank transaction was found (matches)
--                                     unmatched  no transaction matched; reason says why
--                                     notified   the user was emailed the outcome
--                                     failed     the receipt cannot be processed; reason says why
--                                   The image is kept in the row (image) or in a configured
--                                   directory (image_path); exactly one of the two is set.
--   receiptq_app.bank_transactions  the users' card transactions, matched against receipts.
--   receiptq_app.matches            the transaction a receipt was matched to, with its score;
--                                   a transaction belongs to at most one receipt.
--   receiptq_app.emails             emails sent, one per dedupe key, so a redelivered
--                                   send_email job does not mail twice.
--
-- Upgrading from receiptq 0.1, whose queue migration 0005_receipts_app created these five
-- tables in schema "app": when receiptq's own record (receiptq.migrations) says that
-- migration ran, the tables it created move here with their rows, indexes, constraints
-- and identity sequences (ALTER TABLE ... SET SCHEMA; nothing is copied). No other object
-- of schema "app" is touched. "app" itself is dropped only when that leaves it empty and
-- it was created by the transaction that recorded 0005 (its catalog row and that record
-- row have the same xmin); otherwise it stays as it is.
DO $$
DECLARE
    moved text;
BEGIN
    IF to_regclass('receiptq.migrations') IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM receiptq.migrations WHERE name = '0005_receipts_app') THEN
        RETURN;
    END IF;
    FOREACH moved IN ARRAY ARRAY['users', 'receipts', 'bank_transactions', 'matches', 'emails']
    LOOP
        IF to_regclass(format('app.%I', moved)) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE app.%I SET SCHEMA receiptq_app', moved);
        END IF;
    END LOOP;
    IF EXISTS (
        SELECT FROM pg_namespace AS n, receiptq.migrations AS m
        WHERE n.nspname = 'app' AND m.name = '0005_receipts_app' AND n.xmin = m.xmin
    ) THEN
        BEGIN
            DROP SCHEMA app;  -- RESTRICT: refused while any object is left in it
        EXCEPTION WHEN dependent_objects_still_exist THEN
            NULL;  -- other objects live there: keep the schema
        END;
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS receiptq_app.users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text        NOT NULL UNIQUE CHECK (email LIKE '%_@_%'),
    tier       text        NOT NULL DEFAULT 'free',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS receiptq_app.receipts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES receiptq_app.users (id),
    image      bytea,
    image_path text,
    status     text        NOT NULL DEFAULT 'uploaded'
        CHECK (status IN ('uploaded', 'read', 'matched', 'unmatched', 'notified', 'failed')),
    reason     text,
    merchant   text,
    purchased_on date,
    total      numeric(12, 2),
    currency   text,
    raw_text   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((image IS NULL) <> (image_path IS NULL))
);
CREATE INDEX IF NOT EXISTS receipts_user_idx ON receiptq_app.receipts (user_id);
CREATE INDEX IF NOT EXISTS receipts_status_idx ON receiptq_app.receipts (status);

CREATE TABLE IF NOT EXISTS receiptq_app.bank_transactions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint         NOT NULL REFERENCES receiptq_app.users (id),
    posted_on   date           NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    currency    text           NOT NULL,
    description text           NOT NULL
);
CREATE INDEX IF NOT EXISTS bank_transactions_user_idx
    ON receiptq_app.bank_transactions (user_id, posted_on);

CREATE TABLE IF NOT EXISTS receiptq_app.matches (
    receipt_id     bigint PRIMARY KEY REFERENCES receiptq_app.receipts (id) ON DELETE CASCADE,
    transaction_id bigint NOT NULL UNIQUE REFERENCES receiptq_app.bank_transactions (id),
    score          double precision NOT NULL,
    matched_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS receiptq_app.emails (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES receiptq_app.users (id),
    template   text        NOT NULL,
    dedupe_key text        NOT NULL UNIQUE,
    recipient  text        NOT NULL,
    subject    text        NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now()
);
