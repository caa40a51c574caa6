"""Actors for the transaction-pooler tests (tests/test_pooler.py): every connection of
the worker, and the actors' own bookkeeping, goes through the URL given (a PgBouncer)
in the mode RECEIPTQ_POOLER says.

`record` notes each run in test_runs; `capped` and `limited` note their start and end
in test_spans (peak concurrency of a queue cap, and of a rate limiter on receiptq's
backend); `doomed` fails for good (a dead letter); `square` stores its result.
"""

import os
import threading
import time

import dramatiq
from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.results import Results

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.errors import PermanentError
from receiptq.rate_limits import PostgresRateLimiterBackend
from receiptq.results import PostgresResultBackend

URL = os.environ["RECEIPTQ_DATABASE_URL"]
broker = PostgresBroker(URL)
broker.add_middleware(Results(backend=PostgresResultBackend(URL)))
dramatiq.set_broker(broker)
limiter = ConcurrentRateLimiter(PostgresRateLimiterBackend(URL), "pooler-test", limit=2)

_local = threading.local()


def _execute(statement: str, params: tuple) -> None:
    # One connection per thread, made the way receiptq makes its own (the pooler mode).
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = db.connect(URL)
    conn.execute(statement, params)


def _span(kind: str, job_no: int) -> None:
    statement = (
        "INSERT INTO test_spans (kind, job_no, edge, at) VALUES (%s, %s, %s, clock_timestamp())"
    )
    _execute(statement, (kind, job_no, 1))
    time.sleep(0.05)
    _execute(statement, (kind, job_no, -1))


@dramatiq.actor(queue_name="pooled", max_retries=0)
def record(job_no: int) -> None:
    _execute("INSERT INTO test_runs (job_no, pid) VALUES (%s, %s)", (job_no, os.getpid()))


@dramatiq.actor(queue_name="pooled_capped", max_retries=0)
def capped(job_no: int) -> None:
    _span("capped", job_no)


@dramatiq.actor(queue_name="pooled", max_retries=20, min_backoff=50, max_backoff=200)
def limited(job_no: int) -> None:
    with limiter.acquire():
        _span("limited", job_no)


@dramatiq.actor(queue_name="pooled", max_retries=0)
def doomed(job_no: int) -> None:
    raise PermanentError(f"job {job_no} fails for good")


@dramatiq.actor(queue_name="pooled", max_retries=0, store_results=True)
def square(x: int) -> int:
    return x * x
