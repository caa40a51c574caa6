"""Circuit breakers shared through PostgreSQL, and jobs postponed while one is open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import dramatiq
import pybreaker
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.results import ResultMissing

from receiptq import monitor
from receiptq.broker import PostgresBroker
from receiptq.config import ConfigError
from receiptq.middleware import (
    PermanentError,
    configure_breaker,
    get_breaker,
    receiptq_middleware,
    with_results,
)
from receiptq.middleware import breakers as breakers_module
from receiptq.middleware.breakers import (
    MIN_POSTPONE_MS,
    Refusal,
    breaker_settings,
    postponement_ms,
)
from tests_support import start_dramatiq, stop, wait_until


def down():
    raise ConnectionError("service down")


def up():
    return "ok"


def breaker_row(conn, name: str):
    return conn.execute("SELECT * FROM receiptq.breakers WHERE name = %s", (name,)).fetchone()


@pytest.fixture
def fast_breakers(monkeypatch):
    """Breakers "ocr" and "email": open after 3 failures, for 0.5 s."""
    monkeypatch.setattr(breakers_module, "_configured", {})
    for name in ("OCR", "EMAIL"):
        monkeypatch.setenv(f"RECEIPTQ_BREAKER_{name}_FAIL_MAX", "3")
        monkeypatch.setenv(f"RECEIPTQ_BREAKER_{name}_RESET_S", "0.5")


@pytest.fixture
def mw_broker(database_url: str, fast_breakers) -> Iterator[PostgresBroker]:
    broker = PostgresBroker(
        database_url,
        middleware=receiptq_middleware(),
        lease_s=5,
        poll_interval_ms=100,
        ack_flush_ms=2,
    )
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


# -- settings --------------------------------------------------------------------------


def test_settings_come_from_code_then_environment_then_defaults(monkeypatch):
    monkeypatch.setattr(breakers_module, "_configured", {})
    monkeypatch.delenv("RECEIPTQ_BREAKER_SMTP_FAIL_MAX", raising=False)
    monkeypatch.delenv("RECEIPTQ_BREAKER_SMTP_RESET_S", raising=False)
    assert breaker_settings("smtp") == breakers_module.BreakerSettings(5, 30.0)
    monkeypatch.setenv("RECEIPTQ_BREAKER_SMTP_FAIL_MAX", "2")
    monkeypatch.setenv("RECEIPTQ_BREAKER_SMTP_RESET_S", "7.5")
    assert breaker_settings("smtp") == breakers_module.BreakerSettings(2, 7.5)
    configure_breaker("smtp", fail_max=9, reset_timeout_s=60)
    assert breaker_settings("smtp") == breakers_module.BreakerSettings(9, 60.0)


def test_bad_breaker_settings_and_names_are_clear_errors(monkeypatch):
    monkeypatch.setattr(breakers_module, "_configured", {})
    monkeypatch.setenv("RECEIPTQ_BREAKER_SMTP_FAIL_MAX", "lots")
    with pytest.raises(ConfigError, match="RECEIPTQ_BREAKER_SMTP_FAIL_MAX"):
        breaker_settings("smtp")
    monkeypatch.setenv("RECEIPTQ_BREAKER_SMTP_FAIL_MAX", "0")
    with pytest.raises(ConfigError):
        breaker_settings("smtp")
    with pytest.raises(ValueError, match="invalid breaker name"):
        configure_breaker("OCR; DROP TABLE", fail_max=1, reset_timeout_s=1)


def test_get_breaker_refuses_a_broker_without_postgres():
    with pytest.raises(TypeError, match="PostgresBroker"):
        get_breaker("ocr", broker=StubBroker())


# -- the breaker itself ----------------------------------------------------------------


def test_breaker_opens_refuses_calls_and_closes_after_a_successful_trial(mw_broker, conn):
    breaker = get_breaker("ocr")
    assert get_breaker("ocr") is breaker  # one per name per process
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(down)
    assert breaker_row(conn, "ocr")["fail_counter"] == 2
    # the failure that trips it is re-raised as itself: it counts as an attempt
    with pytest.raises(ConnectionError):
        breaker.call(down)
    row = breaker_row(conn, "ocr")
    assert (row["state"], row["fail_counter"], row["fail_max"]) == ("open", 3, 3)
    assert row["opened_at"] is not None
    calls = []
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: calls.append(1))
    assert calls == []  # refused without calling
    time.sleep(0.55)  # the reset timeout (0.5 s) is what is being tested
    assert breaker.call(up) == "ok"  # the half-open trial
    row = breaker_row(conn, "ocr")
    assert (row["state"], row["fail_counter"]) == ("closed", 0)


def test_permanent_errors_do_not_count_toward_opening_the_breaker(mw_broker, conn):
    breaker = get_breaker("ocr")

    def bad_input():
        raise PermanentError("not an image")

    for _ in range(5):
        with pytest.raises(PermanentError):
            breaker.call(bad_input)
    row = breaker_row(conn, "ocr")
    assert (row["state"], row["fail_counter"]) == ("closed", 0)


def test_state_is_shared_by_breakers_of_different_brokers_on_one_database(
    mw_broker, database_url, fast_breakers, conn
):
    other = PostgresBroker(database_url)  # as another process or host would have
    try:
        mine, theirs = get_breaker("email"), get_breaker("email", broker=other)
        assert mine is not theirs
        with pytest.raises(ConnectionError):
            mine.call(down)
        with pytest.raises(ConnectionError):
            theirs.call(down)
        with pytest.raises(ConnectionError):
            mine.call(down)
        assert breaker_row(conn, "email")["state"] == "open"
        with pytest.raises(pybreaker.CircuitBreakerError):
            theirs.call(up)
    finally:
        other.close()


def test_failing_trial_opens_the_breaker_again(mw_broker, conn):
    breaker = get_breaker("ocr")
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.call(down)
    first_opened = breaker_row(conn, "ocr")["opened_at"]
    time.sleep(0.55)
    with pytest.raises(ConnectionError):
        breaker.call(down)
    row = breaker_row(conn, "ocr")
    assert row["state"] == "open" and row["opened_at"] > first_opened


# -- one trial call at a time while half-open ------------------------------------------


def trip(breaker) -> None:
    """Open the breaker: 3 failures (fast_breakers)."""
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.call(down)


def trip_and_let_it_half_open(breaker, conn) -> None:
    """Open the breaker, then move its opening into the past."""
    trip(breaker)
    conn.execute(
        "UPDATE receiptq.breakers SET opened_at = now() - make_interval(secs => reset_timeout_s)"
    )


def test_a_half_open_breaker_lets_one_trial_call_through_across_processes_and_threads(
    mw_broker, database_url, conn
):
    other = PostgresBroker(database_url)  # another process's view of the breaker
    try:
        breakers = [get_breaker("ocr"), get_breaker("ocr", broker=other)]
        trip_and_let_it_half_open(breakers[0], conn)
        calls, refused = [], []
        everyone_else_refused = threading.Event()

        def service():
            calls.append(1)
            everyone_else_refused.wait(10)  # the trial lasts until the others tried
            return "ok"

        def caller(breaker, start: threading.Barrier):
            start.wait()
            try:
                breaker.call(service)
            except pybreaker.CircuitBreakerError:
                refused.append(1)
                if len(refused) == 7:
                    everyone_else_refused.set()

        start = threading.Barrier(8)
        threads = [
            threading.Thread(target=caller, args=(breaker, start))
            for breaker in breakers
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        other.close()
    assert (len(calls), len(refused)) == (1, 7)
    row = breaker_row(conn, "ocr")
    assert (row["state"], row["trial_owner"]) == ("closed", None)


TRIAL_THAT_DIES = textwrap.dedent(
    """
    import sys, time
    from receiptq.broker import PostgresBroker
    from receiptq.middleware import get_breaker
    get_breaker("ocr", broker=PostgresBroker(sys.argv[1])).call(time.sleep, 60)
    """
)


def test_a_trial_whose_process_died_holds_the_breaker_only_until_its_trial_timeout(
    mw_broker, database_url, conn, monkeypatch
):
    monkeypatch.setenv("RECEIPTQ_BREAKER_OCR_TRIAL_TIMEOUT_S", "2")
    breaker = get_breaker("ocr")
    trip_and_let_it_half_open(breaker, conn)
    env = {**os.environ, "RECEIPTQ_BREAKER_OCR_TRIAL_TIMEOUT_S": "2"}
    trial = subprocess.Popen([sys.executable, "-c", TRIAL_THAT_DIES, database_url], env=env)
    try:
        wait_until(lambda: breaker_row(conn, "ocr")["trial_owner"], 30, "the trial call")
    finally:
        trial.send_signal(signal.SIGKILL)
        trial.wait(10)
    row = breaker_row(conn, "ocr")
    assert row["state"] == "half-open"
    calls = []
    with pytest.raises(pybreaker.CircuitBreakerError):  # the dead trial's lease still runs
        breaker.call(lambda: calls.append(1))
    assert calls == []
    wait_until(
        lambda: conn.execute("SELECT now() >= %s AS over", (row["trial_expires_at"],)).fetchone()[
            "over"
        ],
        10,
        "the trial's lease to run out",
    )
    assert breaker.call(up) == "ok"  # the next caller made the next trial
    assert breaker_row(conn, "ocr")["state"] == "closed"


def test_postponement_lasts_until_half_open_plus_a_random_share_of_a_quarter_reset():
    assert postponement_ms(Refusal(wait_ms=10_000, reset_ms=30_000), lambda: 0.5) == 13_750
    assert postponement_ms(Refusal(wait_ms=10_000, reset_ms=30_000), lambda: 0.0) == 10_000
    # a trial under way (wait 0), or the breaker took calls again: the shortest wait
    assert postponement_ms(Refusal(wait_ms=0, reset_ms=30_000), lambda: 0.0) == MIN_POSTPONE_MS
    assert postponement_ms(None, lambda: 0.9) == MIN_POSTPONE_MS


# -- the middleware, in process --------------------------------------------------------


def stats_postponed(conn, actor: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(postponed), 0)::integer AS n FROM receiptq.stats_minute"
        " WHERE actor = %s",
        (actor,),
    ).fetchone()
    return row["n"]


def assert_postponed_until_half_open(job, half_open_at: float, *, reset_s: float) -> None:
    """run_at is when the breaker may half-open plus up to a quarter of its reset timeout."""
    late_s = job["run_at"].timestamp() - half_open_at
    assert -0.5 < late_s < breakers_module.JITTER_SHARE * reset_s + 0.5


def test_job_needing_an_open_breaker_is_postponed_without_using_an_attempt(
    mw_broker, conn, monkeypatch
):
    monkeypatch.setenv("RECEIPTQ_BREAKER_OCR_RESET_S", "30")
    backend = with_results(mw_broker)
    runs = []

    @dramatiq.actor(queue_name="ocr", breakers=("ocr",), store_results=True)
    def read_receipt(receipt_id):
        runs.append(receipt_id)
        return receipt_id

    breaker = get_breaker("ocr")
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.call(down)
    opened = breaker_row(conn, "ocr")
    message = read_receipt.send(7)
    worker = dramatiq.Worker(mw_broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_until(lambda: stats_postponed(conn, "read_receipt") == 1, 10, "the postponement")
    finally:
        worker.stop()
        backend.close()
    job = conn.execute("SELECT state, attempt, run_at FROM receiptq.jobs").fetchone()
    assert runs == []
    assert (job["state"], job["attempt"]) == ("queued", 0)
    # postponed until the breaker may half-open (opened_at + 30 s), plus its jitter
    assert_postponed_until_half_open(job, opened["opened_at"].timestamp() + 30, reset_s=30)
    # a postponed delivery stores no result (Dramatiq would store None for a skip)
    with pytest.raises(ResultMissing):
        message.get_result(backend=backend)
    snap = monitor.snapshot(conn)
    [shown] = snap["breakers"]
    assert shown["name"] == "ocr" and shown["state"] == "open" and shown["fail_counter"] == 3
    assert shown["closes_at"] is not None


def test_call_refused_while_the_actor_runs_is_postponed_without_using_an_attempt(
    mw_broker, database_url, conn, monkeypatch
):
    monkeypatch.setenv("RECEIPTQ_BREAKER_OCR_RESET_S", "30")
    other = PostgresBroker(database_url)  # another process's view of the breaker

    @dramatiq.actor(queue_name="ocr", breakers=("ocr",))
    def read_receipt():
        theirs = get_breaker("ocr", broker=other)
        for _ in range(3):  # meanwhile, another process opens the breaker
            with pytest.raises(ConnectionError):
                theirs.call(down)
        get_breaker("ocr").call(up)

    read_receipt.send()
    worker = dramatiq.Worker(mw_broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_until(lambda: stats_postponed(conn, "read_receipt") == 1, 10, "the postponement")
    finally:
        worker.stop()
        other.close()
    job = conn.execute("SELECT state, attempt, run_at FROM receiptq.jobs").fetchone()
    assert (job["state"], job["attempt"]) == ("queued", 0)
    closes_at = breaker_row(conn, "ocr")["opened_at"].timestamp() + 30
    assert_postponed_until_half_open(job, closes_at, reset_s=30)
    assert conn.execute("SELECT count(*) AS n FROM receiptq.dead_letters").fetchone()["n"] == 0


def test_jobs_postponed_by_an_open_breaker_come_back_spread_out_not_all_at_once(
    mw_broker, conn, monkeypatch
):
    monkeypatch.setenv("RECEIPTQ_BREAKER_OCR_RESET_S", "30")

    @dramatiq.actor(queue_name="ocr", breakers=("ocr",))
    def read_receipt(receipt_id):
        raise AssertionError("ran while its breaker was open")

    trip(get_breaker("ocr"))
    half_open_at = breaker_row(conn, "ocr")["opened_at"].timestamp() + 30
    mw_broker.enqueue_many([read_receipt.message(n) for n in range(20)])
    worker = dramatiq.Worker(mw_broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        wait_until(lambda: stats_postponed(conn, "read_receipt") == 20, 30, "the postponements")
    finally:
        worker.stop()
    jobs = conn.execute("SELECT state, attempt, run_at FROM receiptq.jobs").fetchall()
    assert {(job["state"], job["attempt"]) for job in jobs} == {("queued", 0)}
    for job in jobs:
        assert_postponed_until_half_open(job, half_open_at, reset_s=30)
    due = sorted(job["run_at"].timestamp() for job in jobs)
    assert due[-1] - due[0] > 2.0  # over up to 7.5 s, not at one instant


def test_a_job_arriving_while_a_trial_call_is_under_way_is_postponed_without_calling(
    mw_broker, conn
):
    runs = []

    @dramatiq.actor(queue_name="ocr", breakers=("ocr",))
    def read_receipt():
        runs.append(get_breaker("ocr").call(up))

    breaker = get_breaker("ocr")
    trip_and_let_it_half_open(breaker, conn)
    trial_over = threading.Event()
    trial = threading.Thread(target=breaker.call, args=(trial_over.wait, 30))
    trial.start()
    try:
        wait_until(lambda: breaker_row(conn, "ocr")["trial_owner"], 10, "the trial call")
        read_receipt.send()
        worker = dramatiq.Worker(mw_broker, worker_threads=1, worker_timeout=100)
        worker.start()
        try:
            # postponed for 0.5 s (and a jitter): it may come back, and be postponed again
            wait_until(lambda: stats_postponed(conn, "read_receipt") >= 1, 10, "the postponement")
        finally:
            worker.stop()
    finally:
        trial_over.set()
        trial.join(10)
    assert runs == []
    job = conn.execute("SELECT state, attempt FROM receiptq.jobs").fetchone()
    assert (job["state"], job["attempt"]) == ("queued", 0)
    assert breaker_row(conn, "ocr")["state"] == "closed"  # the trial succeeded


def test_status_json_and_table_show_the_breakers(mw_broker, database_url, conn):
    breaker = get_breaker("email")
    with pytest.raises(ConnectionError):
        breaker.call(down)
    env = {**os.environ, "RECEIPTQ_DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "receiptq.cli", "status"]
    out = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, check=True)
    [shown] = json.loads(out.stdout)["breakers"]
    assert shown == {
        "name": "email",
        "state": "closed",
        "fail_counter": 1,
        "fail_max": 3,
        "opened_at": None,
        "closes_at": None,
    }
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "Circuit breakers" in out.stdout and "1/3" in out.stdout


# -- across two real worker processes --------------------------------------------------


APP_TABLES = """
CREATE TABLE test_service (up boolean NOT NULL);
INSERT INTO test_service VALUES (false);
CREATE TABLE test_calls (job_no integer, pid integer, ok boolean, at timestamptz);
CREATE TABLE test_runs (job_no integer, pid integer, attempt integer);
CREATE TABLE test_postponed (job_no integer, pid integer, at timestamptz);
CREATE TABLE test_opened (pid integer, at timestamptz);
"""


def start_workers(url: str) -> subprocess.Popen:
    return start_dramatiq(
        "apps.breaker_app",
        url,
        processes=2,
        threads=1,
        env={
            "RECEIPTQ_BREAKER_FLAKY_FAIL_MAX": "3",
            "RECEIPTQ_BREAKER_FLAKY_RESET_S": "1",
            "RECEIPTQ_POLL_INTERVAL_MS": "100",
        },
    )


def count(conn, sql: str) -> int:
    return conn.execute(sql).fetchone()["n"]


def test_failing_service_opens_the_breaker_for_two_worker_processes_then_it_closes(
    database_url, conn
):
    conn.execute(APP_TABLES)
    broker = PostgresBroker(database_url, middleware=receiptq_middleware())
    dramatiq.set_broker(broker)
    use_service = dramatiq.actor(
        lambda job_no: None,
        actor_name="use_service",
        queue_name="breakers",
        breakers=("flaky",),
        max_retries=50,
    )
    workers = start_workers(database_url)
    try:
        wait_until(
            lambda: count(conn, "SELECT count(*) AS n FROM receiptq.workers") == 2,
            30,
            "both worker processes to consume",
        )
        broker.enqueue_many([use_service.message(n) for n in range(8)])
        # Down: the breaker opens; jobs claimed while it is open are put back.
        wait_until(
            lambda: (
                count(conn, "SELECT count(*) AS n FROM test_opened") >= 2
                and count(conn, "SELECT count(DISTINCT pid) AS n FROM test_postponed") == 2
            ),
            30,
            "the breaker to open and both processes to postpone jobs",
        )
        assert count(conn, "SELECT count(*) AS n FROM test_runs") == 0
        # Recovery: the next half-open trial succeeds and closes the breaker.
        conn.execute("UPDATE test_service SET up = true")
        broker.join("breakers", timeout=30_000)
    finally:
        stop(workers)
        broker.close()

    row = breaker_row(conn, "flaky")
    assert (row["state"], row["fail_counter"]) == ("closed", 0)
    pids = {r["pid"] for r in conn.execute("SELECT DISTINCT pid FROM test_calls")}
    assert len(pids) == 2, "both processes called the service"
    # A process postponed jobs because of an opening by the *other* process: the
    # state crossed process boundaries through PostgreSQL.
    crossed = count(
        conn,
        """SELECT count(*) AS n FROM test_postponed AS p
           WHERE p.pid <> (SELECT o.pid FROM test_opened AS o WHERE o.at <= p.at
                           ORDER BY o.at DESC LIMIT 1)""",
    )
    assert crossed > 0
    # While open, nobody called the service: each opening was followed by a quiet
    # reset timeout (1 s) apart from calls already under way (one per process).
    for opening in conn.execute("SELECT at FROM test_opened ORDER BY at").fetchall():
        during = conn.execute(
            "SELECT count(*) AS n FROM test_calls"
            " WHERE at > %s + interval '50 ms' AND at < %s + interval '900 ms'",
            (opening["at"], opening["at"]),
        ).fetchone()["n"]
        assert during <= 1
    # Every job ran once to success, and used exactly as many attempts as it made
    # real calls: the postponements (counted in the stats) used none.
    runs = conn.execute("SELECT job_no, attempt FROM test_runs ORDER BY job_no").fetchall()
    assert [r["job_no"] for r in runs] == list(range(8))
    calls = {
        r["job_no"]: r["n"]
        for r in conn.execute("SELECT job_no, count(*) AS n FROM test_calls GROUP BY job_no")
    }
    assert {r["job_no"]: r["attempt"] for r in runs} == calls
    assert stats_postponed(conn, "use_service") >= count(
        conn, "SELECT count(*) AS n FROM test_postponed"
    )
    assert count(conn, "SELECT count(*) AS n FROM receiptq.dead_letters") == 0
