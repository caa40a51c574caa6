"""`receiptq demo` never touches data it did not create: by default it runs in a
database of its own (the embedded PostgreSQL, which it stops when it started it, or a
receiptq_demo database next to the URL's); it refuses a database holding others' jobs,
dead letters or receipts; allowed to run beside them, it leaves them as they were and
counts only its own."""

from __future__ import annotations

import json
import os
import pty
import random
import struct
import subprocess
import sys
import termios
import warnings
from fcntl import ioctl
from pathlib import Path

import dramatiq
import pytest
from dramatiq.message import Message
from psycopg.conninfo import make_conninfo

from receiptq import cli, db
from receiptq.services import images, receipts

RECEIPTQ = Path(sys.executable).with_name("receiptq")
SMALL = ["--workers", "1", "--threads", "2", "--fail-rate", "0", "--json", "--seed", "5"]


def app_data(conn) -> dict:
    """What the app's side of the database holds, to compare before and after."""
    return {
        "jobs": conn.execute(
            "SELECT message_id, queue, state, attempt, run_at FROM receiptq.jobs ORDER BY id"
        ).fetchall(),
        "dead_letters": conn.execute(
            "SELECT id, message_id FROM receiptq.dead_letters ORDER BY id"
        ).fetchall(),
        "receipts": conn.execute(
            "SELECT r.id, u.email, r.status FROM receiptq_app.receipts r"
            " JOIN receiptq_app.users u ON u.id = r.user_id ORDER BY r.id"
        ).fetchall(),
    }


@pytest.fixture
def app_database(database_url, conn, monkeypatch) -> str:
    """The app's database: one dead letter, one queued and one delayed OCR job, and a
    receipt of the app's own user (whose OCR job is the queued one)."""
    from receiptq.actors import app as actors

    broker = actors.receipt_broker(database_url)
    dramatiq.set_broker(broker)
    try:
        user = receipts.add_user(conn, "ana@example.test", "pro")
        image = images.render_receipt(images.random_receipt(random.Random(1)))
        receipt_id = actors.submit_receipt(user["id"], image, broker=broker)
        broker.get_actor("ocr_receipt").send_with_options(args=(receipt_id,), delay=3_600_000)
        dead = Message(queue_name="ocr", actor_name="ocr_receipt", args=(9,), kwargs={},
                       options={})  # fmt: skip
        broker.enqueue(dead)
        [job] = broker.claim("ocr", 1)  # priority 0: before the pro user's job (10)
        assert job.message_id == dead.message_id
        db.fetch_all(conn, "job_dead_letter", {"id": job.job_id, "attempt": job.attempt,
                     "reason": "failed", "error_type": "OSError", "error": "gone",
                     "traceback": None})  # fmt: skip
    finally:
        broker.close()
    return database_url


@pytest.mark.timeout(300)
def test_demo_refuses_others_data_and_allowed_beside_it_leaves_it_alone(
    app_database, conn, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("RECEIPTQ_HOME", str(tmp_path))
    before = app_data(conn)
    assert (len(before["jobs"]), len(before["dead_letters"]), len(before["receipts"])) == (2, 1, 1)

    code = cli.main(["demo", "--in-place", "--receipts", "3", *SMALL, "--url", app_database])
    captured = capsys.readouterr()
    assert code == 1
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("receiptq: error: the database holds data the demo did not create")
    assert "(2 jobs, 1 dead letters, 1 receipts)" in error
    assert "--allow-existing-data" in error and "leave out --in-place" in error
    assert app_data(conn) == before
    assert tables_of_demo(conn) == 0

    code = cli.main(["demo", "--in-place", "--allow-existing-data", "--receipts", "3", *SMALL,
                     "--url", app_database])  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, summary
    # The app's four things are as they were: its queued job was not taken by the
    # demo's workers (they consume the demo's own queues), nor flushed, nor counted.
    after = app_data(conn)
    assert after["jobs"] == before["jobs"]  # the demo left no job of its own
    assert after["dead_letters"][0] == before["dead_letters"][0]
    assert len(after["dead_letters"]) == 1 + summary["dead_letters"]
    assert after["receipts"][0] == before["receipts"][0]
    assert len(after["receipts"]) == 1 + 3
    assert summary["receipts"] == 3
    assert sum(summary["statuses"].values()) == 3
    assert summary["processed"] + summary["stuck"] == 3
    assert summary["dead_letters"] == summary["expected_failed"]
    assert summary["jobs_left"] == 0
    assert summary["accounted"] is True


def tables_of_demo(conn) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM receiptq_app.users WHERE email LIKE '%@demo.receiptq.test'"
    ).fetchone()
    return int(row["n"])


def test_looking_for_others_data_in_an_empty_database_finds_none_and_creates_nothing(
    empty_database_url,
):
    from receiptq.tools.demo import database as demo_database

    assert demo_database.foreign_data(empty_database_url) == {}
    with db.connect(empty_database_url) as conn:
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'receiptq%%'"
        ).fetchall()
    assert schemas == []


def receiptq(*argv: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RECEIPTQ), *argv], capture_output=True, text=True, timeout=timeout, env=env,
        check=False,
    )  # fmt: skip


@pytest.mark.timeout(600)  # initdb, two demos with real OCR
def test_demo_runs_in_a_database_of_its_own_and_stops_the_server_it_started(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("RECEIPTQ_DATABASE_URL", "DATABASE_URL")
    }
    env.update(RECEIPTQ_HOME=str(tmp_path), COLUMNS="200")

    # No URL: the embedded PostgreSQL, started for the demo and stopped after it.
    done = receiptq("demo", "--receipts", "2", *SMALL, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["receipts"] == 2
    assert f"the embedded PostgreSQL in {tmp_path / 'pgdata'}" in done.stderr
    assert "stopped the embedded PostgreSQL, which the demo had started" in done.stderr
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()

    # A URL: a receiptq_demo database next to the URL's, which keeps what it had.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: no XDG_RUNTIME_DIR; pgserver copes
        import pgserver

    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode=None)
    url = server.get_uri()
    with db.connect(url) as conn:
        before = conn.execute("SELECT count(*) AS n FROM receiptq_app.receipts").fetchone()["n"]
    done = receiptq("demo", "--receipts", "2", *SMALL, "--url", url, env=env)
    assert done.returncode == 0, done.stderr
    assert "/receiptq_demo, the demo's own (created now, next to postgres's database" in done.stderr
    assert "keeps running" not in done.stderr and "stopped" not in done.stderr
    with db.connect(make_conninfo(url, dbname="receiptq_demo")) as conn:
        n = conn.execute("SELECT count(*) AS n FROM receiptq_app.receipts").fetchone()["n"]
        assert n == 2
    with db.connect(url) as conn:
        after = conn.execute("SELECT count(*) AS n FROM receiptq_app.receipts").fetchone()["n"]
    assert after == before

    # `receiptq db stop` stops it (the demo did not start this one); then nothing to stop.
    stopped = receiptq("db", "stop", "--json", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopped"] is True
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
    again = receiptq("db", "stop", env=env)
    assert (again.returncode, again.stdout.strip()) == (
        0, f"the embedded PostgreSQL ({tmp_path / 'pgdata'}) is not running",
    )  # fmt: skip


WIDTH_PROBE = "from receiptq.tools.demo.view import live_console; print(live_console().width)"


@pytest.mark.parametrize("term", ["xterm-256color", "dumb"])
def test_live_view_is_as_wide_as_the_terminal(term):
    # stderr on a 150-column terminal, stdin on a terminal that reports no size.
    out_main, out_side = pty.openpty()
    in_main, in_side = pty.openpty()
    ioctl(out_side, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    ioctl(in_side, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    try:
        done = subprocess.run(
            [sys.executable, "-c", WIDTH_PROBE], stdin=in_side, stderr=out_side,
            stdout=subprocess.PIPE, text=True, timeout=60, env={**env, "TERM": term}, check=True,
        )  # fmt: skip
    finally:
        for fd in (out_main, out_side, in_main, in_side):
            os.close(fd)
    assert done.stdout.strip() == "150"
