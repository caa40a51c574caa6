#!/usr/bin/env python3
"""Connection budget behind a transaction pooler, measured (docs/operations.md,
"Connection budget").

For each count of worker processes (``--processes``, default 1 2 4 8 16; each a
``dramatiq`` process with ``--threads`` threads, default 2) it enqueues ``--jobs``
no-op jobs (default 5000) on a database of its own, starts the workers through a
PgBouncer in transaction mode (started here, ``default_pool_size`` = ``--pool-size``,
default 20, PgBouncer's own default) with RECEIPTQ_POOLER=transaction, and samples
every 50 ms until every job is done:

- clients: connections of the workers at the pooler (PgBouncer ``SHOW POOLS``:
  cl_active + cl_waiting), most seen;
- server: connections to the database at the server (``pg_stat_activity``, this
  script's own sampling connection left out), most seen;
- jobs/s: jobs over the time from the first job leaving the queue to the last ack.

Then prints a Markdown table. Run from the repository (needs pgbouncer, e.g. Debian's
1.18, and a PostgreSQL it may create and drop a database ``pooler_budget_<pid>`` on):

    .venv/bin/python tools/pooler_budget.py --server-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the PgBouncer launcher the tests use

from pgbouncer_support import PgBouncer, pgbouncer_missing  # noqa: E402
from receiptq import db  # noqa: E402
from receiptq.broker import PostgresBroker  # noqa: E402

SAMPLE_S = 0.05


def _admin(server_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(server_url, autocommit=True)


def _pooler_clients(bouncer: PgBouncer, dbname: str) -> int:
    """Client connections of ``dbname`` at PgBouncer (its admin console speaks only the
    simple query protocol: hence exec_)."""
    admin = psycopg.connect(bouncer.url("pgbouncer"), autocommit=True)
    try:
        result = admin.pgconn.exec_(b"SHOW POOLS")
        names = [result.fname(i).decode() for i in range(result.nfields)]
        total = 0
        for row in range(result.ntuples):
            values = {
                name: (result.get_value(row, i) or b"").decode() for i, name in enumerate(names)
            }
            if values["database"] == dbname:
                total += int(values["cl_active"]) + int(values["cl_waiting"])
        return total
    finally:
        admin.close()


def measure(
    server_url: str,
    bouncer: PgBouncer | None,
    dbname: str,
    processes: int,
    threads: int,
    jobs: int,
) -> dict[str, Any]:
    """One drain; ``bouncer`` None: the workers connect directly, in session mode."""
    direct = make_conninfo(server_url, dbname=dbname)
    pooled = direct if bouncer is None else bouncer.url(dbname)
    mode = "session" if bouncer is None else "transaction"
    broker = PostgresBroker(pooled, pooler=mode)
    from dramatiq import Message

    messages = [
        Message(queue_name="budget", actor_name="noop", args=(n,), kwargs={}, options={})
        for n in range(jobs)
    ]
    broker.declare_queue("budget")
    for start in range(0, jobs, 1000):
        broker.enqueue_many(messages[start : start + 1000])
    broker.close()
    env = {
        **os.environ,
        "RECEIPTQ_DATABASE_URL": pooled,
        "RECEIPTQ_POOLER": mode,
        "PYTHONPATH": str(ROOT / "tools"),
    }
    workers = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "pooler_budget_app",
         "--processes", str(processes), "--threads", str(threads)],
        env=env, cwd=ROOT / "tools", start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    most_server = most_clients = 0
    first_taken = finished = None
    try:
        with psycopg.connect(direct, autocommit=True) as conn:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                left, server = conn.execute(
                    "SELECT (SELECT count(*) FROM receiptq.jobs),"
                    " (SELECT count(*) FROM pg_stat_activity"
                    "   WHERE datname = current_database() AND pid <> pg_backend_pid())"
                ).fetchone()
                most_server = max(most_server, server)
                clients = server if bouncer is None else _pooler_clients(bouncer, dbname)
                most_clients = max(most_clients, clients)
                now = time.monotonic()
                if first_taken is None and left < jobs:
                    first_taken = now
                if left == 0:
                    finished = now
                    break
                time.sleep(SAMPLE_S)
    finally:
        os.kill(workers.pid, signal.SIGTERM)
        try:
            workers.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(workers.pid, signal.SIGKILL)
            workers.wait(10)
    if finished is None or first_taken is None:
        raise SystemExit(f"{processes} processes: the jobs were not done within 600 s")
    seconds = max(finished - first_taken, SAMPLE_S)
    return {
        "processes": processes,
        "threads": threads,
        "clients": most_clients,
        "server": most_server,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database on the server to connect to as a user that may create databases",
    )  # fmt: skip
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument(
        "--direct", action="store_true",
        help="no PgBouncer: the workers connect to the server directly (session mode)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.direct and (missing := pgbouncer_missing()) is not None:
        print(missing, file=sys.stderr)
        return 1
    dbname = f"pooler_budget_{os.getpid()}"
    with _admin(args.server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    bouncer = None
    rows = []
    try:
        db.migrate(make_conninfo(args.server_url, dbname=dbname))
        if not args.direct:
            bouncer = PgBouncer(args.server_url, pool_mode="transaction", pool_size=args.pool_size)
        for processes in args.processes:
            row = measure(args.server_url, bouncer, dbname, processes, args.threads, args.jobs)
            print(
                f"{processes:>3} processes: {row['clients']} clients, {row['server']} server "
                f"connections, {row['jobs_per_s']:.0f} jobs/s",
                file=sys.stderr,
            )
            rows.append(row)
    finally:
        if bouncer is not None:
            bouncer.stop()
        with _admin(args.server_url) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
    through = (
        "direct connections (session mode)" if args.direct
        else f"PgBouncer in transaction mode, default_pool_size {args.pool_size}"
    )  # fmt: skip
    print(f"{args.jobs} no-op jobs, {args.threads} threads per process, {through}\n")
    print("| worker processes | client connections at the pooler (max) "
          "| server connections (max) | jobs/s |")  # fmt: skip
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['processes']} | {r['clients']} | {r['server']} | {r['jobs_per_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
