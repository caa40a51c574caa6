"""The per-minute statistics the broker writes (receiptq.stats_minute)."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import psycopg

from receiptq.broker import PostgresBroker

COUNTERS = ("enqueued", "succeeded", "failed", "retried", "dead_lettered")


def stats_of(conn: psycopg.Connection[Any], queue: str) -> dict[str, Any]:
    """The counters of a queue summed over minutes and actors, with the histogram totals."""
    rows = conn.execute("SELECT * FROM receiptq.stats_minute WHERE queue = %s", (queue,)).fetchall()
    totals: dict[str, Any] = {name: sum(r[name] for r in rows) for name in COUNTERS}
    totals["timed_runs"] = sum(sum(r["run_ms_hist"]) for r in rows)
    totals["timed_latencies"] = sum(sum(r["latency_ms_hist"]) for r in rows)
    totals["run_ms_sum"] = sum(r["run_ms_sum"] for r in rows)
    return totals


def counters(stats: dict[str, Any]) -> dict[str, int]:
    return {name: stats[name] for name in COUNTERS}


def stop_and_flush(worker: dramatiq.Worker, broker: PostgresBroker) -> None:
    """Stop the worker, then close the broker: closing writes the pending statistics."""
    worker.stop()
    broker.close()


def test_stats_count_enqueued_succeeded_failed_retried_and_dead_lettered(broker, worker, conn):
    failures: dict[str, int] = {}
    lock = threading.Lock()

    @dramatiq.actor(queue_name="stats", max_retries=1, min_backoff=10, max_backoff=20)
    def ocr_receipt(kind):
        with lock:
            failures[kind] = failures.get(kind, 0) + 1
            seen = failures[kind]
        if kind == "doomed" or (kind == "flaky" and seen == 1):
            raise RuntimeError(f"{kind} receipt")

    for kind in ["ok-1", "ok-2", "ok-3", "flaky", "doomed"]:
        ocr_receipt.send(kind)
    broker.join("stats", timeout=10_000)
    worker.join()
    stop_and_flush(worker, broker)

    stats = stats_of(conn, "stats")
    # flaky: fails, is retried, succeeds. doomed: fails, is retried, fails, dies.
    assert counters(stats) == {
        "enqueued": 5,
        "succeeded": 4,
        "failed": 3,
        "retried": 2,
        "dead_lettered": 1,
    }
    assert stats["timed_runs"] == stats["timed_latencies"] == 7  # one per delivery
    assert stats["run_ms_sum"] > 0


def test_retry_that_succeeds_counts_one_failure_and_one_retry(broker, worker, conn):
    attempts = []

    @dramatiq.actor(queue_name="stats", max_retries=3, min_backoff=10, max_backoff=20)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("OCR service timed out")

    flaky.send()
    broker.join("stats", timeout=10_000)
    worker.join()
    stop_and_flush(worker, broker)

    assert counters(stats_of(conn, "stats")) == {
        "enqueued": 1,
        "succeeded": 1,
        "failed": 1,
        "retried": 1,
        "dead_lettered": 0,
    }


def test_enqueue_many_counts_only_the_jobs_it_stored(broker, conn):
    @dramatiq.actor(queue_name="stats")
    def match_receipt(receipt_id):
        pass

    match_receipt.send_with_options(args=(1,), unique_key="receipt-1")
    stored = broker.enqueue_many(
        [
            match_receipt.message_with_options(args=(1,), unique_key="receipt-1"),
            match_receipt.message_with_options(args=(2,), unique_key="receipt-2"),
            match_receipt.message_with_options(args=(3,)),
        ]
    )
    broker.close()

    assert stored == 2
    assert stats_of(conn, "stats")["enqueued"] == 3


def test_dropped_duplicate_send_is_not_counted_as_enqueued(broker, conn):
    @dramatiq.actor(queue_name="stats")
    def match_receipt(receipt_id):
        pass

    match_receipt.send_with_options(args=(1,), unique_key="receipt-1")
    match_receipt.send_with_options(args=(1,), unique_key="receipt-1")
    broker.close()
    assert stats_of(conn, "stats")["enqueued"] == 1


def test_job_of_a_lost_worker_dead_lettered_by_the_rescue_is_counted(broker, conn, database_url):
    @dramatiq.actor(queue_name="stats", max_retries=0)
    def ocr_receipt():
        pass

    ocr_receipt.send()
    broker.heartbeat_now()  # starts the heartbeat thread now: its next beat is 1.7 s away
    lost = PostgresBroker(database_url, lease_s=5)
    try:
        lost.declare_queue("stats")
        assert next(lost.consume("stats", prefetch=1, timeout=1000)) is not None
    finally:
        lost.close()
    conn.execute("UPDATE receiptq.jobs SET lease_expires_at = now() - interval '1s'")
    broker.heartbeat_now()
    broker.close()

    assert conn.execute("SELECT reason FROM receiptq.dead_letters").fetchall() == [
        {"reason": "worker lost"}
    ]
    assert counters(stats_of(conn, "stats"))["dead_lettered"] == 1


def test_stats_are_written_by_the_flusher_without_closing_the_broker(broker, worker, conn):
    @dramatiq.actor(queue_name="stats")
    def ocr_receipt():
        pass

    ocr_receipt.send()
    broker.join("stats", timeout=10_000)
    worker.join()

    # The flusher writes statistics every second: this test is about that time.
    deadline = time.monotonic() + 5
    while stats_of(conn, "stats")["succeeded"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counters(stats_of(conn, "stats")) == {
        "enqueued": 1,
        "succeeded": 1,
        "failed": 0,
        "retried": 0,
        "dead_lettered": 0,
    }


def test_two_processes_writing_the_same_minutes_never_deadlock(database_url, conn, caplog):
    """Each worker process writes its counters in one transaction a flush. Rows in the
    order each process happened to count them deadlocked two processes that counted
    the same actors in another order (seen at a real worker shutdown: "writing
    statistics failed (deadlock detected); 2 rows dropped"); in key order they
    never do."""
    from receiptq import db
    from receiptq.pg.flusher import Flusher

    actors = [f"actor-{n:02}" for n in range(40)]
    rounds = 15
    pools = [db.open_pool(database_url, max_size=1) for _ in range(2)]
    flushers = [Flusher(lambda p=pool: p) for pool in pools]
    barrier = threading.Barrier(2)

    def write(flusher: Flusher, order: list[str]) -> None:
        for _ in range(rounds):
            for actor in order:
                flusher.count("shared", actor, succeeded=1)
            barrier.wait()
            flusher._write_stats()

    try:
        with caplog.at_level("WARNING", logger="receiptq.pg.flusher"):
            threads = [
                threading.Thread(target=write, args=(flushers[0], actors)),
                threading.Thread(target=write, args=(flushers[1], actors[::-1])),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
    finally:
        for pool in pools:
            pool.close()
    assert [r.getMessage() for r in caplog.records] == []
    rows = conn.execute(
        "SELECT actor, sum(succeeded)::int AS n FROM receiptq.stats_minute"
        " WHERE queue = 'shared' GROUP BY actor ORDER BY actor"
    ).fetchall()
    assert rows == [{"actor": actor, "n": 2 * rounds} for actor in actors]
