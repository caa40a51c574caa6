"""A worker app that uses everything that holds connections in a worker process:
the broker, results (stored, and read back blocking inside a job), group
completion callbacks on the PostgreSQL rate-limiter backend, a rate limiter, and
tiers resolved from ``receiptq_app.users`` at send time (each parent sends a
child for one of many users: cache misses of the tier resolver)."""

import os

import dramatiq
from dramatiq.rate_limits import ConcurrentRateLimiter

from receiptq.broker import PostgresBroker
from receiptq.middleware import add_app_middleware, with_results
from receiptq.rate_limits import PostgresRateLimiterBackend

URL = os.environ["RECEIPTQ_DATABASE_URL"]
broker = PostgresBroker(URL)
add_app_middleware(broker)  # GroupCallbacks on the rate-limiter backend, TierResolver
with_results(broker)
dramatiq.set_broker(broker)
limiter = ConcurrentRateLimiter(PostgresRateLimiterBackend(URL), "runtime-app", limit=100)


@dramatiq.actor(queue_name="rt_child", store_results=True, max_retries=0)
def child(n: int) -> int:
    return n * 2


@dramatiq.actor(queue_name="rt", store_results=True, max_retries=0)
def parent(n: int, user_id: str, earlier: dict) -> int:
    """Sends a child for ``user_id``, and returns the result of an ``earlier`` child
    (read blocking: through the LISTEN connection)."""
    with limiter.acquire():
        child.send_with_options(args=(n,), user_id=user_id)
        return dramatiq.Message(**earlier).get_result(block=True, timeout=30_000)


@dramatiq.actor(queue_name="rt", max_retries=0)
def done() -> None:
    """The group's completion callback."""
