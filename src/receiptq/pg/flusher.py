"""Batched writes: acks every few milliseconds, statistics every second.

Worker threads hand acks to :class:`Flusher` and go on; one background thread
per process deletes the finished jobs in batches (one statement per batch) and
adds the per-minute statistics. A crash loses at most the last few
milliseconds of acks: those jobs run again (delivery is at-least-once).

Jobs sent inside a caller's transaction are counted once that transaction
commits: the flusher keeps their counts with the transaction's id and asks the
database, at each statistics write, whether it committed (a rolled-back send is
never counted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from psycopg.pq import TransactionStatus

from receiptq import db
from receiptq.pg.outage import Backoff, database_problem, first_line
from receiptq.stats import BUCKETS, bucket_of

logger = logging.getLogger(__name__)

#: How long acks wait to be batched, at most (ms).
DEFAULT_ACK_FLUSH_MS = 5
#: Flush at once when this many acks are waiting.
DEFAULT_ACK_BATCH = 500
#: How often the statistics are written (s).
DEFAULT_STATS_FLUSH_S = 1.0
#: Pauses between attempts to write acks that failed (s): growing from the first to
#: the last (an ack must land before its job's lease runs out, so they stay short).
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0


@dataclass
class MinuteCounters:
    """One process's counts for one (minute, queue, actor) not written yet."""

    enqueued: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    postponed: int = 0
    run_ms_sum: float = 0.0
    run_ms_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    latency_ms_sum: float = 0.0
    latency_ms_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)


StatsKey = tuple[datetime, str, str]
#: Jobs sent per (queue, actor).
SendCounts = Mapping[tuple[str, str], int]


def minute_of(epoch_s: float) -> datetime:
    return _minute(int(epoch_s // 60))


@lru_cache(maxsize=4)
def _minute(number: int) -> datetime:
    """The start of minute ``number`` since the epoch (every finished job asks)."""
    return datetime.fromtimestamp(number * 60, tz=UTC)


class Flusher:
    """Collects acks and counters from any thread; one daemon thread writes them."""

    def __init__(
        self,
        pool_getter: Any,
        *,
        ack_flush_ms: int = DEFAULT_ACK_FLUSH_MS,
        ack_batch: int = DEFAULT_ACK_BATCH,
        stats_flush_s: float = DEFAULT_STATS_FLUSH_S,
    ) -> None:
        self._pool_getter = pool_getter
        self._ack_flush_s = ack_flush_ms / 1000
        self._ack_batch = ack_batch
        self._stats_flush_s = stats_flush_s
        self._lock = threading.Lock()
        self._has_acks = threading.Condition(self._lock)
        self._ack_ids: list[int] = []
        self._ack_attempts: list[int] = []
        self._stats: defaultdict[StatsKey, MinuteCounters] = defaultdict(MinuteCounters)
        self._uncommitted: list[tuple[int, SendCounts]] = []  # (transaction id, sends)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    # -- producers' side (any thread) ------------------------------------------------

    def ack(self, job_id: int, attempt: int) -> None:
        with self._lock:
            self._ack_ids.append(job_id)
            self._ack_attempts.append(attempt)
            self._idle.clear()
            if len(self._ack_ids) == 1 or len(self._ack_ids) >= self._ack_batch:
                self._has_acks.notify()
        self._ensure_thread()

    def count(self, queue: str, actor: str, **increments: int) -> None:
        """Add to the counters of this minute, e.g. count(q, a, enqueued=3)."""
        key = (minute_of(time.time()), queue, actor)
        with self._lock:
            counters = self._stats[key]
            for name, value in increments.items():
                setattr(counters, name, getattr(counters, name) + value)
        self._ensure_thread()

    def count_sent(self, conn: Any, sent: SendCounts) -> None:
        """Count jobs stored on ``conn`` once they commit: now on an autocommit
        connection, else when the caller's transaction commits (a rolled-back send
        is never counted)."""
        if not sent:
            return
        if conn.info.transaction_status == TransactionStatus.IDLE:
            for (queue, actor), n in sent.items():
                self.count(queue, actor, enqueued=n)
            return
        row = db.fetch_one(conn, "transaction_id")
        assert row is not None
        self.count_on_commit(row["xid"], dict(sent))

    def count_on_commit(self, xid: int, sent: SendCounts) -> None:
        """Count jobs sent in the open transaction ``xid`` once it commits (never if
        it rolls back)."""
        with self._lock:
            self._uncommitted.append((xid, sent))
        self._ensure_thread()

    def finished(
        self,
        queue: str,
        actor: str,
        *,
        outcome: str,
        run_ms: float | None,
        latency_ms: float | None,
    ) -> None:
        """Count one finished delivery (outcome: a MinuteCounters counter name)."""
        key = (minute_of(time.time()), queue, actor)
        with self._lock:
            counters = self._stats[key]
            setattr(counters, outcome, getattr(counters, outcome) + 1)
            if run_ms is not None:
                counters.run_ms_sum += run_ms
                counters.run_ms_hist[bucket_of(run_ms)] += 1
            if latency_ms is not None:
                counters.latency_ms_sum += latency_ms
                counters.latency_ms_hist[bucket_of(latency_ms)] += 1
        self._ensure_thread()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every ack handed in so far is written (tests, shutdown)."""
        return self._idle.wait(timeout)

    # -- the writer thread ------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._stopping or (self._thread is not None and self._thread.is_alive()):
                    return
                self._thread = threading.Thread(
                    target=self._run, name="receiptq-flusher", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        next_stats = time.monotonic() + self._stats_flush_s
        while True:
            with self._lock:
                if not self._ack_ids and not self._stopping:
                    self._has_acks.wait(max(0.0, next_stats - time.monotonic()))
                stopping = self._stopping
            if self._ack_ids and len(self._ack_ids) < self._ack_batch and not stopping:
                time.sleep(self._ack_flush_s)  # let more acks join this batch
            self._write_acks()
            if stopping or time.monotonic() >= next_stats:
                self._write_stats()
                next_stats = time.monotonic() + self._stats_flush_s
            if stopping:
                return

    def _take_acks(self) -> tuple[list[int], list[int]]:
        with self._lock:
            ids, attempts = self._ack_ids, self._ack_attempts
            self._ack_ids, self._ack_attempts = [], []
            return ids, attempts

    def _write_acks(self) -> None:
        ids, attempts = self._take_acks()
        pauses = Backoff(RETRY_FIRST_S, RETRY_MAX_S)
        while ids:
            try:
                with self._pool_getter().connection() as conn:
                    db.execute(conn, "job_ack_batch", {"ids": ids, "attempts": attempts})
                break
            except Exception as exc:
                if self._stopping:
                    logger.warning(
                        "%d acks were not written (%s); those jobs run again once their "
                        "leases expire",
                        len(ids),
                        first_line(exc),
                    )
                    return
                if database_problem(exc) is None:  # else the pool's watch said it once
                    logger.exception("writing %d acks failed; retrying", len(ids))
                time.sleep(pauses.next())
        with self._lock:
            if not self._ack_ids:
                self._idle.set()

    def _count_committed(self) -> None:
        """Count the sends whose transaction committed; keep those still open."""
        with self._lock:
            waiting, self._uncommitted = self._uncommitted, []
        if not waiting:
            return
        xids = sorted({xid for xid, _ in waiting})
        try:
            with self._pool_getter().connection() as conn:
                rows = db.fetch_all(conn, "transaction_statuses", {"xids": xids})
        except Exception as exc:
            if database_problem(exc) is None:  # else the pool's watch said it once
                logger.exception("reading the state of %d transactions failed", len(xids))
            rows = [{"xid": xid, "status": "in progress"} for xid in xids]
        status = {row["xid"]: row["status"] for row in rows}
        still_open = []
        for xid, sent in waiting:
            if status.get(xid) == "committed":
                for (queue, actor), n in sent.items():
                    self.count(queue, actor, enqueued=n)
            elif status.get(xid) == "in progress" and not self._stopping:
                still_open.append((xid, sent))
        with self._lock:
            self._uncommitted[:0] = still_open

    def _write_stats(self) -> None:
        self._count_committed()
        with self._lock:
            stats, self._stats = self._stats, defaultdict(MinuteCounters)
        if not stats:
            return
        # In key order: every process's batch (one transaction) then locks the rows it
        # shares with another's in the same order, so that two never deadlock.
        rows = [
            {"minute": minute, "queue": queue, "actor": actor, **vars(counters)}
            for (minute, queue, actor), counters in sorted(stats.items())
        ]
        try:
            with self._pool_getter().connection() as conn:
                db.execute_many(conn, "stats_add", rows)
        except Exception as exc:
            gone = database_problem(exc) is not None
            if gone and not self._stopping:
                self._keep(stats)  # the database is gone for now: write them later
                return
            # Statistics are for monitoring: losing some beats blocking acks or shutdown.
            logger.warning(
                "writing statistics failed (%s); %d rows dropped",
                first_line(exc),
                len(rows),
                exc_info=not gone,
            )

    def _keep(self, stats: dict[StatsKey, MinuteCounters]) -> None:
        """Put counters that could not be written back, added to those counted since."""
        with self._lock:
            for key, old in stats.items():
                counters = self._stats[key]
                for name, value in vars(old).items():
                    mine = getattr(counters, name)
                    if isinstance(value, list):
                        setattr(counters, name, [a + b for a, b in zip(mine, value, strict=True)])
                    else:
                        setattr(counters, name, mine + value)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything pending and stop the thread."""
        with self._lock:
            self._stopping = True
            self._has_acks.notify()
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        else:
            self._write_acks()
            self._write_stats()
