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
from dramatiq.common import dq_name, iter_queue, q_name
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from receiptq import db
from receiptq.config import embedded_database_url, validate_queue_name
from receiptq.errors import ConfigError
from receiptq.middleware import BackoffRetries, receiptq_middleware
from receiptq.middleware.backoff import DEFAULT_MAX_RETRIES
from receiptq.pg.delivery import JobProxy
from receiptq.pg.flusher import Flusher
from receiptq.pg.heartbeat import Heartbeat, WorkerStatus, new_worker_id
from receiptq.pg.listener import Listener
from receiptq.pg.messages import (
    JobRow,
    MessageError,
    decode_message,
    job_row,
)
from receiptq.pg.outage import (
    SHUTDOWN_BUDGET_S,
    Backoff,
    DatabaseWatch,
    PoolGate,
    database_problem,
    first_line,
)
from receiptq.pg.pending_retries import PendingRetries, database_away
from receiptq.settings import Settings, validate_database_url
from receiptq.tiers import UNTIERED, StrideState, TierPolicy, quotas

__all__ = ["DEFAULT_MAX_RETRIES", "JobProxy", "MessageError", "PostgresBroker"]

#: The attributes a broker sets from its settings on first use (see ``__getattr__``).
_FROM_SETTINGS = frozenset(
    {
        "settings",
        "url",
        "tier_policy",
        "lease_s",
        "poll_interval_s",
        "pool_max_size",
        "max_message_bytes",
        "listen",
        "pooler",
        "_flusher",
        "_watch",
        "_gate",
    }
)

logger = logging.getLogger(__name__)

#: How often an idle consumer looks for work without a notification (ms), unless
#: ``RECEIPTQ_POLL_INTERVAL_MS`` says otherwise.
DEFAULT_POLL_INTERVAL_MS = 500
#: How often an idle consumer behind a transaction pooler looks for work (ms), unless
#: ``RECEIPTQ_POLL_INTERVAL_MS`` says otherwise: no notification ever comes there.
DEFAULT_POOLED_POLL_INTERVAL_MS = 200
#: How often a consumer looks for tier classes its policy does not name (s).
CLASS_CHECK_INTERVAL_S = 10.0
#: How a claim goes: see :meth:`PostgresBroker.claim`.
ClaimPath = Literal["locked", "fair", "plain"]
#: Option set on the message ``enqueue`` returns when its ``unique_key`` was taken.
DUPLICATE_OPTION = "duplicate"
#: A consumer's pauses while the database is gone or not migrated (s): growing from
#: the first to the last, so that it claims again within ~2 s of the database's return.
OUTAGE_PAUSE_FIRST_S = 0.1
OUTAGE_PAUSE_MAX_S = 2.0


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


class _WorkerFacts(Middleware):
    """Tells the broker what its consumers need from the Dramatiq worker of this
    process: how many threads it runs (a queue's own prefetch never exceeds them),
    and that shutdown began. Declares the ``prefetch`` actor option (see
    :meth:`PostgresBroker.queue_prefetch`)."""

    actor_options = {"prefetch"}

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Refuse to start, in one line, behind a transaction pooler in session mode."""
        if isinstance(broker, PostgresBroker):
            try:
                db.check_pooler(broker.url)
            except psycopg.Error:
                pass  # the database is away: the worker starts and waits for it
            except ConfigError as exc:
                logger.error("%s", exc)
                raise SystemExit(3) from None  # Dramatiq's "broker connection failed"

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        if isinstance(broker, PostgresBroker):
            broker.worker_threads = worker.worker_threads
            broker.stopping = False  # a broker may serve one worker after another
            broker._open_gate()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Claim no more, and give back at once the jobs waiting in the worker's
        memory. Dramatiq itself gives them back only once the running jobs are done,
        which may be after a PaaS's grace period has run out and the process was
        killed: then they would wait for their leases to expire."""
        if isinstance(broker, PostgresBroker):
            broker.stopping = True
            waiting = [item.message for item in iter_queue(worker.work_queue)]
            broker.give_back_early(m for m in waiting if isinstance(m, JobProxy))


class PostgresBroker(Broker):
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
      poll_interval_ms(int): idle polling interval (``RECEIPTQ_POLL_INTERVAL_MS``, 500).
      pool_max_size(int): connections in this process's pool (``RECEIPTQ_POOL_MAX_SIZE``, 6).
      max_message_bytes(int): largest encoded message (``RECEIPTQ_MAX_MESSAGE_BYTES``, 1 MiB).
      listen(bool): use LISTEN/NOTIFY wake-ups (``RECEIPTQ_LISTEN``, on); always off
        with ``pooler="transaction"``.
      pooler(str): ``"session"`` (direct connections or a session pooler) or
        ``"transaction"`` (a pooler in transaction mode: no prepared statements, no
        session settings, no LISTEN; consumers poll every 200 ms unless
        ``poll_interval_ms`` says otherwise) for every connection to ``url`` in this
        process (``RECEIPTQ_POOLER``, session).
      ack_flush_ms(int): how long acks are batched, at most (``RECEIPTQ_ACK_FLUSH_MS``, 5).
      tiers(TierPolicy): tiers, their weights and priority offsets (``RECEIPTQ_TIERS``,
        ``enterprise:6:0,pro:3:10,free:1:20``); see :mod:`receiptq.tiers`.
    """

    settings: Settings
    url: str
    tier_policy: TierPolicy
    lease_s: float
    poll_interval_s: float
    pool_max_size: int
    max_message_bytes: int
    listen: bool
    pooler: str
    _flusher: Flusher
    _watch: DatabaseWatch
    _gate: PoolGate

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
    ) -> None:
        # A given URL first: a malformed one fails here, before anything else is set up.
        if url is not None:
            validate_database_url(url, "PostgresBroker(url=...)")
        if pooler is not None:
            db.pooler_mode(pooler, "PostgresBroker(pooler=...)")
        given = {
            "database_url": url,
            "lease_s": lease_s,
            "poll_interval_ms": poll_interval_ms,
            "pool_max_size": pool_max_size,
            "max_message_bytes": max_message_bytes,
            "listen": listen,
            "ack_flush_ms": ack_flush_ms,
            "pooler": pooler,
        }
        self._given = (settings, given, tiers)
        self._settings_read: Settings | None = None
        self._lock = threading.RLock()  # the first heartbeat runs under it
        super().__init__(middleware=_middleware_or_default(middleware))
        self.queues: dict[str, None] = {}
        self.worker_id = new_worker_id()
        self._pid = os.getpid()
        self._pool: ConnectionPool | None = None
        self._pending_retries = PendingRetries(self._store_kept_retry)
        self._listener: Listener | None = None
        self._heartbeat: Heartbeat | None = None
        self._consumers: set[_PostgresConsumer] = set()
        self._retried: set[str] = set()  # message ids re-queued while being delivered here
        self._in_flight: dict[int, str] = {}  # job id -> queue, claimed here, not finished
        self._held: Counter[str] = Counter()  # per queue: len of its _in_flight entries
        self._started: dict[int, tuple[int, float]] = {}  # of those, started: (attempt, at)
        self._unreturned: list[JobProxy] = []  # to give back at the end of the shutdown
        #: Threads of this process's Dramatiq worker (None: no worker booted here).
        self.worker_threads: int | None = None
        #: The worker's shutdown began.
        self.stopping = False
        self._local = threading.local()
        self.add_middleware(_DeliveryClock())
        self.add_middleware(_WorkerFacts())
        # A forked child (Dramatiq's worker processes) starts with no pool and no
        # threads of its parent: give it fresh ones, and an identity of its own.
        this = weakref.ref(self)

        def reset_in_child() -> None:
            broker = this()
            if broker is not None:
                broker._reset_after_fork()

        os.register_at_fork(after_in_child=reset_in_child)
        atexit.register(self._flush_at_exit)
        if settings is not None:
            self._configure()  # nothing to read: as soon as given

    def __getattr__(self, name: str) -> Any:
        """An attribute made from the settings: they are read now, on first use."""
        if name not in _FROM_SETTINGS or "_lock" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._configure()
        return object.__getattribute__(self, name)

    def _configure(self) -> None:
        """Read the settings (the given ones, else the environment's) and set what
        depends on them; the embedded PostgreSQL starts here when no URL is set."""
        with self._lock:
            if "settings" in self.__dict__:
                return
            settings = self.read_settings()
            tiers = self._given[2]
            self.url = settings.database_url or embedded_database_url(settings)
            given, overrides, _ = self._given
            if given is not None or overrides["pooler"] is not None:
                # Said for this broker: its URL goes this way in this process (else
                # RECEIPTQ_POOLER, read by receiptq.db for every connection).
                db.use_pooler(settings.pooler, self.url, setting="PostgresBroker(pooler=...)")
            self.pooler = db.pooler(self.url)
            pooled = self.pooler == "transaction"
            self.tier_policy = tiers or TierPolicy.from_env(settings)
            self.lease_s = settings.lease_s
            poll_ms = settings.poll_interval_ms
            if poll_ms is None:
                poll_ms = DEFAULT_POOLED_POLL_INTERVAL_MS if pooled else DEFAULT_POLL_INTERVAL_MS
            self.poll_interval_s = poll_ms / 1000
            self.pool_max_size = settings.pool_max_size
            self.max_message_bytes = settings.max_message_bytes
            self.listen = settings.listen and not pooled
            self._new_process_parts(settings)
            self.settings = settings  # last: its presence says all of the above is set

    def read_settings(self) -> Settings:
        """The settings given, else the environment's (read once), with the given
        values over them; reading them starts nothing (the URL may still be None)."""
        with self._lock:
            if self._settings_read is None:
                given, overrides, _ = self._given
                self._settings_read = (given or Settings.from_env()).replace(**overrides)
            return self._settings_read

    def _new_process_parts(self, settings: Settings) -> None:
        self._flusher = Flusher(self._gated, ack_flush_ms=settings.ack_flush_ms)
        self._watch = DatabaseWatch(self.url)
        self._gate = PoolGate(self._get_pool, self._watch)

    def _reset_after_fork(self) -> None:
        self._lock = threading.RLock()  # the first heartbeat runs under it
        self._pid = os.getpid()
        self._pool = None
        if "settings" in self.__dict__:
            self._new_process_parts(self.settings)
        self._pending_retries = PendingRetries(self._store_kept_retry)
        self._listener = None
        self._heartbeat = None
        self._consumers = set()
        self._retried = set()
        self._in_flight = {}
        self._held = Counter()
        self._started = {}
        self._unreturned = []
        self.worker_threads = None
        self.stopping = False
        self.worker_id = new_worker_id()

    def _flush_at_exit(self) -> None:
        """Write acks and statistics still buffered when the interpreter exits."""
        if self._pool is not None and self._pid == os.getpid():
            self._gate.start_shutdown()
            self._flusher.close()

    # -- connections ------------------------------------------------------------------

    def _get_pool(self) -> ConnectionPool:
        """This process's pool, opened on first use (connecting in the background:
        callers bound their own waits)."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = db.open_pool(
                        self.url, max_size=self.pool_max_size, generic_plans=True, wait=False
                    )
        return self._pool

    def _gated(self) -> PoolGate:
        """The pool as the worker's own parts use it (see :class:`PoolGate`)."""
        return self._gate

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
                self._listener = Listener(self.url, self._wake, watch=self._watch)
            if self._heartbeat is None:
                self._heartbeat = Heartbeat(
                    self._gated,
                    worker_id=self.worker_id,
                    lease_s=self.lease_s,
                    interval_s=max(self.lease_s / 3, 0.2),
                    status=self._worker_status,
                    on_rescue=self._count_rescued,
                    tiers=self.tier_policy,
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

    def held(self, queue_name: str) -> int:
        """Jobs of a queue this process claimed and has not finished: what its
        prefetch bounds, whichever consumer claimed them and whichever acks them
        (Dramatiq acks through the queue's current consumer, which after a consumer
        error is a new one)."""
        with self._lock:
            return self._held[queue_name]

    def _hold(self, queue_name: str, job_ids: Iterable[int]) -> None:
        with self._lock:
            for job_id in job_ids:
                if job_id not in self._in_flight:
                    self._in_flight[job_id] = queue_name
                    self._held[queue_name] += 1

    def _land(self, job_ids: Iterable[int]) -> None:
        """These deliveries are over here: the heartbeat stops renewing their leases,
        and their slots are free again (each once, however often it is landed)."""
        freed = set()
        with self._lock:
            for job_id in job_ids:
                queue_name = self._in_flight.pop(job_id, None)
                self._started.pop(job_id, None)
                if queue_name is not None:
                    self._held[queue_name] -= 1
                    freed.add(queue_name)
            consumers = [c for c in self._consumers if c.queue_name in freed]
        for consumer in consumers:
            consumer.slot_freed()

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
            with self._gate.connection() as conn:
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
        with self._gate.connection() as conn:
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
        with self._gate.connection() as conn:
            rows = db.fetch_all(conn, "job_claim_batch", params)
        if rows:
            by_class = dict(zip(classes, weights, strict=True))
            stride.charge(Counter(row["tier"] for row in rows), rows[0]["idle"], by_class)
        return self._proxies(queue_name, rows)

    def claim_path(self, queue_name: str) -> ClaimPath:
        """How a queue's claims go: ``"locked"`` when it is paused or capped, else
        ``"fair"`` when it has queued jobs with a tier, else ``"plain"``."""
        return self.claim_settings(queue_name)[0]

    def claim_settings(self, queue_name: str) -> tuple[ClaimPath, int | None]:
        """How a queue's claims go (see :meth:`claim_path`), and its prefetch setting
        (``receiptq queue prefetch``; None: not set)."""
        with self._gate.connection() as conn:
            row = db.fetch_one(conn, "queue_claim_path", {"queue": queue_name})
        if row is None:
            return "locked", None
        path: ClaimPath = "locked" if row["restricted"] else "fair" if row["tiered"] else "plain"
        return path, row["prefetch"]

    def queue_prefetch(self, queue_name: str) -> int | None:
        """The smallest ``prefetch`` option of the actors declared on a queue (None:
        none has one): the queue's own prefetch when its setting is not set.

        ``@dramatiq.actor(queue_name="ocr", prefetch=1)``: each worker process holds
        at most one job of the queue (claimed and not finished), so a process with
        threads to spare takes the next one instead of a busy process hoarding it."""
        options = [
            actor.options["prefetch"]
            for actor in self.actors.values()
            if actor.queue_name == queue_name and actor.options.get("prefetch") is not None
        ]
        return min(options, default=None)

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
        self._hold(queue_name, (p.job_id for p in proxies))
        return proxies

    def tier_classes(self, queue_name: str) -> list[str]:
        """The tier classes ('' = no tier) that have jobs queued in a queue."""
        with self._gate.connection() as conn:
            return [r["cls"] for r in db.fetch_all(conn, "job_tier_classes", {"queue": queue_name})]

    def seconds_until_due(self, queue_name: str) -> float | None:
        with self._gate.connection() as conn:
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
        with self._gate.connection() as conn:
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
        if not database_away(error) or not isinstance(message, JobProxy):
            return False
        if self._pending_retries.keep(message.job_id, message, delay_ms):
            logger.warning(
                "the database is unavailable (%s); the retry of message %s is kept here "
                "and stored once it answers",
                first_line(error),
                message.message_id,
            )
        # Else too many are kept: finish() leaves this one to its lease, and says so.
        return True

    def _store_kept_retry(self, message: JobProxy, delay_ms: int) -> None:
        """Store a retry kept while the database was unavailable; the delivery is over
        then (no ack: the retry re-queued its row)."""
        row = self._row(cast(Message[Any], message), delay_ms)  # as Retries' enqueue gets it
        params = {**row.params(), "worker_id": self.worker_id}
        with self._gate.connection() as conn:
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
        self._retried.discard(message.message_id)
        try:
            self._dead_letter(message.job_id, message.attempt, reason, exception, tb)
        except Exception as exc:
            if database_problem(exc) is None:
                raise
            logger.warning(
                "job %s was not dead-lettered (%s); it runs again once its lease expires",
                message.job_id,
                first_line(exc),
            )
            return
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
        with self._gate.connection() as conn:
            db.fetch_all(conn, "job_dead_letter", params)

    def give_back_early(self, messages: Iterable[JobProxy]) -> None:
        """Give back, as shutdown begins, the jobs waiting in the worker's memory; if
        no connection comes within the shutdown's budget (the database is gone, or
        the running jobs hold every pooled connection), try again at the end."""
        messages = list(messages)
        if not self.give_back(messages, at_most_s=SHUTDOWN_BUDGET_S, quiet=True):
            with self._lock:
                self._unreturned.extend(messages)

    def last_words(self) -> None:
        """Once the worker's shutdown reached its consumers (its threads are done):
        every statement from now on shares the shutdown's budget, so that the process
        exits in bounded time whatever the database does. Gives back what could not
        be given back earlier."""
        if self.stopping:
            self._gate.start_shutdown()
        with self._lock:
            unreturned, self._unreturned = self._unreturned, []
        self.give_back(unreturned)

    def _open_gate(self) -> None:
        """Waits for connections as in normal running again (a new worker, a reopened broker)."""
        self._gate = PoolGate(self._get_pool, self._watch)

    def give_back(
        self, messages: Iterable[JobProxy], *, at_most_s: float | None = None, quiet: bool = False
    ) -> bool:
        """Requeue deliveries that never started, without using up an attempt; False
        when the database could not be reached (within ``at_most_s``, if given): they
        are then only let go, their leases run out and they are rescued, keeping their
        place in line (nothing is lost; an attempt is used). ``quiet``: the caller
        says what happens next."""
        messages = list(messages)
        if not messages:
            return True
        self._land(m.job_id for m in messages)
        params = {"ids": [m.job_id for m in messages], "attempts": [m.attempt for m in messages]}
        try:
            with self._gate.connection(at_most_s=at_most_s) as conn:
                db.execute(conn, "job_requeue_unstarted", params)
            return True
        except Exception as exc:
            if database_problem(exc) is None:
                raise
            if not quiet:
                logger.warning(
                    "could not give back %d claimed job(s) (%s); they run again once their "
                    "leases expire",
                    len(messages),
                    first_line(exc),
                )
            return False

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
        """Stop the background threads, write pending acks and stats, close the pool.

        Bounded in time whatever the database does: every statement of the shutdown
        shares one budget (:data:`receiptq.pg.outage.SHUTDOWN_BUDGET_S`)."""
        if "settings" not in self.__dict__:  # never used: nothing was opened
            atexit.unregister(self._flush_at_exit)
            return
        self._gate.start_shutdown()
        with self._lock:
            consumers = list(self._consumers)
        for consumer in consumers:
            consumer.close()
        self.last_words()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._heartbeat is not None:  # before the flusher: a last rescue still counts
            self._heartbeat.close()
            self._heartbeat = None
        self._pending_retries.close()  # before the flusher: a stored retry is counted by it
        self._flusher.close()
        if self._pool is not None:
            self._pool.close(timeout=1.0)
        self._pool = None
        self._open_gate()  # a reopened broker waits normally
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

    ``prefetch`` bounds the jobs of the queue this process holds (claimed and not
    yet finished, counted by the broker: see :meth:`PostgresBroker.held`); a queue's
    own prefetch (:meth:`_prefetch`) may bound it further. Claims come in batches: the
    consumer claims again when a quarter of the slots are free, so that a busy queue
    costs one claim per batch, not one per job. But when work arrived since its last
    claim (a notification, or a poll interval without one), it claims for any free
    slot at once: a job sent after a batch was claimed, and more urgent than what is
    held, waits for one slot, not for a quarter of them (README, Architecture).

    While the database is gone or not migrated the consumer does not raise (Dramatiq
    would log a CRITICAL traceback and reopen it every few seconds): the broker's
    watch says once what is wrong, and the consumer tries again after growing pauses.
    """

    def __init__(
        self, broker: PostgresBroker, queue_name: str, prefetch: int, timeout_ms: int
    ) -> None:
        self.broker = broker
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
        # How claims go (see PostgresBroker.claim_path): re-read every poll
        # interval; a "tiered:" notification turns "plain" into "fair" at once.
        self._path: ClaimPath = "locked"
        self._settings_read_at = -1e9
        self._prefetch_setting: int | None = None  # receiptq queue prefetch
        # Work may have arrived since the last claim (a notification came, or a poll
        # interval passed): claim for any free slot.
        self._news = True
        self._claimed_at = -1e9
        self._outage = Backoff(OUTAGE_PAUSE_FIRST_S, OUTAGE_PAUSE_MAX_S)
        self._retry_at = 0.0  # while the database is gone: no claim before this
        self._buffer: deque[JobProxy] = deque()
        self._wakeup = threading.Event()
        self._closed = False

    @property
    def outstanding(self) -> int:
        """Jobs of this queue the process holds (claimed, not finished)."""
        return self.broker.held(self.queue_name)

    def wake(self, *, scheduled: bool = False, tiered: bool = False) -> None:
        if scheduled:
            self._due_stale = True  # a job was scheduled: re-read when the next one is due
        if tiered and self._path == "plain":
            self._path = "fair"  # jobs with a tier arrived: share claims across tiers
        self._news = True
        self._wakeup.set()

    def _fresh(self) -> bool:
        """Work may have arrived since the last claim."""
        return self._news or time.monotonic() - self._claimed_at >= self.broker.poll_interval_s

    def slot_freed(self) -> None:
        """A job of the queue finished (through whichever consumer)."""
        if self._fresh() or self._free_slots() >= self._min_claim():
            self._wakeup.set()

    def _prefetch(self) -> int:
        """How many jobs of the queue the process may hold: Dramatiq's prefetch, or
        the queue's own (its setting, else its actors' ``prefetch`` option), which
        never exceeds the worker's threads: a slow job then never waits in one
        process's memory while another process has a free thread."""
        own = self._prefetch_setting
        if own is None:
            own = self.broker.queue_prefetch(self.queue_name)
        if own is None:
            return self.prefetch
        return max(1, min(self.prefetch, own, self.broker.worker_threads or own))

    def _min_claim(self) -> int:
        return max(1, self._prefetch() // 4)

    def _free_slots(self) -> int:
        return self._prefetch() - self.broker.held(self.queue_name)

    def _claim_size(self) -> int:
        """How many jobs to claim now (0: none)."""
        if self.broker.stopping or self.broker.throttled_reason() is not None:
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
            pause = self._outage.next()  # the broker's watch said what is wrong, once
            self._retry_at = time.monotonic() + pause
            self._news = True  # once it is back, claim for every free slot
            return pause
        self._outage.reset()
        return wait_s

    def _claim(self) -> float | None:
        self._read_settings()
        size = self._claim_size()
        wait_s = self.broker.poll_interval_s
        if size:
            self._news = False
            self._claimed_at = time.monotonic()
            claimed = self.broker.claim(self.queue_name, size, self._stride, path=self._path)
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
        if self._due_stale or now - self._due_read_at >= self.broker.poll_interval_s:
            self._due_stale = False
            self._due_read_at = now
            due = self.broker.seconds_until_due(self.queue_name)
            self._next_due = None if due is None else now + due
        return None if self._next_due is None else self._next_due - now

    def _read_settings(self) -> None:
        """Every poll interval, read how to claim (see PostgresBroker.claim_path) and
        the queue's prefetch setting; now and then, look for tier classes the policy
        does not name (so that jobs of a tier removed from RECEIPTQ_TIERS still get
        claimed)."""
        now = time.monotonic()
        if now - self._settings_read_at >= self.broker.poll_interval_s:
            self._path, self._prefetch_setting = self.broker.claim_settings(self.queue_name)
            self._settings_read_at = now
        if now - self._classes_checked_at >= CLASS_CHECK_INTERVAL_S:
            self._stride.seen = set(self.broker.tier_classes(self.queue_name))
            self._classes_checked_at = now

    def ack(self, message: MessageProxy) -> None:
        assert isinstance(message, JobProxy)
        self.broker.finish(message)

    def nack(self, message: MessageProxy) -> None:
        assert isinstance(message, JobProxy)
        self.broker.bury(message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        self.broker.last_words()
        self.broker.give_back(m for m in messages if isinstance(m, JobProxy))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.broker.last_words()
        self._wakeup.set()
        buffered = list(self._buffer)
        self._buffer.clear()
        self.broker._forget(self)
        try:
            self.broker.give_back(buffered)
        except Exception:
            logger.warning(
                "could not give back %d claimed jobs; their leases will expire",
                len(buffered),
                exc_info=True,
            )
