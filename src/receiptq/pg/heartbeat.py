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

logger = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Every ``interval_s``: refresh the workers row, extend this worker's leases,
    rescue expired leases of any worker, forget workers silent for long."""

    def __init__(
        self,
        pool_getter: Callable[[], Any],
        *,
        worker_id: str,
        lease_s: float,
        interval_s: float,
        status: Callable[[], tuple[list[str], int]],
        on_rescue: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self._pool_getter = pool_getter
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._status = status
        self._on_rescue = on_rescue
        self._stop = threading.Event()
        self._registered = False
        self._thread = threading.Thread(target=self._run, name="receiptq-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except Exception:
                logger.exception("heartbeat failed; retrying")
            self._stop.wait(self._interval_s)

    def beat(self) -> list[dict[str, Any]]:
        """One heartbeat; returns the rescue outcome rows (for tests and logs)."""
        queues, in_flight = self._status()
        identity = {"id": self.worker_id, "queues": queues, "in_flight": in_flight}
        with self._pool_getter().connection() as conn:
            if not db.fetch_one(conn, "worker_heartbeat", identity):
                host, pid = self.worker_id.split(":")[:2]
                db.execute(conn, "worker_register", {**identity, "host": host, "pid": int(pid)})
            db.execute(
                conn, "job_extend_leases", {"worker_id": self.worker_id, "lease_s": self._lease_s}
            )
            rescued = db.fetch_all(conn, "job_rescue_expired")
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
        except Exception:
            logger.warning("could not remove worker row %s", self.worker_id, exc_info=True)
