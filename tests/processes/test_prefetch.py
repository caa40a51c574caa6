"""A worker process never holds more of a queue's jobs than its prefetch: not when
Dramatiq replaces a failed consumer and acks the old one's jobs through the new
one, and not more than a queue's own prefetch (for queues whose jobs run long)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq.message import Message

from receiptq.broker import PostgresBroker
from receiptq.pg.consumer import CLAIM_AHEAD_MAX_FACTOR
from tests_support import start_dramatiq, stop, wait_until


def held_in_database(conn: psycopg.Connection[Any], broker: PostgresBroker) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM receiptq.jobs WHERE state = 'running' AND lease_owner = %s",
        (broker.worker_id,),
    ).fetchone()["n"]


def send_jobs(broker: PostgresBroker, queue: str, count: int) -> None:
    broker.declare_queue(queue)
    messages = [
        Message(queue_name=queue, actor_name="ocr_receipt", args=(n,), kwargs={}, options={})
        for n in range(count)
    ]
    assert broker.enqueue_many(messages) == count


def take(consumer: Any, count: int) -> list[Any]:
    """What Dramatiq's consumer thread does: pull deliveries until ``count`` or none."""
    deliveries = []
    while len(deliveries) < count:
        delivery = next(consumer)
        if delivery is None:
            break
        deliveries.append(delivery)
    return deliveries


def test_acks_through_a_replacement_consumer_never_let_the_process_exceed_its_prefetch(
    broker, conn
):
    # Dramatiq's ConsumerThread, when a claim raises: close() the consumer, sleep,
    # consume() again, and from then on ack every message (the old consumer's
    # included) through the new consumer.
    send_jobs(broker, "ocr", 40)
    first = broker.consume("ocr", prefetch=8, timeout=200)
    handed_out = take(first, 8)
    assert len(handed_out) == 8
    first.close()  # what ConsumerThread.close() does after the error

    second = broker.consume("ocr", prefetch=8, timeout=200)
    try:
        assert next(second) is None, "the process already holds its 8 jobs"
        for delivery in handed_out:
            second.ack(delivery)
        more = take(second, 40)
        assert len(more) == 8
        assert held_in_database(conn, broker) == 8
        assert take(second, 40) == []
    finally:
        second.close()


def test_a_delivery_landed_twice_frees_its_slot_once(broker, conn):
    send_jobs(broker, "ocr", 10)
    consumer = broker.consume("ocr", prefetch=2, timeout=200)
    try:
        first, second = take(consumer, 2)
        consumer.ack(first)
        consumer.ack(first)  # e.g. a postponed delivery is landed, then acked
        assert len(take(consumer, 10)) == 1
        assert held_in_database(conn, broker) == 2
    finally:
        consumer.close()


# -- a queue's own prefetch --------------------------------------------------------------


def set_prefetch(conn: psycopg.Connection[Any], queue: str, prefetch: int | None) -> None:
    conn.execute(
        "INSERT INTO receiptq.queue_settings (queue, prefetch) VALUES (%s, %s)"
        " ON CONFLICT (queue) DO UPDATE SET prefetch = excluded.prefetch",
        (queue, prefetch),
    )


def test_queue_prefetch_setting_bounds_the_jobs_a_process_holds(broker, conn):
    send_jobs(broker, "ocr", 10)
    set_prefetch(conn, "ocr", 2)
    consumer = broker.consume("ocr", prefetch=16, timeout=200)
    try:
        assert len(take(consumer, 10)) == 2
        assert held_in_database(conn, broker) == 2
    finally:
        consumer.close()


def test_queue_prefetch_never_exceeds_the_worker_threads(broker, conn):
    send_jobs(broker, "ocr", 10)
    set_prefetch(conn, "ocr", 8)
    broker.worker_threads = 3  # what the worker middleware notes at boot
    consumer = broker.consume("ocr", prefetch=16, timeout=200)
    try:
        assert len(take(consumer, 10)) == 3
    finally:
        consumer.close()


def test_actor_prefetch_option_is_the_queues_default_and_the_setting_overrides_it(broker, conn):
    @dramatiq.actor(queue_name="ocr", prefetch=1)
    def ocr_receipt(n):
        pass

    send_jobs(broker, "ocr", 10)
    consumer = broker.consume("ocr", prefetch=16, timeout=200)
    try:
        [first] = take(consumer, 10)
        set_prefetch(conn, "ocr", 3)  # read at the next poll interval
        assert len(take(consumer, 10)) == 2
        assert held_in_database(conn, broker) == 3
    finally:
        consumer.close()


@pytest.mark.parametrize("prefetch", [0, -1])
def test_queue_prefetch_below_one_is_refused_by_the_database(conn, prefetch):
    with pytest.raises(psycopg.errors.CheckViolation):
        set_prefetch(conn, "ocr", prefetch)


# -- two real worker processes -------------------------------------------------------------


def test_two_processes_share_slow_jobs_when_the_queue_has_a_prefetch(database_url, conn):
    # Six jobs of a few seconds reach two idle processes (4 threads: Dramatiq's
    # prefetch 8) at once. Without a queue prefetch the first to claim takes all six
    # and the other idles; with `queue prefetch slow 3` each takes three.
    conn.execute("CREATE TABLE test_started (job_no integer, pid integer, at timestamptz NOT NULL)")
    set_prefetch(conn, "slow", 3)
    workers = start_dramatiq("apps.slow_app", database_url, processes=2, threads=4)
    broker = PostgresBroker(database_url)
    try:
        wait_until(lambda: workers_registered(conn) == 2, 60, "both processes to start")
        broker.declare_queue("slow")
        broker.enqueue_many(
            [
                Message(queue_name="slow", actor_name="slow", args=(n, 4), kwargs={}, options={})
                for n in range(6)
            ]
        )
        wait_until(lambda: started(conn) == 6, 30, "every job to start")
        per_process = conn.execute(
            "SELECT pid, count(*) AS jobs FROM test_started GROUP BY pid ORDER BY pid"
        ).fetchall()
        spread_s = conn.execute(
            "SELECT extract(epoch FROM max(at) - min(at))::float8 AS s FROM test_started"
        ).fetchone()["s"]
    finally:
        broker.close()
        stop(workers)
    assert [r["jobs"] for r in per_process] == [3, 3]
    assert spread_s < 3, "all six ran at once, none waited behind another"


def workers_registered(conn: psycopg.Connection[Any]) -> int:
    return conn.execute("SELECT count(*) AS n FROM receiptq.workers").fetchone()["n"]


def started(conn: psycopg.Connection[Any]) -> int:
    return conn.execute("SELECT count(*) AS n FROM test_started").fetchone()["n"]


def run_for(consumer: Any, seconds: float, job_s: float) -> int:
    """Pull and ack deliveries as a worker running jobs of ``job_s`` would; the most
    the consumer held at once."""
    most = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        delivery = next(consumer)
        if delivery is None:
            break
        most = max(most, consumer.outstanding)
        time.sleep(job_s)
        consumer.ack(delivery)
    return most


@pytest.fixture
def ahead_broker(database_url: str) -> Iterator[PostgresBroker]:
    """A broker with claim-ahead on (RECEIPTQ_CLAIM_AHEAD=1)."""
    broker = PostgresBroker(
        database_url, lease_s=5, poll_interval_ms=100, ack_flush_ms=2, claim_ahead=True
    )
    yield broker
    broker.close()


def test_by_default_a_process_running_short_jobs_never_exceeds_its_prefetch(broker, conn):
    send_jobs(broker, "ocr", 3000)
    consumer = broker.consume("ocr", prefetch=8, timeout=200)
    try:
        assert run_for(consumer, 1.5, 0.0) <= 8
    finally:
        consumer.close()


def test_with_claim_ahead_a_process_running_short_jobs_holds_beyond_its_prefetch(
    ahead_broker, conn
):
    send_jobs(ahead_broker, "ocr", 3000)
    consumer = ahead_broker.consume("ocr", prefetch=8, timeout=200)
    try:
        most = run_for(consumer, 1.5, 0.0)
        # It held more than its prefetch (the next batch was claimed while the
        # last still ran), never more than the claim-ahead's ceiling.
        assert 8 < most <= 8 + CLAIM_AHEAD_MAX_FACTOR * 8
        assert held_in_database(conn, ahead_broker) <= 8 + CLAIM_AHEAD_MAX_FACTOR * 8
    finally:
        consumer.close()


def test_with_claim_ahead_a_process_running_slow_jobs_holds_no_more_than_its_prefetch(
    ahead_broker, conn
):
    send_jobs(ahead_broker, "ocr", 200)
    consumer = ahead_broker.consume("ocr", prefetch=4, timeout=200)
    try:
        # Jobs of 30 ms, longer than a claim takes: nothing to claim ahead for.
        assert run_for(consumer, 1.5, 0.03) <= 4
    finally:
        consumer.close()


def test_with_claim_ahead_a_queue_with_its_own_prefetch_never_claims_ahead(ahead_broker, conn):
    send_jobs(ahead_broker, "ocr", 3000)
    set_prefetch(conn, "ocr", 4)
    consumer = ahead_broker.consume("ocr", prefetch=8, timeout=200)
    try:
        assert run_for(consumer, 1.5, 0.0) <= 4
    finally:
        consumer.close()
