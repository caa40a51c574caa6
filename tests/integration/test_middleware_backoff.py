"""BackoffRetries: backoff timing, retry-after hints, permanent errors, exhausted retries."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.middleware import Retries

from receiptq.broker import PostgresBroker
from receiptq.middleware import (
    BackoffRetries,
    CircuitBreakers,
    PermanentError,
    RetryAfter,
    compute_backoff,
    receiptq_middleware,
)

PINNED = 0.5  # the jitter's random source returns this, always


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- compute_backoff: a pure function --------------------------------------------------


def test_backoff_is_drawn_between_min_and_a_doubling_ceiling():
    # attempt n: uniform in [min, min * 2 ** (n + 1)], capped at max
    assert compute_backoff(0, min_ms=1000, max_ms=60_000, rand=lambda: 0.0) == 1000
    assert compute_backoff(0, min_ms=1000, max_ms=60_000, rand=lambda: PINNED) == 1500
    assert compute_backoff(1, min_ms=1000, max_ms=60_000, rand=lambda: PINNED) == 2500
    assert compute_backoff(2, min_ms=1000, max_ms=60_000, rand=lambda: PINNED) == 4500
    assert compute_backoff(3, min_ms=1000, max_ms=60_000, rand=lambda: 0.999) == 15_985


def test_backoff_never_exceeds_max_even_after_many_attempts():
    assert compute_backoff(10, min_ms=1000, max_ms=60_000, rand=lambda: 0.0) == 1000
    assert compute_backoff(10, min_ms=1000, max_ms=60_000, rand=lambda: PINNED) == 30_500
    assert compute_backoff(10_000, min_ms=1000, max_ms=60_000, rand=lambda: 0.9999) < 60_000


@pytest.mark.parametrize(
    ("attempt", "min_ms", "max_ms"), [(-1, 10, 100), (0, -1, 100), (0, 100, 10)]
)
def test_backoff_refuses_impossible_arguments(attempt, min_ms, max_ms):
    with pytest.raises(ValueError):
        compute_backoff(attempt, min_ms=min_ms, max_ms=max_ms, rand=lambda: PINNED)


def test_retry_after_refuses_a_negative_or_nan_delay():
    with pytest.raises(ValueError):
        RetryAfter(-1)
    with pytest.raises(ValueError):
        RetryAfter(float("nan"))


def test_default_middleware_replaces_retries_with_backoff_and_adds_breakers():
    middleware = receiptq_middleware()
    retries = [m for m in middleware if isinstance(m, Retries)]
    assert len(retries) == 1 and isinstance(retries[0], BackoffRetries)
    kinds = [type(m).__name__ for m in middleware]
    # the breakers' after-hook must run before the retries' (after-hooks run in reverse)
    assert kinds.index("CircuitBreakers") > kinds.index("BackoffRetries")
    assert kinds[-1] == "CurrentMessage"
    assert any(isinstance(m, CircuitBreakers) for m in middleware)


# -- through the broker and a worker ---------------------------------------------------


@pytest.fixture
def retry_broker(database_url: str) -> Iterator[PostgresBroker]:
    broker = PostgresBroker(
        database_url,
        middleware=receiptq_middleware(rand=lambda: PINNED, permanent=(KeyError,)),
        lease_s=5,
        poll_interval_ms=100,
        ack_flush_ms=2,
    )
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


@pytest.fixture
def retry_worker(retry_broker: PostgresBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(retry_broker, worker_threads=2, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()


def queued_row(conn, message_id: str, attempt: int):
    """The job once its retry is stored (queued again after `attempt` deliveries)."""
    return conn.execute(
        "SELECT attempt, run_at, message FROM receiptq.jobs"
        " WHERE message_id = %s AND state = 'queued' AND attempt = %s",
        (message_id, attempt),
    ).fetchone()


def stored_delay_s(row) -> float:
    """run_at minus the moment the retry was decided (Retries' requeue_timestamp)."""
    requeued_ms = row["message"]["options"]["requeue_timestamp"]
    return row["run_at"].timestamp() - requeued_ms / 1000


def test_failed_job_waits_in_postgres_for_the_backoff_drawn_from_the_pinned_random(
    retry_broker, retry_worker, conn
):
    @dramatiq.actor(queue_name="flaky", min_backoff_ms=2000, max_backoff_ms=600_000)
    def flaky():
        raise ConnectionError("service unavailable")

    message = flaky.send()
    row = wait_until(lambda: queued_row(conn, message.message_id, 1), 10, "the first retry")
    # first retry: 2000 + 0.5 * (4000 - 2000) = 3000 ms after the failure
    assert stored_delay_s(row) == pytest.approx(3.0, abs=0.25)
    assert row["message"]["options"]["retries"] == 1
    # the job is not held by the worker: it is a queued row, nothing running
    assert conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"] == 1


def test_message_backoff_options_override_the_actors(retry_broker, retry_worker, conn):
    @dramatiq.actor(queue_name="flaky", min_backoff_ms=60_000, max_backoff_ms=600_000)
    def flaky():
        raise ConnectionError("service unavailable")

    message = flaky.send_with_options(min_backoff_ms=1000, max_backoff_ms=1200)
    row = wait_until(lambda: queued_row(conn, message.message_id, 1), 10, "the first retry")
    # 1000 + 0.5 * (min(1200, 2000) - 1000) = 1100 ms
    assert stored_delay_s(row) == pytest.approx(1.1, abs=0.25)


def test_retry_after_sets_the_next_run_time_exactly(retry_broker, retry_worker, conn):
    @dramatiq.actor(queue_name="flaky", min_backoff_ms=1000)
    def rate_limited():
        raise RetryAfter(120, "HTTP 429")

    message = rate_limited.send()
    row = wait_until(lambda: queued_row(conn, message.message_id, 1), 10, "the retry")
    assert stored_delay_s(row) == pytest.approx(120.0, abs=0.25)


def dead_letters(conn):
    return conn.execute(
        "SELECT actor, attempts, reason, error_type, error, traceback"
        " FROM receiptq.dead_letters ORDER BY id"
    ).fetchall()


def test_permanent_error_is_dead_lettered_on_the_first_failure_with_its_reason(
    retry_broker, retry_worker, conn
):
    @dramatiq.actor(queue_name="flaky", max_retries=10)
    def bad_input():
        raise PermanentError("receipt 42 has no image")

    bad_input.send()
    retry_broker.join("flaky", timeout=10_000)
    [dead] = dead_letters(conn)
    assert dead["attempts"] == 1
    assert dead["reason"] == "permanent error"
    assert dead["error_type"] == "PermanentError"
    assert dead["error"] == "receipt 42 has no image"
    assert "bad_input" in dead["traceback"]


def test_configured_exception_types_are_permanent_too(retry_broker, retry_worker, conn):
    @dramatiq.actor(queue_name="flaky", max_retries=10)
    def missing():
        raise KeyError("no such receipt")

    missing.send()
    retry_broker.join("flaky", timeout=10_000)
    [dead] = dead_letters(conn)
    assert (dead["attempts"], dead["reason"], dead["error_type"]) == (
        1,
        "permanent error",
        "KeyError",
    )


def test_job_is_dead_lettered_when_its_retries_are_exhausted(retry_broker, retry_worker, conn):
    runs = []

    @dramatiq.actor(queue_name="flaky", max_retries=2, min_backoff_ms=1, max_backoff_ms=5)
    def always_down():
        runs.append(1)
        raise ConnectionError("still down")

    always_down.send()
    retry_broker.join("flaky", timeout=10_000)
    [dead] = dead_letters(conn)
    assert len(runs) == 3  # the first run and 2 retries
    assert dead["attempts"] == 3
    assert dead["reason"] == "retries exhausted"
    assert dead["error_type"] == "ConnectionError"


def test_transient_failure_then_success_leaves_no_dead_letter(retry_broker, retry_worker, conn):
    runs = []

    @dramatiq.actor(queue_name="flaky", max_retries=3, min_backoff_ms=1, max_backoff_ms=5)
    def recovers():
        runs.append(1)
        if len(runs) < 3:
            raise ConnectionError("blip")

    recovers.send()
    retry_broker.join("flaky", timeout=10_000)
    assert len(runs) == 3
    assert dead_letters(conn) == []
