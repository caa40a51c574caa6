"""Claiming: the three claim paths, and what a consumer reads about its queue
(how claims go, its prefetch, its tier classes, when its next job is due).

A claim takes ready jobs of a queue for this process in one statement, holds
them (:mod:`receiptq.pg.holdings`) and hands them out as deliveries. Rows that
cannot become messages go straight to the dead letters.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from receiptq import db
from receiptq.pg.delivery import JobProxy
from receiptq.pg.holdings import Holdings
from receiptq.pg.messages import MessageError, decode_message
from receiptq.pg.outage import UNREACHABLE, database_problem
from receiptq.pg.runtime import Runtime
from receiptq.pg.settle import dead_letter
from receiptq.tiers import UNTIERED, StrideState, TierPolicy, quotas

logger = logging.getLogger(__name__)

#: How a claim goes: see :meth:`Claimer.claim`.
ClaimPath = Literal["locked", "fair", "plain"]


def queue_prefetch(actors: Mapping[str, Any], queue_name: str) -> int | None:
    """The smallest ``prefetch`` option of the actors declared on a queue (None:
    none has one): the queue's own prefetch when its setting is not set.

    ``@dramatiq.actor(queue_name="ocr", prefetch=1)``: each worker process holds
    at most one job of the queue (claimed and not finished), so a process with
    threads to spare takes the next one instead of a busy process hoarding it."""
    options = [
        actor.options["prefetch"]
        for actor in actors.values()
        if actor.queue_name == queue_name and actor.options.get("prefetch") is not None
    ]
    return min(options, default=None)


class Claimer:
    """Claims for this process's consumers, and reads what they need of their queue.

    Parameters:
      runtime: the process's connections (claims wait through its gate).
      holdings: where claimed deliveries are held.
      worker_id, lease_s: the lease a claim takes.
      poll_interval_s: how often an idle consumer looks for work.
      tiers: the tier policy (classes and weights).
      actors: the broker's declared actors (their ``prefetch`` option).
    """

    def __init__(
        self,
        runtime: Runtime,
        holdings: Holdings,
        *,
        worker_id: str,
        lease_s: float,
        poll_interval_s: float,
        tiers: TierPolicy,
        actors: Mapping[str, Any],
    ) -> None:
        self.runtime = runtime
        self.holdings = holdings
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self.tier_policy = tiers
        self._actors = actors
        self.held: Callable[[str], int] = holdings.held
        self._lock = threading.Lock()
        #: Per queue: a lock its claims take, so that giving back the rows of a lost
        #: answer never meets a claim whose rows are on their way here.
        self._queue_locks: dict[str, threading.Lock] = {}
        #: Per queue: the database's time of the last claim whose answer arrived.
        self._answered_at: dict[str, datetime] = {}
        #: Queues whose last claim failed with the connection: it may have committed.
        self._unsure: set[str] = set()

    def may_claim(self) -> bool:
        """False while the worker shuts down or is throttled."""
        return not self.holdings.stopping and self.runtime.throttled_reason() is None

    def prefetch(self, queue_name: str, prefetch: int, setting: int | None, ahead: int = 0) -> int:
        """How many jobs of a queue the process may hold: Dramatiq's ``prefetch`` and
        the consumer's claim-ahead (``ahead``), or the queue's own prefetch (its
        ``setting``, else its actors' ``prefetch`` option), which never exceeds the
        worker's threads and never claims ahead: a slow job then never waits in one
        process's memory while another process has a free thread."""
        own = setting if setting is not None else queue_prefetch(self._actors, queue_name)
        if own is None:
            return prefetch + ahead
        return max(1, min(prefetch, own, self.holdings.worker_threads or own))

    def claim(
        self,
        queue_name: str,
        limit: int,
        stride: StrideState | None = None,
        *,
        path: ClaimPath = "locked",
        later: bool = False,
    ) -> list[JobProxy]:
        """Claim ready jobs of a queue for this process: about ``limit`` of them.

        ``stride`` is the claimer's fair-share state across tier classes (a fresh
        one when None). ``path`` is how (see :meth:`claim_settings`): ``"locked"``
        through the claim function, which honours pause and caps (never more than
        ``limit``); ``"fair"`` the plain prepared statement that takes each class's
        quota, for a queue that is neither paused nor capped (it may take one job
        more than ``limit`` per class that was idle and has work again); ``"plain"``
        a plain statement for the untiered class alone. ``later``: the queue has jobs
        not due yet (:meth:`claim_settings`), so the two fast paths take
        ``job_claim_classes_later``, which never reads them. Rows that cannot become
        messages go straight to the dead letters.

        A claim that fails with the connection may have committed, its answer lost:
        the next claim of the queue first gives back the rows it took (see
        :meth:`give_back_unseen`), so they run now, not when their lease runs out.
        """
        with self._queue_lock(queue_name):
            if queue_name in self._unsure:
                self.give_back_unseen(queue_name)
                self._unsure.discard(queue_name)
            try:
                return self._claim(queue_name, limit, stride, path, later)
            except Exception as exc:
                if database_problem(exc) == UNREACHABLE:
                    self._unsure.add(queue_name)
                raise

    def _queue_lock(self, queue_name: str) -> threading.Lock:
        with self._lock:
            return self._queue_locks.setdefault(queue_name, threading.Lock())

    def give_back_unseen(self, queue_name: str) -> int:
        """Queue again the jobs this worker's lost claim took: its rows of the queue
        that are running, are not held here and were claimed after the last claim
        whose answer arrived (every row of an answered claim is held here or being
        settled). Returns how many."""
        params = {
            "queue": queue_name,
            "worker_id": self.worker_id,
            "after": self._answered_at.get(queue_name),
            "held": self.holdings.status().claimed,
        }
        with self.runtime.gate.connection() as conn:
            unseen = db.fetch_all(conn, "job_unseen_claims", params)
            ids = {"ids": [r["id"] for r in unseen], "attempts": [r["attempt"] for r in unseen]}
            given = db.execute(conn, "job_requeue_unstarted", ids) if unseen else 0
        if given:
            logger.info(
                "gave back %d job(s) of %s that a claim took as the connection was lost "
                "(its answer never arrived): they run now",
                given,
                queue_name,
            )
        return given

    def _claim(
        self,
        queue_name: str,
        limit: int,
        stride: StrideState | None,
        path: ClaimPath,
        later: bool,
    ) -> list[JobProxy]:
        stride = stride if stride is not None else StrideState()
        if path == "plain" and later:
            rows = self._claim_classes(queue_name, [UNTIERED], [limit], later)
            return self._proxies(queue_name, rows)
        if path == "plain":
            params = {**self._params(queue_name, [UNTIERED], [limit]), "limit": limit}
            with self.runtime.gate.connection() as conn:
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
            rows = self._claim_classes(queue_name, classes, counts, later)
            claimed = Counter(row["tier"] for row in rows)
            idle = [c for c, n in zip(classes, counts, strict=True) if n and c not in claimed]
            stride.charge(claimed, idle, by_class)
            if rows or all(n for c, n in zip(classes, counts, strict=True) if c not in idle):
                break
        return self._proxies(queue_name, rows)

    def _params(self, queue_name: str, classes: list[str], counts: list[int]) -> dict[str, Any]:
        return {
            "queue": queue_name,
            "worker_id": self.worker_id,
            "lease_s": self.lease_s,
            "classes": classes,
            "quotas": counts,
        }

    def _claim_classes(
        self, queue_name: str, classes: list[str], counts: list[int], later: bool
    ) -> list[dict[str, Any]]:
        params = self._params(queue_name, classes, counts)
        statement = "job_claim_classes_later" if later else "job_claim_classes"
        with self.runtime.gate.connection() as conn:
            return db.fetch_all(conn, statement, params)

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
            **self._params(queue_name, classes, counts),
            "limit": limit,
            "passes": passes,
            "weights": weights,
        }
        with self.runtime.gate.connection() as conn:
            rows = db.fetch_all(conn, "job_claim_batch", params)
        if rows:
            by_class = dict(zip(classes, weights, strict=True))
            stride.charge(Counter(row["tier"] for row in rows), rows[0]["idle"], by_class)
        return self._proxies(queue_name, rows)

    def _proxies(self, queue_name: str, rows: list[dict[str, Any]]) -> list[JobProxy]:
        if rows:
            self._answered_at[queue_name] = rows[0]["claimed_at"]
        rows.sort(key=lambda r: (r["priority"], r["user_round"], r["run_at"], r["id"]))
        proxies = []
        for row in rows:
            try:
                message = decode_message(row["message"])
            except MessageError as exc:
                logger.error("job %s has an undecodable message; dead-lettering it", row["id"])
                dead_letter(self.runtime, row["id"], row["attempt"], "undecodable", exc, None)
                self.runtime.flusher.count(queue_name, row["actor"], dead_lettered=1)
                continue
            if message.queue_name != queue_name:  # the worker routes acks by queue name
                message = message.copy(queue_name=queue_name)
            proxies.append(
                JobProxy(message, job_id=row["id"], attempt=row["attempt"], due_at=row["due_at"])
            )
        self.holdings.hold(queue_name, proxies)
        return proxies

    def claim_settings(self, queue_name: str) -> tuple[ClaimPath, int | None, bool]:
        """How a queue's claims go: ``"locked"`` when it is paused or capped, else
        ``"fair"`` when it has queued jobs with a tier, else ``"plain"``; its
        prefetch setting (``receiptq queue prefetch``; None: not set); and whether
        it has jobs not due yet (the ``later`` of :meth:`claim`)."""
        with self.runtime.gate.connection() as conn:
            row = db.fetch_one(conn, "queue_claim_path", {"queue": queue_name})
        if row is None:
            return "locked", None, False
        path: ClaimPath = "locked" if row["restricted"] else "fair" if row["tiered"] else "plain"
        return path, row["prefetch"], row["later"]

    def tier_classes(self, queue_name: str) -> list[str]:
        """The tier classes ('' = no tier) that have jobs queued in a queue."""
        with self.runtime.gate.connection() as conn:
            return [r["cls"] for r in db.fetch_all(conn, "job_tier_classes", {"queue": queue_name})]

    def seconds_until_due(self, queue_name: str) -> float | None:
        """Seconds until the next scheduled job of a queue is due (None: none is)."""
        with self.runtime.gate.connection() as conn:
            row = db.fetch_one(conn, "job_seconds_until_due", {"queue": queue_name})
        return None if row is None else row["seconds"]
