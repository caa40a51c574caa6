"""Periodic jobs: one job per tick whatever the number of schedulers, retention, reports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import pytest
from periodiq import PeriodiqMiddleware

from receiptq import db, retention
from receiptq.config import ConfigError
from receiptq.periodic import ensure_periodiq, periodic_actor, tick_key, tick_of

TESTS = Path(__file__).resolve().parents[1]


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def count(conn, statement: str, params=()) -> int:
    return conn.execute(statement, params).fetchone()["n"]


# -- ticks ----------------------------------------------------------------------------


def test_a_tick_is_its_utc_minute_whatever_the_scheduler_time_zone():
    paris = tick_of("2026-03-01T13:05:00.400000+01:00")
    utc = tick_of("2026-03-01T12:05:59+00:00")
    assert paris == utc == datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    assert tick_key("report", paris) == "periodic:report:2026-03-01T12:05Z"
    with pytest.raises(ValueError, match="time zone"):
        tick_of("2026-03-01T12:05:00")
    with pytest.raises(ValueError, match="ISO 8601"):
        tick_of("yesterday")


@pytest.fixture
def ticker(broker):
    runs: list[str] = []

    @periodic_actor("*/5 * * * *", queue_name="ticks", broker=broker)
    def report(label: str = "") -> None:
        runs.append(label)

    return report, runs


def test_a_periodic_actor_is_declared_with_periodiqs_middleware_once(broker, ticker):
    report, _ = ticker
    ensure_periodiq(broker)
    assert sum(isinstance(m, PeriodiqMiddleware) for m in broker.middleware) == 1
    assert str(report.options["periodic"]) == "*/5 * * * *"


def test_two_schedulers_sending_the_same_ticks_at_once_enqueue_each_tick_once(ticker, conn):
    report, _ = ticker
    ticks = [datetime(2026, 1, 1, 12, minute, tzinfo=UTC) for minute in range(0, 30, 5)]
    start = threading.Barrier(2)

    def scheduler(offset_s: float) -> None:
        start.wait()
        for tick in ticks:  # each scheduler wakes a little apart, as real ones do
            report.send_with_options(scheduled_at=(tick + timedelta(seconds=offset_s)).isoformat())

    threads = [threading.Thread(target=scheduler, args=(s,)) for s in (0, 0.7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [
        r["unique_key"] for r in conn.execute("SELECT unique_key FROM receiptq.jobs ORDER BY 1")
    ]
    assert keys == [tick_key("report", t) for t in ticks]
    assert count(conn, "SELECT count(*) AS n FROM receiptq.periodic_ticks") == len(ticks)


def test_a_tick_whose_job_already_finished_is_not_enqueued_again(broker, ticker, conn):
    report, runs = ticker
    tick = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        assert report.send_with_options(kwargs={"label": "first"}, scheduled_at=tick) is not None
        broker.join("ticks", timeout=10_000)
        worker.join()
        assert count(conn, "SELECT count(*) AS n FROM receiptq.jobs") == 0  # the job left
        assert report.send_with_options(kwargs={"label": "again"}, scheduled_at=tick) is None
        broker.join("ticks", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert runs == ["first"]
    assert count(conn, "SELECT count(*) AS n FROM receiptq.jobs") == 0


def test_sending_a_periodic_actor_by_hand_is_a_plain_send(ticker, conn):
    report, _ = ticker
    report.send()
    report.send()
    assert count(conn, "SELECT count(*) AS n FROM receiptq.jobs WHERE unique_key IS NULL") == 2
    assert count(conn, "SELECT count(*) AS n FROM receiptq.periodic_ticks") == 0


def test_a_tick_rolled_back_with_its_enqueue_can_be_sent_again(broker, ticker, conn, database_url):
    report, _ = ticker
    tick = "2026-01-01T08:00:00+00:00"
    with db.connect(database_url) as own:
        with pytest.raises(RuntimeError), own.transaction(), broker.transaction(own):
            report.send_with_options(scheduled_at=tick)
            raise RuntimeError("the caller's transaction fails")
    assert count(conn, "SELECT count(*) AS n FROM receiptq.periodic_ticks") == 0
    assert report.send_with_options(scheduled_at=tick) is not None
    assert count(conn, "SELECT count(*) AS n FROM receiptq.jobs") == 1


# -- two real periodiq schedulers -----------------------------------------------------

SCHEDULED = re.compile(r"Scheduling Actor\(every_minute\) at (.+)\.$", re.MULTILINE)


def start_scheduler(url: str, log: Path, clock: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "RECEIPTQ_DATABASE_URL": url, "PYTHONPATH": str(TESTS), **clock}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from periodiq import entrypoint; entrypoint()",
             "apps.periodic_app", "-v"],
            env=env, cwd=TESTS, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def test_two_periodiq_schedulers_enqueue_each_tick_exactly_once(database_url, conn, tmp_path):
    speed = 30  # one fake minute every 2 s
    # Fake 00:00:59 six seconds from now: both schedulers (which import the app's
    # actors) have started by then even on a loaded machine.
    origin = time.time() + 6
    clock = {
        "TEST_CLOCK_SPEED": str(speed),
        "TEST_CLOCK_ORIGIN": repr(origin),
        "TEST_CLOCK_FAKE_START": repr(datetime(2030, 1, 1, 0, 0, 59, tzinfo=UTC).timestamp()),
    }
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_scheduler(database_url, log, clock) for log in logs]
    try:

        def ticks_seen() -> list[set[datetime]]:
            return [{tick_of(t) for t in SCHEDULED.findall(log.read_text())} for log in logs]

        def skips() -> int:
            return sum(log.read_text().count("was enqueued by another scheduler") for log in logs)

        snapshot: dict[str, object] = {}

        def settled() -> bool:
            # Four ticks each, and the scheduler that lost each shared tick has said so
            # (it may still wait on the winner's row lock when the winner logs). A skip
            # is logged only for a tick both schedulers logged, once per tick: so when
            # the skips reach the shared ticks, each shared tick has its committed row.
            skipped, seen = skips(), ticks_seen()
            snapshot.update(seen=seen, skipped=skipped)
            return all(len(s) >= 4 for s in seen) and skipped >= len(seen[0] & seen[1])

        wait_until(settled, 45, "4 ticks each, each shared tick skipped by one scheduler")
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    seen_then = snapshot["seen"]
    assert isinstance(seen_then, list)
    both = seen_then[0] & seen_then[1]
    assert len(both) >= 3, seen_then  # both schedulers sent these very ticks
    rows = conn.execute(
        "SELECT unique_key, count(*) AS n FROM receiptq.jobs GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert all(r["n"] == 1 for r in rows)
    keys = {r["unique_key"] for r in rows}
    # Every shared tick was sent once; nothing was sent that no scheduler logged (a
    # tick logged just before the SIGKILL may have no row: its transaction died).
    assert {tick_key("every_minute", t) for t in both} <= keys
    scheduled = set().union(*ticks_seen())
    assert keys <= {tick_key("every_minute", t) for t in scheduled}


# -- retention and the dead-letter report ---------------------------------------------


def add_stats(conn, minutes_ago: list[int]) -> None:
    conn.execute(
        "INSERT INTO receiptq.stats_minute (minute, queue, actor, enqueued)"
        " SELECT date_trunc('minute', now()) - m * interval '1 minute', 'q', 'a', 1"
        " FROM unnest(%s::int[]) AS m",
        (minutes_ago,),
    )


def add_dead_letters(conn, hours_ago: list[float], actor="ocr", error_type="Timeout") -> None:
    conn.execute(
        "INSERT INTO receiptq.dead_letters (message_id, queue, actor, message, attempts, reason,"
        " error_type, failed_at)"
        " SELECT gen_random_uuid()::text, 'q', %s, '{}', 1, 'failed', %s,"
        "        now() - h * interval '1 hour'"
        " FROM unnest(%s::float8[]) AS h",
        (actor, error_type, hours_ago),
    )


def test_retention_prunes_only_rows_older_than_the_policy(conn):
    day = 24 * 60
    add_stats(conn, [day * 15 + m for m in range(25)] + [day * 13, 5, 0])
    add_dead_letters(conn, [24 * 31 + h for h in range(7)] + [24 * 29, 1])
    conn.execute(
        "INSERT INTO receiptq.periodic_ticks (actor, tick_at)"
        " VALUES ('r', now() - interval '20 days'), ('r', now() - interval '1 hour')"
    )
    conn.execute(
        "INSERT INTO receiptq.rate_limits (key, value, expires_at)"
        " VALUES ('gone', 1, now() - interval '1 second'), ('live', 1, now() + interval '1 hour')"
    )
    pruned = retention.prune(conn, retention.RetentionPolicy(batch_size=10))
    assert pruned.as_dict() == {
        "stats_minute": 25, "dead_letters": 7, "periodic_ticks": 1, "rate_limits": 1,
    }  # fmt: skip
    assert count(conn, "SELECT count(*) AS n FROM receiptq.stats_minute") == 3
    assert count(conn, "SELECT count(*) AS n FROM receiptq.dead_letters") == 2
    assert [r["key"] for r in conn.execute("SELECT key FROM receiptq.rate_limits")] == ["live"]


def test_one_retention_statement_deletes_at_most_a_batch(conn):
    add_stats(conn, [60 * 24 * 20 + m for m in range(30)])
    before = {"before": datetime.now(UTC) - timedelta(days=14), "batch_size": 12}
    assert db.execute(conn, "retention_prune_stats", before) == 12
    assert db.execute(conn, "retention_prune_stats", before) == 12
    assert db.execute(conn, "retention_prune_stats", before) == 6


def test_retention_settings_come_from_the_environment_and_must_be_positive(monkeypatch):
    monkeypatch.setenv("RECEIPTQ_STATS_RETENTION_DAYS", "3")
    monkeypatch.setenv("RECEIPTQ_DEAD_LETTER_RETENTION_DAYS", "9")
    assert retention.RetentionPolicy.from_env() == retention.RetentionPolicy(3, 9, 1000)
    monkeypatch.setenv("RECEIPTQ_STATS_RETENTION_DAYS", "0")
    with pytest.raises(ConfigError, match="stats_days must be an integer >= 1"):
        retention.RetentionPolicy.from_env()


def test_the_dead_letter_report_counts_the_last_hour_by_actor_and_error(conn):
    add_dead_letters(conn, [0.1, 0.2, 0.5])
    add_dead_letters(conn, [0.3], actor="email", error_type="SMTPError")
    add_dead_letters(conn, [2])  # before the last hour
    report = retention.dead_letter_counts(conn, window=timedelta(hours=1))
    assert report["total"] == 4
    assert report["counts"] == [
        {"actor": "ocr", "error": "Timeout", "dead": 3},
        {"actor": "email", "error": "SMTPError", "dead": 1},
    ]


# -- the maintenance actors -----------------------------------------------------------


@pytest.fixture
def maintenance(broker):
    """receiptq.actors.periodic, its actors run on the test's broker."""
    from receiptq.actors import periodic

    dramatiq.set_broker(broker)  # importing receiptq.actors set its own broker
    return periodic


def test_the_maintenance_actors_are_scheduled_hourly(maintenance):
    assert str(maintenance.retention_cleanup.options["periodic"]) == "17 * * * *"
    assert str(maintenance.dead_letter_report.options["periodic"]) == "0 * * * *"


def test_retention_cleanup_uses_the_configured_ages(maintenance, conn, monkeypatch):
    monkeypatch.setenv("RECEIPTQ_STATS_RETENTION_DAYS", "2")
    add_stats(conn, [60 * 24 * 3, 60 * 24 * 1])
    assert maintenance.retention_cleanup.fn()["stats_minute"] == 1
    assert count(conn, "SELECT count(*) AS n FROM receiptq.stats_minute") == 1


#: Email templates as the report finds them, in the tests below.
TEMPLATES_WITH_REPORT = {"dead_letter_report": "a template"}
TEMPLATES_WITHOUT_REPORT = {"receipt_processed": "a template"}


@pytest.mark.parametrize(
    ("actor", "templates"),
    [
        (("receiptq.actors.no_such_module", "send_email"), "TEMPLATES_WITH_REPORT"),
        ((__name__, "no_such_actor"), "TEMPLATES_WITH_REPORT"),
        ((__name__, "send_email"), "TEMPLATES_WITHOUT_REPORT"),
    ],
    ids=["no-module", "no-actor", "no-template"],
)
def test_the_report_is_only_logged_without_an_email_actor_and_template(
    maintenance, conn, monkeypatch, actor, templates
):
    monkeypatch.setattr(sys.modules[__name__], "send_email", fake_email_actor(), raising=False)
    monkeypatch.setattr(maintenance, "EMAIL_ACTOR", actor)
    monkeypatch.setattr(maintenance, "EMAIL_TEMPLATES", (__name__, templates))
    monkeypatch.setenv("RECEIPTQ_REPORT_USER_ID", "7")
    add_dead_letters(conn, [0.1])
    report = maintenance.dead_letter_report.fn()
    assert report["total"] == 1 and "emailed_to" not in report
    assert count(conn, "SELECT count(*) AS n FROM receiptq.jobs") == 0


def fake_email_actor():
    @dramatiq.actor(queue_name="email", actor_name="fake_send_email")
    def fake_send_email(user_id: str, template: str, context: dict) -> None:
        pass

    return fake_send_email


def test_the_report_is_emailed_with_the_email_actor_and_its_template(
    maintenance, broker, conn, monkeypatch
):
    monkeypatch.setattr(sys.modules[__name__], "send_email", fake_email_actor(), raising=False)
    monkeypatch.setattr(maintenance, "EMAIL_ACTOR", (__name__, "send_email"))
    monkeypatch.setattr(maintenance, "EMAIL_TEMPLATES", (__name__, "TEMPLATES_WITH_REPORT"))
    add_dead_letters(conn, [0.1, 0.2])
    add_dead_letters(conn, [0.3], actor="email", error_type="SMTPError")
    assert "emailed_to" not in maintenance.dead_letter_report.fn()  # no recipient configured
    monkeypatch.setenv("RECEIPTQ_REPORT_USER_ID", "7")
    report = maintenance.dead_letter_report.fn()
    assert report["emailed_to"] == "7"
    rows = conn.execute("SELECT message FROM receiptq.jobs WHERE actor = 'fake_send_email'")
    ((user_id, template, context),) = [r["message"]["args"] for r in rows]
    assert (user_id, template, context["total"]) == ("7", "dead_letter_report", 3)
    assert context["lines"].splitlines() == ["     2  ocr  (Timeout)", "     1  email  (SMTPError)"]
