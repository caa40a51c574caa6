"""Have dramatiq-pg itself write rows in every state, and dump them as JSON.

Run with the Python of a virtual environment holding ``dramatiq<2``,
``dramatiq-pg`` and ``psycopg2-binary`` (README.md)::

    /tmp/dpg-venv/bin/python tools/dramatiq_pg/record_rows.py \
        postgresql://postgres@127.0.0.1:5432/some_new_db > rows.json

The database must be new and empty: the script creates dramatiq-pg's schema in it
(``dramatiq_pg.schema.generate_init_sql``, the package's own schema.sql), sends
messages, runs real ``dramatiq`` workers on them and kills one mid-job, then prints
every row of ``dramatiq.queue`` as JSON. What ends in which state:

- ``receipts``: done (with a stored result), rejected (an exception with
  ``max_retries=0``; a message for an actor no worker declares), a retry waiting on
  ``receipts.DQ`` (queued again by the worker's graceful stop, ``retries`` and
  ``traceback`` in its options, ``eta`` a day on), a send with a ten-year ``delay``
  (``receipts.DQ``, queued), plain sends never consumed (queued), one with a
  ``priority`` option;
- ``emails``: a job running when its worker was killed (consumed on ``emails``)
  and a delayed one the killed worker held in memory (consumed on ``emails.DQ``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
TEN_YEARS_MS = 10 * 365 * 86_400_000


def main(url: str) -> None:
    os.environ["DRAMATIQ_PG_URL"] = url
    from dramatiq_pg.schema import generate_init_sql

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(generate_init_sql())
    sys.path.insert(0, str(HERE))
    import recorder_app as app
    from dramatiq import Message

    app.read_receipt.send(1)
    app.broken.send(2)
    app.flaky.send(3)
    app.broker.enqueue(
        Message(queue_name="receipts", actor_name="retired_actor", args=(4,), kwargs={}, options={})
    )
    _wait(url, "SELECT count(*) FROM dramatiq.queue WHERE queue_name = 'receipts'", 4)
    worker = _worker(url, "receipts")
    _wait(url, "SELECT count(*) FROM dramatiq.queue WHERE state IN ('done', 'rejected')", 3)
    _wait(url, "SELECT count(*) FROM dramatiq.queue WHERE queue_name = 'receipts.DQ'", 1)
    worker.send_signal(signal.SIGTERM)  # graceful: the held retry goes back to queued
    worker.wait(60)

    app.send_email.send(5)
    app.send_email.send_with_options(args=(6,), delay=TEN_YEARS_MS)
    worker = _worker(url, "emails")
    _wait(
        url,
        "SELECT count(*) FROM dramatiq.queue WHERE queue_name LIKE 'emails%%'"
        " AND state = 'consumed'",
        2,
    )
    os.killpg(worker.pid, signal.SIGKILL)  # a crash: both stay consumed
    worker.wait(60)

    app.read_receipt.send_with_options(args=(7,), kwargs={"lang": "fr"})
    app.read_receipt.send_with_options(args=(8,), priority=5)
    app.read_receipt.send_with_options(args=(9,), delay=TEN_YEARS_MS)
    json.dump(_rows(url), sys.stdout, indent=1, sort_keys=True)
    print()


def _worker(url: str, queue: str) -> subprocess.Popen:
    env = {**os.environ, "DRAMATIQ_PG_URL": url, "PYTHONPATH": str(HERE)}
    command = [
        sys.executable,
        "-m",
        "dramatiq",
        "recorder_app",
        "--processes",
        "1",
        "--threads",
        "2",
        "--queues",
        queue,
    ]
    return subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _count(url: str, statement: str) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchone()[0]


def _wait(url: str, statement: str, expected: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while _count(url, statement) != expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {statement!r} = {expected}")
        time.sleep(0.1)


def _rows(url: str) -> list[dict]:
    statement = """
        SELECT message_id::text, queue_name, state::text, mtime::text, message,
               result, result_ttl::text
        FROM dramatiq.queue ORDER BY queue_name, (message->>'message_timestamp')::bigint
    """
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(statement)
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


if __name__ == "__main__":
    main(sys.argv[1])
