"""A process that hammers one of Dramatiq's rate limiters on the Postgres backend.

    python -m apps.rate_limit_app KIND URL THREADS SECONDS

KIND is concurrent, window, bucket or barrier. Successes are written to the
test database's table limiter_runs (pid, kind, and the epoch times just before
and after the limiter answered), and the
concurrent kind keeps the live and peak number of holders in limiter_peak, so
the test can check what the limiter allowed across processes. The barrier
kind prints "waiting", waits for the barrier, then prints the result.
"""

import os
import sys
import threading
import time

import psycopg
from dramatiq.rate_limits import (
    Barrier,
    BucketRateLimiter,
    ConcurrentRateLimiter,
    WindowRateLimiter,
)

from receiptq.rate_limits import PostgresRateLimiterBackend

#: The limits the tests check against.
CONCURRENT_LIMIT = 2
WINDOW_LIMIT, WINDOW_S = 6, 2
BUCKET_LIMIT, BUCKET_MS = 4, 500


def run(kind: str, url: str, threads: int, seconds: float) -> None:
    backend = PostgresRateLimiterBackend(url, pool_max_size=threads + 1)
    if kind == "barrier":
        print("waiting", flush=True)
        print(Barrier(backend, "test-barrier").wait(block=True, timeout=20_000), flush=True)
        return
    limiter = {
        "concurrent": lambda: ConcurrentRateLimiter(backend, "ocr", limit=CONCURRENT_LIMIT),
        "window": lambda: WindowRateLimiter(backend, "mail", limit=WINDOW_LIMIT, window=WINDOW_S),
        "bucket": lambda: BucketRateLimiter(backend, "api", limit=BUCKET_LIMIT, bucket=BUCKET_MS),
    }[kind]()
    # Every process of a test starts hammering at the same moment (LIMITER_START_AT,
    # epoch seconds), so that one started later finds the slots taken as often as not.
    time.sleep(max(0.0, float(os.environ.get("LIMITER_START_AT", "0")) - time.time()))
    deadline = time.monotonic() + seconds

    def hammer() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                asked_at = time.time()
                with limiter.acquire(raise_on_failure=False) as acquired:
                    answered_at = time.time()
                    if not acquired:
                        time.sleep(0.005)
                        continue
                    conn.execute(
                        "INSERT INTO limiter_runs (pid, kind, asked_at, answered_at)"
                        " VALUES (%s, %s, %s, %s)",
                        (os.getpid(), kind, asked_at, answered_at),
                    )
                    if kind == "concurrent":
                        conn.execute(
                            "UPDATE limiter_peak SET live = live + 1, peak = greatest(peak, live + 1)"
                        )
                        time.sleep(0.02)
                        conn.execute("UPDATE limiter_peak SET live = live - 1")

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
