-- The receipt application's own tables, in schema "app" (separate from the queue's).
--
--   app.users              who submits receipts; tier drives the jobs' priority.
--   app.receipts           one uploaded receipt image and where it is in the pipeline:
--                            uploaded   stored, OCR not done yet
--                            read       OCR done: merchant, date, total, currency parsed
--                            matched    a bank transaction was found (app.matches)
--                            unmatched  no transaction matched; reason says why
--                            notified   the user was emailed the outcome
--                            failed     the receipt cannot be processed; reason says why
--                          The image is kept in the row (image) or in a configured
--                          directory (image_path); exactly one of the two is set.
--   app.bank_transactions  the users' card transactions, matched against receipts.
--   app.matches            the transaction a receipt was matched to, with its score;
--                          a transaction belongs to at most one receipt.
--   app.emails             emails sent, one per dedupe key, so a redelivered
--                          send_email job does not mail twice.
CREATE SCHEMA IF NOT EXISTS app;

CREATE TABLE app.users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text        NOT NULL UNIQUE CHECK (email LIKE '%_@_%'),
    tier       text        NOT NULL DEFAULT 'free',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.receipts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES app.users (id),
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
CREATE INDEX receipts_user_idx ON app.receipts (user_id);
CREATE INDEX receipts_status_idx ON app.receipts (status);

CREATE TABLE app.bank_transactions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint         NOT NULL REFERENCES app.users (id),
    posted_on   date           NOT NULL,
    amount      numeric(12, 2) NOT NULL,
    currency    text           NOT NULL,
    description text           NOT NULL
);
CREATE INDEX bank_transactions_user_idx ON app.bank_transactions (user_id, posted_on);

CREATE TABLE app.matches (
    receipt_id     bigint PRIMARY KEY REFERENCES app.receipts (id) ON DELETE CASCADE,
    transaction_id bigint NOT NULL UNIQUE REFERENCES app.bank_transactions (id),
    score          double precision NOT NULL,
    matched_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE app.emails (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES app.users (id),
    template   text        NOT NULL,
    dedupe_key text        NOT NULL UNIQUE,
    recipient  text        NOT NULL,
    subject    text        NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now()
);
