"""Actors for the database-fault tests with real `dramatiq` worker processes.

Each job records its run through the broker's own pool (so it works again once
the database is back after a restart); `wait_for_file` runs until a file exists
(a job a test can hold while it stops the worker or the database).
"""

import os
import time

import dramatiq

from receiptq.broker import PostgresBroker
from receiptq.middleware import with_results

broker = PostgresBroker(os.environ["RECEIPTQ_DATABASE_URL"])
with_results(broker)  # for nap_result; the other actors store none
dramatiq.set_broker(broker)


def _record(job_no: int) -> None:
    with broker.connection() as conn:
        conn.execute("INSERT INTO test_runs (job_no, pid) VALUES (%s, %s)", (job_no, os.getpid()))


@dramatiq.actor(queue_name="faults", max_retries=5, min_backoff=100, max_backoff=1000)
def note(job_no: int) -> None:
    _record(job_no)


@dramatiq.actor(queue_name="faults", max_retries=5, min_backoff=100, max_backoff=1000)
def wait_for_file(job_no: int, path: str) -> None:
    with broker.connection() as conn:
        conn.execute(
            "INSERT INTO test_started (job_no, pid) VALUES (%s, %s)", (job_no, os.getpid())
        )
    while not os.path.exists(path):
        time.sleep(0.05)
    _record(job_no)


@dramatiq.actor(queue_name="faults", max_retries=20, min_backoff=100, max_backoff=1000)
def nap(job_no: int, ms: float, path: str) -> None:
    """Works ``ms`` milliseconds, then appends its number to a file (not the database:
    a job that fails while the database restarts would log a traceback of its own)."""
    time.sleep(ms / 1000)
    with open(path, "a") as runs:
        runs.write(f"{job_no}\n")


@dramatiq.actor(queue_name="faults", max_retries=20, min_backoff=100, max_backoff=1000,
                store_results=True)  # fmt: skip
def nap_result(job_no: int, ms: float, path: str) -> int:
    """``nap``, and its result (its number) is stored."""
    nap.fn(job_no, ms, path)
    return job_no
