"""A database outage is a fault receiptq handles: each `dramatiq` worker process says
so in one warning line when the database goes and one when it answers again (and one
when results were kept meanwhile), and nothing else: no CRITICAL from Dramatiq
("Consumer encountered a connection error" from a consumer whose pool could not be
opened, "Unexpected failure in after_process_message of Results"), no traceback, no
second line from the heartbeat, the ack writer or the listener, no second outage
announced by a wait that began during the first. Every job sent before and after runs
once and every result is stored. The server is one these tests start and stop (a
ScratchServer), never the shared one."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import psycopg
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
    """Jobs ``first`` .. ``first + count - 1``; the odd ones store their result."""
    broker = PostgresBroker(url)
    try:
        broker.declare_queue("faults")
        broker.enqueue_many(
            [
                dramatiq.Message(
                    queue_name="faults",
                    actor_name="nap_result" if n % 2 else "nap",
                    args=(n, NAP_MS, str(path)),
                    kwargs={},
                    options={},
                )
                for n in range(first, first + count)
            ]
        )
    finally:
        broker.close()


def runs(path: Path) -> tuple[int, int]:
    """(runs recorded, distinct jobs among them)."""
    lines = path.read_text().split() if path.exists() else []
    return len(lines), len(set(lines))


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        [[rows]] = conn.execute(f"SELECT count(*) FROM receiptq.{table}").fetchall()  # noqa: S608
    return rows


def stored_results(url: str, expected: int) -> int:
    """How many results are stored, once ``expected`` are (or after a wait)."""
    try:
        wait_until(lambda: count_rows(url, "results") >= expected, 20, "the results")
    except AssertionError:
        pass  # the caller's assertion says how many
    return count_rows(url, "results")


def loud_lines(log: Path) -> dict[str, list[str]]:
    """The WARNING, ERROR and CRITICAL lines of each worker process."""
    by_pid: dict[str, list[str]] = defaultdict(list)
    for line in log.read_text(errors="replace").splitlines():
        match = LOUD.search(line)
        if match:
            by_pid[match[1]].append(f"{match[2]} {match[3]}")
    return by_pid


def assert_one_outage_said(log: Path) -> None:
    """No traceback; per worker process: one line when the database went, one when it
    answered again, and at most one saying results were kept meanwhile."""
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    said = loud_lines(log)
    assert len(said) == PROCESSES, said
    for lines in said.values():
        kept = [line for line in lines if "results are kept" in line]
        assert len(kept) <= 1, lines  # when a result met the outage
        rest = [line for line in lines if line not in kept]
        assert len(rest) == 2, lines
        going, back = rest
        assert going.startswith("WARNING waiting for the database at 127.0.0.1"), lines
        assert back.startswith("WARNING the database at 127.0.0.1") and "answers again" in back


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
        wait_until(lambda: count_rows(url, "workers") == PROCESSES, 60, "the workers to start")
        wait_until(lambda: runs(done)[1] >= 50, 60, "the workers to get going")
        own_server.stop(mode)
        time.sleep(4)  # every part of each worker meets the outage
        own_server.start()
        send(url, JOBS_BEFORE, JOBS_AFTER, done)
        wait_until(lambda: runs(done)[1] == total, 120, "every job to run")
        time.sleep(1)  # a second run of a job would show by now
        recorded, distinct = runs(done)
        results = stored_results(url, total // 2)
    finally:
        stop(proc)
    assert (distinct, recorded) == (total, total), "a job was lost or ran twice"
    assert results == total // 2, "a result written during the restart was lost"
    assert_one_outage_said(log)


def test_workers_started_while_the_database_is_down_say_so_once_and_run_once_it_is_up(
    own_server, tmp_path
):
    url = own_server.url()
    done = tmp_path / "runs"
    own_server.stop()
    log = tmp_path / "worker.log"
    proc = start_dramatiq("apps.fault_app", url, processes=PROCESSES, threads=3, log_path=log)
    try:
        wait_until(lambda: len(loud_lines(log)) == PROCESSES, 60, "the workers to notice")
        time.sleep(4)  # each consumer tries again a few times, with growing pauses
        own_server.start()
        send(url, 0, JOBS_AFTER, done)
        wait_until(lambda: runs(done)[1] == JOBS_AFTER, 60, "every job to run")
        results = stored_results(url, JOBS_AFTER // 2)
    finally:
        stop(proc)
    assert runs(done) == (JOBS_AFTER, JOBS_AFTER)
    assert results == JOBS_AFTER // 2
    assert_one_outage_said(log)
