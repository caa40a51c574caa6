-- Named queries on receiptq.dead_letters.

-- name: dead_letter_list
-- Dead letters, newest first, with their arguments, optionally of one actor and/or queue.
SELECT id, message_id, queue, actor, message->'args' AS args, message->'kwargs' AS kwargs,
       attempts, reason, error_type, error, failed_at
FROM receiptq.dead_letters
WHERE (%(actor)s::text IS NULL OR actor = %(actor)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
ORDER BY failed_at DESC, id DESC
LIMIT %(limit)s;

-- name: dead_letter_get
-- One dead letter with everything kept about it.
SELECT id, message_id, queue, actor, priority, message, attempts, max_attempts, reason, error_type, error,
       traceback, tier, user_id, enqueued_at, failed_at
FROM receiptq.dead_letters
WHERE id = %(id)s;

-- name: dead_letter_retry
-- Put dead letters back into jobs as a fresh series of attempts (retries count
-- reset), due now, and remove them from dead_letters, in one statement. Selects
-- by ids, by actor, or all. A dead letter whose message id is queued again
-- already is left in place. Returns the ids moved.
WITH chosen AS (
    SELECT d.*
    FROM receiptq.dead_letters AS d
    WHERE (%(all)s OR d.id = ANY(%(ids)s::bigint[]) OR d.actor = %(actor)s)
      AND NOT EXISTS (SELECT 1 FROM receiptq.jobs AS j WHERE j.message_id = d.message_id)
    FOR UPDATE SKIP LOCKED
),
revived AS (
    INSERT INTO receiptq.jobs (message_id, queue, actor, priority, max_attempts, tier,
                               user_id, message)
    SELECT message_id, queue, actor, priority, max_attempts, tier, user_id,
           jsonb_set(message, '{options}',
                     (message->'options') - 'retries' - 'traceback' - 'requeue_timestamp'
                                          - 'eta')
    FROM chosen
    ON CONFLICT DO NOTHING
    RETURNING message_id
)
DELETE FROM receiptq.dead_letters AS d
USING revived
WHERE d.message_id = revived.message_id AND d.id IN (SELECT id FROM chosen)
RETURNING d.id;

-- name: dead_letter_purge
-- Delete dead letters by ids, all, those that failed more than an interval ago, or
-- those whose message carries an option (the demo's mark). Returns the ids.
DELETE FROM receiptq.dead_letters
WHERE %(all)s OR id = ANY(%(ids)s::bigint[])
   OR failed_at < now() - %(older_than)s::interval
   OR message -> 'options' ? %(option)s::text
RETURNING id;

-- name: dead_letter_count_by_queue
-- How many dead letters each queue has.
SELECT queue, count(*)::integer AS dead FROM receiptq.dead_letters GROUP BY queue;

-- name: dead_letter_count_by_option
-- How many dead letters each queue has of the messages whose option has a value
-- (one demo run's).
SELECT queue, count(*)::integer AS dead
FROM receiptq.dead_letters
WHERE message -> 'options' ->> %(option)s::text = %(value)s::text
GROUP BY queue;

-- name: dead_letter_count_without_option
-- How many dead letters are of messages without an option (those no demo sent).
SELECT count(*)::bigint AS n
FROM receiptq.dead_letters
WHERE NOT (message -> 'options' ? %(option)s::text);

-- name: dead_letter_existing_ids
-- Which of the given ids are dead letters (the CLI refuses unknown ids before acting).
SELECT id FROM receiptq.dead_letters WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id;
