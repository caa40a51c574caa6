"""The process's resources on one database: the pool (opened on first use), the
gate the worker's own parts wait through, the watch that says once what is wrong
with the database, the flusher of acks and statistics, the LISTEN connection and
the heartbeat. A forked child (Dramatiq's worker processes) starts with none of
its parent's: the runtime resets itself in the child; buffered writes are
flushed when the interpreter exits.
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

T = TypeVar("T")


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
    """

    def __init__(self, url: str, *, pool_max_size: int, listen: bool, ack_flush_ms: int) -> None:
        self.url = url
        self.pool_max_size = pool_max_size
        self.listen = listen
        self.ack_flush_ms = ack_flush_ms
        self._reset()
        reset_in_children(self, Runtime._reset)
        atexit.register(self._flush_at_exit)

    def _reset(self) -> None:
        self._lock = threading.RLock()  # the first heartbeat runs under it
        self._pid = os.getpid()
        self._pool: ConnectionPool | None = None
        self.watch = DatabaseWatch(self.url)
        self.gate = PoolGate(self.pool, self.watch)
        self.flusher = Flusher(self.gated, ack_flush_ms=self.ack_flush_ms)
        self.listener: Listener | None = None
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
                        self.url, max_size=self.pool_max_size, generic_plans=True, wait=False
                    )
        return self._pool

    def gated(self) -> PoolGate:
        """The pool as the worker's own parts use it (see :class:`PoolGate`)."""
        return self.gate

    def open_gate(self) -> None:
        """Waits for connections as in normal running again (a new worker, a reopened broker)."""
        self.gate = PoolGate(self.pool, self.watch)

    def start_worker_services(
        self,
        wake: Callable[[str], None],
        *,
        worker_id: str,
        lease_s: float,
        status: Callable[[], WorkerStatus],
        on_rescue: Callable[[list[dict[str, Any]]], None],
    ) -> Heartbeat:
        """The LISTEN connection (``wake`` gets each notification) and the heartbeat,
        started once; the heartbeat's first beat runs now, in the caller's thread."""
        with self._lock:
            if self.listen and self.listener is None:
                self.listener = Listener(self.url, wake, watch=self.watch)
            if self.heartbeat is None:
                self.heartbeat = Heartbeat(
                    self.gated,
                    worker_id=worker_id,
                    lease_s=lease_s,
                    interval_s=max(lease_s / 3, 0.2),
                    status=status,
                    on_rescue=on_rescue,
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
