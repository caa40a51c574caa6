-- Named queries on receiptq.stats_minute and the live counts of receiptq.jobs.

-- name: stats_add
-- Add one process's counters for a minute, queue and actor (batched by the broker).
INSERT INTO receiptq.stats_minute AS s (minute, queue, actor, enqueued, succeeded, failed,
                                        retried, dead_lettered, postponed, run_ms_sum, run_ms_hist,
                                        latency_ms_sum, latency_ms_hist)
VALUES (%(minute)s, %(queue)s, %(actor)s, %(enqueued)s, %(succeeded)s, %(failed)s,
        %(retried)s, %(dead_lettered)s, %(postponed)s, %(run_ms_sum)s, %(run_ms_hist)s,
        %(latency_ms_sum)s, %(latency_ms_hist)s)
ON CONFLICT (minute, queue, actor) DO UPDATE SET
    enqueued = s.enqueued + excluded.enqueued,
    succeeded = s.succeeded + excluded.succeeded,
    failed = s.failed + excluded.failed,
    retried = s.retried + excluded.retried,
    dead_lettered = s.dead_lettered + excluded.dead_lettered,
    postponed = s.postponed + excluded.postponed,
    run_ms_sum = s.run_ms_sum + excluded.run_ms_sum,
    run_ms_hist = receiptq.hist_add(s.run_ms_hist, excluded.run_ms_hist),
    latency_ms_sum = s.latency_ms_sum + excluded.latency_ms_sum,
    latency_ms_hist = receiptq.hist_add(s.latency_ms_hist, excluded.latency_ms_hist);

-- name: stats_fold_sql_sends
-- Count the jobs receiptq.enqueue() sent (receiptq.sql_sends) as enqueued, and delete
-- those rows: a batch at a time, rows another worker is folding skipped, the stats rows
-- written in one order (so two workers folding at once cannot deadlock).
WITH taken AS (
    DELETE FROM receiptq.sql_sends
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM receiptq.sql_sends
                            LIMIT %(batch)s FOR UPDATE SKIP LOCKED))
    RETURNING minute, queue, actor
)
INSERT INTO receiptq.stats_minute AS s (minute, queue, actor, enqueued)
SELECT minute, queue, actor, count(*) FROM taken
GROUP BY minute, queue, actor
ORDER BY minute, queue, actor
ON CONFLICT (minute, queue, actor) DO UPDATE SET enqueued = s.enqueued + excluded.enqueued;

-- name: stats_since
-- Per-minute rows of every queue and actor since a time, oldest first.
SELECT minute, queue, actor, enqueued, succeeded, failed, retried, dead_lettered, postponed,
       run_ms_sum, run_ms_hist, latency_ms_sum, latency_ms_hist
FROM receiptq.stats_minute
WHERE minute >= %(since)s
ORDER BY minute, queue, actor;

-- name: db_now
-- The database's clock, so that figures are computed against one clock.
SELECT now() AS now;

-- name: transaction_id
-- The id of the caller's open transaction, so that the sends made in it are counted
-- only once it commits (see transaction_statuses).
SELECT txid_current() AS xid;

-- name: transaction_statuses
-- Whether transactions that sent jobs committed: committed, aborted or in progress
-- (NULL: too old to tell).
SELECT x.xid, txid_status(x.xid) AS status
FROM unnest(%(xids)s::bigint[]) AS x(xid);
