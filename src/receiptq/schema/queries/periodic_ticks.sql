-- Named queries on receiptq.periodic_ticks (receiptq.periodic).

-- name: periodic_tick_claim
-- Record that a periodic actor's tick is being enqueued, in the enqueue's own
-- transaction. Returns a row only for the first scheduler to claim the tick; a
-- second one waits for the first to commit, then gets none.
INSERT INTO receiptq.periodic_ticks (actor, tick_at)
VALUES (%(actor)s, %(tick_at)s)
ON CONFLICT (actor, tick_at) DO NOTHING
RETURNING actor, tick_at;
