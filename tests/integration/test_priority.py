"""Strict priority: a job sent after a batch was claimed still runs before the
less urgent jobs the process already holds.

The first test is Dramatiq 2.2.1's own ``test_actors_can_prioritize_work``
(tests/test_actors.py), run on receiptq's broker instead of the stub broker. One
step is added: the stub broker hands a sent message to its consumer at once, where
receiptq's consumer claims it from the database a moment later, so the test waits
until all 20 messages are prefetched (its own comment's premise) before it resumes
the worker. Before the claim rule for new work, the last 4 were never prefetched.
"""

from __future__ import annotations

import threading
from unittest.mock import patch

import dramatiq
import dramatiq.worker
from dramatiq.message import Message

from receiptq.broker import PostgresBroker
from tests_support import wait_until


def test_actors_can_prioritize_work(broker, conn):
    with patch.object(dramatiq.worker, "QUEUE_PREFETCH", 20):
        # Increase prefetch so all messages are prefetched onto work_queue
        stub_worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
        stub_worker.start()
    try:
        # Given that I a paused worker
        stub_worker.pause()

        # And actors with different priorities
        calls = []

        @dramatiq.actor(priority=0)
        def hi():
            calls.append("hi")

        @dramatiq.actor(priority=10)
        def lo():
            calls.append("lo")

        # When I send both actors a nubmer of messages
        for _ in range(10):
            lo.send()
            hi.send()
        wait_until(lambda: running(conn) == 20, 10, "all 20 messages to be prefetched")

        # Then resume the worker and join on the queue
        stub_worker.resume()
        broker.join(lo.queue_name)
        stub_worker.join()

        # Then the high priority actor should run first
        assert calls == ["hi"] * 10 + ["lo"] * 10
    finally:
        stub_worker.stop()


def test_urgent_job_sent_after_a_claim_is_claimed_at_the_first_free_slot(
    broker: PostgresBroker, conn
):
    # One thread, prefetch 8: the process holds 8 slow jobs (one running, 7 waiting in
    # its memory) and 8 more wait in the database. An urgent job sent now must be
    # claimed as soon as one slot is free, not once a quarter of them (2) are, and
    # then run before the slow jobs still waiting in the process.
    order = []
    gates = {n: threading.Event() for n in range(16)}

    @dramatiq.actor(queue_name="ocr", priority=10)
    def slow(n):
        order.append(n)
        gates[n].wait(10)

    @dramatiq.actor(queue_name="ocr", priority=0)
    def urgent():
        order.append("urgent")

    broker.enqueue_many([slow.message(n) for n in range(16)])
    with patch.object(dramatiq.worker, "QUEUE_PREFETCH", 8):
        worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        wait_until(lambda: order == [0], 10, "the first slow job to start")
        sent = urgent.send()
        gates[0].set()
        wait_until(lambda: order == [0, 1], 10, "the second slow job to start")
        wait_until(lambda: claimed(conn, sent.message_id), 5, "the urgent job to be claimed")
        for gate in gates.values():
            gate.set()
        broker.join("ocr", timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    assert order[:3] == [0, 1, "urgent"]


def running(conn) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM receiptq.jobs WHERE state = 'running'"
    ).fetchone()["n"]


def claimed(conn, message_id: str) -> bool:
    row = conn.execute(
        "SELECT state FROM receiptq.jobs WHERE message_id = %s", (message_id,)
    ).fetchone()
    return row is not None and row["state"] == "running"


def test_a_drain_without_new_work_still_claims_in_batches(database_url):
    # Nothing is sent while the consumer holds jobs: after an ack it waits for a
    # quarter of its slots (prefetch 8: 2) before it claims again, until its next
    # poll (here far away).
    broker = PostgresBroker(database_url, poll_interval_ms=5_000)
    try:
        broker.declare_queue("batch")
        broker.enqueue_many(
            [
                Message(queue_name="batch", actor_name="a", args=(n,), kwargs={}, options={})
                for n in range(20)
            ]
        )
        consumer = broker.consume("batch", prefetch=8, timeout=300)
        held = [next(consumer) for _ in range(8)]
        consumer.ack(held.pop())
        assert next(consumer) is None, "one free slot of eight: no claim yet"
        consumer.ack(held.pop())
        assert next(consumer) is not None
        consumer.close()
    finally:
        broker.close()
