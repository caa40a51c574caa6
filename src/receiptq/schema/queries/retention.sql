-- Named queries of the retention job and the dead-letter report
-- (receiptq.retention). Deletes work in bounded batches: the caller repeats a
-- statement until it deletes fewer rows than batch_size.

-- name: retention_prune_stats
-- Delete up to batch_size per-minute statistics rows older than `before`.
DELETE FROM receiptq.stats_minute AS s
USING (SELECT minute, queue, actor FROM receiptq.stats_minute
       WHERE minute < %(before)s
       ORDER BY minute
       LIMIT %(batch_size)s
       FOR UPDATE SKIP LOCKED) AS old
WHERE s.minute = old.minute AND s.queue = old.queue AND s.actor = old.actor;

-- name: retention_prune_dead_letters
-- Delete up to batch_size dead letters that failed before `before`.
DELETE FROM receiptq.dead_letters
WHERE id IN (SELECT id FROM receiptq.dead_letters
             WHERE failed_at < %(before)s
             ORDER BY failed_at
             LIMIT %(batch_size)s
             FOR UPDATE SKIP LOCKED);

-- name: retention_prune_periodic_ticks
-- Delete up to batch_size periodic tick records of ticks before `before`.
DELETE FROM receiptq.periodic_ticks AS t
USING (SELECT actor, tick_at FROM receiptq.periodic_ticks
       WHERE tick_at < %(before)s
       ORDER BY tick_at
       LIMIT %(batch_size)s
       FOR UPDATE SKIP LOCKED) AS old
WHERE t.actor = old.actor AND t.tick_at = old.tick_at;

-- name: retention_dead_letter_counts
-- Dead letters that failed in [since, until), counted by actor and error type
-- (the reason when there is no exception), most frequent first.
SELECT actor, coalesce(error_type, reason) AS error, count(*)::integer AS dead
FROM receiptq.dead_letters
WHERE failed_at >= %(since)s AND failed_at < %(until)s
GROUP BY actor, coalesce(error_type, reason)
ORDER BY dead DESC, actor, error;
