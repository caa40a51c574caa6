"""The process's resources on one database: the pool (opened on first use), the
gate the worker's own parts wait through, the watch that says once what is wrong
with the database, the flusher of acks and statistics, the one LISTEN connection
(routing each channel to its subscribers) and the heartbeat. A forked child
(Dramatiq's worker processes) starts with none of its parent's: the runtime
resets itself in the child; buffered writes are flushed when the interpreter exits.

One runtime per process and URL: the broker's is shared (:func:`shared_runtime`)
with the result backend, the rate-limiter backend and the tier resolver on its
database (:class:`RuntimeRef`), so that a worker process holds at most its pool
and one LISTEN connection. Without a broker on the URL they make one of their own.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from psycopg_pool import ConnectionPool

from receiptq import db
from receiptq.pg.flusher import Flusher
from receiptq.pg.heartbeat import Heartbeat, WorkerStatus
from receiptq.pg.listener import Listener
from receiptq.pg.outage import DatabaseWatch, PoolGate
from receiptq.tiers import TierPolicy

T = TypeVar("T")

#: The channel of the jobs' notifications (payload: a queue name, or
#: ``later:queue`` / ``tiered:queue``), and the statement that listens to it.
JOBS_CHANNEL = "receiptq"
LISTEN_JOBS = "LISTEN receiptq"

#: The runtime of each URL that others share: the last broker's (or a component's own).
_SHARED: weakref.WeakValueDictionary[str, Runtime] = weakref.WeakValueDictionary()


def shared_runtime(url: str) -> Runtime | None:
    """The runtime this process shares on ``url``, if any."""
    return _SHARED.get(url)


def reset_in_children(owner: T, reset: Callable[[T], None]) -> None:
    """Call ``reset(owner)`` in every process forked from this one, while ``owner``
    lives (a forked child starts with none of its parent's connections or threads)."""
    this = weakref.ref(owner)

    def reset_in_child() -> None:
        alive = this()
        if alive is not None:
            reset(alive)

    os.register_at_fork(after_in_child=reset_in_child)


class Runtime:
    """One process's connections to one database and the threads that use them.

    Parameters:
      url(str): the database.
      pool_max_size(int): connections in the pool.
      listen(bool): open the LISTEN connection when the worker services start.
      ack_flush_ms(int): how long acks are batched, at most.
      share(bool): others on the URL use this one (see :func:`shared_runtime`).
      generic_plans(bool), name(str): as for :func:`receiptq.db.open_pool`.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_max_size: int,
        listen: bool,
        ack_flush_ms: int,
        share: bool = True,
        generic_plans: bool = True,
        name: str = "receiptq",
    ) -> None:
        self.url = url
        self.pool_max_size = pool_max_size
        self.listen = listen
        self.ack_flush_ms = ack_flush_ms
        self._generic_plans = generic_plans
        self._name = name
        self._reset()
        reset_in_children(self, Runtime._reset)
        if share:
            _SHARED[url] = self
        atexit.register(self._flush_at_exit)

    def _reset(self) -> None:
        self._lock = threading.RLock()  # the first heartbeat runs under it
        self._pid = os.getpid()
        self._pool: ConnectionPool | None = None
        self.watch = DatabaseWatch(self.url)
        self.gate = PoolGate(self.pool, self.watch)
        self.flusher = Flusher(self.gated, ack_flush_ms=self.ack_flush_ms)
        self.listener: Listener | None = None
        self._jobs_subscribed = False
        self.heartbeat: Heartbeat | None = None

    def _flush_at_exit(self) -> None:
        """Write acks and statistics still buffered when the interpreter exits."""
        if self._pool is not None and self._pid == os.getpid():
            self.gate.start_shutdown()
            self.flusher.close()

    def pool(self) -> ConnectionPool:
        """This process's pool, opened on first use (connecting in the background:
        callers bound their own waits)."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = db.open_pool(
                        self.url,
                        max_size=self.pool_max_size,
                        name=self._name,
                        generic_plans=self._generic_plans,
                        wait=False,
                    )
        return self._pool

    def gated(self) -> PoolGate:
        """The pool as the worker's own parts use it (see :class:`PoolGate`)."""
        return self.gate

    def open_gate(self) -> None:
        """Waits for connections as in normal running again (a new worker, a reopened broker)."""
        self.gate = PoolGate(self.pool, self.watch)

    def subscribe(
        self,
        channel: str,
        statement: str,
        callback: Callable[[str], None],
        *,
        on_listen: Callable[[], None] | None = None,
    ) -> threading.Event:
        """Have the process's LISTEN connection (opened on first use) call
        ``callback(payload)`` for each notification on ``channel`` (see
        :meth:`Listener.subscribe`); returns the event set while it listens."""
        with self._lock:
            if self.listener is None:
                self.listener = Listener(self.url, watch=self.watch)
            return self.listener.subscribe(channel, statement, callback, on_listen=on_listen)

    def unsubscribe(
        self,
        channel: str,
        callback: Callable[[str], None],
        on_listen: Callable[[], None] | None = None,
    ) -> None:
        listener = self.listener
        if listener is not None:
            listener.unsubscribe(channel, callback, on_listen)

    def start_worker_services(
        self,
        wake: Callable[[str], None],
        *,
        worker_id: str,
        lease_s: float,
        status: Callable[[], WorkerStatus],
        on_rescue: Callable[[list[dict[str, Any]]], None],
        tiers: TierPolicy,
    ) -> Heartbeat:
        """The LISTEN connection (``wake`` gets each notification) and the heartbeat,
        started once; the heartbeat's first beat runs now, in the caller's thread."""
        with self._lock:
            if self.listen and not self._jobs_subscribed:
                self.subscribe(JOBS_CHANNEL, LISTEN_JOBS, wake)
                self._jobs_subscribed = True
            if self.heartbeat is None:
                self.heartbeat = Heartbeat(
                    self.gated,
                    worker_id=worker_id,
                    lease_s=lease_s,
                    interval_s=max(lease_s / 3, 0.2),
                    status=status,
                    on_rescue=on_rescue,
                    tiers=tiers,
                )
            return self.heartbeat

    def throttled_reason(self) -> str | None:
        """Why this worker does not claim now (host or database short), or None."""
        heartbeat = self.heartbeat
        return None if heartbeat is None else heartbeat.throttled_reason

    def stop_services(self) -> None:
        """Stop the LISTEN connection and the heartbeat (a last rescue still counts:
        before the flusher closes)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            self._jobs_subscribed = False
        if self.heartbeat is not None:
            self.heartbeat.close()
            self.heartbeat = None

    def close(self) -> None:
        """Write pending acks and statistics, close the pool; a reopened runtime
        waits normally."""
        self.flusher.close()
        if self._pool is not None:
            self._pool.close(timeout=1.0)
        self._pool = None
        self.open_gate()
        atexit.unregister(self._flush_at_exit)


class RuntimeRef:
    """The runtime a component that is not the broker uses on ``url``: the shared
    one when there is one (a broker's on the same database), else its own, made on
    first use with ``pool_max_size`` connections (and shared from then on).

    Parameters:
      url(str): the database (or a function giving it, asked on first use).
      pool_max_size(int): the pool of its own runtime, if it needs one.
      name(str): that pool's name.
    """

    def __init__(self, url: str | Callable[[], str], *, pool_max_size: int, name: str) -> None:
        self._url = url
        self.pool_max_size = pool_max_size
        self.name = name
        self._own: Runtime | None = None
        self._lock = threading.Lock()
        reset_in_children(self, RuntimeRef._reset_lock)

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The database (given as a function: asked now, once)."""
        if callable(self._url):
            self._url = self._url()
        return self._url

    def __call__(self) -> Runtime:
        shared = shared_runtime(self.url)
        if shared is not None:
            return shared
        with self._lock:
            if self._own is None:
                self._own = Runtime(
                    self.url,
                    pool_max_size=self.pool_max_size,
                    listen=True,
                    ack_flush_ms=5,
                    generic_plans=False,
                    name=self.name,
                )
            return self._own

    def close(self) -> None:
        """Close its own runtime (they reopen on next use); a shared one is its owner's."""
        own = self._own
        if own is not None:
            own.stop_services()
            own.close()
