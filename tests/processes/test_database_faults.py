"""Workers when the database goes away, comes back, or was never migrated: real
`dramatiq` processes on a PostgreSQL server of the test's own (never the shared
one), which the tests stop and start."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import psycopg
import pytest
from psycopg import sql

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.scratch_pg import ScratchServer
from tests_support import start_dramatiq, stop, wait_until

#: What the tests allow for a worker's exit after SIGTERM with the database down
#: (documented in docs/operations.md: the shutdown budget plus Dramatiq's own joins).
SHUTDOWN_BOUND_S = 10


@pytest.fixture(scope="module")
def server() -> Iterator[ScratchServer]:
    with ScratchServer() as scratch:
        yield scratch


@pytest.fixture
def server_db(server: ScratchServer) -> Iterator[str]:
    """A fresh, empty database on the scratch server; the server is up."""
    if not server.running():
        server.start()
    name = f"faults_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield server.url(name)
    if not server.running():
        server.start()


def prepare(url: str, *, migrate: bool = True) -> None:
    if migrate:
        db.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE test_runs (job_no integer NOT NULL, pid integer NOT NULL)")
        conn.execute("CREATE TABLE test_started (job_no integer NOT NULL, pid integer NOT NULL)")


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608


def producer(url: str) -> PostgresBroker:
    broker = PostgresBroker(url)
    broker.declare_queue("faults")
    return broker


def send(broker: PostgresBroker, actor: str, *args: object) -> None:
    broker.enqueue(dramatiq.Message(queue_name="faults", actor_name=actor, args=args,
                                    kwargs={}, options={}))  # fmt: skip


def workers(url: str, log: Path, threads: int = 4) -> object:
    return start_dramatiq("apps.fault_app", url, processes=1, threads=threads, log_path=log,
                          env={"RECEIPTQ_LEASE_S": "6"})  # fmt: skip


def log_lines(log: Path, text: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if text in line]


def registered(url: str) -> bool:
    try:
        return count(url, "receiptq.workers") > 0
    except psycopg.Error:
        return False


def test_worker_exits_within_seconds_of_sigterm_while_the_database_is_down(
    server, server_db, tmp_path
):
    prepare(server_db)
    log = tmp_path / "worker.log"
    proc = workers(server_db, log)
    try:
        wait_until(lambda: registered(server_db), 60, "the worker to register")
        server.stop("immediate")
        time.sleep(2)  # the outage has begun: every part of the worker is in it
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(60)
        exit_s = time.monotonic() - started
    finally:
        stop(proc)
    assert exit_s < SHUTDOWN_BOUND_S
    assert proc.returncode == 0


def test_worker_says_once_that_it_waits_for_the_database_and_carries_on_when_it_is_back(
    server, server_db, tmp_path
):
    prepare(server_db)
    log = tmp_path / "worker.log"
    proc = workers(server_db, log)
    broker = producer(server_db)
    try:
        wait_until(lambda: registered(server_db), 60, "the worker to register")
        server.stop("fast")
        wait_until(lambda: log_lines(log, "waiting for the database"), 30, "the worker to notice")
        time.sleep(6)  # a few seconds of outage: the worker's parts keep retrying
        server.start()
        back = time.monotonic()
        send(broker, "note", 1)
        wait_until(lambda: count(server_db, "test_runs") == 1, 30, "a job sent after the outage")
        resumed_s = time.monotonic() - back
    finally:
        broker.close()
        stop(proc)
    host = f"127.0.0.1:{server.port}"
    waiting = log_lines(log, "waiting for the database")
    assert len(waiting) == 1 and host in waiting[0]
    assert len(log_lines(log, "answers again")) == 1
    text = log.read_text(errors="replace")
    assert "CRITICAL" not in text and "Traceback" not in text
    for noise in ("error connecting in", "discarding closed connection", "listener connection"):
        assert noise not in text
    assert resumed_s < 10


def test_worker_on_an_unmigrated_database_says_once_to_migrate_and_runs_once_migrated(
    server_db, tmp_path
):
    prepare(server_db, migrate=False)
    log = tmp_path / "worker.log"
    proc = workers(server_db, log)
    try:
        advice = "is not migrated"
        wait_until(lambda: log_lines(log, advice), 60, "the worker to say it is not migrated")
        time.sleep(3)  # several polls: still one line
        db.migrate(server_db)
        broker = producer(server_db)
        try:
            send(broker, "note", 1)
            wait_until(lambda: count(server_db, "test_runs") == 1, 30, "the job to run")
        finally:
            broker.close()
    finally:
        stop(proc)
    [line] = log_lines(log, advice)
    assert "run `receiptq db migrate`" in line
    assert "CRITICAL" not in log.read_text(errors="replace")


def test_claimed_jobs_are_given_back_at_sigterm_once_the_database_is_back(
    server, server_db, tmp_path
):
    prepare(server_db)
    release = tmp_path / "release"
    log = tmp_path / "worker.log"
    broker = producer(server_db)
    for n in range(4):
        send(broker, "wait_for_file", n, str(release))
    broker.close()
    proc = workers(server_db, log, threads=1)  # prefetch 2: one runs, one waits
    try:
        wait_until(lambda: count(server_db, "test_started") == 1, 60, "the first job to start")
        server.restart("fast")
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(2)  # Dramatiq notices the signal within a second
        release.touch()
        proc.wait(30)
    finally:
        stop(proc)
    with psycopg.connect(server_db) as conn:
        rows = conn.execute("SELECT state, attempt FROM receiptq.jobs ORDER BY id").fetchall()
    assert rows == [("queued", 0)] * 3, "the unstarted jobs are back, no attempt used"
