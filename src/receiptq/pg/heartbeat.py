"""A worker process's heartbeat: it keeps its leases and its workers row fresh,
and rescues the jobs of workers that died.

Between two beats (a third of the lease) it wakes every
:data:`DELIVERIES_REFRESH_S` and, when the queues it consumes or the deliveries
its threads started have changed, writes them to its workers row (one small
update), so that monitoring tells running jobs from reserved ones about a second
late without a write per job.

Each beat also counts the jobs ``receiptq.enqueue()`` sent from SQL (its rows of
receiptq.sql_sends) in the statistics, and the first beat of a process writes its
tier policy to receiptq.tiers, whose offsets ``receiptq.enqueue()`` adds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from receiptq import db
from receiptq.pg.outage import UNREACHABLE, Backoff, database_problem, first_line
from receiptq.pg.resources import Thresholds, sample_host, throttle_reason
from receiptq.tiers import TierPolicy

logger = logging.getLogger(__name__)

#: How often (s) the queues and the deliveries started here are written to the
#: workers row, at most (only when they changed): how late monitoring may see a
#: start or an end.
DELIVERIES_REFRESH_S = 1.0
#: How many jobs sent from SQL one beat counts at most (the rest at the next beats).
SQL_SENDS_BATCH = 10_000


@dataclass(frozen=True)
class WorkerStatus:
    """What a worker process holds now, as its heartbeat reports it.

    ``claimed``: the job ids claimed here and not finished (their leases are
    renewed); ``started``: of those, the ones a worker thread started, as
    ``{job id: (attempt, wall-clock start in s)}``.
    """

    queues: list[str]
    claimed: list[int]
    started: Mapping[int, tuple[int, float]] = field(default_factory=dict)


def refresh_params(worker_id: str, status: WorkerStatus) -> dict[str, Any]:
    """The ``worker_refresh`` parameters: each start as seconds ago, so that the
    database stores it on its own clock (the worker's clock may be off)."""
    now = time.time()
    started = status.started
    ids = sorted(started)
    return {
        "id": worker_id,
        "queues": status.queues,
        "job_ids": ids,
        "attempts": [started[i][0] for i in ids],
        "ages_s": [max(0.0, now - started[i][1]) for i in ids],
    }


def tier_policy_params(policy: TierPolicy) -> dict[str, Any]:
    """The parameters of ``tiers_replace``: the policy receiptq.enqueue() applies."""
    return {
        "names": [t.name for t in policy.tiers],
        "offsets": [t.priority_offset for t in policy.tiers],
        "weights": [t.weight for t in policy.tiers],
    }


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Every ``interval_s``: refresh the workers row, extend the leases of the jobs
    ``status()`` names, rescue expired leases of any worker, forget workers silent
    for long. Every ``refresh_s`` in between: write the queues and the started
    deliveries when they changed. ``status()`` says what the process holds."""

    def __init__(
        self,
        pool_getter: Callable[[], Any],
        *,
        worker_id: str,
        lease_s: float,
        interval_s: float,
        status: Callable[[], WorkerStatus],
        refresh_s: float = DELIVERIES_REFRESH_S,
        on_rescue: Callable[[list[dict[str, Any]]], None] | None = None,
        thresholds: Thresholds | None = None,
        tiers: TierPolicy | None = None,
    ) -> None:
        self.worker_id = worker_id
        #: The policy still to write to receiptq.tiers (None once written).
        self._tiers = tiers
        self._privilege_warned = False
        self._pool_getter = pool_getter
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._refresh_s = min(refresh_s, interval_s)
        self._status = status
        #: The queues and started deliveries as the workers row holds them (None: unknown).
        self._written: tuple[list[str], dict[int, tuple[int, float]]] | None = None
        self._refresh_failing = False
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
        # Between beats, the started deliveries are written about once a second.
        retry = Backoff(min(0.5, self._interval_s), self._interval_s)
        next_beat = time.monotonic() + self._interval_s
        while not self._stop.wait(max(0.0, min(self._refresh_s, next_beat - time.monotonic()))):
            if time.monotonic() < next_beat:
                self._refresh_logged()
            elif self._beat_logged():
                retry.reset()
                next_beat = time.monotonic() + self._interval_s
            else:
                next_beat = time.monotonic() + retry.next()

    def _refresh_logged(self, status: WorkerStatus | None = None) -> None:
        try:
            self.refresh(status)
        except Exception as exc:
            # Once until a write works again, not every second; a database that is gone
            # is said once by the pool's watch, not here as well (a missing column is
            # said here: it names what the migration left out).
            if not self._refresh_failing and database_problem(exc) != UNREACHABLE:
                logger.warning("could not write the started deliveries (%s); retrying", exc)
            self._refresh_failing = True
        else:
            self._refresh_failing = False

    def refresh(self, status: WorkerStatus | None = None) -> bool:
        """Write the queues and the deliveries started here to the workers row if they
        changed since the last write; returns whether it wrote."""
        status = status or self._status()
        held = (list(status.queues), dict(status.started))
        if held == self._written:
            return False
        with self._pool_getter().connection() as conn:
            db.execute(conn, "worker_refresh", refresh_params(self.worker_id, status))
        self._written = held
        return True

    def beat(self) -> list[dict[str, Any]]:
        """One heartbeat; returns the rescue outcome rows (for tests and logs)."""
        status = self._status()
        job_ids = status.claimed
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
                "queues": status.queues,
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
                self._written = None  # a new row lists no started delivery yet
            leases = {"ids": job_ids, "worker_id": self.worker_id, "lease_s": self._lease_s}
            db.execute(conn, "job_extend_leases", leases)
            rescued = db.fetch_all(conn, "job_rescue_expired", leases)
            db.execute(conn, "worker_remove_stale", {"stale_s": max(self._lease_s * 10, 60)})
            self._share_sql_state(conn)
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
        self._refresh_logged(status)
        return rescued

    def _share_sql_state(self, conn: Any) -> None:
        """Count the jobs sent from SQL; write the tier policy once. A role granted by
        an older receiptq may lack the privileges: that is said once, and the beat goes on."""
        try:
            db.execute(conn, "stats_fold_sql_sends", {"batch": SQL_SENDS_BATCH})
            if self._tiers is not None:
                db.execute(conn, "tiers_replace", tier_policy_params(self._tiers))
                self._tiers = None
        except psycopg.errors.InsufficientPrivilege as exc:
            if not self._privilege_warned:
                logger.warning(
                    "cannot count jobs sent from SQL or write the tier policy (%s): "
                    "grant the worker role `receiptq db grant ROLE --worker`",
                    first_line(exc),
                )
            self._privilege_warned = True

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
