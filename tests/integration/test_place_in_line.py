"""A job that comes back (its worker died, or gave it back at shutdown) keeps its
place in line: its due time and its user round, so a job that was at the head of
the line runs next, not behind everything sent meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import psycopg
import pytest

from receiptq import db
from receiptq.broker import PostgresBroker
from tests_support import wait_until


@pytest.fixture
def lost_worker(database_url: str) -> Iterator[PostgresBroker]:
    """A second broker on the same database, standing for a worker that will die."""
    other = PostgresBroker(database_url, lease_s=5, poll_interval_ms=100)
    yield other
    other.close()


def claim_head(claimer: PostgresBroker, queue: str) -> Any:
    """``claimer`` claims the job at the head of ``queue`` (prefetch 1); the delivery."""
    claimer.declare_queue(queue)
    consumer = claimer.consume(queue, prefetch=1, timeout=1000)
    delivery = next(consumer)
    assert delivery is not None
    return consumer, delivery


def send_backlog(actor: dramatiq.Actor, user_ids: list[str | None]) -> None:
    for n, user_id in enumerate(user_ids):
        actor.send_with_options(args=(f"backlog-{n}",), user_id=user_id)


def expire_and_rescue(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Expire every lease and rescue as another worker's heartbeat would."""
    with conn.transaction():
        conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() - interval '1s'")
        return db.fetch_all(conn, "job_rescue_expired", {"worker_id": "another", "ids": []})


def next_claimed(broker: PostgresBroker, queue: str) -> str:
    consumer = broker.consume(queue, prefetch=1, timeout=1000)
    try:
        delivery = next(consumer)
        assert delivery is not None
        return delivery.args[0]
    finally:
        consumer.close()


@pytest.mark.parametrize(
    "users",
    [
        pytest.param([None] * 30, id="without-users"),
        # The head job's user round (1) is the round the backlog's first jobs get too:
        # the rescued job must still go first among them.
        pytest.param([f"user-{n % 5}" for n in range(30)], id="with-user-rounds"),
    ],
)
def test_rescued_head_of_line_job_runs_before_the_backlog_sent_after_it(
    broker, lost_worker, conn, users
):
    @dramatiq.actor(queue_name="line", max_retries=3)
    def ocr_receipt(label):
        pass

    ocr_receipt.send_with_options(args=("head",), user_id=users[0])
    broker.heartbeat_now()  # the live broker's own beats are lease/3 away
    claim_head(lost_worker, "line")
    lost_worker.close()  # the worker dies holding the head job
    send_backlog(ocr_receipt, users)

    assert expire_and_rescue(conn) == [
        {"outcome": "requeued", "queue": "line", "actor": "ocr_receipt", "jobs": 1}
    ]
    assert next_claimed(broker, "line") == "head"


def test_job_given_back_at_shutdown_runs_before_the_backlog_sent_after_it(broker, conn):
    @dramatiq.actor(queue_name="line")
    def ocr_receipt(label):
        pass

    users = [f"user-{n % 5}" for n in range(30)]
    ocr_receipt.send_with_options(args=("head",), user_id=users[0])
    consumer, delivery = claim_head(broker, "line")
    send_backlog(ocr_receipt, users)

    consumer.requeue([delivery])  # what Dramatiq does with unstarted jobs at shutdown
    consumer.close()
    assert next_claimed(broker, "line") == "head"


def test_shutdown_gives_back_waiting_jobs_before_the_running_job_ends(broker, conn):
    started, release = threading.Event(), threading.Event()

    @dramatiq.actor(queue_name="line")
    def ocr_receipt(label):
        started.set()
        release.wait(30)

    for n in range(4):
        ocr_receipt.send(f"job-{n}")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)  # prefetch 2
    worker.start()
    stopping = threading.Thread(target=worker.stop)
    try:
        assert started.wait(10)
        stopping.start()  # the running job goes on; the waiting one must come back now
        wait_until(lambda: states(conn) == {"running": 1, "queued": 3}, 10, "the hand-back")
    finally:
        release.set()
        stopping.join(30)
    assert broker.wait_for_acks(5)
    assert states(conn) == {"queued": 3}


def states(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT state, count(*) AS n FROM receiptq.jobs GROUP BY state")
    return {r["state"]: r["n"] for r in rows}
