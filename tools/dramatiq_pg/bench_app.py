"""The no-op actor of bench_dramatiq_pg.py, on dramatiq-pg (Dramatiq 1.x).

Imported by the ``dramatiq`` worker processes (which run it) and by the benchmark
(which only sends). As in the peers' dramatiq-redis app (../../../shared/peers), the
actor records its figures in Redis: one more job done, and its latency from enqueue
to start, so that the benchmark process can read them; keys carry the run's prefix.
"""

import os
import time

import dramatiq
import redis
from dramatiq_pg import PostgresBroker

REDIS_URL = os.environ.get("DPG_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PREFIX = os.environ.get("DPG_BENCH_PREFIX", "dpg-bench")
DONE_KEY = f"{PREFIX}:done"
LATENCY_KEY = f"{PREFIX}:latency_ms"
BOOT_KEY = f"{PREFIX}:worker_boot"

figures = redis.Redis.from_url(REDIS_URL)


class RecordWorkerBoot(dramatiq.Middleware):
    """The time the first worker process boots its worker: the drain is timed from it."""

    def before_worker_boot(self, broker, worker):
        figures.setnx(BOOT_KEY, time.time())


# results=False: the no-op stores no result (the other peers store none either).
broker = PostgresBroker(url=os.environ["DRAMATIQ_PG_URL"], results=False)
broker.add_middleware(RecordWorkerBoot())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench")
def noop(enqueued_at: float) -> None:
    latency_ms = (time.time() - enqueued_at) * 1000
    pipe = figures.pipeline(transaction=False)
    pipe.rpush(LATENCY_KEY, latency_ms)
    pipe.incr(DONE_KEY)
    pipe.execute()
