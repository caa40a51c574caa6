"""A worker process's heartbeat: it keeps its leases and its workers row fresh,
and rescues the jobs of workers that died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from receiptq import db
from receiptq.pg.outage import Backoff, database_problem
from receiptq.pg.resources import Thresholds, sample_host, throttle_reason

logger = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Every ``interval_s``: refresh the workers row, extend the leases of the jobs
    ``status()`` names, rescue expired leases of any worker, forget workers silent
    for long. ``status()`` returns (queues consumed, job ids in flight)."""

    def __init__(
        self,
        pool_getter: Callable[[], Any],
        *,
        worker_id: str,
        lease_s: float,
        interval_s: float,
        status: Callable[[], tuple[list[str], list[int]]],
        on_rescue: Callable[[list[dict[str, Any]]], None] | None = None,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.worker_id = worker_id
        self._pool_getter = pool_getter
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._status = status
        self._on_rescue = on_rescue
        self._stop = threading.Event()
        self._thresholds = thresholds or Thresholds.from_env()
        #: Why this worker does not claim now (None: it claims), set by each beat.
        self.throttled_reason: str | None = None
        # The first beat happens now, in the caller's thread: the worker is
        # registered before it consumes, and the next beat is a full interval away.
        self._beat_logged()
        self._thread = threading.Thread(target=self._run, name="receiptq-heartbeat", daemon=True)
        self._thread.start()

    def _beat_logged(self) -> bool:
        """One beat; False when it failed. A database that is gone or not migrated
        is said once by the pool's watch, not here at every beat."""
        try:
            self.beat()
            return True
        except Exception as exc:
            if database_problem(exc) is None:
                logger.exception("heartbeat failed; retrying")
            return False

    def _run(self) -> None:
        # After a failed beat, try again sooner (growing pauses up to the interval), so
        # that the leases are renewed soon after the database is back, before they expire.
        retry = Backoff(min(0.5, self._interval_s), self._interval_s)
        pause = self._interval_s
        while not self._stop.wait(pause):
            if self._beat_logged():
                retry.reset()
                pause = self._interval_s
            else:
                pause = retry.next()

    def beat(self) -> list[dict[str, Any]]:
        """One heartbeat; returns the rescue outcome rows (for tests and logs)."""
        queues, job_ids = self._status()
        with self._pool_getter().connection() as conn:
            share = db.fetch_one(conn, "db_connections_percent")
            sample = sample_host(share["percent"] if share else None)
            reason = throttle_reason(sample, self._thresholds)
            if reason != self.throttled_reason:
                if reason:
                    logger.warning("worker %s stops claiming: %s", self.worker_id, reason)
                else:
                    logger.warning("worker %s claims again", self.worker_id)
            self.throttled_reason = reason
            identity = {
                "id": self.worker_id,
                "queues": queues,
                "in_flight": len(job_ids),
                "cpu_percent": sample.cpu_percent,
                "memory_percent": sample.memory_percent,
                "db_connections_percent": sample.db_connections_percent,
                "throttled_reason": self.throttled_reason,
            }
            if not db.fetch_one(conn, "worker_heartbeat", identity):
                host, pid = self.worker_id.split(":")[:2]
                db.execute(conn, "worker_register", {**identity, "host": host, "pid": int(pid)})
                db.fetch_one(conn, "worker_heartbeat", identity)  # the figures, at once
            leases = {"ids": job_ids, "worker_id": self.worker_id, "lease_s": self._lease_s}
            db.execute(conn, "job_extend_leases", leases)
            rescued = db.fetch_all(conn, "job_rescue_expired", leases)
            db.execute(conn, "worker_remove_stale", {"stale_s": max(self._lease_s * 10, 60)})
        for row in rescued:
            logger.warning(
                "rescued %d job(s) of %s/%s from a lost worker: %s",
                row["jobs"],
                row["queue"],
                row["actor"],
                row["outcome"],
            )
        if rescued and self._on_rescue:
            self._on_rescue(rescued)
        return rescued

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        try:
            with self._pool_getter().connection() as conn:
                db.execute(conn, "worker_remove", {"id": self.worker_id})
        except Exception as exc:
            # A live worker's heartbeat forgets the row once it is stale.
            quiet = database_problem(exc) is not None
            logger.warning("could not remove worker row %s", self.worker_id, exc_info=not quiet)
