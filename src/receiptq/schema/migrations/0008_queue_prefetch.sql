-- 0008_queue_prefetch: a queue's own prefetch, for queues whose jobs run long.
--
-- Dramatiq lets each worker process hold twice as many jobs as it has threads per
-- queue (claimed, waiting in its memory). For jobs of a few seconds or more that
-- lets one process hoard a queue's jobs while another sits idle. With a prefetch
-- set, each worker process holds at most that many of the queue's jobs (claimed and
-- not finished), and never more than its threads; consumers read it every poll
-- interval, so `receiptq queue prefetch ocr 1` applies at once. NULL: Dramatiq's
-- prefetch (or the smallest `prefetch` option of the queue's actors).
ALTER TABLE receiptq.queue_settings
    ADD COLUMN prefetch integer CHECK (prefetch IS NULL OR prefetch >= 1);
