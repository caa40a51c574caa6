"""Retries that could not be stored because the database was unavailable.

When a failed delivery's retry cannot be written (PostgreSQL restarting, the
network gone), the job is still safe: its row stays ``running`` under this
process's lease. Rather than wait for that lease to run out, the process keeps
the retry (at most ``limit`` of them) and one daemon thread stores them as soon
as the database answers. A retry that is not stored (the process dies, or
``limit`` is reached) is left to the lease: the job is rescued and runs again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from receiptq.errors import DatabaseUnreachable
from receiptq.pg.outage import UNREACHABLE, database_problem

logger = logging.getLogger(__name__)

#: Retries kept per process at most; beyond, a job waits for its lease to run out.
DEFAULT_LIMIT = 1000
#: Pause between attempts to store the kept retries while the database is away (s).
RETRY_INTERVAL_S = 0.5


@dataclass
class _Kept:
    message: Any
    delay_ms: int
    kept_at: float  # monotonic
    handed_over: bool = False


def database_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is not there now (the driver's error, or
    receiptq's one line for it): a retry that met it can be stored later."""
    return isinstance(exc, DatabaseUnreachable) or database_problem(exc) == UNREACHABLE


class PendingRetries:
    """Retries kept in this process, by job id, until ``store(message, delay_ms)``
    succeeds. A retry is stored only once its delivery is over (:meth:`hand_over`,
    from the broker's ack), with its delay shortened by the time it waited here."""

    def __init__(self, store: Callable[[Any, int], None], *, limit: int = DEFAULT_LIMIT) -> None:
        self._store = store
        self._limit = limit
        self._lock = threading.Lock()
        self._kept: dict[int, _Kept] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, job_id: int, message: Any, delay_ms: int) -> bool:
        """Keep a retry; False when ``limit`` retries are kept already."""
        with self._lock:
            if len(self._kept) >= self._limit:
                return False
            self._kept[job_id] = _Kept(message, delay_ms, time.monotonic())
            return True

    def hand_over(self, job_id: int) -> bool:
        """The delivery is over: store its kept retry from now on. False: none kept."""
        with self._lock:
            kept = self._kept.get(job_id)
            if kept is None:
                return False
            kept.handed_over = True
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="receiptq-pending-retries", daemon=True
                )
                self._thread.start()
            return True

    def _run(self) -> None:
        while True:
            refused = self._store_handed_over()
            with self._lock:  # hand_over starts a thread again once this one is gone
                if self._stopping.is_set() or not any(k.handed_over for k in self._kept.values()):
                    self._thread = None
                    return
            if refused:
                self._stopping.wait(RETRY_INTERVAL_S)

    def _store_handed_over(self) -> bool:
        """Store the retries handed over; True if the database refused one."""
        with self._lock:
            ready = [(job_id, k) for job_id, k in self._kept.items() if k.handed_over]
        for job_id, kept in ready:
            with self._lock:  # no longer kept: the store finishes the delivery
                del self._kept[job_id]
            waited_ms = int((time.monotonic() - kept.kept_at) * 1000)
            try:
                self._store(kept.message, max(kept.delay_ms - waited_ms, 0))
            except Exception as exc:
                if database_away(exc):
                    with self._lock:  # still away: try again later
                        self._kept[job_id] = kept
                    return True
                logger.exception(
                    "storing the kept retry of job %d failed; its lease brings it back", job_id
                )
        return False

    def close(self, timeout: float = 1.0) -> None:
        """Stop; retries not stored by then are left to their leases."""
        self._stopping.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self._kept:
            logger.warning(
                "%d retries kept while the database was unavailable were not stored; "
                "those jobs run again once their leases expire",
                len(self._kept),
            )
