"""Least-privilege roles: `receiptq db grant ROLE --worker|--app|--readonly`.

Real `dramatiq` workers run as a `--worker` role, a sender as an `--app` role, and
`receiptq web` and `receiptq status --json` as a `--readonly` role; each role holds
exactly the privileges receiptq.grants.ROLE_GRANTS lists (which docs/operations.md
shows), and nothing else in the database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dramatiq
import pytest
from dramatiq.rate_limits import Barrier
from dramatiq.results import Results
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from receiptq import cli, db, grants, retention
from receiptq.broker import PostgresBroker
from receiptq.pg.heartbeat import Heartbeat, WorkerStatus
from receiptq.rate_limits import PostgresRateLimiterBackend
from receiptq.results import PostgresResultBackend
from receiptq.tiers import TierPolicy
from tests_support import free_port, start_dramatiq, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
JOBS = 40


@pytest.fixture
def roles(database_url: str) -> Iterator[dict[str, str]]:
    """One new role per kind (LOGIN, no privileges), named for this test run; their
    privileges and any object they own in the test database are dropped after."""
    suffix = uuid.uuid4().hex[:10]
    names = {kind: f"receiptq_t_{suffix}_{kind}" for kind in grants.ROLE_KINDS}
    with db.connect(database_url) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(name)))
    yield names
    with db.connect(database_url) as conn:
        for name in names.values():
            role = sql.Identifier(name)
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            conn.execute(sql.SQL("DROP ROLE {}").format(role))


def as_role(url: str, role: str) -> str:
    return make_conninfo(url, user=role)


def grant_all(database_url: str, roles: dict[str, str]) -> None:
    for kind, role in roles.items():
        assert cli.main(["db", "grant", role, f"--{kind}", "--url", database_url]) == 0


def receiptq(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiptq", *args, "--url", url],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_each_role_holds_exactly_the_documented_privileges(database_url, roles, conn):
    for role in roles.values():
        assert grants.role_privileges(conn, role) == set()
    grant_all(database_url, roles)
    for kind, role in roles.items():
        assert grants.role_privileges(conn, role) == grants.expected_privileges(kind), kind
    # Granting again changes nothing.
    grant_all(database_url, roles)
    assert grants.role_privileges(conn, roles["app"]) == grants.expected_privileges("app")


def test_the_printed_grants_are_the_ones_the_command_runs(database_url, roles, conn, capsys):
    role = roles["worker"]
    assert cli.main(["db", "grant", role, "--worker", "--print"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f'GRANT USAGE ON SCHEMA receiptq TO "{role}";\n')
    assert grants.role_privileges(conn, role) == set()  # printed, not run
    conn.execute(printed)
    assert grants.role_privileges(conn, role) == grants.expected_privileges("worker")


def test_the_docs_show_the_privileges_of_the_code():
    text = (ROOT / "docs" / "operations.md").read_text()
    assert grants.markdown_table() in text


def test_a_missing_role_or_a_bad_name_is_one_line(database_url, capsys):
    assert cli.main(["db", "grant", "receiptq_t_nobody", "--app", "--url", database_url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "there is no role receiptq_t_nobody" in err
    assert cli.main(["db", "grant", 'x"; DROP TABLE y; --', "--app", "--print"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a role name" in err


def test_a_role_without_grants_cannot_read_the_queue(database_url, roles):
    with db.connect(as_role(database_url, roles["readonly"])) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM receiptq.jobs")


def test_workers_a_sender_and_the_dashboard_run_as_least_privilege_roles(
    database_url, roles, conn, tmp_path
):
    grant_all(database_url, roles)
    worker_url, app_url, readonly_url = (
        as_role(database_url, roles[k]) for k in ("worker", "app", "readonly")
    )
    runs = tmp_path / "runs"
    runs.touch()
    log = tmp_path / "workers.log"
    workers = start_dramatiq(
        "apps.grants_app", worker_url, processes=2, threads=2, log_path=log,
        env={"GRANTS_RUNS_FILE": str(runs), "RECEIPTQ_LEASE_S": "3"},
    )  # fmt: skip
    sender = PostgresBroker(app_url)
    backend = PostgresResultBackend(app_url)
    sender.add_middleware(Results(backend=backend))
    try:
        note = dramatiq.actor(
            lambda job_no: None, actor_name="note", queue_name="granted", broker=sender
        )
        note_result = dramatiq.actor(
            lambda job_no: None, actor_name="note_result", queue_name="granted",
            store_results=True, broker=sender,
        )  # fmt: skip
        sender.enqueue_many([note.message(n) for n in range(JOBS // 2)])  # a bulk send
        for n in range(JOBS // 2, JOBS - 3):
            note.send_with_options(args=(n,), tier="pro", user_id=f"u{n % 3}")
        with db.connect(app_url) as app, app.transaction(), sender.transaction(app):
            note.send(JOBS - 3)  # a send in the app's own transaction
        result_message = note_result.send(JOBS - 2)
        # A group with completion callbacks sets a barrier when it is sent.
        assert Barrier(PostgresRateLimiterBackend(app_url), "grants-group").create(3)
        with db.connect(app_url) as app, app.transaction():  # as a trigger or pg_cron would
            app.execute(
                "SELECT receiptq.enqueue('note', 'granted', jsonb_build_array(%s::int),"
                " tier => 'free')",
                (JOBS - 1,),
            )
        assert backend.get_result(result_message, block=True, timeout=60_000) == 2 * (JOBS - 2)

        def all_ran() -> bool:
            return len(runs.read_text().split()) >= JOBS

        wait_until(all_ran, 60, "every job to run")
        wait_until(lambda: not conn.execute("SELECT 1 FROM receiptq.jobs").fetchone(), 30, "acks")
        sender.close()
        # The workers' heartbeat (a third of the 3 s lease) counts the SQL send; their
        # flushers the finished jobs (every second).
        wait_until(
            lambda: conn.execute(
                "SELECT sum(enqueued) = %(n)s AND sum(succeeded) = %(n)s AS counted"
                " FROM receiptq.stats_minute", {"n": JOBS},
            ).fetchone()["counted"],
            30, "every send and every run to be counted",
        )  # fmt: skip
        status = receiptq("status", "--json", url=readonly_url)
        assert status.returncode == 0, status.stderr
        assert status.stderr == ""
        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "receiptq", "web", "--port", str(port), "--url", readonly_url],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            pages = {}
            for path in ("/healthz", "/", "/api/status", "/api/dashboard", "/api/running",
                         "/api/dead-letters", "/metrics"):  # fmt: skip
                pages[path] = wait_until(lambda p=path: _get(port, p), 30, f"GET {path}")
        finally:
            stop(web)
            web_log = web.stdout.read().decode() if web.stdout else ""
        top = receiptq("top", "--json", url=readonly_url)
    finally:
        stop(workers)
        sender.close()
    ran = sorted(int(n) for n in runs.read_text().split())
    assert ran == list(range(JOBS)), "every job ran exactly once"
    assert conn.execute("SELECT count(*) AS n FROM receiptq.dead_letters").fetchone()["n"] == 0
    stats = conn.execute(
        "SELECT sum(enqueued) AS enqueued, sum(succeeded) AS succeeded, sum(failed) AS failed"
        " FROM receiptq.stats_minute"
    ).fetchone()
    assert (stats["enqueued"], stats["succeeded"], stats["failed"]) == (JOBS, JOBS, 0)
    assert top.returncode == 0, top.stderr
    granted = json.loads(status.stdout)["queues"]["granted"]  # read with SELECT alone
    assert (granted["queued"], granted["dead"], granted["done_60m"], granted["failed_60m"]) == (
        0, 0, JOBS, 0,
    )  # fmt: skip
    assert all(code == 200 for code, _ in pages.values()), pages
    text = log.read_text()
    for bad in ("permission denied", "ERROR", "CRITICAL", "Traceback"):
        assert bad not in text, text
        assert bad not in web_log, web_log


def _get(port: int, path: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except OSError:
        return None


def test_a_worker_role_dead_letters_prunes_and_records_periodic_ticks(database_url, roles, conn):
    grant_all(database_url, roles)
    worker_url = as_role(database_url, roles["worker"])
    broker = PostgresBroker(worker_url, lease_s=5, poll_interval_ms=100)

    @dramatiq.actor(queue_name="granted", max_retries=0, broker=broker)
    def fails() -> None:
        raise ValueError("boom")

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        fails.send()
        wait_until(
            lambda: conn.execute("SELECT 1 FROM receiptq.dead_letters").fetchone(), 30,
            "the dead letter",
        )  # fmt: skip
    finally:
        worker.stop()
        broker.close()
    with db.connect(worker_url) as as_worker:
        tick = {"actor": "hourly", "tick_at": db.fetch_one(as_worker, "db_now")["now"]}
        assert db.fetch_one(as_worker, "periodic_tick_claim", tick) is not None
        retention.prune(
            as_worker, retention.RetentionPolicy(), now=tick["tick_at"] + timedelta(days=90)
        )
    assert conn.execute("SELECT count(*) AS n FROM receiptq.dead_letters").fetchone()["n"] == 0
    assert conn.execute("SELECT count(*) AS n FROM receiptq.periodic_ticks").fetchone()["n"] == 0


def test_a_worker_role_granted_before_0011_keeps_beating_and_says_what_to_grant_once(
    database_url, roles, conn, caplog
):
    grant_all(database_url, roles)
    role = sql.Identifier(roles["worker"])
    for table in ("sql_sends", "tiers"):  # what a grant of an older receiptq lacked
        conn.execute(
            sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
                sql.Identifier("receiptq", table), role
            )
        )
    pool = db.open_pool(as_role(database_url, roles["worker"]), max_size=1)
    beat = Heartbeat(
        lambda: pool, worker_id="h:1:old-grants", lease_s=600, interval_s=300,
        status=lambda: WorkerStatus(["q"], []), tiers=TierPolicy.from_env(),
    )  # fmt: skip
    try:
        beat.beat()
        beat.beat()
    finally:
        beat.close()
        pool.close()
    warnings = [r.getMessage() for r in caplog.records if "sent from SQL" in r.getMessage()]
    assert len(warnings) == 1 and "receiptq db grant ROLE --worker" in warnings[0]
    assert not [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
