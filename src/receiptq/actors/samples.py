"""Sample actors used by the demo and the benchmark until the receipt actors land."""

from __future__ import annotations

import random
import time

import dramatiq


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
