"""Actors for tests that run real `dramatiq` worker processes.

Each run of `record` inserts a row into test_runs, so a test can count how many
times every job ran and in which process. `hold` notes that it started, then
runs until a file exists (a job a test can kill its worker under).
"""

import os
import threading
import time

import dramatiq
import psycopg

from receiptq.broker import PostgresBroker

URL = os.environ["RECEIPTQ_DATABASE_URL"]
broker = PostgresBroker(URL)
dramatiq.set_broker(broker)

_lock = threading.Lock()
_conns: dict[int, psycopg.Connection] = {}


def _execute(statement: str, params: tuple) -> None:
    # One connection per process; worker threads take turns on it.
    with _lock:
        conn = _conns.get(os.getpid())
        if conn is None:
            conn = _conns[os.getpid()] = psycopg.connect(URL, autocommit=True)
        conn.execute(statement, params)


@dramatiq.actor(queue_name="procs", max_retries=0)
def record(job_no: int) -> None:
    _execute("INSERT INTO test_runs (job_no, pid) VALUES (%s, %s)", (job_no, os.getpid()))


@dramatiq.actor(queue_name="procs", max_retries=3)
def hold(job_no: int, release_file: str) -> None:
    _execute("INSERT INTO test_started (job_no, pid) VALUES (%s, %s)", (job_no, os.getpid()))
    while not os.path.exists(release_file):
        time.sleep(0.05)
    _execute("INSERT INTO test_runs (job_no, pid) VALUES (%s, %s)", (job_no, os.getpid()))


@dramatiq.actor(queue_name="capped", max_retries=0)
def capped(job_no: int) -> None:
    """Notes when it starts and ends, so a test can compute the peak concurrency."""
    _execute(
        "INSERT INTO test_spans (job_no, edge, at) VALUES (%s, 1, clock_timestamp())", (job_no,)
    )
    time.sleep(0.1)
    _execute(
        "INSERT INTO test_spans (job_no, edge, at) VALUES (%s, -1, clock_timestamp())", (job_no,)
    )


def _spanned(actor: str, job_no: int) -> None:
    """Notes start and end of a 0.1 s job in test_actor_spans (peak concurrency per actor)."""
    statement = (
        "INSERT INTO test_actor_spans (actor, job_no, edge, at)"
        " VALUES (%s, %s, %s, clock_timestamp())"
    )
    _execute(statement, (actor, job_no, 1))
    time.sleep(0.1)
    _execute(statement, (actor, job_no, -1))


@dramatiq.actor(queue_name="mixed", max_retries=0)
def mixed_capped(job_no: int) -> None:
    _spanned("mixed_capped", job_no)


@dramatiq.actor(queue_name="mixed", max_retries=0)
def mixed_free(job_no: int) -> None:
    _spanned("mixed_free", job_no)


@dramatiq.actor(queue_name="slow", max_retries=0)
def hold_until_released(job_no: int, release_dir: str) -> None:
    """Notes that it started, then runs until ``release_dir/<job_no>`` exists (a test
    releases the jobs one by one)."""
    _execute("INSERT INTO test_started (job_no, pid) VALUES (%s, %s)", (job_no, os.getpid()))
    while not os.path.exists(os.path.join(release_dir, str(job_no))):
        time.sleep(0.05)
    _execute("INSERT INTO test_runs (job_no, pid) VALUES (%s, %s)", (job_no, os.getpid()))
