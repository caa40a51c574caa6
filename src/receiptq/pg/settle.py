"""Settling a delivery: what to write once its outcome is known.

The outcome is said on the delivery (:attr:`receiptq.pg.delivery.JobProxy.outcome`)
by whoever decides it: the retries middleware (a retry stored, or a dead-letter
reason), a breaker (postponed). The worker's ack (:meth:`Settler.finish`) and
nack (:meth:`Settler.bury`) read it here and write accordingly: an ack, the dead
letter, nothing (a retry or a postponement already wrote the row); and count it.
Deliveries that never started go back without using an attempt
(:meth:`Settler.give_back`); a retry the database could not take is kept in the
process and stored once it answers (:meth:`Settler.keep_retry`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, cast

from dramatiq.message import Message

from receiptq import db
from receiptq.pg.delivery import DeadLettered, JobProxy, Postponed, Retried
from receiptq.pg.holdings import Holdings
from receiptq.pg.messages import JobRow
from receiptq.pg.outage import SHUTDOWN_BUDGET_S, database_problem, first_line
from receiptq.pg.pending_retries import PendingRetries, database_away
from receiptq.pg.runtime import Runtime

logger = logging.getLogger(__name__)


def dead_letter(
    runtime: Runtime,
    job_id: int,
    attempt: int,
    reason: str,
    exception: BaseException | None,
    tb: str | None,
) -> None:
    """Move a job to the dead letters with its error."""
    if tb is None and exception is not None:
        tb = "".join(traceback.format_exception(exception))
    params = {
        "id": job_id,
        "attempt": attempt,
        "reason": reason,
        "error_type": type(exception).__name__ if exception is not None else None,
        "error": str(exception) if exception is not None else "message.fail() without an exception",
        "traceback": tb,
    }
    with runtime.gate.connection() as conn:
        db.fetch_all(conn, "job_dead_letter", params)


class Settler:
    """Settles this process's deliveries.

    Parameters:
      runtime: the process's connections and flusher.
      holdings: the deliveries held here (a settled one is landed).
      worker_id: this process's worker (a kept retry re-queues a row it holds).
      row_of: how a message becomes a job row (the broker's, as its enqueue uses it).
      retries_failures: whether a retries middleware re-queues failed deliveries.
    """

    def __init__(
        self,
        runtime: Runtime,
        holdings: Holdings,
        worker_id: str,
        row_of: Callable[[Message[Any], int | None], JobRow],
        retries_failures: Callable[[], bool],
    ) -> None:
        self.runtime, self.holdings, self.worker_id = runtime, holdings, worker_id
        self._row_of, self._retries_failures = row_of, retries_failures
        self._lock = threading.Lock()
        self._unreturned: list[JobProxy] = []  # to give back at the end of the shutdown
        self._pending_retries = PendingRetries(self._store_kept_retry)

    # -- the worker's ack and nack ------------------------------------------------------

    def finish(self, message: JobProxy) -> None:
        """Ack: the delivery is over (succeeded, failed, retried or postponed)."""
        if self._pending_retries.hand_over(message.job_id):
            return  # its retry is stored once the database answers; finished then
        self.holdings.land([message.job_id])
        if isinstance(message.outcome, Postponed):
            return  # its row is queued again already, and was counted
        failed = message._exception is not None
        retried = isinstance(message.outcome, Retried)
        if failed and not retried and self._retries_failures():
            # Retries meant to re-queue this job but could not store it (it logs why):
            # deleting the row would lose the job, so its lease runs out and it is
            # rescued like the job of a lost worker.
            logger.warning(
                "the retry of message %s was not stored; it runs again once its lease expires",
                message.message_id,
            )
            return
        self.runtime.flusher.ack(message.job_id, message.attempt)
        self._count_finished(message, failed=failed, retried=retried)

    def _timings(self, message: JobProxy) -> tuple[float | None, float | None]:
        if message.started_at is None:
            return None, None
        run_ms = max(0.0, (time.time() - message.started_at) * 1000)
        latency_ms = max(0.0, (message.started_at - message.due_at) * 1000)
        return run_ms, latency_ms

    def _count_finished(self, message: JobProxy, *, failed: bool, retried: bool) -> None:
        run_ms, latency_ms = self._timings(message)
        self.runtime.flusher.finished(
            message.queue_name,
            message.actor_name,
            outcome="failed" if failed else "succeeded",
            run_ms=run_ms,
            latency_ms=latency_ms,
        )
        if failed and retried:
            self.runtime.flusher.count(message.queue_name, message.actor_name, retried=1)

    def bury(self, message: JobProxy) -> None:
        """Nack: move the delivery to the dead letters with its error."""
        exception = message._exception
        outcome = message.outcome
        reason = outcome.reason if isinstance(outcome, DeadLettered) else "failed"
        if exception is not None and type(exception).__name__ == "ActorNotFound":
            reason = "unknown actor"
        # The exception's own traceback: Retries' "traceback" option may be an earlier attempt's.
        tb = message.options.get("traceback") if exception is None else None
        self.holdings.land([message.job_id])
        try:
            dead_letter(self.runtime, message.job_id, message.attempt, reason, exception, tb)
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
        self.runtime.flusher.finished(
            message.queue_name,
            message.actor_name,
            outcome="failed" if exception is not None else "dead_lettered",
            run_ms=run_ms,
            latency_ms=latency_ms,
        )
        if exception is not None:
            self.runtime.flusher.count(message.queue_name, message.actor_name, dead_lettered=1)

    # -- outcomes said before the ack ---------------------------------------------------

    def retried(self, job_id: int, delay_ms: int | None) -> None:
        """A retry re-queued a job while this process delivers it."""
        delivery = self.holdings.delivery(job_id)
        if delivery is not None:
            delivery.outcome = Retried(delay_ms)

    def postpone(self, message: JobProxy, *, delay_ms: int) -> None:
        """Put a delivery back to queued for ``delay_ms`` without using up an attempt."""
        params = {
            "id": message.job_id,
            "attempt": message.attempt,
            "delay_s": max(delay_ms, 0) / 1000,
        }
        with self.runtime.gate.connection() as conn:
            db.execute(conn, "job_postpone", params)
        message.outcome = Postponed(delay_ms)
        self.holdings.land([message.job_id])
        self.runtime.flusher.count(message.queue_name, message.actor_name, postponed=1)

    def keep_retry(self, message: JobProxy, delay_ms: int, error: Exception) -> bool:
        """Keep a retry the database could not take (see PostgresBroker.keep_retry)."""
        if not database_away(error):
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
        row = self._row_of(cast(Message[Any], message), delay_ms)  # as Retries' enqueue gets it
        params = {**row.params(), "worker_id": self.worker_id}
        with self.runtime.gate.connection() as conn:
            stored = db.fetch_one(conn, "job_enqueue", params)
        self.holdings.land([message.job_id])
        if stored is None:
            logger.info(
                "the kept retry of message %s was dropped: its lease ran out meanwhile and "
                "the job went back to the queue",
                message.message_id,
            )
            return
        self._count_finished(message, failed=True, retried=True)

    # -- giving back --------------------------------------------------------------------

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
        self.holdings.land(m.job_id for m in messages)
        params = {"ids": [m.job_id for m in messages], "attempts": [m.attempt for m in messages]}
        try:
            with self.runtime.gate.connection(at_most_s=at_most_s) as conn:
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
        if self.holdings.stopping:
            self.runtime.gate.start_shutdown()
        with self._lock:
            unreturned, self._unreturned = self._unreturned, []
        self.give_back(unreturned)

    def close(self) -> None:
        """Stop storing kept retries (before the flusher closes: a stored retry is
        counted by it)."""
        self._pending_retries.close()
