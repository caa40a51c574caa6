"""The benchmark's actor: ``dramatiq receiptq.tools.bench.worker`` (started by
``receiptq bench``).

Importing this module sets up a PostgresBroker from the environment with
Dramatiq's default middleware (AgeLimit, TimeLimit, ShutdownNotifications,
Callbacks, Pipelines, Retries: the stack the peers' Dramatiq+Redis worker runs),
so the benchmark measures the queue, not the receipt app's extra middleware;
adds a middleware that records when each worker process boots its Dramatiq worker, and declares ``bench_noop``, a no-op job that records
its enqueue-to-start latency (the enqueue time travels in its argument) and an
optional label (the tier workload labels each job with its tier or priority).

Recording must not dominate what is measured: the actor only appends to an
in-memory deque; one background thread per process writes what accumulated every
:data:`RECORD_FLUSH_S` as a single row (arrays) on a connection of its own. The
tables (schema ``bench``) exist only in the benchmark database, created by
``receiptq bench``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

import dramatiq
import psycopg
from dramatiq.middleware import Middleware, default_middleware

from receiptq import db
from receiptq.broker import PostgresBroker

# Dramatiq's own default stack, named explicitly (PostgresBroker's default is
# receiptq's): the benchmark compares the queue with peers that run this stack.
broker = PostgresBroker(middleware=[cls() for cls in default_middleware])
dramatiq.set_broker(broker)

logger = logging.getLogger(__name__)

#: The queue and actor name of the benchmark job (receiptq.tools.bench sends to them).
QUEUE = "bench"
ACTOR = "bench_noop"
#: How often each worker process writes the figures it accumulated (s).
RECORD_FLUSH_S = 0.05


class Recorder:
    """Accumulates (start time, latency, label) per job in memory; a thread writes them
    in batches."""

    def __init__(self, url: str, *, flush_s: float = RECORD_FLUSH_S) -> None:
        self._url = url
        self._flush_s = flush_s
        self._pending: deque[tuple[float, float, str]] = deque()
        self._lock = threading.Lock()  # guards the connection and the thread's start
        self._conn: psycopg.Connection[Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self._url)
        return self._conn

    def record_boot(self) -> None:
        """This process's worker boots now."""
        booted_at = time.time()
        with self._lock:
            db.execute(
                self._connection(),
                "bench_record_boot",
                {"pid": os.getpid(), "booted_at": booted_at},
            )

    def record(self, enqueued_at: float, label: str = "") -> None:
        """One job started (and, being a no-op, finished)."""
        started = time.time()
        self._pending.append((started, (started - enqueued_at) * 1000, label))
        if self._thread is None:
            self._start_thread()

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="receiptq-bench-recorder", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()

    def flush(self) -> None:
        """Write what accumulated as one row (only the recorder thread and close() call it)."""
        count = len(self._pending)
        if not count:
            return
        items = [self._pending.popleft() for _ in range(count)]
        started = [s for s, _, _ in items]
        params = {
            "pid": os.getpid(),
            "done": count,
            "last_at": max(started),
            "started": started,
            "latency_ms": [latency for _, latency, _ in items],
            "labels": [label for _, _, label in items],
        }
        try:
            with self._lock:
                db.execute(self._connection(), "bench_record_results", params)
        except psycopg.Error:
            logger.exception("could not record %d bench results; retrying", count)
            self._pending.extendleft(reversed(items))
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None

    def close(self) -> None:
        """Write everything left and close the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.flush()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


recorder = Recorder(broker.url)


class RecordBenchFigures(Middleware):
    """Records the first moment of each worker (like the peers' RecordWorkerBoot) and
    writes the last figures when the worker stops."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        recorder.record_boot()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        recorder.close()


broker.add_middleware(RecordBenchFigures())


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR)
def bench_noop(enqueued_at: float, label: str = "") -> None:
    """Does nothing but note that it ran, when it was sent, and its label."""
    recorder.record(enqueued_at, label)
