"""Running vs reserved: a claimed job is running once a worker thread started it, and
reserved while its worker process holds it unstarted (its prefetch)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from rich.console import Console

from receiptq import cli, db, monitor
from receiptq.broker import PostgresBroker
from receiptq.cli.status_views import status_view
from receiptq.pg.heartbeat import Heartbeat, WorkerStatus
from receiptq.tools.demo import view as demo
from tests_support import start_deliveries, start_dramatiq, stop, wait_until
from web_helpers import send


@pytest.fixture
def slow_jobs(database_url: str, conn) -> Iterator[dramatiq.Actor]:
    """tests/apps/worker_app.py's hold_until_released, declared on a producer broker."""
    conn.execute("CREATE TABLE test_runs (job_no integer NOT NULL, pid integer NOT NULL)")
    conn.execute("CREATE TABLE test_started (job_no integer NOT NULL, pid integer NOT NULL)")
    broker = PostgresBroker(database_url)
    dramatiq.set_broker(broker)
    yield dramatiq.actor(
        lambda job_no, release_dir: None,
        actor_name="hold_until_released",
        queue_name="slow",
        max_retries=0,
    )
    broker.close()


def cli_json(capsys, url: str, *argv: str) -> Any:
    assert cli.main(["--url", url, *argv, "--json"]) == cli.EXIT_OK
    return json.loads(capsys.readouterr().out)


def started_job_nos(conn) -> list[int]:
    return [r["job_no"] for r in conn.execute("SELECT job_no FROM test_started ORDER BY job_no")]


def job_no(job: dict[str, Any]) -> int:
    """The job number of a ``top`` row (its first argument)."""
    return int(job["args"].split(",")[0])


def test_a_worker_with_2_threads_and_prefetch_8_runs_2_jobs_and_reserves_6(
    slow_jobs, database_url, conn, tmp_path: Path, capsys
):
    for n in range(8):
        slow_jobs.send(n, str(tmp_path))
    worker = start_dramatiq(
        "apps.worker_app", database_url, processes=1, threads=2, queues=["slow"],
        env={"dramatiq_queue_prefetch": "8"},
    )  # fmt: skip
    try:
        first = wait_until(lambda: len(started_job_nos(conn)) == 2 and started_job_nos(conn),
                           60, "two jobs to start")  # fmt: skip

        def status_says(running: int, reserved: int) -> dict[str, Any] | None:
            snap = cli_json(capsys, database_url, "status")
            figures = snap["queues"]["slow"]
            return (
                snap if (figures["running"], figures["reserved"]) == (running, reserved) else None
            )

        # Workers report their starts about once a second: the status follows.
        snap = wait_until(lambda: status_says(2, 6), 15, "status: 2 running, 6 reserved")
        assert (snap["totals"]["running"], snap["totals"]["reserved"]) == (2, 6)
        assert snap["queues"]["slow"]["queued"] == 0
        (figures,) = snap["workers"]
        assert (figures["running"], figures["reserved"], figures["in_flight"]) == (2, 6, 8)
        assert figures["queues"] == ["slow"]  # written with the starts, not 10 s later

        # A second later one job ends and a reserved one starts: top times each from
        # its own start, though all 8 were claimed together.
        time.sleep(1.0)  # not a wait for a condition: the next start is a second later
        (tmp_path / str(first[0])).touch()
        third = wait_until(lambda: len(started_job_nos(conn)) == 3 and started_job_nos(conn),
                           30, "a reserved job to start")  # fmt: skip
        (later,) = set(third) - set(first)

        def top_says_running(*job_nos: int) -> dict[str, Any] | None:
            top = cli_json(capsys, database_url, "top")
            return top if sorted(job_no(j) for j in top["running"]) == sorted(job_nos) else None

        top = wait_until(lambda: top_says_running(first[1], later), 15, "top to show the start")
        assert top["counts"] == {"running": 2, "reserved": 5}
        elapsed = {job_no(j): j["elapsed_s"] for j in top["running"]}
        assert elapsed[first[1]] - elapsed[later] > 0.8
        assert len({j["claimed_at"] for j in top["running"] + top["reserved"]}) == 1

        for n in range(8):
            (tmp_path / str(n)).touch()
        slow_jobs.broker.join("slow", timeout=60_000)
        snap = wait_until(lambda: status_says(0, 0), 15, "status: 0 running, 0 reserved")
        assert snap["workers"][0]["in_flight"] == 0
    finally:
        for n in range(8):
            (tmp_path / str(n)).touch()
        stop(worker)


def test_the_heartbeat_thread_writes_started_deliveries_within_a_second_only_when_changed(
    database_url, conn
):
    pool = db.open_pool(database_url, max_size=2)
    started: dict[int, tuple[int, float]] = {}
    beat = Heartbeat(
        lambda: pool,
        worker_id="h:1:test",
        lease_s=600,
        interval_s=300,  # the full beat is minutes away: the refresh alone must write
        status=lambda: WorkerStatus(["q"], list(started), dict(started)),
    )
    try:

        def row() -> dict[str, Any]:
            return conn.execute(
                "SELECT started_job_ids AS ids, started_attempts AS attempts,"
                " now() - started_ats[1] AS age FROM receiptq.workers WHERE id = 'h:1:test'"
            ).fetchone()

        started[41] = (2, time.time() - 5.0)  # a thread started job 41 five seconds ago
        wait_until(lambda: row()["ids"] == [41], 10, "the start to be written")
        assert row()["attempts"] == [2]
        assert 4.0 < row()["age"].total_seconds() < 15.0  # stored on the database's clock
        assert not beat.refresh()  # nothing changed: nothing written
        del started[41]
        wait_until(lambda: row()["ids"] == [], 10, "the end to be written")
    finally:
        beat.close()
        pool.close()


def test_a_worker_that_cannot_write_its_starts_says_so_once_and_keeps_beating(
    database_url, conn, caplog
):
    # A database the migration 0007 never reached: the workers row has no started_* columns.
    conn.execute("DROP VIEW receiptq.claimed_jobs")
    conn.execute("ALTER TABLE receiptq.workers DROP COLUMN started_job_ids")
    pool = db.open_pool(database_url, max_size=2)
    started = {7: (1, time.time())}
    beat = Heartbeat(
        lambda: pool, worker_id="h:1:old", lease_s=600, interval_s=300, refresh_s=300,
        status=lambda: WorkerStatus(["q"], list(started), dict(started)),
    )  # fmt: skip
    try:
        for _ in range(3):  # what the heartbeat thread does once a second
            beat._refresh_logged()
    finally:
        beat.close()
        pool.close()
    failures = [r for r in caplog.records if "could not write the started" in r.getMessage()]
    assert len(failures) == 1
    assert "started_job_ids" in failures[0].getMessage()
    # The beat itself (leases, rescues) goes on.
    assert not [r for r in caplog.records if "heartbeat failed" in r.getMessage()]


def test_a_start_reported_for_an_earlier_attempt_leaves_the_job_reserved(broker, conn):
    broker.declare_queue("q")
    send(broker, "q", "a")
    (job,) = broker.claim("q", 1)
    start_deliveries(broker, job)
    figures = monitor.snapshot(conn)["queues"]["q"]
    assert (figures["running"], figures["reserved"]) == (1, 0)
    # As if its lease had run out and this worker claimed it again (attempt 2) before
    # its row caught up: the start it reports is the first attempt's.
    conn.execute("UPDATE receiptq.jobs SET attempt = attempt + 1 WHERE id = %s", (job.job_id,))
    figures = monitor.snapshot(conn)["queues"]["q"]
    assert (figures["running"], figures["reserved"]) == (0, 1)


def test_a_finished_delivery_is_neither_running_nor_reserved(broker, conn):
    broker.declare_queue("q")
    send(broker, "q", "a")
    (job,) = broker.claim("q", 1)
    start_deliveries(broker, job)
    broker.finish(job)
    assert broker.wait_for_acks(10)
    totals = monitor.snapshot(conn)["totals"]
    assert (totals["running"], totals["reserved"]) == (0, 0)
    assert broker.heartbeat_now() == []
    row = conn.execute("SELECT started_job_ids FROM receiptq.workers").fetchone()
    assert row["started_job_ids"] == []


def render(renderable: Any) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_status_and_demo_tables_show_running_and_reserved_apart(broker, conn):
    queue = demo.QUEUES[0]  # the demo's table shows its own queues
    broker.declare_queue(queue)
    for _ in range(4):
        send(broker, queue, "ocr_receipt")
    started, *_ = broker.claim(queue, 3)
    start_deliveries(broker, started)
    snap = monitor.snapshot(conn)

    status = render(status_view(snap))
    assert "Reserved" in status and "not started" in status
    ocr_row = next(line for line in status.splitlines() if line.startswith(f"│ {queue} "))
    assert [cell.strip() for cell in ocr_row.split("│")[2:6]] == ["1", "0", "1", "2"]

    table = render(demo.status_table(snap, {}, {}))
    assert "reserved" in table
    ocr_row = next(line for line in table.splitlines() if line.startswith(f"│ {queue} "))
    assert [cell.strip() for cell in ocr_row.split("│")[2:6]] == ["1", "0", "1", "2"]
