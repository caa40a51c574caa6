"""Sample actors for tests (they used to ship in receiptq.actors): ``sample_job`` on
the ``default`` queue and ``noop`` on ``bench``.

Importing this module sets a PostgresBroker from the environment as Dramatiq's
broker, as a worker module does: ``dramatiq apps.samples``, ``receiptq process
apps.samples``, ``receiptq enqueue sample_job --module apps.samples``.
"""

from __future__ import annotations

import random
import time

import dramatiq

from receiptq.broker import PostgresBroker

broker = PostgresBroker()
dramatiq.set_broker(broker)


class FlakyServiceError(RuntimeError):
    """The sample service failed this time; a retry may succeed."""


@dramatiq.actor(queue_name="default", max_retries=3, min_backoff=200, max_backoff=2_000)
def sample_job(job_no: int, work_ms: int = 0, fail_rate: float = 0.0) -> int:
    """Sleep ``work_ms`` and fail with probability ``fail_rate`` (retried with backoff)."""
    if work_ms:
        time.sleep(work_ms / 1000)
    if fail_rate and random.random() < fail_rate:
        raise FlakyServiceError(f"job {job_no}: the sample service failed")
    return job_no


@dramatiq.actor(queue_name="bench")
def noop() -> None:
    """Does nothing: the benchmark measures the queue, not the job."""
