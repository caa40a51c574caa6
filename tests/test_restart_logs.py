"""A PostgreSQL restart under busy `dramatiq` workers is a fault receiptq handles: each
worker process says so in one warning line when the database goes and one when it
answers again, and nothing else (no CRITICAL "Consumer encountered an unexpected
error", no traceback, no second line from the heartbeat, the ack writer or the
listener, no second outage announced by a wait that began during the first), and
every job sent before and after the restart runs once. The server is one this test
starts and restarts (a ScratchServer), never the shared one."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.scratch_pg import ScratchServer
from tests_support import start_dramatiq, stop, wait_until

JOBS_BEFORE = 600
JOBS_AFTER = 50
NAP_MS = 15
PROCESSES = 2
#: A worker's log line at WARNING or above: its process id, level and text.
LOUD = re.compile(r"\[PID (\d+)\] \[[^]]*\] \[[^]]*\] \[(WARNING|ERROR|CRITICAL)\] (.*)")


@pytest.fixture
def own_server() -> Iterator[ScratchServer]:
    with ScratchServer() as server:
        db.migrate(server.url())
        yield server


def send(url: str, first: int, count: int, path: Path) -> None:
    broker = PostgresBroker(url)
    try:
        broker.declare_queue("faults")
        broker.enqueue_many(
            [
                dramatiq.Message(
                    queue_name="faults",
                    actor_name="nap",
                    args=(n, NAP_MS, str(path)),
                    kwargs={},
                    options={},
                )  # fmt: skip
                for n in range(first, first + count)
            ]
        )
    finally:
        broker.close()


def runs(path: Path) -> tuple[int, int]:
    """(runs recorded, distinct jobs among them)."""
    lines = path.read_text().split() if path.exists() else []
    return len(lines), len(set(lines))


def loud_lines(log: Path) -> dict[str, list[str]]:
    """The WARNING, ERROR and CRITICAL lines of each worker process."""
    by_pid: dict[str, list[str]] = defaultdict(list)
    for line in log.read_text(errors="replace").splitlines():
        match = LOUD.search(line)
        if match:
            by_pid[match[1]].append(f"{match[2]} {match[3]}")
    return by_pid


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_under_load_is_one_warning_when_it_goes_and_one_when_it_is_back(
    own_server, tmp_path, mode
):
    url = own_server.url()
    done = tmp_path / "runs"
    send(url, 0, JOBS_BEFORE, done)
    log = tmp_path / "worker.log"
    proc = start_dramatiq("apps.fault_app", url, processes=PROCESSES, threads=3, log_path=log,
                          env={"RECEIPTQ_LEASE_S": "60"})  # fmt: skip
    total = JOBS_BEFORE + JOBS_AFTER
    try:
        wait_until(lambda: runs(done)[1] >= 50, 60, "the workers to get going")
        own_server.stop(mode)
        time.sleep(4)  # every part of each worker meets the outage
        own_server.start()
        send(url, JOBS_BEFORE, JOBS_AFTER, done)
        wait_until(lambda: runs(done)[1] == total, 120, "every job to run")
        time.sleep(1)  # a second run of a job would show by now
        recorded, distinct = runs(done)
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert (distinct, recorded) == (total, total), "a job was lost or ran twice"
    said = loud_lines(log)
    assert len(said) == PROCESSES, said
    for lines in said.values():
        assert len(lines) == 2, lines
        going, back = lines
        assert going.startswith("WARNING waiting for the database at 127.0.0.1"), lines
        assert back.startswith("WARNING the database at 127.0.0.1") and "answers again" in back
