-- 0010_imported_messages: which messages were imported from another broker.
--
-- `receiptq import dramatiq-pg` copies messages into jobs and dead_letters. A job
-- that ran since has left jobs (its ack deletes the row), so jobs alone cannot
-- tell a second import that the message came over already: this table can. One
-- row per imported message id, written in the same transaction as the job or the
-- dead letter, so an import that is run again (or resumed after a failure)
-- imports nothing twice.

CREATE TABLE receiptq.imported_messages (
    message_id   text        PRIMARY KEY,   -- Dramatiq's message id (the job's, the dead letter's)
    source       text        NOT NULL,      -- the broker it came from: dramatiq-pg
    source_state text        NOT NULL,      -- its state there: queued, consumed or rejected
    imported_as  text        NOT NULL CHECK (imported_as IN ('job', 'dead_letter')),
    imported_at  timestamptz NOT NULL DEFAULT now()
);
