"""PostgresBroker when things go wrong: retries, dead letters, malformed rows,
graceful shutdown and lost workers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq.message import Message
from dramatiq.middleware import Middleware, SkipMessage

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.errors import MessageError


def job_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM receiptq.jobs ORDER BY id").fetchall()


def dead_letters(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM receiptq.dead_letters ORDER BY id").fetchall()


def start_worker(broker: PostgresBroker, threads: int = 4) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


class AckSpy(Middleware):
    """Sets an event once a delivery of the watched actor has been acked."""

    def __init__(self, actor_name: str) -> None:
        self.actor_name = actor_name
        self.acked = threading.Event()

    def after_ack(self, broker: Any, message: Any) -> None:
        if message.actor_name == self.actor_name:
            self.acked.set()


@pytest.fixture
def lost_worker(database_url: str) -> Iterator[PostgresBroker]:
    """A second broker on the same database, standing for a worker that will die."""
    other = PostgresBroker(database_url, lease_s=5, poll_interval_ms=100)
    yield other
    other.close()


# -- Dramatiq's Retries ------------------------------------------------------------------


def test_actor_that_fails_once_runs_twice_and_then_leaves_the_table(broker, worker, conn):
    attempts = []

    @dramatiq.actor(queue_name="flaky", max_retries=3, min_backoff=10, max_backoff=20)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("OCR service timed out")

    flaky.send()
    broker.join("flaky", timeout=10_000)
    worker.join()
    assert len(attempts) == 2
    assert job_rows(conn) == []
    assert dead_letters(conn) == []


def test_ack_of_the_failed_delivery_does_not_delete_the_requeued_job(broker, worker, conn):
    spy = AckSpy("flaky")
    broker.add_middleware(spy)
    attempts = []

    @dramatiq.actor(queue_name="flaky", max_retries=3, min_backoff=1_000, max_backoff=1_000)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("OCR service timed out")

    sent = flaky.send()
    assert spy.acked.wait(10)
    assert broker.wait_for_acks(5)

    [row] = job_rows(conn)  # the ack of attempt 1 landed; the retry is still here
    assert row["message_id"] == sent.message_id
    assert (row["state"], row["attempt"], row["lease_owner"]) == ("queued", 1, None)
    assert row["message"]["options"]["retries"] == 1
    delay_s = conn.execute(
        "SELECT extract(epoch FROM run_at - now())::float8 AS s FROM receiptq.jobs"
    ).fetchone()["s"]
    assert 0.3 < delay_s <= 1.0  # Dramatiq's backoff with jitter: 0.5 to 1 s
    assert len(attempts) == 1

    broker.join("flaky", timeout=10_000)
    worker.join()
    assert len(attempts) == 2


def test_job_is_dead_lettered_after_last_attempt_with_error_and_traceback(broker, worker, conn):
    @dramatiq.actor(queue_name="doomed", max_retries=0)
    def unreadable_receipt(receipt_id):
        raise ValueError(f"receipt {receipt_id} is unreadable")

    sent = unreadable_receipt.send(42)
    broker.join("doomed", timeout=10_000)
    worker.join()

    assert job_rows(conn) == []
    [dead] = dead_letters(conn)
    assert dead["message_id"] == sent.message_id
    assert (dead["queue"], dead["actor"], dead["reason"]) == (
        "doomed",
        "unreadable_receipt",
        "retries exhausted",  # the default middleware is receiptq's (BackoffRetries)
    )
    assert (dead["attempts"], dead["max_attempts"]) == (1, 1)
    assert dead["error_type"] == "ValueError"
    assert dead["error"] == "receipt 42 is unreadable"
    assert "Traceback" in dead["traceback"]
    assert "unreadable_receipt" in dead["traceback"]
    assert dead["message"]["args"] == [42]


def test_exception_listed_in_throws_dead_letters_at_once(broker, worker, conn):
    class PermanentError(Exception):
        pass

    calls = []

    @dramatiq.actor(queue_name="perm", max_retries=5, throws=(PermanentError,))
    def reject_receipt():
        calls.append(1)
        raise PermanentError("not a receipt")

    reject_receipt.send()
    broker.join("perm", timeout=10_000)
    worker.join()

    assert len(calls) == 1
    [dead] = dead_letters(conn)
    assert (dead["reason"], dead["error_type"], dead["error"]) == (
        "permanent error",
        "PermanentError",
        "not a receipt",
    )
    assert "PermanentError: not a receipt" in dead["traceback"]


def test_dead_letter_keeps_the_traceback_of_the_last_failure(broker, worker, conn):
    class PermanentError(Exception):
        pass

    attempts = []

    @dramatiq.actor(
        queue_name="perm", max_retries=5, min_backoff=10, max_backoff=20, throws=(PermanentError,)
    )
    def reject_receipt():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("transient hiccup")
        raise PermanentError("not a receipt")

    reject_receipt.send()
    broker.join("perm", timeout=10_000)
    worker.join()

    [dead] = dead_letters(conn)
    assert (dead["attempts"], dead["error_type"]) == (2, "PermanentError")
    assert "PermanentError: not a receipt" in dead["traceback"]
    assert "transient hiccup" not in dead["traceback"]


def test_message_for_an_unknown_actor_is_dead_lettered_and_the_worker_keeps_running(
    broker, worker, conn
):
    ran = []

    @dramatiq.actor(queue_name="orphans")
    def alive(n):
        ran.append(n)

    orphan = Message(
        queue_name="orphans", actor_name="retired_actor", args=(1,), kwargs={}, options={}
    )
    broker.enqueue(orphan)
    alive.send(1)
    broker.join("orphans", timeout=10_000)
    worker.join()
    alive.send(2)
    broker.join("orphans", timeout=10_000)
    worker.join()

    assert ran == [1, 2]
    [dead] = dead_letters(conn)
    assert (dead["message_id"], dead["actor"], dead["reason"]) == (
        orphan.message_id,
        "retired_actor",
        "unknown actor",
    )
    assert dead["error_type"] == "ActorNotFound"


MALFORMED_MESSAGES = {
    "missing fields": {"foo": 1},
    "not an object": [1, 2, 3],
    "options not an object": {
        "queue_name": "rows",
        "actor_name": "alive",
        "args": [],
        "kwargs": {},
        "options": 5,
    },
    "args not a list": {
        "queue_name": "rows",
        "actor_name": "alive",
        "args": 7,
        "kwargs": {},
        "options": {},
    },
}


@pytest.mark.parametrize("message", MALFORMED_MESSAGES.values(), ids=MALFORMED_MESSAGES.keys())
def test_undecodable_row_is_dead_lettered_and_the_consumer_keeps_going(
    broker, worker, conn, message
):
    ran = []

    @dramatiq.actor(queue_name="rows")
    def alive(n):
        ran.append(n)

    conn.execute(
        "INSERT INTO receiptq.jobs (message_id, queue, actor, message)"
        " VALUES ('bad-1', 'rows', 'alive', %s::jsonb)",
        (json.dumps(message),),
    )
    alive.send(1)
    broker.join("rows", timeout=10_000)
    worker.join()
    alive.send(2)
    broker.join("rows", timeout=10_000)
    worker.join()

    assert ran == [1, 2]
    assert job_rows(conn) == []
    [dead] = dead_letters(conn)
    assert (dead["message_id"], dead["reason"], dead["error_type"]) == (
        "bad-1",
        "undecodable",
        "MessageError",
    )
    assert "undecodable message" in dead["error"]


def test_stored_message_naming_another_queue_runs_on_the_queue_of_its_row(broker, worker, conn):
    ran = []

    @dramatiq.actor(queue_name="rows")
    def alive(n):
        ran.append(n)

    fields = alive.message(1).asdict()
    fields.update(queue_name="somewhere-else", args=[1])
    conn.execute(
        "INSERT INTO receiptq.jobs (message_id, queue, actor, message)"
        " VALUES (%s, 'rows', 'alive', %s::jsonb)",
        (fields["message_id"], json.dumps(fields)),
    )
    broker.join("rows", timeout=10_000)
    worker.join()
    alive.send(2)
    broker.join("rows", timeout=10_000)
    worker.join()
    assert ran == [1, 2]


# -- graceful shutdown -------------------------------------------------------------------


def test_requeue_and_close_return_claimed_but_unstarted_jobs_without_using_an_attempt(broker, conn):
    @dramatiq.actor(queue_name="shutdown")
    def ocr_receipt(n):
        pass

    for n in range(5):
        ocr_receipt.send(n)
    consumer = broker.consume("shutdown", prefetch=10, timeout=1000)
    first, second = next(consumer), next(consumer)
    assert {r["state"] for r in job_rows(conn)} == {"running"}  # one claim took all five

    consumer.requeue([first])
    rows = {r["message_id"]: r for r in job_rows(conn)}
    assert (rows[first.message_id]["state"], rows[first.message_id]["attempt"]) == ("queued", 0)
    assert rows[first.message_id]["lease_owner"] is None

    consumer.close()  # gives back the three it still buffered; `second` is being worked on
    rows = {r["message_id"]: r for r in job_rows(conn)}
    assert rows.pop(second.message_id)["state"] == "running"
    assert {(r["state"], r["attempt"], r["lease_owner"]) for r in rows.values()} == {
        ("queued", 0, None)
    }
    assert len(rows) == 4


def test_worker_stop_requeues_unstarted_jobs_and_finishes_the_running_one(broker, conn):
    started = threading.Event()
    release = threading.Event()
    ran = []

    @dramatiq.actor(queue_name="shutdown")
    def ocr_receipt(n):
        ran.append(n)
        started.set()
        assert release.wait(10)

    for n in range(4):
        ocr_receipt.send(n)
    worker = start_worker(broker, threads=1)  # prefetch 2: one running, one waiting
    try:
        assert started.wait(10)
        for thread in worker.workers:
            thread.stop()  # the worker thread takes no new job after this one
        release.set()
    finally:
        worker.stop()
    assert broker.wait_for_acks(5)

    assert ran == [0]
    rows = job_rows(conn)
    assert [r["message"]["args"] for r in rows] == [[1], [2], [3]]
    assert {(r["state"], r["attempt"], r["lease_owner"]) for r in rows} == {("queued", 0, None)}


# -- lost workers --------------------------------------------------------------------------


def claim_and_die(lost_worker: PostgresBroker, queue: str) -> None:
    """The lost worker claims one job and dies without acking it.

    Tests call ``broker.heartbeat_now()`` first: it starts the live broker's own
    heartbeat thread, whose next beat (and rescue) is then lease_s/3 = 1.7 s
    away, so the rescue the test triggers does not race with it."""
    lost_worker.declare_queue(queue)
    consumer = lost_worker.consume(queue, prefetch=1, timeout=1000)
    assert next(consumer) is not None
    lost_worker.close()


def test_expired_lease_of_a_lost_worker_is_rescued_back_to_queued(broker, lost_worker, conn):
    @dramatiq.actor(queue_name="leases", max_retries=2)
    def ocr_receipt():
        pass

    ocr_receipt.send()
    broker.heartbeat_now()
    claim_and_die(lost_worker, "leases")
    assert broker.heartbeat_now() == []  # the lease has not expired yet
    [row] = job_rows(conn)
    assert (row["state"], row["lease_owner"]) == ("running", lost_worker.worker_id)

    conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() - interval '1s'")
    rescued = broker.heartbeat_now()

    assert rescued == [
        {"outcome": "requeued", "queue": "leases", "actor": "ocr_receipt", "jobs": 1}
    ]
    [row] = job_rows(conn)
    assert (row["state"], row["attempt"], row["lease_owner"]) == ("queued", 1, None)
    assert dead_letters(conn) == []


def test_rescued_job_runs_again_on_a_live_worker(broker, lost_worker, conn):
    ran = []

    @dramatiq.actor(queue_name="leases", max_retries=2)
    def ocr_receipt():
        ran.append(1)

    ocr_receipt.send()
    broker.heartbeat_now()
    claim_and_die(lost_worker, "leases")
    conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() - interval '1s'")
    broker.heartbeat_now()

    worker = start_worker(broker)
    try:
        broker.join("leases", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert ran == [1]


def test_expired_lease_on_the_last_attempt_is_dead_lettered_as_worker_lost(
    broker, lost_worker, conn
):
    @dramatiq.actor(queue_name="leases", max_retries=0)
    def ocr_receipt():
        pass

    sent = ocr_receipt.send()
    broker.heartbeat_now()
    claim_and_die(lost_worker, "leases")
    conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() - interval '1s'")
    rescued = broker.heartbeat_now()

    assert rescued == [{"outcome": "dead", "queue": "leases", "actor": "ocr_receipt", "jobs": 1}]
    assert job_rows(conn) == []
    [dead] = dead_letters(conn)
    assert (dead["message_id"], dead["reason"], dead["error_type"]) == (
        sent.message_id,
        "worker lost",
        "WorkerLost",
    )
    assert (dead["attempts"], dead["max_attempts"]) == (1, 1)
    assert lost_worker.worker_id in dead["error"]


def test_live_worker_extends_its_own_leases_instead_of_rescuing_them(broker, conn):
    @dramatiq.actor(queue_name="leases")
    def ocr_receipt():
        pass

    ocr_receipt.send()
    broker.heartbeat_now()  # the heartbeat thread's next beat is 1.7 s away
    consumer = broker.consume("leases", prefetch=1, timeout=1000)
    try:
        assert next(consumer) is not None
        conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() - interval '1s'")
        assert broker.heartbeat_now() == []
        [row] = job_rows(conn)
        assert (row["state"], row["lease_owner"]) == ("running", broker.worker_id)
        left_s = conn.execute(
            "SELECT extract(epoch FROM lease_expires_at - now())::float8 AS s FROM receiptq.jobs"
        ).fetchone()["s"]
        assert left_s > 4
    finally:
        consumer.close()


def test_heartbeat_registers_the_worker_and_close_removes_it(broker, conn):
    broker.declare_queue("leases")
    broker.heartbeat_now()
    [row] = conn.execute("SELECT * FROM receiptq.workers").fetchall()
    assert row["id"] == broker.worker_id
    broker.close()
    assert conn.execute("SELECT * FROM receiptq.workers").fetchall() == []


def expire_and_rescue(conn: psycopg.Connection[Any]) -> None:
    """Expire every lease and rescue them as any worker's heartbeat would, in one
    transaction so that the owner's own heartbeat cannot renew them in between."""
    with conn.transaction():
        conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() - interval '1s'")
        db.fetch_all(conn, "job_rescue_expired", {"worker_id": "another-worker", "ids": []})


def test_late_ack_of_a_rescued_delivery_does_not_delete_the_new_delivery(broker, conn):
    @dramatiq.actor(queue_name="leases")
    def ocr_receipt():
        pass

    ocr_receipt.send()
    consumer = broker.consume("leases", prefetch=2, timeout=1000)
    try:
        stale = next(consumer)
        expire_and_rescue(conn)
        fresh = next(consumer)
        assert (stale.attempt, fresh.attempt) == (1, 2)

        consumer.ack(stale)
        assert broker.wait_for_acks(5)
        [row] = job_rows(conn)
        assert (row["state"], row["attempt"]) == ("running", 2)

        consumer.ack(fresh)
        assert broker.wait_for_acks(5)
        assert job_rows(conn) == []
    finally:
        consumer.close()


def test_nack_of_a_rescued_delivery_leaves_the_new_delivery_alone(broker, conn):
    @dramatiq.actor(queue_name="leases")
    def ocr_receipt():
        pass

    ocr_receipt.send()
    consumer = broker.consume("leases", prefetch=2, timeout=1000)
    try:
        stale = next(consumer)
        expire_and_rescue(conn)
        fresh = next(consumer)
        stale.fail()
        consumer.nack(stale)
        [row] = job_rows(conn)
        assert (row["state"], row["attempt"]) == ("running", fresh.attempt)
        assert dead_letters(conn) == []
    finally:
        consumer.close()


# -- deliveries the worker gives up on -------------------------------------------------------


def test_retry_that_cannot_be_stored_leaves_the_job_to_its_lease_instead_of_losing_it(
    broker, conn, monkeypatch
):
    @dramatiq.actor(queue_name="unstored", max_retries=3, min_backoff=10)
    def flaky():
        raise RuntimeError("service down")

    flaky.send()
    original_enqueue = broker.enqueue

    def too_large(message, *, delay=None):
        # Not the database being away (a retry kept in the worker, test_retry_outage.py):
        # an error the retry cannot outlive, e.g. its traceback option grew it too large.
        raise MessageError("message over the size limit")

    spy = AckSpy("flaky")
    broker.add_middleware(spy)
    monkeypatch.setattr(broker, "enqueue", too_large)  # Retries' re-send fails
    worker = start_worker(broker, threads=1)
    try:
        assert spy.acked.wait(10)
    finally:
        worker.stop()
    monkeypatch.setattr(broker, "enqueue", original_enqueue)
    broker.wait_for_acks()

    [row] = job_rows(conn)
    assert (row["state"], row["attempt"]) == ("running", 1), "the job was not acked away"
    # The heartbeat no longer renews its lease; once it runs out, the job is rescued.
    conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() + interval '1 second'")
    broker.heartbeat_now()
    [row] = job_rows(conn)
    assert (
        row["lease_expires_at"] < conn.execute("SELECT now() + interval '2 s' AS t").fetchone()["t"]
    )
    conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() - interval '1 second'")
    assert broker.heartbeat_now() == [
        {"outcome": "requeued", "queue": "unstored", "actor": "flaky", "jobs": 1}
    ]


def test_heartbeat_renews_the_leases_of_deliveries_in_flight(broker, conn):
    @dramatiq.actor(queue_name="renew")
    def slow():
        pass

    slow.send()
    consumer = broker.consume("renew", prefetch=1, timeout=1000)
    assert next(consumer) is not None
    conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() + interval '1 second'")
    broker.heartbeat_now()
    [row] = job_rows(conn)
    renewed_until = conn.execute("SELECT now() + interval '4 s' AS t").fetchone()["t"]
    assert row["lease_expires_at"] > renewed_until  # lease_s = 5 in the fixture
    consumer.close()


def test_late_retry_from_a_worker_that_lost_the_job_does_not_requeue_it(broker, lost_worker, conn):
    @dramatiq.actor(queue_name="late", max_retries=3)
    def ocr_receipt():
        pass

    lost_worker.declare_queue("late")
    sent = ocr_receipt.send()
    consumer = broker.consume("late", prefetch=1, timeout=1000)
    assert next(consumer) is not None  # the live worker holds the job now
    # The lost worker's Retries re-sends the same message id late:
    lost_worker.enqueue(sent, delay=10)
    [row] = job_rows(conn)
    assert (row["state"], row["lease_owner"]) == ("running", broker.worker_id)
    consumer.close()


# -- postponing ----------------------------------------------------------------------------


class PostponeFirstDelivery(Middleware):
    """Stands for a breaker: the first delivery is postponed instead of run."""

    def __init__(self) -> None:
        self.postponed = 0

    def before_process_message(self, broker: Any, message: Any) -> None:
        if self.postponed == 0:
            self.postponed += 1
            broker.postpone(message, delay_ms=300)
            raise SkipMessage()


def test_postponed_delivery_runs_later_without_using_an_attempt(broker, conn):
    ran = []

    @dramatiq.actor(queue_name="later", max_retries=0)
    def ocr_receipt():
        ran.append(1)

    broker.add_middleware(PostponeFirstDelivery(), before=type(broker.middleware[0]))
    ocr_receipt.send()
    worker = start_worker(broker, threads=1)
    try:
        broker.join("later", timeout=10_000)
    finally:
        worker.stop()
    assert ran == [1], "ran once, after the postponement, despite max_retries=0"
    assert dead_letters(conn) == []
    broker.close()
    [stats] = conn.execute("SELECT succeeded, postponed FROM receiptq.stats_minute").fetchall()
    assert (stats["succeeded"], stats["postponed"]) == (1, 1)
