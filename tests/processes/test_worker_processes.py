"""Real `dramatiq` worker processes on the PostgresBroker: many processes, crashes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest

from receiptq import db
from receiptq.broker import PostgresBroker
from tests_support import start_workers, stop, wait_until

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def app(database_url: str, conn) -> Iterator[tuple[str, PostgresBroker, dict]]:
    """The test app's actors, declared on a producer-side broker of the test database."""
    conn.execute("CREATE TABLE test_runs (job_no integer NOT NULL, pid integer NOT NULL)")
    conn.execute("CREATE TABLE test_started (job_no integer NOT NULL, pid integer NOT NULL)")
    broker = PostgresBroker(database_url)
    dramatiq.set_broker(broker)
    actors = {
        "record": dramatiq.actor(
            lambda job_no: None, actor_name="record", queue_name="procs", max_retries=0
        ),
        "hold": dramatiq.actor(
            lambda job_no, release_file: None, actor_name="hold", queue_name="procs", max_retries=3
        ),
    }
    yield database_url, broker, actors
    broker.close()


def test_two_worker_processes_run_each_of_5000_jobs_exactly_once(app, conn):
    url, broker, actors = app
    messages = [actors["record"].message(n) for n in range(5000)]
    assert broker.enqueue_many(messages) == 5000
    workers = start_workers(url, processes=2, threads=4)
    try:
        broker.join("procs", timeout=120_000)
    finally:
        stop(workers)
    rows = conn.execute("SELECT job_no, count(*) AS runs FROM test_runs GROUP BY job_no").fetchall()
    assert len(rows) == 5000
    assert {r["runs"] for r in rows} == {1}
    pids = conn.execute("SELECT count(DISTINCT pid) AS n FROM test_runs").fetchone()["n"]
    assert pids == 2, "both worker processes took part"
    assert conn.execute("SELECT count(*) AS n FROM receiptq.dead_letters").fetchone()["n"] == 0


def test_job_of_a_sigkilled_worker_is_completed_by_another_within_the_lease(app, conn, tmp_path):
    url, broker, actors = app
    release = tmp_path / "release"
    actors["hold"].send(1, str(release))
    first = start_workers(url, processes=1, threads=2, lease_s=2)
    try:
        wait_until(
            lambda: conn.execute("SELECT count(*) AS n FROM test_started").fetchone()["n"] == 1,
            30,
            "the job to start",
        )
    finally:
        stop(first, signal.SIGKILL)
    killed_at = time.monotonic()
    release.touch()
    second = start_workers(url, processes=1, threads=2, lease_s=2)
    try:
        wait_until(
            lambda: conn.execute("SELECT count(*) AS n FROM test_runs").fetchone()["n"] == 1,
            30,
            "another worker to finish the job",
        )
        recovered_s = time.monotonic() - killed_at
        broker.join("procs", timeout=10_000)
    finally:
        stop(second)
    started = conn.execute("SELECT pid FROM test_started ORDER BY pid").fetchall()
    assert len(started) == 2 and started[0]["pid"] != started[1]["pid"]
    assert conn.execute("SELECT count(*) AS n FROM test_runs").fetchone()["n"] == 1
    # lease (2 s) + heartbeat interval (lease/3) + worker start-up, with room for a slow machine
    assert recovered_s < 15
    assert db.fetch_all(conn, "dead_letter_list", {"actor": None, "queue": None, "limit": 5}) == []


def test_sigterm_gives_claimed_but_unstarted_jobs_back_without_using_an_attempt(
    app, conn, tmp_path
):
    url, broker, actors = app
    release = tmp_path / "release"
    for n in range(6):
        actors["hold"].send(n, str(release))
    workers = start_workers(url, processes=1, threads=1)
    try:
        wait_until(
            lambda: conn.execute("SELECT count(*) AS n FROM test_started").fetchone()["n"] == 1,
            30,
            "the first job to start",
        )
        # The worker holds more claimed jobs (prefetch) than the one it runs.
        running = conn.execute(
            "SELECT count(*) AS n FROM receiptq.jobs WHERE state = 'running'"
        ).fetchone()["n"]
        assert running > 1
        # The main process passes SIGTERM on to its worker processes (signalling the
        # whole group would deliver it twice, which Dramatiq treats as "kill now").
        os.kill(workers.pid, signal.SIGTERM)
        # Dramatiq notices the signal within a second; only then may the job finish.
        time.sleep(2)
        release.touch()
        workers.wait(30)
    finally:
        stop(workers)
    rows = conn.execute("SELECT state, attempt FROM receiptq.jobs ORDER BY id").fetchall()
    assert len(rows) == 5, "the five unstarted jobs are still there"
    assert all(r["state"] == "queued" and r["attempt"] == 0 for r in rows)
    assert conn.execute("SELECT count(*) AS n FROM test_runs").fetchone()["n"] == 1
