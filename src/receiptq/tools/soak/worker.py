"""The soak's actors: ``dramatiq receiptq.tools.soak.worker`` (started by ``python -m
receiptq.tools.soak``).

Importing this module sets up a PostgresBroker from the environment with receiptq's
middleware (backoff retries, circuit breakers, CurrentMessage) and results in
PostgreSQL, and declares the soak's jobs, all on the queue ``soak``:

- ``soak_job(ms, limited)``: works ``ms`` milliseconds (sleeps) and keeps its result
  (the results table, Dramatiq's 10-minute TTL); ``limited`` jobs hold a concurrency
  slot of a PostgreSQL rate limiter while they work (the rate-limits table).
- ``soak_flaky(ms)``: fails its first delivery, succeeds on the retry.
- ``soak_fail(ms)``: always fails; after its retries it is dead-lettered.

What the soak measures is the queue's own footprint, so the jobs touch nothing else.
"""

from __future__ import annotations

import time

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.rate_limits import ConcurrentRateLimiter

from receiptq.broker import PostgresBroker
from receiptq.middleware import receiptq_middleware, with_results
from receiptq.rate_limits import PostgresRateLimiterBackend

broker = PostgresBroker(middleware=receiptq_middleware())
with_results(broker)
dramatiq.set_broker(broker)

#: The queue of every soak job (receiptq.tools.soak.run sends to it).
QUEUE = "soak"

_limiter = ConcurrentRateLimiter(
    PostgresRateLimiterBackend(broker.url), "soak-slot", limit=4, ttl=10_000
)


class SoakFailure(Exception):
    """The failure the failing soak jobs raise (a transient one: they are retried)."""


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def soak_job(ms: float, limited: bool = False) -> float:
    """Works for ``ms`` milliseconds; returns ``ms``."""
    if limited:
        with _limiter.acquire(raise_on_failure=False):
            time.sleep(ms / 1000)
    else:
        time.sleep(ms / 1000)
    return ms


@dramatiq.actor(queue_name=QUEUE, max_retries=2, min_backoff=200, max_backoff=2000)
def soak_flaky(ms: float) -> None:
    """Fails its first delivery (after ``ms`` milliseconds), succeeds on a retry."""
    time.sleep(ms / 1000)
    message = CurrentMessage.get_current_message()
    if message is not None and not message.options.get("retries"):
        raise SoakFailure("first delivery of a flaky soak job")


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=200, max_backoff=1000)
def soak_fail(ms: float) -> None:
    """Always fails (after ``ms`` milliseconds): dead-lettered after one retry."""
    time.sleep(ms / 1000)
    raise SoakFailure("a soak job that always fails")
