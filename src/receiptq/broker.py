"""A Dramatiq broker on PostgreSQL (psycopg 3).

Jobs live in ``receiptq.jobs``; a consumer claims a batch of ready jobs in one
statement (``FOR UPDATE SKIP LOCKED``, priority order), holds them under a lease
that the process's heartbeat extends, and acks them in batches. Delays stay in
the table (``run_at``): Dramatiq's delay queues are declared for compatibility
but their consumers never touch the database.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import traceback
import weakref
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, cast

import psycopg
from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.common import dq_name, q_name
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from receiptq import db
from receiptq.config import database_url, env_float, env_int, validate_queue_name
from receiptq.middleware import BackoffRetries, receiptq_middleware
from receiptq.pg.delivery import JobProxy
from receiptq.pg.flusher import Flusher
from receiptq.pg.heartbeat import Heartbeat, WorkerStatus, new_worker_id
from receiptq.pg.listener import Listener
from receiptq.pg.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    JobRow,
    MessageError,
    decode_message,
    job_row,
)
from receiptq.pg.pending_retries import UNAVAILABLE, PendingRetries
from receiptq.tiers import UNTIERED, StrideState, TierPolicy, quotas

__all__ = ["JobProxy", "MessageError", "PostgresBroker"]

logger = logging.getLogger(__name__)

#: Lease on a claimed job (s); the heartbeat renews it every lease/3.
DEFAULT_LEASE_S = 30.0
#: How often an idle consumer looks for work without a notification (ms).
DEFAULT_POLL_INTERVAL_MS = 500
#: Connections in the process's pool.
DEFAULT_POOL_MAX_SIZE = 6
#: How often a consumer looks for tier classes its policy does not name (s).
CLASS_CHECK_INTERVAL_S = 10.0
#: How a claim goes: see :meth:`PostgresBroker.claim`.
ClaimPath = Literal["locked", "fair", "plain"]
#: Dramatiq's Retries default, used when no Retries middleware says otherwise.
DEFAULT_MAX_RETRIES = 20
#: Option set on the message ``enqueue`` returns when its ``unique_key`` was taken.
DUPLICATE_OPTION = "duplicate"


class _DeliveryClock(Middleware):
    """Notes when each delivery starts running (for latency and run-time stats, and
    for monitoring: a started delivery is running, a claimed one only reserved)."""

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if isinstance(message, JobProxy):
            message.started_at = time.time()
            if isinstance(broker, PostgresBroker):
                broker._note_started(message)


def _middleware_or_default(middleware: list[Middleware] | None) -> list[Middleware]:
    """receiptq's stack when the caller gave none; a warning (once) for a stack whose
    retries ignore PermanentError and RetryAfter."""
    if middleware is None:
        return receiptq_middleware()
    if any(isinstance(m, Retries) and not isinstance(m, BackoffRetries) for m in middleware):
        _warn_plain_retries()
    return middleware


@functools.cache
def _warn_plain_retries() -> None:
    logger.warning(
        "PostgresBroker built with Dramatiq's plain Retries middleware: PermanentError and "
        "RetryAfter are retried like any error and never dead-lettered at once; use "
        "receiptq.middleware.receiptq_middleware() (or BackoffRetries in place of Retries)"
    )


class PostgresBroker(Broker):
    """A Dramatiq broker whose queues, delays, leases and dead letters live in PostgreSQL.

    Parameters:
      url(str): PostgreSQL URL. Default: ``RECEIPTQ_DATABASE_URL``, then
        ``DATABASE_URL``, then the embedded PostgreSQL under ``RECEIPTQ_HOME``.
      middleware(list[Middleware]): as for :class:`dramatiq.Broker`. Default:
        :func:`receiptq.middleware.receiptq_middleware` (Dramatiq's defaults with
        backoff retries that honour ``PermanentError`` and ``RetryAfter``, circuit
        breakers and ``CurrentMessage``), not Dramatiq's default list.
      lease_s(float): lease of a claimed job, in seconds (``RECEIPTQ_LEASE_S``, 30).
      poll_interval_ms(int): idle polling interval (``RECEIPTQ_POLL_INTERVAL_MS``, 500).
      pool_max_size(int): connections in this process's pool (``RECEIPTQ_POOL_MAX_SIZE``, 6).
      max_message_bytes(int): largest encoded message (``RECEIPTQ_MAX_MESSAGE_BYTES``, 1 MiB).
      listen(bool): use LISTEN/NOTIFY wake-ups (``RECEIPTQ_LISTEN``, on); off behind
        a pooler in transaction mode.
      ack_flush_ms(int): how long acks are batched, at most (``RECEIPTQ_ACK_FLUSH_MS``, 5).
      tiers(TierPolicy): tiers, their weights and priority offsets (``RECEIPTQ_TIERS``,
        ``enterprise:6:0,pro:3:10,free:1:20``); see :mod:`receiptq.tiers`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        middleware: list[Middleware] | None = None,
        lease_s: float | None = None,
        poll_interval_ms: int | None = None,
        pool_max_size: int | None = None,
        max_message_bytes: int | None = None,
        listen: bool | None = None,
        ack_flush_ms: int | None = None,
        tiers: TierPolicy | None = None,
    ) -> None:
        # The URL first: a malformed one fails here, before anything else is set up.
        self.url = database_url(url, setting="PostgresBroker(url=...)")
        super().__init__(middleware=_middleware_or_default(middleware))
        self.tier_policy = tiers or TierPolicy.from_env()
        self.lease_s = lease_s or env_float("RECEIPTQ_LEASE_S", DEFAULT_LEASE_S)
        self.poll_interval_s = (
            poll_interval_ms or env_int("RECEIPTQ_POLL_INTERVAL_MS", DEFAULT_POLL_INTERVAL_MS)
        ) / 1000
        self.pool_max_size = pool_max_size or env_int(
            "RECEIPTQ_POOL_MAX_SIZE", DEFAULT_POOL_MAX_SIZE
        )
        self.max_message_bytes = max_message_bytes or env_int(
            "RECEIPTQ_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES
        )
        self.listen = (
            listen if listen is not None else os.environ.get("RECEIPTQ_LISTEN", "1") != "0"
        )
        self.queues: dict[str, None] = {}
        self.worker_id = new_worker_id()
        self._ack_flush_ms = ack_flush_ms or env_int("RECEIPTQ_ACK_FLUSH_MS", 5)
        self._lock = threading.RLock()  # the first heartbeat runs under it
        self._pid = os.getpid()
        self._pool: ConnectionPool | None = None
        self._flusher = Flusher(self._get_pool, ack_flush_ms=self._ack_flush_ms)
        self._pending_retries = PendingRetries(self._store_kept_retry)
        self._listener: Listener | None = None
        self._heartbeat: Heartbeat | None = None
        self._consumers: set[_PostgresConsumer] = set()
        self._retried: set[str] = set()  # message ids re-queued while being delivered here
        self._in_flight: set[int] = set()  # job ids claimed here and not finished yet
        self._started: dict[int, tuple[int, float]] = {}  # of those, started: (attempt, at)
        self._local = threading.local()
        self.add_middleware(_DeliveryClock())
        # A forked child (Dramatiq's worker processes) starts with no pool and no
        # threads of its parent: give it fresh ones, and an identity of its own.
        this = weakref.ref(self)

        def reset_in_child() -> None:
            broker = this()
            if broker is not None:
                broker._reset_after_fork()

        os.register_at_fork(after_in_child=reset_in_child)
        atexit.register(self._flush_at_exit)

    def _reset_after_fork(self) -> None:
        self._lock = threading.RLock()  # the first heartbeat runs under it
        self._pid = os.getpid()
        self._pool = None
        self._flusher = Flusher(self._get_pool, ack_flush_ms=self._ack_flush_ms)
        self._pending_retries = PendingRetries(self._store_kept_retry)
        self._listener = None
        self._heartbeat = None
        self._consumers = set()
        self._retried = set()
        self._in_flight = set()
        self._started = {}
        self.worker_id = new_worker_id()

    def _flush_at_exit(self) -> None:
        """Write acks and statistics still buffered when the interpreter exits."""
        if self._pool is not None and self._pid == os.getpid():
            self._flusher.close()

    # -- connections ------------------------------------------------------------------

    def _get_pool(self) -> ConnectionPool:
        """This process's pool, opened on first use."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = db.open_pool(
                        self.url, max_size=self.pool_max_size, generic_plans=True
                    )
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one statement: the caller's transaction if one is bound
        with :meth:`transaction`, else one from the pool (autocommit)."""
        bound = getattr(self._local, "conn", None)
        if bound is not None:
            yield bound
        else:
            with self._get_pool().connection() as conn:
                yield conn

    @contextmanager
    def pool_connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection from this process's pool (autocommit), never a transaction
        bound with :meth:`transaction`: for writes that must commit on their own at
        once, whatever the caller's transaction does (e.g. circuit-breaker state)."""
        with self._get_pool().connection() as conn:
            yield conn

    @contextmanager
    def transaction(self, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
        """Send messages inside the caller's own transaction on ``conn``.

        Inside the block, ``actor.send(...)`` (and :meth:`enqueue_many`) write
        on ``conn`` without committing, so the jobs commit or roll back with the
        caller's own rows::

            with psycopg.connect(url) as conn, conn.transaction(), broker.transaction(conn):
                conn.execute("INSERT INTO receipts ...")
                process_receipt.send(receipt_id)
        """
        previous = getattr(self._local, "conn", None)
        self._local.conn = conn
        try:
            yield conn
        finally:
            self._local.conn = previous

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

    def _max_retries(self, actor_name: str) -> int | None:
        actor = self.actors.get(actor_name)
        if actor is not None and "max_retries" in actor.options:
            return actor.options["max_retries"]
        for middleware in self.middleware:
            if isinstance(middleware, Retries):
                return middleware.max_retries
        return DEFAULT_MAX_RETRIES

    def _row(self, message: Message[Any], delay: int | None) -> JobRow:
        actor = self.actors.get(message.actor_name)
        return job_row(
            message,
            delay_ms=delay,
            actor_priority=actor.priority if actor is not None else 0,
            max_retries=self._max_retries(message.actor_name),
            max_bytes=self.max_message_bytes,
            tiers=self.tier_policy,
        )

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
                self._count_sent(conn, {(row.queue, row.actor): 1})
        if stored is None:
            logger.info(
                "dropped message %s: unique_key %r is queued or running",
                row.message_id,
                row.unique_key,
            )
            message = message.copy(options={DUPLICATE_OPTION: True})
        elif stored["requeued"]:
            self._retried.add(row.message_id)
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
        for message in messages:
            self.emit_before("enqueue", message, delay)
        rows = [self._row(message, delay) for message in messages]
        columns = {
            "message_ids": [r.message_id for r in rows],
            "queues": [r.queue for r in rows],
            "actors": [r.actor for r in rows],
            "priorities": [r.priority for r in rows],
            "run_ats": [r.run_at for r in rows],
            "delays_s": [r.delay_s for r in rows],
            "max_attempts": [r.max_attempts for r in rows],
            "tiers": [r.tier for r in rows],
            "user_ids": [r.user_id for r in rows],
            "unique_keys": [r.unique_key for r in rows],
            "messages": [r.message for r in rows],
        }
        with db.explained(self.url), self.connection() as conn:
            stored = db.fetch_all(conn, "job_enqueue_many", columns)
            self._count_sent(conn, Counter((r["queue"], r["actor"]) for r in stored))
        for message in messages:
            self.emit_after("enqueue", message, delay)
        return len(stored)

    def _count_sent(
        self, conn: psycopg.Connection[Any], sent: Mapping[tuple[str, str], int]
    ) -> None:
        """Count stored jobs in the statistics once they commit: now on an autocommit
        connection, else when the caller's transaction commits (a rolled-back send
        is never counted)."""
        if not sent:
            return
        if conn.info.transaction_status == TransactionStatus.IDLE:
            for (queue, actor), n in sent.items():
                self._flusher.count(queue, actor, enqueued=n)
            return
        row = db.fetch_one(conn, "transaction_id")
        assert row is not None
        self._flusher.count_on_commit(row["xid"], dict(sent))

    # -- consuming --------------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        canonical = self._require_queue(queue_name)
        if canonical != queue_name:
            return _DelayQueueConsumer(timeout)
        self._start_worker_services()
        consumer = _PostgresConsumer(self, queue_name, prefetch, timeout)
        with self._lock:
            self._consumers.add(consumer)
        return consumer

    def _start_worker_services(self) -> None:
        with self._lock:
            if self.listen and self._listener is None:
                self._listener = Listener(self.url, self._wake)
            if self._heartbeat is None:
                self._heartbeat = Heartbeat(
                    self._get_pool,
                    worker_id=self.worker_id,
                    lease_s=self.lease_s,
                    interval_s=max(self.lease_s / 3, 0.2),
                    status=self._worker_status,
                    on_rescue=self._count_rescued,
                )

    def _count_rescued(self, outcomes: list[dict[str, Any]]) -> None:
        """Count the jobs of lost workers the rescue moved to the dead letters."""
        for row in outcomes:
            if row["outcome"] == "dead":
                self._flusher.count(row["queue"], row["actor"], dead_lettered=row["jobs"])

    def throttled_reason(self) -> str | None:
        """Why this worker does not claim now (host or database short), or None."""
        heartbeat = self._heartbeat
        return None if heartbeat is None else heartbeat.throttled_reason

    def _worker_status(self) -> WorkerStatus:
        with self._lock:
            queues = sorted({c.queue_name for c in self._consumers})
            return WorkerStatus(queues, list(self._in_flight), dict(self._started))

    def _note_started(self, message: JobProxy) -> None:
        """A worker thread started this delivery (the heartbeat reports it running)."""
        assert message.started_at is not None
        with self._lock:
            if message.job_id in self._in_flight:
                self._started[message.job_id] = (message.attempt, message.started_at)

    def _land(self, job_ids: Iterable[int]) -> None:
        """These deliveries are over here: the heartbeat stops renewing their leases."""
        with self._lock:
            for job_id in job_ids:
                self._in_flight.discard(job_id)
                self._started.pop(job_id, None)

    def _wake(self, payload: str) -> None:
        """A notification: ``queue`` (a job is due now), ``later:queue`` (jobs were
        scheduled) or ``tiered:queue`` (jobs with a tier arrived)."""
        kind, _, queue_name = payload.rpartition(":") if ":" in payload else ("", "", payload)
        with self._lock:
            consumers = [c for c in self._consumers if c.queue_name == queue_name]
        for consumer in consumers:
            consumer.wake(scheduled=kind in ("later", "tiered"), tiered=kind == "tiered")

    def _forget(self, consumer: _PostgresConsumer) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def claim(
        self,
        queue_name: str,
        limit: int,
        stride: StrideState | None = None,
        *,
        path: ClaimPath = "locked",
    ) -> list[JobProxy]:
        """Claim ready jobs of a queue for this process: about ``limit`` of them.

        ``stride`` is the claimer's fair-share state across tier classes (a fresh
        one when None). ``path`` is how (see :meth:`claim_path`): ``"locked"``
        through the claim function, which honours pause and caps (never more than
        ``limit``); ``"fair"`` the plain prepared statement that takes each class's
        quota, for a queue that is neither paused nor capped (it may take one job
        more than ``limit`` per class that was idle and has work again); ``"plain"``
        a plain statement for the untiered class alone. Rows that cannot become
        messages go straight to the dead letters.
        """
        stride = stride if stride is not None else StrideState()
        if path == "plain":
            params = {**self._claim_params(queue_name, [UNTIERED], [limit]), "limit": limit}
            with self._get_pool().connection() as conn:
                return self._proxies(queue_name, db.fetch_all(conn, "job_claim_plain", params))
        classes = self.tier_policy.classes(stride.seen | stride.passes.keys())
        weights = [self.tier_policy.weight(c) for c in classes]
        if path == "locked":
            return self._claim_locked(queue_name, limit, stride, classes, weights)
        by_class = dict(zip(classes, weights, strict=True))
        rows = []
        # A class that lost every slot last time is not probed; while every probed
        # class turns out idle, claim again, so that such a class gets the slots now.
        for _ in classes:
            counts = quotas(classes, stride.passes_for(classes), weights, limit, stride.idle)
            rows = self._claim_classes(queue_name, classes, counts)
            claimed = Counter(row["tier"] for row in rows)
            idle = [c for c, n in zip(classes, counts, strict=True) if n and c not in claimed]
            stride.charge(claimed, idle, by_class)
            if rows or all(n for c, n in zip(classes, counts, strict=True) if c not in idle):
                break
        return self._proxies(queue_name, rows)

    def _claim_params(
        self, queue_name: str, classes: list[str], counts: list[int]
    ) -> dict[str, Any]:
        return {
            "queue": queue_name,
            "worker_id": self.worker_id,
            "lease_s": self.lease_s,
            "classes": classes,
            "quotas": counts,
        }

    def _claim_classes(
        self, queue_name: str, classes: list[str], counts: list[int]
    ) -> list[dict[str, Any]]:
        params = self._claim_params(queue_name, classes, counts)
        with self._get_pool().connection() as conn:
            return db.fetch_all(conn, "job_claim_classes", params)

    def _claim_locked(
        self,
        queue_name: str,
        limit: int,
        stride: StrideState,
        classes: list[str],
        weights: list[float],
    ) -> list[JobProxy]:
        """The claim function: pause and caps honoured, at most ``limit`` jobs, the
        ``limit`` with the smallest stride keys among each class's candidates."""
        passes = stride.passes_for(classes)
        if stride.idle is None:  # nothing known yet: any class may fill the claim
            counts = [limit] * len(classes)
        else:
            counts = [max(1, n) for n in quotas(classes, passes, weights, limit, stride.idle)]
        params = {
            **self._claim_params(queue_name, classes, counts),
            "limit": limit,
            "passes": passes,
            "weights": weights,
        }
        with self._get_pool().connection() as conn:
            rows = db.fetch_all(conn, "job_claim_batch", params)
        if rows:
            by_class = dict(zip(classes, weights, strict=True))
            stride.charge(Counter(row["tier"] for row in rows), rows[0]["idle"], by_class)
        return self._proxies(queue_name, rows)

    def claim_path(self, queue_name: str) -> ClaimPath:
        """How a queue's claims go: ``"locked"`` when it is paused or capped, else
        ``"fair"`` when it has queued jobs with a tier, else ``"plain"``."""
        with self._get_pool().connection() as conn:
            row = db.fetch_one(conn, "queue_claim_path", {"queue": queue_name})
        if row is None or row["restricted"]:
            return "locked"
        return "fair" if row["tiered"] else "plain"

    def _proxies(self, queue_name: str, rows: list[dict[str, Any]]) -> list[JobProxy]:
        rows.sort(key=lambda r: (r["priority"], r["user_round"], r["run_at"], r["id"]))
        proxies = []
        for row in rows:
            try:
                message = decode_message(row["message"])
            except MessageError as exc:
                logger.error("job %s has an undecodable message; dead-lettering it", row["id"])
                self._dead_letter(row["id"], row["attempt"], "undecodable", exc, None)
                self._flusher.count(queue_name, row["actor"], dead_lettered=1)
                continue
            if message.queue_name != queue_name:  # the worker routes acks by queue name
                message = message.copy(queue_name=queue_name)
            proxies.append(
                JobProxy(message, job_id=row["id"], attempt=row["attempt"], due_at=row["due_at"])
            )
        with self._lock:
            self._in_flight.update(p.job_id for p in proxies)
        return proxies

    def tier_classes(self, queue_name: str) -> list[str]:
        """The tier classes ('' = no tier) that have jobs queued in a queue."""
        with self._get_pool().connection() as conn:
            return [r["cls"] for r in db.fetch_all(conn, "job_tier_classes", {"queue": queue_name})]

    def seconds_until_due(self, queue_name: str) -> float | None:
        with self._get_pool().connection() as conn:
            row = db.fetch_one(conn, "job_seconds_until_due", {"queue": queue_name})
        return None if row is None else row["seconds"]

    def _timings(self, message: JobProxy) -> tuple[float | None, float | None]:
        if message.started_at is None:
            return None, None
        run_ms = max(0.0, (time.time() - message.started_at) * 1000)
        latency_ms = max(0.0, (message.started_at - message.due_at) * 1000)
        return run_ms, latency_ms

    def _retries_failures(self) -> bool:
        return any(isinstance(m, Retries) for m in self.middleware)

    def postpone(self, message: MessageProxy, *, delay_ms: int) -> None:
        """Put a delivery back to queued for ``delay_ms`` without using up an attempt.

        For middleware that decides, before the actor runs, that now is not the
        time (an open circuit breaker, a throttle): call this, then raise
        ``dramatiq.middleware.SkipMessage`` so the actor does not run. The ack
        that follows the skip leaves the postponed row alone.
        """
        if not isinstance(message, JobProxy):
            raise TypeError("postpone() takes a message delivered by a PostgresBroker")
        params = {
            "id": message.job_id,
            "attempt": message.attempt,
            "delay_s": max(delay_ms, 0) / 1000,
        }
        with self._get_pool().connection() as conn:
            db.execute(conn, "job_postpone", params)
        message.postponed = True
        self._land([message.job_id])
        self._flusher.count(message.queue_name, message.actor_name, postponed=1)

    def keep_retry(self, message: MessageProxy, delay_ms: int, error: Exception) -> bool:
        """Re-queueing a failed delivery (a retry in ``delay_ms``) raised ``error``.

        If the database was unavailable, the retry is kept in this process and stored
        once the database answers, after the delivery's ack (its lease is renewed
        meanwhile; if the process dies, the lease brings the job back): returns
        True. False: ``error`` is something else, for the caller to raise.
        """
        if not isinstance(error, UNAVAILABLE) or not isinstance(message, JobProxy):
            return False
        if self._pending_retries.keep(message.job_id, message, delay_ms):
            logger.warning(
                "the database is unavailable (%s); the retry of message %s is kept here "
                "and stored once it answers",
                (str(error).strip().splitlines() or [type(error).__name__])[0],
                message.message_id,
            )
        # Else too many are kept: finish() leaves this one to its lease, and says so.
        return True

    def _store_kept_retry(self, message: JobProxy, delay_ms: int) -> None:
        """Store a retry kept while the database was unavailable; the delivery is over
        then (no ack: the retry re-queued its row)."""
        row = self._row(cast(Message[Any], message), delay_ms)  # as Retries' enqueue gets it
        params = {**row.params(), "worker_id": self.worker_id}
        with self._get_pool().connection() as conn:
            stored = db.fetch_one(conn, "job_enqueue", params)
        self._land([message.job_id])
        if stored is None:
            logger.info(
                "the kept retry of message %s was dropped: its lease ran out meanwhile and "
                "the job went back to the queue",
                message.message_id,
            )
            return
        self._count_finished(message, failed=True, retried=True)

    def finish(self, message: JobProxy) -> None:
        """Ack: the delivery is over (succeeded, or failed and re-queued by a retry)."""
        if self._pending_retries.hand_over(message.job_id):
            return  # its retry is stored once the database answers; finished then
        self._land([message.job_id])
        if message.postponed:
            return
        failed = message._exception is not None
        retried = message.message_id in self._retried
        self._retried.discard(message.message_id)
        if failed and not retried and self._retries_failures():
            # Retries meant to re-queue this job but could not store it (it logs why):
            # deleting the row would lose the job, so its lease runs out and it is
            # rescued like the job of a lost worker.
            logger.warning(
                "the retry of message %s was not stored; it runs again once its lease expires",
                message.message_id,
            )
            return
        self._flusher.ack(message.job_id, message.attempt)
        self._count_finished(message, failed=failed, retried=retried)

    def _count_finished(self, message: JobProxy, *, failed: bool, retried: bool) -> None:
        run_ms, latency_ms = self._timings(message)
        self._flusher.finished(
            message.queue_name,
            message.actor_name,
            outcome="failed" if failed else "succeeded",
            run_ms=run_ms,
            latency_ms=latency_ms,
        )
        if failed and retried:
            self._flusher.count(message.queue_name, message.actor_name, retried=1)

    def bury(self, message: JobProxy) -> None:
        """Nack: move the delivery to the dead letters with its error."""
        exception = message._exception
        # A middleware that failed the message may say why (BackoffRetries does).
        reason = message.options.get("dead_letter_reason") or "failed"
        if exception is not None and type(exception).__name__ == "ActorNotFound":
            reason = "unknown actor"
        # The exception's own traceback: Retries' "traceback" option may be an earlier attempt's.
        tb = message.options.get("traceback") if exception is None else None
        self._land([message.job_id])
        self._dead_letter(message.job_id, message.attempt, reason, exception, tb)
        self._retried.discard(message.message_id)
        run_ms, latency_ms = self._timings(message)
        self._flusher.finished(
            message.queue_name,
            message.actor_name,
            outcome="failed" if exception is not None else "dead_lettered",
            run_ms=run_ms,
            latency_ms=latency_ms,
        )
        if exception is not None:
            self._flusher.count(message.queue_name, message.actor_name, dead_lettered=1)

    def _dead_letter(
        self,
        job_id: int,
        attempt: int,
        reason: str,
        exception: BaseException | None,
        tb: str | None,
    ) -> None:
        if tb is None and exception is not None:
            tb = "".join(traceback.format_exception(exception))
        params = {
            "id": job_id,
            "attempt": attempt,
            "reason": reason,
            "error_type": type(exception).__name__ if exception is not None else None,
            "error": str(exception)
            if exception is not None
            else "message.fail() without an exception",
            "traceback": tb,
        }
        with self._get_pool().connection() as conn:
            db.fetch_all(conn, "job_dead_letter", params)

    def give_back(self, messages: Iterable[JobProxy]) -> None:
        """Requeue deliveries that never started, without using up an attempt."""
        messages = list(messages)
        if not messages:
            return
        self._land(m.job_id for m in messages)
        params = {"ids": [m.job_id for m in messages], "attempts": [m.attempt for m in messages]}
        with self._get_pool().connection() as conn:
            db.execute(conn, "job_requeue_unstarted", params)

    # -- housekeeping -----------------------------------------------------------------

    def flush(self, queue_name: str) -> None:
        with self._get_pool().connection() as conn:
            db.execute(conn, "job_flush_queue", {"queue": self._require_queue(queue_name)})

    def flush_all(self) -> None:
        with self._get_pool().connection() as conn:
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
            with self._get_pool().connection() as conn:
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
        """Stop the background threads, write pending acks and stats, close the pool."""
        with self._lock:
            consumers = list(self._consumers)
        for consumer in consumers:
            consumer.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._heartbeat is not None:  # before the flusher: a last rescue still counts
            self._heartbeat.close()
            self._heartbeat = None
        self._pending_retries.close()  # before the flusher: a stored retry is counted by it
        self._flusher.close()
        if self._pool is not None:
            self._pool.close()
        self._pool = None
        atexit.unregister(self._flush_at_exit)


class _DelayQueueConsumer(Consumer):
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


class _PostgresConsumer(Consumer):
    """Hands out claimed jobs one by one; claims a new batch when enough slots are free.

    ``prefetch`` bounds the deliveries this consumer holds (claimed and not yet
    acked). It claims again only when the buffer is empty and at least a quarter
    of the slots are free, so that a busy queue costs one claim per batch, not
    one per job.
    """

    def __init__(
        self, broker: PostgresBroker, queue_name: str, prefetch: int, timeout_ms: int
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout_s = timeout_ms / 1000
        self.outstanding = 0
        self._min_claim = max(1, self.prefetch // 4)
        self._stride = StrideState()
        self._classes_checked_at = 0.0
        # When the next scheduled job is due (monotonic), as last read, and when to
        # read it again: after a poll interval, or at once when a job is scheduled.
        self._next_due: float | None = None
        self._due_read_at = -1e9
        self._due_stale = True
        # How claims go (see PostgresBroker.claim_path): re-read every poll
        # interval; a "tiered:" notification turns "plain" into "fair" at once.
        self._path: ClaimPath = "locked"
        self._mode_read_at = -1e9
        self._buffer: deque[JobProxy] = deque()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._closed = False

    def wake(self, *, scheduled: bool = False, tiered: bool = False) -> None:
        if scheduled:
            self._due_stale = True  # a job was scheduled: re-read when the next one is due
        if tiered and self._path == "plain":
            self._path = "fair"  # jobs with a tier arrived: share claims across tiers
        self._wakeup.set()

    def _free_slots(self) -> int:
        with self._lock:
            return self.prefetch - self.outstanding

    def _release(self) -> None:
        with self._lock:
            self.outstanding -= 1
            free = self.prefetch - self.outstanding
        if free >= self._min_claim:
            self._wakeup.set()

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self.timeout_s
        while not self._closed:
            if self._buffer:
                return self._buffer.popleft()
            self._wakeup.clear()
            free = self._free_slots()
            wait_s = self.broker.poll_interval_s
            throttled = self.broker.throttled_reason()
            if throttled is None and free >= self._min_claim:
                self._check_classes()
                claimed = self.broker.claim(self.queue_name, free, self._stride, path=self._path)
                if claimed:
                    with self._lock:
                        self.outstanding += len(claimed)
                    self._buffer.extend(claimed)
                    continue
                due = self._seconds_until_due()
                if due is not None:
                    wait_s = min(wait_s, max(due, 0.001))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._wakeup.wait(min(wait_s, remaining))
        return None

    def _seconds_until_due(self) -> float | None:
        """Seconds until the next scheduled job is due, read from the database at
        most once per poll interval unless a job was scheduled meanwhile (so that a
        busy queue's wasted wake-ups cost one claim, not two queries)."""
        now = time.monotonic()
        if self._due_stale or now - self._due_read_at >= self.broker.poll_interval_s:
            self._due_stale = False
            self._due_read_at = now
            due = self.broker.seconds_until_due(self.queue_name)
            self._next_due = None if due is None else now + due
        return None if self._next_due is None else self._next_due - now

    def _check_classes(self) -> None:
        """Every poll interval, decide how to claim (see PostgresBroker.claim_path); now
        and then, look for tier classes the policy does not name (so that jobs of
        a tier removed from RECEIPTQ_TIERS still get claimed)."""
        now = time.monotonic()
        if now - self._mode_read_at >= self.broker.poll_interval_s:
            self._mode_read_at = now
            self._path = self.broker.claim_path(self.queue_name)
        if now - self._classes_checked_at >= CLASS_CHECK_INTERVAL_S:
            self._classes_checked_at = now
            self._stride.seen = set(self.broker.tier_classes(self.queue_name))

    def ack(self, message: MessageProxy) -> None:
        assert isinstance(message, JobProxy)
        self.broker.finish(message)
        self._release()

    def nack(self, message: MessageProxy) -> None:
        assert isinstance(message, JobProxy)
        self.broker.bury(message)
        self._release()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        proxies = [m for m in messages if isinstance(m, JobProxy)]
        self.broker.give_back(proxies)
        with self._lock:
            self.outstanding -= len(proxies)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        buffered = list(self._buffer)
        self._buffer.clear()
        try:
            self.broker.give_back(buffered)
        except Exception:
            logger.warning(
                "could not give back %d claimed jobs; their leases will expire",
                len(buffered),
                exc_info=True,
            )
        self.broker._forget(self)
