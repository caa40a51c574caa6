"""A Dramatiq broker on PostgreSQL (psycopg 3).

Jobs live in ``receiptq.jobs``; a consumer claims a batch of ready jobs in one
statement (``FOR UPDATE SKIP LOCKED``, priority order), holds them under a lease
that the process's heartbeat extends, and acks them in batches. Delays stay in
the table (``run_at``): Dramatiq's delay queues are declared for compatibility
but their consumers never touch the database.

This module keeps Dramatiq's broker contract (declare, enqueue, consume, flush,
join, close); its parts live in :mod:`receiptq.pg`: the consumer
(:mod:`~receiptq.pg.consumer`), the claim paths (:mod:`~receiptq.pg.claims`),
settling a delivery (:mod:`~receiptq.pg.settle`), what the process holds
(:mod:`~receiptq.pg.holdings`) and its connections and threads
(:mod:`~receiptq.pg.runtime`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.common import dq_name, q_name
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries

from receiptq import db
from receiptq.config import validate_queue_name
from receiptq.middleware import middleware_or_default
from receiptq.pg.claims import Claimer, ClaimPath
from receiptq.pg.configured import Configured
from receiptq.pg.consumer import DelayQueueConsumer, PostgresConsumer
from receiptq.pg.delivery import JobProxy
from receiptq.pg.flusher import Flusher
from receiptq.pg.heartbeat import Heartbeat, new_worker_id
from receiptq.pg.holdings import Holdings
from receiptq.pg.messages import MessageError
from receiptq.pg.runtime import reset_in_children
from receiptq.pg.sending import DEFAULT_MAX_RETRIES, Sending
from receiptq.pg.settle import Settler
from receiptq.pg.worker_hooks import DeliveryClock as _DeliveryClock
from receiptq.pg.worker_hooks import WorkerFacts
from receiptq.settings import Settings
from receiptq.tiers import TierPolicy

__all__ = ["DEFAULT_MAX_RETRIES", "ClaimPath", "JobProxy", "MessageError", "PostgresBroker"]

logger = logging.getLogger(__name__)

#: Option set on the message ``enqueue`` returns when its ``unique_key`` was taken.
DUPLICATE_OPTION = "duplicate"


class PostgresBroker(Configured, Sending, Broker):
    """A Dramatiq broker whose queues, delays, leases and dead letters live in PostgreSQL.

    Its settings are ``settings``, else the environment's (:meth:`Settings.from_env`),
    with the keyword arguments below over them (None: not given). The environment is
    read, and the embedded PostgreSQL started, on first use, not when the broker is
    built: building one reads nothing and connects nowhere.

    Parameters:
      url(str): PostgreSQL URL. Default: ``RECEIPTQ_DATABASE_URL``, then
        ``DATABASE_URL``, then the embedded PostgreSQL under ``RECEIPTQ_HOME``.
      settings(Settings): the settings (default: the environment's, read on first use).
      middleware(list[Middleware]): as for :class:`dramatiq.Broker`. Default:
        :func:`receiptq.middleware.receiptq_middleware` (Dramatiq's defaults with
        backoff retries that honour ``PermanentError`` and ``RetryAfter``, circuit
        breakers and ``CurrentMessage``), not Dramatiq's default list.
      lease_s(float): lease of a claimed job, in seconds (``RECEIPTQ_LEASE_S``, 30).
      poll_interval_ms(int): idle polling interval (``RECEIPTQ_POLL_INTERVAL_MS``, 500;
        200 behind a transaction pooler).
      pool_max_size(int): connections in this process's pool (``RECEIPTQ_POOL_MAX_SIZE``, 6).
      max_message_bytes(int): largest encoded message (``RECEIPTQ_MAX_MESSAGE_BYTES``, 1 MiB).
      listen(bool): use LISTEN/NOTIFY wake-ups (``RECEIPTQ_LISTEN``, on); always off
        with ``pooler="transaction"``.
      pooler(str): ``"session"`` (direct connections or a session pooler) or
        ``"transaction"`` (a pooler in transaction mode: no prepared statements, no
        session settings, no LISTEN) for every connection to ``url`` in this process
        (``RECEIPTQ_POOLER``, session).
      ack_flush_ms(int): how long acks are batched, at most (``RECEIPTQ_ACK_FLUSH_MS``, 5).
      tiers(TierPolicy): tiers, their weights and priority offsets (``RECEIPTQ_TIERS``,
        ``enterprise:6:0,pro:3:10,free:1:20``); see :mod:`receiptq.tiers`.
    """

    _claims: Claimer
    _settle: Settler

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        middleware: list[Middleware] | None = None,
        lease_s: float | None = None,
        poll_interval_ms: int | None = None,
        pool_max_size: int | None = None,
        max_message_bytes: int | None = None,
        listen: bool | None = None,
        ack_flush_ms: int | None = None,
        tiers: TierPolicy | None = None,
        pooler: str | None = None,
        claim_ahead: bool | None = None,
    ) -> None:
        # Given values first: a malformed one fails here, before anything is set up.
        self._remember(
            settings,
            tiers,
            database_url=url,
            lease_s=lease_s,
            poll_interval_ms=poll_interval_ms,
            pool_max_size=pool_max_size,
            max_message_bytes=max_message_bytes,
            listen=listen,
            ack_flush_ms=ack_flush_ms,
            pooler=pooler,
            claim_ahead=claim_ahead,
        )
        super().__init__(middleware=middleware_or_default(middleware))
        self.queues: dict[str, None] = {}
        self._local = threading.local()
        self._reset_after_fork()
        self.add_middleware(_DeliveryClock(lambda: self._holdings))
        self.add_middleware(
            WorkerFacts(lambda: self._holdings, lambda: self._settle, lambda: self.runtime)
        )
        # A forked child (Dramatiq's worker processes) starts with no deliveries and
        # no consumers of its parent's: give it fresh ones, and an identity of its own.
        reset_in_children(self, PostgresBroker._reset_after_fork)
        if settings is not None:
            self._configure()  # nothing to read: as soon as given

    def _reset_after_fork(self) -> None:
        self._lock = threading.RLock()
        self.worker_id = new_worker_id()
        self._holdings = Holdings()
        if "settings" in self.__dict__:
            self._new_parts()

    def _new_parts(self) -> None:
        """The claimer and the settler of this process (on the runtime, which resets
        itself in a forked child)."""
        self._claims = Claimer(
            self.runtime,
            self._holdings,
            worker_id=self.worker_id,
            lease_s=self.lease_s,
            poll_interval_s=self.poll_interval_s,
            tiers=self.tier_policy,
            actors=self.actors,
        )
        self._settle = Settler(
            self.runtime, self._holdings, self.worker_id, self._row, self._retries
        )

    # -- the worker's facts (kept by the holdings) --------------------------------------

    @property
    def worker_threads(self) -> int | None:
        """Threads of this process's Dramatiq worker (None: no worker booted here)."""
        return self._holdings.worker_threads

    @worker_threads.setter
    def worker_threads(self, threads: int | None) -> None:
        self._holdings.worker_threads = threads

    @property
    def _flusher(self) -> Flusher:
        return self.runtime.flusher

    @property
    def _heartbeat(self) -> Heartbeat | None:
        return self.runtime.heartbeat

    # -- queues -----------------------------------------------------------------------

    def declare_queue(self, queue_name: str) -> None:
        """Declare a queue (idempotent). As Dramatiq's brokers do, the name of a delay
        or dead-letter queue (``q.DQ``, ``q.XQ``) declares its canonical queue ``q``
        and that queue's delay queue.

        Raises:
          ValueError: the name is not one receiptq stores.
        """
        canonical = q_name(validate_queue_name(queue_name))
        if q_name(canonical) != canonical:
            raise ValueError(
                f"invalid queue name {queue_name!r}: .DQ or .XQ (Dramatiq's delay and "
                "dead-letter queues) may end a queue name once"
            )
        queue_name = canonical
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = None
        self.emit_after("declare_queue", queue_name)
        delayed = dq_name(queue_name)
        self.delay_queues.add(delayed)
        self.emit_after("declare_delay_queue", delayed)

    def _require_queue(self, queue_name: str) -> str:
        canonical = q_name(queue_name)
        if canonical not in self.queues:
            raise QueueNotFound(queue_name)
        return canonical

    # -- sending ----------------------------------------------------------------------

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Store a message as a job, due now or after ``delay`` ms; return it.

        A message whose ``unique_key`` is already queued or running is not stored:
        the returned message then has the option ``duplicate`` set to True.

        Raises:
          MessageError: the message cannot be stored (not JSON, too large, bad option).
          QueueNotFound: the queue was never declared on this broker.
          DatabaseNotMigrated, DatabaseUnreachable: the database cannot take it.
        """
        self._require_queue(message.queue_name)
        # Middleware runs first: it may fill options (e.g. the tier from the user).
        self.emit_before("enqueue", message, delay)
        row = self._row(message, delay)
        message = message.copy(queue_name=row.queue)
        with db.explained(self.url), self.connection() as conn:
            params = {**row.params(), "worker_id": self.worker_id}
            stored = db.fetch_one(conn, "job_enqueue", params)
            if stored is not None and not stored["requeued"]:
                self.runtime.flusher.count_sent(conn, {(row.queue, row.actor): 1})
        if stored is None:
            logger.info(
                "dropped message %s: unique_key %r is queued or running",
                row.message_id,
                row.unique_key,
            )
            message = message.copy(options={DUPLICATE_OPTION: True})
        elif stored["requeued"]:  # a retry of a delivery: its outcome
            self._settle.retried(stored["id"], delay)
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_many(self, messages: Sequence[Message[Any]], *, delay: int | None = None) -> int:
        """Store many new messages in one statement; return how many were stored.

        Every message is validated before anything is written. Messages whose id
        or ``unique_key`` is already queued or running are dropped (not counted).
        Middleware ``before_enqueue``/``after_enqueue`` hooks run for each message.
        """
        if not messages:
            return 0
        for message in messages:
            self._require_queue(message.queue_name)
        self._emit_enqueue("before", messages, delay)
        with db.explained(self.url), self.connection() as conn:
            sent = self._store(conn, messages, delay)
            self.runtime.flusher.count_sent(conn, sent)
        self._emit_enqueue("after", messages, delay)
        return sum(sent.values())

    # -- consuming --------------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        canonical = self._require_queue(queue_name)
        if canonical != queue_name:
            return DelayQueueConsumer(timeout)
        self._start_worker_services()
        consumer = PostgresConsumer(
            self._claims,
            self._settle,
            queue_name,
            prefetch,
            timeout,
            claim_ahead=self.claim_ahead,
        )
        self._holdings.add(consumer)
        return consumer

    def _start_worker_services(self) -> Heartbeat:
        return self.runtime.start_worker_services(
            self._holdings.wake,
            worker_id=self.worker_id,
            lease_s=self.lease_s,
            status=self._holdings.status,
            on_rescue=self._count_rescued,
            tiers=self.tier_policy,
        )

    def _count_rescued(self, outcomes: list[dict[str, Any]]) -> None:
        """Count the jobs of lost workers the rescue moved to the dead letters."""
        for row in outcomes:
            if row["outcome"] == "dead":
                self.runtime.flusher.count(row["queue"], row["actor"], dead_lettered=row["jobs"])

    def _retries(self) -> bool:
        """A retries middleware re-queues failed deliveries."""
        return any(isinstance(m, Retries) for m in self.middleware)

    # -- the parts' operations, as the broker's (see receiptq.pg.claims and .settle) ----

    @property
    def claim(self) -> Callable[..., list[JobProxy]]:
        """Claim about ``limit`` ready jobs of a queue for this process:
        ``claim(queue_name, limit, stride=None, *, path="locked", later=False)``, see
        :meth:`receiptq.pg.claims.Claimer.claim`."""
        return self._claims.claim

    def claim_path(self, queue_name: str) -> ClaimPath:
        """How a queue's claims go: ``"locked"`` when it is paused or capped, else
        ``"fair"`` when it has queued jobs with a tier, else ``"plain"``."""
        return self._claims.claim_settings(queue_name)[0]

    def postpone(self, message: MessageProxy, *, delay_ms: int) -> None:
        """Put a delivery back to queued for ``delay_ms`` without using up an attempt
        (see :meth:`receiptq.pg.settle.Settler.postpone`)."""
        if not isinstance(message, JobProxy):
            raise TypeError("postpone() takes a message delivered by a PostgresBroker")
        self._settle.postpone(message, delay_ms=delay_ms)

    def keep_retry(self, message: MessageProxy, delay_ms: int, error: Exception) -> bool:
        """Re-queueing a failed delivery raised ``error``: True when the retry is kept
        (see :meth:`receiptq.pg.settle.Settler.keep_retry`), False to raise it."""
        return isinstance(message, JobProxy) and self._settle.keep_retry(message, delay_ms, error)

    def finish(self, message: JobProxy) -> None:
        """Ack: the delivery is over (succeeded, or failed and re-queued by a retry)."""
        self._settle.finish(message)

    def bury(self, message: JobProxy) -> None:
        """Nack: move the delivery to the dead letters with its error."""
        self._settle.bury(message)

    # -- housekeeping -----------------------------------------------------------------

    def flush(self, queue_name: str) -> None:
        with self.runtime.pool().connection() as conn:
            db.execute(conn, "job_flush_queue", {"queue": self._require_queue(queue_name)})

    def flush_all(self) -> None:
        with self.runtime.pool().connection() as conn:
            db.execute(conn, "job_flush_all", {"queues": list(self.queues)})

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until the queue has no unfinished job (queued, scheduled or running).

        Raises:
          QueueJoinTimeout: when ``timeout`` (ms) elapses first.
        """
        queue_name = self._require_queue(queue_name)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        delay = 0.005
        while True:
            with self.runtime.pool().connection() as conn:
                row = db.fetch_one(conn, "job_count_unfinished", {"queue": queue_name})
            if row is not None and row["jobs"] == 0:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def heartbeat_now(self) -> list[dict[str, Any]]:
        """Run one heartbeat at once (extend leases, rescue expired ones)."""
        self._start_worker_services()
        assert self._heartbeat is not None
        return self._heartbeat.beat()

    def wait_for_acks(self, timeout: float = 10.0) -> bool:
        """Block until every ack handed in so far is written."""
        return self._flusher.wait_idle(timeout)

    def close(self) -> None:
        """Stop the background threads, write pending acks and stats, close the pool.

        Bounded in time whatever the database does: every statement of the shutdown
        shares one budget (:data:`receiptq.pg.outage.SHUTDOWN_BUDGET_S`)."""
        if "settings" not in self.__dict__:  # never used: nothing was opened
            return
        self.runtime.gate.start_shutdown()
        for consumer in self._holdings.consumers():
            consumer.close()  # type: ignore[attr-defined]
        self._settle.last_words()
        self.runtime.stop_services()
        self._settle.close()  # before the flusher: a stored retry is counted by it
        self.runtime.close()  # a reopened broker waits normally
