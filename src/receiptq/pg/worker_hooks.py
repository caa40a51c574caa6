"""What the broker learns from the Dramatiq worker of its process, as middleware
the broker adds to itself: when each delivery starts, how many threads the worker
runs, and that its shutdown began."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from dramatiq.broker import Broker
from dramatiq.common import iter_queue
from dramatiq.middleware import Middleware

from receiptq import db
from receiptq.errors import ConfigError
from receiptq.pg.delivery import JobProxy
from receiptq.pg.holdings import Holdings
from receiptq.pg.runtime import Runtime
from receiptq.pg.settle import Settler

logger = logging.getLogger(__name__)


class DeliveryClock(Middleware):
    """Notes when each delivery starts running (for latency and run-time stats, and
    for monitoring: a started delivery is running, a claimed one only reserved)."""

    def __init__(self, holdings: Callable[[], Holdings]) -> None:
        self._holdings = holdings

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if isinstance(message, JobProxy):
            message.started_at = time.time()
            self._holdings().started(message)


class WorkerFacts(Middleware):
    """Tells the broker's parts what its consumers need from the Dramatiq worker of
    this process: how many threads it runs (a queue's own prefetch never exceeds
    them), and that shutdown began. Declares the ``prefetch`` actor option (see
    :meth:`receiptq.pg.claims.Claimer.prefetch`)."""

    actor_options = {"prefetch"}

    def __init__(
        self,
        holdings: Callable[[], Holdings],
        settle: Callable[[], Settler],
        runtime: Callable[[], Runtime],
    ) -> None:
        self._holdings = holdings
        self._settle = settle
        self._runtime = runtime

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Refuse to start, in one line, behind a transaction pooler in session mode."""
        try:
            db.check_pooler(self._runtime().url)
        except psycopg.Error:
            pass  # the database is away: the worker starts and waits for it
        except ConfigError as exc:
            logger.error("%s", exc)
            raise SystemExit(3) from None  # Dramatiq's "broker connection failed"

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        holdings = self._holdings()
        holdings.worker_threads = worker.worker_threads
        holdings.stopping = False  # a broker may serve one worker after another
        self._runtime().open_gate()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Claim no more, and give back at once the jobs waiting in the worker's
        memory. Dramatiq itself gives them back only once the running jobs are done,
        which may be after a PaaS's grace period has run out and the process was
        killed: then they would wait for their leases to expire."""
        self._holdings().stopping = True
        waiting = [item.message for item in iter_queue(worker.work_queue)]
        self._settle().give_back_early(m for m in waiting if isinstance(m, JobProxy))
