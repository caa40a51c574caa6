"""The pg_cron section of docs/operations.md, run as written.

pg_cron is not installed here: the trigger example runs whole with psql, and each
command the `cron.schedule` calls would run is run as pg_cron would run it at a tick.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import dramatiq

from receiptq import db
from tests_support import wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def pg_cron_sql_blocks() -> list[str]:
    section = DOCS.read_text().split("### pg_cron", 1)[1].split("\n## ", 1)[0]
    section = section.split("\n### ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.DOTALL)


def psql(url: str, text: str) -> str:
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url],
        input=text, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def jobs(conn) -> list[tuple]:
    rows = conn.execute(
        "SELECT actor, queue, priority, message->'args' AS args FROM receiptq.jobs ORDER BY id"
    ).fetchall()
    return [tuple(r.values()) for r in rows]


def test_the_docs_trigger_and_schedules_send_jobs_that_run_once(broker, database_url, conn):
    trigger, schedules = pg_cron_sql_blocks()
    commands = re.findall(r"\$\$(SELECT receiptq\.enqueue\(.*?\))\$\$", schedules, re.DOTALL)
    assert len(commands) == 2 and schedules.count("cron.schedule(") == 2
    assert "'30 seconds'" in schedules

    psql(database_url, trigger)
    # The committed upload sent one job at pro's priority; the rolled-back one none.
    assert jobs(conn) == [("ocr_receipt", "ocr", 10, [1])]
    assert conn.execute("SELECT count(*) AS n FROM uploads").fetchone()["n"] == 1
    for _ in range(2):  # two ticks while no worker runs: the unique keys keep one job each
        for command in commands:
            psql(database_url, command + ";")
    assert sorted(j[0] for j in jobs(conn)) == ["daily_report", "ocr_receipt", "poll_bank"]

    ran: list[str] = []
    for name, queue in (("ocr_receipt", "ocr"), ("daily_report", "reports"), ("poll_bank", "default")):  # fmt: skip
        dramatiq.actor(lambda *args, name=name: ran.append(name), actor_name=name,
                       queue_name=queue, max_retries=0, broker=broker)  # fmt: skip
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        for queue in ("ocr", "reports", "default"):
            broker.join(queue, timeout=20_000)
        worker.join()
        broker.heartbeat_now()  # counts the jobs sent from SQL
    finally:
        worker.stop()
    assert sorted(ran) == ["daily_report", "ocr_receipt", "poll_bank"]

    def stats() -> list[tuple]:
        rows = conn.execute(
            "SELECT actor, sum(enqueued)::int AS enqueued, sum(succeeded)::int AS succeeded"
            " FROM receiptq.stats_minute GROUP BY actor ORDER BY actor"
        ).fetchall()
        return [tuple(r.values()) for r in rows]

    expected = [("daily_report", 1, 1), ("ocr_receipt", 1, 1), ("poll_bank", 1, 1)]
    wait_until(lambda: stats() == expected, 10, f"the statistics {expected} (now {stats()})")
    assert db.fetch_all(conn, "migration_applied")  # the database is receiptq's own
