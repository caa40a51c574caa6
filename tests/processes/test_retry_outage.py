"""A retry that could not be stored because PostgreSQL was restarting: kept in the
worker, stored once the server answers (not when the lease runs out), and logged as
one warning line. The server is one this test starts and restarts (a ScratchServer),
never the shared one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.middleware import receiptq_middleware
from receiptq.scratch_pg import ScratchServer
from tests_support import wait_until

LEASE_S = 120  # a retry left to its lease would run only after this


@pytest.fixture
def own_server() -> Iterator[ScratchServer]:
    with ScratchServer() as server:
        db.migrate(server.url())
        yield server


def test_a_retry_not_stored_during_a_restart_is_stored_once_the_server_is_back(own_server, caplog):
    url = own_server.url()
    broker = PostgresBroker(
        url,
        middleware=receiptq_middleware(),
        lease_s=LEASE_S,
        poll_interval_ms=100,
        ack_flush_ms=2,
    )
    dramatiq.set_broker(broker)
    running, server_down, runs = threading.Event(), threading.Event(), []

    @dramatiq.actor(queue_name="outage", max_retries=3, min_backoff_ms=100, max_backoff_ms=200)
    def read_receipt():
        runs.append(time.monotonic())
        if len(runs) == 1:  # the first attempt fails while the server restarts
            running.set()
            server_down.wait(60)
            raise ConnectionError("OCR service down")

    message = read_receipt.send()
    caplog.set_level(logging.WARNING)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        assert running.wait(30)
        own_server.stop()
        server_down.set()
        wait_until(lambda: kept_lines(caplog, message.message_id), 60, "the kept-retry warning")
        own_server.start()
        back = time.monotonic()
        wait_until(lambda: len(runs) == 2, 60, "the retry to run")
        broker.join("outage", timeout=30_000)
    finally:
        worker.stop()
        broker.close()
    assert runs[1] - back < LEASE_S / 4, "the retry waited for the lease"
    with db.connect(url) as conn:  # the kept retry's delivery was finished
        counts = conn.execute(
            "SELECT sum(failed)::int AS failed, sum(retried)::int AS retried,"
            " sum(succeeded)::int AS succeeded FROM receiptq.stats_minute"
        ).fetchone()
    assert counts == {"failed": 1, "retried": 1, "succeeded": 1}
    [line] = kept_lines(caplog, message.message_id)
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert "\n" not in line.getMessage()
    alarms = [
        r.getMessage()
        for r in caplog.records
        if "after_process_message" in r.getMessage() or "was not stored" in r.getMessage()
    ]
    assert alarms == []


def kept_lines(caplog: pytest.LogCaptureFixture, message_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if message_id in r.getMessage() and "kept" in r.getMessage()]
