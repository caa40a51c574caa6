"""The queue-depth time series: the web process samples snapshots into a ring buffer.

Depth is a live count (nothing in the database remembers it), so the web
process takes a :func:`receiptq.monitor.snapshot` every few seconds and keeps
the last hour in memory; the page draws it. Throughput history needs no
sampling: it comes from the per-minute statistics.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from receiptq import monitor

#: Seconds between two samples (``RECEIPTQ_WEB_SAMPLE_INTERVAL_S``).
DEFAULT_SAMPLE_INTERVAL_S = 2.0
#: How much history the ring buffer holds (s).
HISTORY_S = 3600.0
#: The figures of each queue a sample keeps.
DEPTH_FIELDS = ("queued", "scheduled", "running", "reserved", "dead")

logger = logging.getLogger(__name__)


def depth_sample(status: dict[str, Any]) -> dict[str, Any]:
    """The depth figures of a snapshot: ``{"t", "queues": {q: {...}}, "totals": {...}}``."""
    return {
        "t": status["generated_at"],
        "queues": {
            name: {key: figures[key] for key in DEPTH_FIELDS}
            for name, figures in status["queues"].items()
        },
        "totals": {key: status["totals"][key] for key in DEPTH_FIELDS},
    }


class DepthSampler:
    """A daemon thread appending a depth sample every ``interval_s`` to a ring buffer."""

    def __init__(self, pool: ConnectionPool, *, interval_s: float = DEFAULT_SAMPLE_INTERVAL_S):
        self.pool = pool
        self.interval_s = interval_s
        self.samples: deque[dict[str, Any]] = deque(maxlen=math.ceil(HISTORY_S / interval_s))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="receiptq-depth-sampler", daemon=True
        )

    def start(self) -> None:
        """Take the first sample now (the page has a point at once), then keep sampling."""
        self._sample_logged()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def sample(self) -> None:
        """Take one sample now."""
        with self.pool.connection() as conn:
            self.samples.append(depth_sample(monitor.snapshot(conn)))

    def history(self) -> list[dict[str, Any]]:
        return list(self.samples)

    def _sample_logged(self) -> None:
        try:
            self.sample()
        except (psycopg.Error, OSError) as exc:  # a gap in the chart, not a dead thread
            logger.warning("depth sample failed: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_logged()
