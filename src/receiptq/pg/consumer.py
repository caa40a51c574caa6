"""The consumer: hands out claimed jobs one by one to Dramatiq's worker, claims
a new batch when enough slots are free, and wakes on a notification.

It talks to two parts only: a :class:`~receiptq.pg.claims.Claimer` (claim, and
what to know about its queue) and a :class:`~receiptq.pg.settle.Settler` (the
worker's ack and nack, giving back what it never handed out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable

from dramatiq.broker import Consumer, MessageProxy

from receiptq.pg.claims import Claimer, ClaimPath
from receiptq.pg.delivery import JobProxy
from receiptq.pg.outage import Backoff, database_problem
from receiptq.pg.settle import Settler
from receiptq.tiers import StrideState

logger = logging.getLogger(__name__)

#: How often a consumer looks for tier classes its policy does not name (s).
CLASS_CHECK_INTERVAL_S = 10.0
#: A consumer's pauses while the database is gone or not migrated (s): growing from
#: the first to the last, so that it claims again within ~2 s of the database's return.
OUTAGE_PAUSE_FIRST_S = 0.1
OUTAGE_PAUSE_MAX_S = 2.0
#: Claim-ahead (see PostgresConsumer): beyond Dramatiq's prefetch, a process may hold
#: what it runs in this many claim round trips...
CLAIM_AHEAD_TRIPS = 4
#: ...but never more than this many times the prefetch.
CLAIM_AHEAD_MAX_FACTOR = 6
#: The run rate behind the claim-ahead is measured over windows this long (s).
CLAIM_RATE_WINDOW_S = 0.25


class DelayQueueConsumer(Consumer):
    """Consumer of a ``.DQ`` queue: delays live in the jobs table, so it only idles."""

    def __init__(self, timeout_ms: int) -> None:
        self._timeout_s = timeout_ms / 1000
        self._closed = threading.Event()

    def __next__(self) -> MessageProxy | None:
        self._closed.wait(self._timeout_s)
        return None

    def ack(self, message: MessageProxy) -> None:  # pragma: no cover - never hands out messages
        pass

    def nack(self, message: MessageProxy) -> None:  # pragma: no cover
        pass

    def close(self) -> None:
        self._closed.set()


class PostgresConsumer(Consumer):
    """Hands out claimed jobs one by one; claims a new batch when enough slots are free.

    ``prefetch`` bounds the jobs of the queue this process holds (claimed and not
    yet finished, counted by the holdings whichever consumer claimed them); a queue's
    own prefetch (:meth:`Claimer.prefetch`) may bound it further. Claims come in
    batches: the consumer claims again when a quarter of the slots are free, so that
    a busy queue costs one claim per batch, not one per job. But when work arrived
    since its last claim (a notification, or a poll interval without one), it claims
    for any free slot at once: a job sent after a batch was claimed, and more urgent
    than what is held, waits for one slot, not for a quarter of them (README,
    Architecture).

    Claim-ahead (``RECEIPTQ_CLAIM_AHEAD=1``, off by default, when the prefetch must
    stay a hard bound): a claim takes a round trip of a few milliseconds, in which a
    process running short jobs finishes dozens; with only Dramatiq's prefetch (twice
    the threads) its threads idle while every claim is on its way. So a queue
    without a prefetch of its own may hold beyond it what the process ran in
    :data:`CLAIM_AHEAD_TRIPS` claim round trips lately (at most
    :data:`CLAIM_AHEAD_MAX_FACTOR` times the prefetch): the next batch is claimed
    while the last is still running. The extra is a few claims' worth of work
    whatever the jobs' length (about 10 ms of it), so jobs that take longer than a
    claim leave no room for it and a process does not hoard slow jobs.

    While the database is gone or not migrated the consumer does not raise (Dramatiq
    would log a CRITICAL traceback and reopen it every few seconds): the runtime's
    watch says once what is wrong, and the consumer tries again after growing pauses.
    """

    def __init__(
        self,
        claims: Claimer,
        settle: Settler,
        queue_name: str,
        prefetch: int,
        timeout_ms: int,
        *,
        claim_ahead: bool = False,
    ) -> None:
        self.claims = claims
        self.settle = settle
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout_s = timeout_ms / 1000
        self._stride = StrideState()
        self._classes_checked_at = 0.0
        # When the next scheduled job is due (monotonic), as last read, and when to
        # read it again: after a poll interval, or at once when a job is scheduled.
        self._next_due: float | None = None
        self._due_read_at = -1e9
        self._due_stale = True
        # How claims go (see Claimer.claim_settings): re-read every poll
        # interval; a "tiered:" notification turns "plain" into "fair" at once.
        self._path: ClaimPath = "locked"
        # The queue has jobs not due yet: claims take the statements that skip them
        # (re-read every poll interval; a job scheduled meanwhile sets it at once).
        self._later = False
        self._settings_read_at = -1e9
        self._prefetch_setting: int | None = None  # receiptq queue prefetch
        # Work may have arrived since the last claim (a notification came, or a poll
        # interval passed): claim for any free slot.
        self._news = True
        self._claimed_at = -1e9
        self._outage = Backoff(OUTAGE_PAUSE_FIRST_S, OUTAGE_PAUSE_MAX_S)
        self._retry_at = 0.0  # while the database is gone: no claim before this
        # Claim-ahead: jobs held beyond the prefetch, from the claims' mean round
        # trip and the jobs claimed per second over the last window.
        self._claim_ahead = claim_ahead
        self._ahead = 0
        self._claim_s = 0.0
        self._window_started = time.monotonic()
        self._window_claimed = 0
        self._buffer: deque[JobProxy] = deque()
        self._wakeup = threading.Event()
        self._closed = False

    @property
    def outstanding(self) -> int:
        """Jobs of this queue the process holds (claimed, not finished)."""
        return self.claims.held(self.queue_name)

    def wake(self, *, scheduled: bool = False, tiered: bool = False) -> None:
        if scheduled:
            self._due_stale = True  # a job was scheduled: re-read when the next one is due
            self._later = True
        if tiered and self._path == "plain":
            self._path = "fair"  # jobs with a tier arrived: share claims across tiers
        self._news = True
        self._wakeup.set()

    def _fresh(self) -> bool:
        """Work may have arrived since the last claim."""
        return self._news or time.monotonic() - self._claimed_at >= self.claims.poll_interval_s

    def slot_freed(self) -> None:
        """A job of the queue finished (through whichever consumer)."""
        if self._fresh() or self._free_slots() >= self._min_claim():
            self._wakeup.set()

    def _prefetch(self) -> int:
        """How many jobs of the queue the process may hold now: the queue's own
        prefetch, else Dramatiq's and the claim-ahead."""
        return self.claims.prefetch(
            self.queue_name, self.prefetch, self._prefetch_setting, self._ahead
        )

    def _measure(self, claimed: int, took_s: float) -> None:
        """Update the claim-ahead after a claim of ``claimed`` jobs that took ``took_s``."""
        self._claim_s = took_s if not self._claim_s else 0.8 * self._claim_s + 0.2 * took_s
        self._window_claimed += claimed
        now = time.monotonic()
        span = now - self._window_started
        if span >= CLAIM_RATE_WINDOW_S:
            rate = self._window_claimed / span
            self._window_started, self._window_claimed = now, 0
            ahead = int(rate * self._claim_s * CLAIM_AHEAD_TRIPS)
            self._ahead = min(ahead, CLAIM_AHEAD_MAX_FACTOR * self.prefetch)

    def _min_claim(self) -> int:
        return max(1, self._prefetch() // 4)

    def _free_slots(self) -> int:
        return self._prefetch() - self.claims.held(self.queue_name)

    def _claim_size(self) -> int:
        """How many jobs to claim now (0: none)."""
        if not self.claims.may_claim():
            return 0
        free = self._free_slots()
        return free if free >= self._min_claim() or (free > 0 and self._fresh()) else 0

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout_s
        while not self._closed:
            if self._buffer:
                return self._buffer.popleft()
            self._wakeup.clear()
            wait_s = self._claim_or_pause()
            if wait_s is None:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not self._wakeup.wait(min(wait_s, remaining)) and wait_s <= remaining:
                self._news = True  # a job fell due
        return None

    def _claim_or_pause(self) -> float | None:
        """Claim into the buffer (None), or how long to wait before trying again."""
        now = time.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        try:
            wait_s = self._claim()
        except Exception as exc:
            if database_problem(exc) is None:
                raise
            pause = self._outage.next()  # the runtime's watch said what is wrong, once
            self._retry_at = time.monotonic() + pause
            self._news = True  # once it is back, claim for every free slot
            return pause
        self._outage.reset()
        return wait_s

    def _claim(self) -> float | None:
        self._read_settings()
        size = self._claim_size()
        wait_s = self.claims.poll_interval_s
        if size:
            self._news = False
            self._claimed_at = time.monotonic()
            started = time.perf_counter()
            claimed = self.claims.claim(
                self.queue_name, size, self._stride, path=self._path, later=self._later
            )
            if self._claim_ahead:
                self._measure(len(claimed), time.perf_counter() - started)
            if claimed:
                self._buffer.extend(claimed)
                return None
            due = self._seconds_until_due()
            if due is not None:
                wait_s = min(wait_s, max(due, 0.001))
        return wait_s

    def _seconds_until_due(self) -> float | None:
        """Seconds until the next scheduled job is due, read from the database at
        most once per poll interval unless a job was scheduled meanwhile (so that a
        busy queue's wasted wake-ups cost one claim, not two queries)."""
        now = time.monotonic()
        if self._due_stale or now - self._due_read_at >= self.claims.poll_interval_s:
            self._due_stale = False
            self._due_read_at = now
            due = self.claims.seconds_until_due(self.queue_name)
            self._next_due = None if due is None else now + due
        return None if self._next_due is None else self._next_due - now

    def _read_settings(self) -> None:
        """Every poll interval, read how to claim (see Claimer.claim_settings) and
        the queue's prefetch setting; now and then, look for tier classes the policy
        does not name (so that jobs of a tier removed from RECEIPTQ_TIERS still get
        claimed)."""
        now = time.monotonic()
        if now - self._settings_read_at >= self.claims.poll_interval_s:
            self._path, self._prefetch_setting, self._later = self.claims.claim_settings(
                self.queue_name
            )
            self._settings_read_at = now
        if now - self._classes_checked_at >= CLASS_CHECK_INTERVAL_S:
            self._stride.seen = set(self.claims.tier_classes(self.queue_name))
            self._classes_checked_at = now

    def ack(self, message: MessageProxy) -> None:
        assert isinstance(message, JobProxy)
        self.settle.finish(message)

    def nack(self, message: MessageProxy) -> None:
        assert isinstance(message, JobProxy)
        self.settle.bury(message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        self.settle.last_words()
        self.settle.give_back(m for m in messages if isinstance(m, JobProxy))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.settle.last_words()
        self._wakeup.set()
        buffered = list(self._buffer)
        self._buffer.clear()
        self.claims.holdings.forget(self)
        try:
            self.settle.give_back(buffered)
        except Exception:
            logger.warning(
                "could not give back %d claimed jobs; their leases will expire",
                len(buffered),
                exc_info=True,
            )
