"""PostgresResultBackend: results and failures round trip, pipelines, TTL and pruning."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq import pipeline
from dramatiq.results import ResultFailure, ResultMissing, ResultTimeout

from receiptq.broker import PostgresBroker
from receiptq.middleware import PermanentError, receiptq_middleware, with_results
from receiptq.results import PostgresResultBackend


@pytest.fixture
def results_broker(database_url: str) -> Iterator[tuple[PostgresBroker, PostgresResultBackend]]:
    broker = PostgresBroker(
        database_url,
        middleware=receiptq_middleware(),
        lease_s=5,
        poll_interval_ms=100,
        ack_flush_ms=2,
    )
    dramatiq.set_broker(broker)
    backend = with_results(broker)
    yield broker, backend
    backend.close()
    broker.close()


@pytest.fixture
def results_worker(results_broker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(results_broker[0], worker_threads=2, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()


def result_rows(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM receiptq.results").fetchone()["n"]


def test_actor_result_round_trips_through_postgres(results_broker, results_worker, conn):
    @dramatiq.actor(queue_name="results", store_results=True)
    def total(amounts):
        return {"total": sum(amounts), "currency": "EUR"}

    message = total.send([1.5, 2.25])
    assert message.get_result(block=True, timeout=10_000) == {"total": 3.75, "currency": "EUR"}
    # a second read sees the same result (results are not consumed by reading)
    assert message.get_result() == {"total": 3.75, "currency": "EUR"}
    assert result_rows(conn) == 1


def test_blocking_read_wakes_when_the_result_is_written(results_broker, database_url):
    _, backend = results_broker

    @dramatiq.actor(queue_name="results", store_results=True)
    def slow():
        return None

    message = slow.message()
    later = threading.Timer(0.3, backend.store_result, args=(message, "done", 60_000))
    started = time.monotonic()
    later.start()
    try:
        assert backend.get_result(message, block=True, timeout=5_000) == "done"
    finally:
        later.join()
    assert time.monotonic() - started < 2.0  # woken by the notification, not the timeout


def test_failed_actor_stores_its_exception_as_a_failure(results_broker, results_worker):
    @dramatiq.actor(queue_name="results", store_results=True)
    def unreadable():
        raise PermanentError("the image is blank")

    message = unreadable.send()
    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=10_000)
    assert failure.value.orig_exc_type == "PermanentError"
    assert "the image is blank" in str(failure.value)


def test_pipeline_result_is_the_last_actors_result(results_broker, results_worker):
    @dramatiq.actor(queue_name="results", store_results=True)
    def read_total(receipt_id):
        return 10 * receipt_id

    @dramatiq.actor(queue_name="results", store_results=True)
    def add_tip(total):
        return total + 1

    pipe = pipeline([read_total.message(4), add_tip.message()]).run()
    assert pipe.get_result(block=True, timeout=10_000) == 41
    assert list(pipe.get_results(block=True, timeout=10_000)) == [40, 41]


def test_missing_result_raises_at_once_and_times_out_when_blocking(results_broker):
    _, backend = results_broker

    @dramatiq.actor(queue_name="results", store_results=True)
    def never_run():
        return 1

    message = never_run.message()
    with pytest.raises(ResultMissing):
        backend.get_result(message)
    started = time.monotonic()
    with pytest.raises(ResultTimeout):
        backend.get_result(message, block=True, timeout=300)
    assert 0.3 <= time.monotonic() - started < 2.0


def test_result_expires_after_its_ttl_and_prune_deletes_only_expired_rows(results_broker, conn):
    _, backend = results_broker

    @dramatiq.actor(queue_name="results", store_results=True)
    def job(n):
        return n

    short, long = job.message(1), job.message(2)
    backend.store_result(short, "short-lived", 300)
    backend.store_result(long, "kept", 600_000)
    assert backend.get_result(short) == "short-lived"
    deadline = time.monotonic() + 5
    while True:
        try:
            backend.get_result(short)
        except ResultMissing:
            break
        assert time.monotonic() < deadline, "the result never expired"
        time.sleep(0.05)
    assert result_rows(conn) == 2  # expired but not pruned yet
    assert backend.prune() == 1
    assert result_rows(conn) == 1
    assert backend.get_result(long) == "kept"
    assert backend.prune() == 0


def test_writes_prune_expired_results_every_n_writes(results_broker, database_url, conn):
    backend = PostgresResultBackend(database_url, prune_every=3)

    @dramatiq.actor(queue_name="results", store_results=True)
    def job(n):
        return n

    try:
        backend.store_result(job.message(1), 1, 1)
        backend.store_result(job.message(2), 2, 1)
        conn.execute("SELECT pg_sleep(0.05)")
        assert result_rows(conn) == 2
        backend.store_result(job.message(3), 3, 600_000)  # the third write prunes
        assert result_rows(conn) == 1
    finally:
        backend.close()


def test_result_ttl_comes_from_the_actor_option(results_broker, results_worker, conn):
    @dramatiq.actor(queue_name="results", store_results=True, result_ttl=60_000)
    def quick():
        return "ok"

    quick.send().get_result(block=True, timeout=10_000)
    row = conn.execute("SELECT expires_at - stored_at AS ttl FROM receiptq.results").fetchone()
    assert row["ttl"].total_seconds() == pytest.approx(60.0)


def test_backend_refuses_a_nonsense_prune_interval(database_url):
    with pytest.raises(ValueError):
        PostgresResultBackend(database_url, prune_every=0)
