"""receiptq through a real PgBouncer 1.18 (no prepared-statement support) in transaction
mode with RECEIPTQ_POOLER=transaction, and in session mode as the control: real
`dramatiq` worker processes, every kind of send, status, dead letters, a queue cap, the
rate-limiter and results backends; and the refusal to start in session mode behind a
transaction pooler."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest
from dramatiq.results import Results
from psycopg.conninfo import conninfo_to_dict

from pgbouncer_support import PgBouncer, pgbouncer_missing
from receiptq import db, queues
from receiptq.broker import PostgresBroker
from receiptq.errors import ConfigError
from receiptq.results import PostgresResultBackend
from tests_support import TESTS, start_dramatiq, stop, wait_until

pytestmark = pytest.mark.skipif(pgbouncer_missing() is not None, reason=str(pgbouncer_missing()))

#: Jobs of each kind the run sends.
BULK, SINGLE, DELAYED, IN_TRANSACTION, CAPPED, LIMITED, DOOMED, SQUARES = (
    300,
    40,
    20,
    20,
    16,
    10,
    4,
    5,
)
#: What in a worker log record means something went wrong (the issue's symptoms).
BAD_RECORD = re.compile(
    r"CRITICAL|ERROR|InvalidSqlStatementName|DuplicatePreparedStatement|ProtocolViolation"
    r"|prepared statement|Traceback|KeyError|psycopg"
)


def bad_records(log: str) -> list[str]:
    """The worker log's records (a line starting with ``[`` and the traceback lines
    after it) that say something went wrong, but for the dead letters of ``doomed``."""
    records = re.split(r"\n(?=\[)", log)
    return [
        r for r in records
        if BAD_RECORD.search(r) and not ("doomed(" in r and "PermanentError" in r)
    ]  # fmt: skip


def _bouncer(database_url: str, mode: str) -> Iterator[tuple[str, PgBouncer]]:
    # In session mode each client holds a server connection while it is connected:
    # two worker processes hold about 20 each (see docs/operations.md, Connection budget).
    bouncer = PgBouncer(database_url, pool_mode=mode, pool_size=20 if mode == "transaction" else 80)
    try:
        yield bouncer.url(conninfo_to_dict(database_url)["dbname"]), bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def transaction_pooler(database_url: str) -> Iterator[tuple[str, PgBouncer]]:
    """The test database's URL through a PgBouncer in transaction mode, and the bouncer."""
    yield from _bouncer(database_url, "transaction")


@pytest.fixture
def session_pooler(database_url: str) -> Iterator[tuple[str, PgBouncer]]:
    yield from _bouncer(database_url, "session")


def _receiptq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiptq", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=TESTS,
    )  # fmt: skip


def _peak(conn: Any, kind: str) -> int:
    row = conn.execute(
        "SELECT coalesce(max(running), 0) AS peak FROM (SELECT sum(edge) OVER"
        " (ORDER BY at, edge) AS running FROM test_spans WHERE kind = %s) AS s",
        (kind,),
    ).fetchone()
    return int(row["peak"])


def _run_through(url: str, mode: str, conn: Any, tmp_path: Path) -> str:
    """Send every kind of job through ``url`` in ``mode``, run them with two worker
    processes, check each ran once; the workers' log."""
    conn.execute("CREATE TABLE test_runs (job_no integer NOT NULL, pid integer NOT NULL)")
    conn.execute(
        "CREATE TABLE test_spans (kind text NOT NULL, job_no integer NOT NULL,"
        " edge integer NOT NULL, at timestamptz NOT NULL)"
    )
    queues.set_cap(conn, "pooled_capped", 2)
    broker = PostgresBroker(url, pooler=mode)
    backend = PostgresResultBackend(url)
    broker.add_middleware(Results(backend=backend))
    dramatiq.set_broker(broker)
    record = dramatiq.actor(lambda job_no: None, actor_name="record", queue_name="pooled")
    capped = dramatiq.actor(lambda job_no: None, actor_name="capped", queue_name="pooled_capped")
    limited = dramatiq.actor(lambda job_no: None, actor_name="limited", queue_name="pooled")
    doomed = dramatiq.actor(lambda job_no: None, actor_name="doomed", queue_name="pooled")
    square = dramatiq.actor(
        lambda x: None, actor_name="square", queue_name="pooled", store_results=True
    )
    log = tmp_path / f"workers-{mode}.log"
    workers = start_dramatiq(
        "apps.pooler_app", url, processes=2, threads=4,
        env={"RECEIPTQ_POOLER": mode, "RECEIPTQ_LEASE_S": "10"}, log_path=log,
    )  # fmt: skip
    try:
        n = 0
        assert broker.enqueue_many([record.message(n + i) for i in range(BULK)]) == BULK
        n += BULK
        for i in range(SINGLE):
            record.send(n + i)
        n += SINGLE
        for i in range(DELAYED):
            record.send_with_options(args=(n + i,), delay=300)
        n += DELAYED
        with db.connect(url) as own, own.transaction(), broker.transaction(own):
            for i in range(IN_TRANSACTION):
                record.send(n + i)
        n += IN_TRANSACTION
        with pytest.raises(ZeroDivisionError):  # rolled back: these never run
            with db.connect(url) as own, own.transaction(), broker.transaction(own):
                for i in range(5):
                    record.send(10_000 + i)
                raise ZeroDivisionError
        broker.enqueue_many([capped.message(i) for i in range(CAPPED)])
        broker.enqueue_many([limited.message(i) for i in range(LIMITED)])
        broker.enqueue_many([doomed.message(i) for i in range(DOOMED)])
        squares = [square.send(x) for x in range(SQUARES)]
        assert [backend.get_result(m, block=True, timeout=30_000) for m in squares] == [
            x * x for x in range(SQUARES)
        ]
        for queue in ("pooled", "pooled_capped"):
            broker.join(queue, timeout=60_000)
        wait_until(
            lambda: conn.execute("SELECT count(*) AS n FROM test_runs").fetchone()["n"] >= n,
            30, "every job to run",
        )  # fmt: skip
        time.sleep(0.5)  # a job that ran twice would show now
    finally:
        stop(workers)
        broker.close()
        backend.close()
    runs = conn.execute("SELECT job_no, count(*) AS runs FROM test_runs GROUP BY job_no").fetchall()
    assert sorted(r["job_no"] for r in runs) == list(range(n)), "every job ran, none rolled back"
    assert {r["runs"] for r in runs} == {1}, "each exactly once"
    spans = conn.execute("SELECT kind, count(*) AS n FROM test_spans GROUP BY kind").fetchall()
    assert {r["kind"]: r["n"] for r in spans} == {"capped": 2 * CAPPED, "limited": 2 * LIMITED}
    assert _peak(conn, "capped") <= 2, "the queue cap held through the pooler"
    assert _peak(conn, "limited") <= 2, "the rate limiter held through the pooler"
    dead = conn.execute("SELECT count(*) AS n FROM receiptq.dead_letters").fetchone()["n"]
    assert dead == DOOMED
    status = _receiptq("--url", url, "--pooler", mode, "status", "--json")
    assert status.returncode == 0, status.stderr
    snap = json.loads(status.stdout)
    return log.read_text(errors="replace"), snap, n


def _assert_status(snap: dict[str, Any], n: int) -> None:
    """``receiptq status`` counts what ran: every job once, through the pooler too."""
    pooled, capped = snap["queues"]["pooled"], snap["queues"]["pooled_capped"]
    assert pooled["done_5m"] == n + LIMITED + SQUARES
    assert capped["done_5m"] == CAPPED
    assert pooled["dead"] == DOOMED
    assert pooled["failed_5m"] >= DOOMED  # and the rate limiter's retries
    for counts in (pooled, capped):
        assert counts["queued"] == counts["running"] == counts["reserved"] == 0


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_workers_senders_and_cli_run_through_pgbouncer(mode, database_url, conn, tmp_path, request):
    """Transaction mode with RECEIPTQ_POOLER=transaction; session mode (the control)
    with the default, fast path."""
    url, bouncer = request.getfixturevalue(f"{mode}_pooler")
    log, snap, n = _run_through(url, mode, conn, tmp_path)
    _assert_status(snap, n)
    assert log.count("PermanentError: job") == DOOMED, log[-3000:]
    bad = bad_records(log)
    assert bad == [], "\n".join(bad[:5])
    if mode == "transaction":
        assert "not linked" not in bouncer.log_text(), "no LISTEN went through the pooler"
        assert _session_settings(url) == {"auto"}, "no session SET left on a server session"


def _session_settings(url: str) -> set[str]:
    """plan_cache_mode on every server session of the pooler: 20 clients (its pool
    size) each in a transaction at once hold one session each."""
    conns = [psycopg.connect(url, prepare_threshold=None) for _ in range(20)]
    try:
        return {c.execute("SHOW plan_cache_mode").fetchone()[0] for c in conns}
    finally:
        for c in conns:
            c.close()


def test_worker_refuses_to_start_in_session_mode_behind_a_transaction_pooler(
    transaction_pooler, tmp_path
):
    """No RECEIPTQ_POOLER: the workers see that a LISTEN through the pooler never hears
    its NOTIFY, say in one line what to set, and exit (instead of running on)."""
    url, _ = transaction_pooler
    log = tmp_path / "workers.log"
    workers = start_dramatiq(
        "apps.pooler_app", url, processes=1, threads=2,
        env={"RECEIPTQ_POOLER": ""}, log_path=log,
    )  # fmt: skip
    try:
        code = workers.wait(30)
    finally:
        stop(workers)
    text = log.read_text(errors="replace")
    assert code != 0
    lines = [line for line in text.splitlines() if "RECEIPTQ_POOLER=transaction" in line]
    assert len(lines) == 1, text
    assert "reached through a pooler in transaction mode" in lines[0]
    assert "Traceback" not in text


def test_cli_refuses_in_session_mode_behind_a_transaction_pooler_and_runs_with_the_option(
    transaction_pooler,
):
    url, _ = transaction_pooler
    env = {k: v for k, v in os.environ.items() if k != "RECEIPTQ_POOLER"}
    refused = _receiptq("--url", url, "status", "--json", env=env)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "RECEIPTQ_POOLER=transaction" in refused.stderr
    assert refused.stdout == ""
    for args in (
        ["--pooler", "transaction", "--url", url],
        ["--url", url, "--pooler", "transaction"],
    ):
        ran = _receiptq(*args[:2], "status", *args[2:], "--json", env=env)
        assert ran.returncode == 0, ran.stderr
        assert "queues" in json.loads(ran.stdout)
    ran = _receiptq("--url", url, "db", "migrate", env={**env, "RECEIPTQ_POOLER": "transaction"})
    assert ran.returncode == 0, ran.stderr


def test_session_mode_check_is_one_query_on_a_direct_connection(database_url):
    """The check costs a direct connection one query (the server sees our own port),
    not the LISTEN/NOTIFY probe (which takes a while only where it fails)."""
    db._pooler_checked.discard(database_url)
    started = time.monotonic()
    with db.connect(database_url) as conn:
        elapsed = time.monotonic() - started
        assert db._direct(conn)
    assert database_url in db._pooler_checked
    assert elapsed < 1.0


def test_transaction_mode_prepares_nothing_where_psycopg_would(transaction_pooler):
    """psycopg prepares a statement on its 6th run on a connection: through PgBouncer
    1.18 in transaction mode the next run lands on a server session that never saw it.
    db.connect in transaction mode never prepares."""
    url, _ = transaction_pooler
    db.use_pooler("transaction", url)

    def runs(connect: Any) -> None:
        with connect(url) as one, connect(url) as two:
            for i in range(30):
                for conn in (one, two):
                    with conn.transaction():  # each on whichever server session is free
                        conn.execute("SELECT %s::int + 1 AS n", (i,)).fetchone()

    runs(db.connect)
    with pytest.raises(psycopg.Error, match="prepared statement"):
        runs(lambda u: psycopg.connect(u, autocommit=True))


def test_bulk_sends_with_users_and_unique_keys_run_through_the_transaction_pooler(
    transaction_pooler, conn
):
    """A bulk send with users reads its users' rounds, then COPYs; one with a unique
    key goes through job_enqueue_many: both, past psycopg's prepare threshold, on
    whichever server session PgBouncer hands out."""
    from dramatiq.message import Message

    from receiptq.tools.bench.workload import bench_messages

    url, _ = transaction_pooler
    broker = PostgresBroker(url, pooler="transaction")
    try:
        broker.declare_queue("bulk")
        for n in range(8):
            assert broker.enqueue_many(bench_messages(50, "bulk", users=10)) == 50
            unique = Message(
                queue_name="bulk", actor_name="note", args=(n,), kwargs={},
                options={"unique_key": f"k{n}", "user_id": "user-0"},
            )  # fmt: skip
            assert broker.enqueue_many([unique, unique]) == 1
    finally:
        broker.close()
    rounds = conn.execute(
        "SELECT user_id, array_agg(user_round ORDER BY id) AS rounds FROM receiptq.jobs"
        " GROUP BY user_id ORDER BY user_id"
    ).fetchall()
    assert len(rounds) == 10
    for row in rounds:  # user-0 also sent the 8 unique jobs, each after its 5 of a batch
        expected = 48 if row["user_id"] == "user-0" else 40
        assert row["rounds"] == list(range(1, expected + 1)), row["user_id"]


def test_pooler_setting_is_checked_and_turns_listen_off(monkeypatch, database_url):
    monkeypatch.setenv("RECEIPTQ_POOLER", "statement")
    unread = PostgresBroker(database_url)  # a broker reads its settings on first use
    with pytest.raises(ConfigError, match="RECEIPTQ_POOLER must be session or transaction"):
        unread.pooler  # noqa: B018
    with pytest.raises(ConfigError, match=r"PostgresBroker\(pooler=...\) must be"):
        PostgresBroker(database_url, pooler="bogus")
    monkeypatch.setenv("RECEIPTQ_POOLER", "transaction")
    pooled = PostgresBroker(database_url, listen=True)
    assert (pooled.pooler, pooled.listen, pooled.poll_interval_s) == ("transaction", False, 0.2)
    assert db.connect_kwargs(database_url) == {"prepare_threshold": None}
    monkeypatch.delenv("RECEIPTQ_POOLER")
    direct = PostgresBroker(database_url)
    assert (direct.pooler, direct.listen, direct.poll_interval_s) == ("session", True, 0.5)
    assert db.connect_kwargs(database_url) == {}


#: Calls that open a connection; only receiptq/db.py may make them.
_CONNECTING = {("psycopg", "connect"), ("Connection", "connect"), (None, "ConnectionPool"),
               ("psycopg_pool", "ConnectionPool"), ("AsyncConnection", "connect")}  # fmt: skip


def test_every_connection_is_opened_by_db_py():
    """So that a new connection site cannot forget the pooler mode: outside
    receiptq/db.py nothing calls psycopg.connect or builds a ConnectionPool."""
    source = Path(db.__file__).parent
    offenders = []
    for path in sorted(source.rglob("*.py")):
        if path == Path(db.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                call = (func.value.id, func.attr)
            elif isinstance(func, ast.Name):
                call = (None, func.id)
            else:
                continue
            if call in _CONNECTING:
                offenders.append(f"{path.relative_to(source)}:{node.lineno}")
    assert offenders == []


def test_dashboard_runs_through_the_transaction_pooler(transaction_pooler, broker, conn):
    """`receiptq web`'s pages and API through PgBouncer 1.18 in transaction mode, each
    read more often than psycopg's prepare threshold; refused in session mode."""
    from web_helpers import client, fill_known_contents

    url, _ = transaction_pooler
    fill_known_contents(broker, conn)
    db.use_pooler("session", url)
    with pytest.raises(ConfigError, match="RECEIPTQ_POOLER=transaction"):
        with client(url):
            pass
    db.use_pooler("transaction", url)
    with client(url) as web:
        for _ in range(8):
            for path in (
                "/",
                "/api/status",
                "/api/dashboard",
                "/api/running",
                "/api/dead-letters",
                "/metrics",
            ):
                response = web.get(path)
                assert response.status_code == 200, (path, response.text[:300])
        assert web.get("/api/dead-letters").json()
