"""Dramatiq's rate limiters, barriers and group callbacks on the Postgres backend."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.middleware import GroupCallbacks
from dramatiq.rate_limits import Barrier, ConcurrentRateLimiter, WindowRateLimiter

from apps import rate_limit_app
from receiptq.rate_limits import PostgresRateLimiterBackend, key_scope

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def backend(database_url: str) -> Iterator[PostgresRateLimiterBackend]:
    backend = PostgresRateLimiterBackend(database_url, poll_interval_ms=100)
    yield backend
    backend.close()


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def limiter_processes(url: str, kind: str, *, processes: int, threads: int, seconds: float):
    env = {
        **os.environ,
        "PYTHONPATH": str(TESTS),
        "RECEIPTQ_RATE_LIMIT_POLL_INTERVAL_MS": "60000",
        # Started together once each process has imported (about a second when loaded).
        "LIMITER_START_AT": repr(time.time() + 2.0),
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "apps.rate_limit_app", kind, url, str(threads), str(seconds)],
            env=env,
            cwd=TESTS,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]


def finish(procs, timeout_s: float = 30) -> None:
    for proc in procs:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0


@pytest.fixture
def limiter_tables(conn):
    conn.execute(
        "CREATE TABLE limiter_runs (pid integer NOT NULL, kind text NOT NULL,"
        " asked_at float8 NOT NULL, answered_at float8 NOT NULL)"
    )
    conn.execute("CREATE TABLE limiter_peak (live integer NOT NULL, peak integer NOT NULL)")
    conn.execute("INSERT INTO limiter_peak VALUES (0, 0)")
    return conn


def successes_by_period(conn, kind: str, period_s: float) -> dict[int, int]:
    """Successes per period (second or bucket) they certainly fell in: those whose
    acquire started and ended in the same period. One answered late, in a later
    period, belongs to neither for certain and is left out."""
    rows = conn.execute(
        "SELECT asked_at, answered_at FROM limiter_runs WHERE kind = %s", (kind,)
    ).fetchall()
    counts: dict[int, int] = {}
    for row in rows:
        period = int(row["asked_at"] // period_s)
        if period == int(row["answered_at"] // period_s):
            counts[period] = counts.get(period, 0) + 1
    return counts


def runs_by_pid(conn, kind: str) -> dict[int, int]:
    rows = conn.execute(
        "SELECT pid, count(*) AS n FROM limiter_runs WHERE kind = %s GROUP BY pid", (kind,)
    ).fetchall()
    return {r["pid"]: r["n"] for r in rows}


# -- the backend contract -------------------------------------------------------------


def test_add_creates_a_key_only_while_no_live_key_exists(backend):
    assert backend.add("k", 5, ttl=100)
    assert not backend.add("k", 7, ttl=100_000)
    wait_until(lambda: backend.add("k", 7, ttl=100_000), 5, "the key to expire")
    assert not backend.incr("k", 1, maximum=7, ttl=100_000)  # it holds 7 now, not 5 + anything
    assert backend.decr("k", 7, minimum=0, ttl=100_000)


def test_incr_stops_at_maximum_and_decr_stops_at_minimum(backend):
    assert backend.incr("n", 2, maximum=3, ttl=60_000)  # an absent key counts as 0
    assert backend.incr("n", 1, maximum=3, ttl=60_000)
    assert not backend.incr("n", 1, maximum=3, ttl=60_000)
    assert not backend.incr("fresh", 4, maximum=3, ttl=60_000)
    assert backend.decr("n", 3, minimum=0, ttl=60_000)
    assert not backend.decr("n", 1, minimum=0, ttl=60_000)
    assert not backend.decr("absent", 1, minimum=0, ttl=60_000)
    assert backend.decr("absent", 1, minimum=-1, ttl=60_000)


def test_an_expired_counter_counts_from_zero_again(backend):
    assert backend.incr("short", 3, maximum=3, ttl=50)
    wait_until(lambda: backend.incr("short", 3, maximum=3, ttl=60_000), 5, "the counter to expire")
    assert not backend.incr("short", 1, maximum=3, ttl=60_000)


def test_incr_and_sum_refuses_when_the_other_keys_already_sum_to_the_maximum(backend):
    keys = ["w@1", "w@2", "w@3"]
    assert backend.incr_and_sum("w@1", lambda: keys, 2, maximum=3, ttl=60_000)
    assert backend.incr_and_sum("w@2", lambda: keys, 1, maximum=3, ttl=60_000)
    assert not backend.incr_and_sum("w@3", lambda: keys, 1, maximum=3, ttl=60_000)
    assert backend.incr_and_sum("other@3", lambda: ["other@3"], 3, maximum=3, ttl=60_000)


def test_window_and_bucket_keys_are_locked_per_limiter():
    assert key_scope("emails:user-7@1700000000") == "emails:user-7"
    assert key_scope("a@b@12") == "a@b"
    assert key_scope("plain") == "plain"


def test_concurrent_updates_from_many_threads_lose_no_increment(backend, conn):
    def bump() -> None:
        for _ in range(25):
            assert backend.incr("shared", 1, maximum=10_000, ttl=60_000)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    row = conn.execute("SELECT value FROM receiptq.rate_limits WHERE key = 'shared'").fetchone()
    assert row["value"] == 200


# -- waiting --------------------------------------------------------------------------


def test_wait_times_out_when_nothing_is_published(backend):
    started = time.monotonic()
    assert backend.wait("quiet", 300) is False
    assert 0.25 < time.monotonic() - started < 3


def test_wait_returns_at_once_while_a_published_event_lives(backend):
    backend.wait_notify("done", ttl=60_000)
    assert backend.wait("done", 5_000) is True
    assert backend.wait_many(["other", "done"], 5_000) == ["done"]


@pytest.mark.parametrize(
    ("listen", "poll_ms"), [(True, 60_000), (False, 100)], ids=["notify", "polling"]
)
def test_a_blocked_waiter_wakes_when_another_thread_publishes(database_url, listen, poll_ms):
    backend = PostgresRateLimiterBackend(database_url, listen=listen, poll_interval_ms=poll_ms)
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(backend.wait("go", 10_000)))
    try:
        waiter.start()
        time.sleep(0.3)  # let it block first (a publish before the wait also counts)
        assert not results
        publisher = PostgresRateLimiterBackend(database_url)
        publisher.wait_notify("go", ttl=60_000)
        publisher.close()
        waiter.join(5)
        assert results == [True]
    finally:
        backend.close()


def wait_into(backend: PostgresRateLimiterBackend, key: str, woke: list[bool]) -> None:
    woke.append(backend.wait(key, 3_000))


def test_a_publish_a_millisecond_after_the_first_wait_began_wakes_the_waiter_at_once(
    database_url,
):
    # The first wait() of a process starts its listener: a publish before LISTEN is
    # in place must not be lost (the waiter would sleep until its next poll, here
    # past its 3 s timeout). Each round is a fresh backend, so a fresh listener,
    # whose pool is already open (its first check is at once).
    publisher = PostgresRateLimiterBackend(database_url)
    publisher.wait_notify("warm-up", ttl=1)  # the publisher's pool is open
    late: list[float] = []
    try:
        for round_no in range(10):
            waiter = PostgresRateLimiterBackend(database_url, poll_interval_ms=60_000)
            key = f"go-{round_no}"
            waiter.add(f"arrived-{round_no}", 1, 60_000)  # as a barrier party does first
            woke: list[bool] = []
            thread = threading.Thread(target=wait_into, args=(waiter, key, woke))
            thread.start()
            time.sleep(0.001)
            publisher.wait_notify(key, ttl=60_000)
            published = time.monotonic()
            thread.join(10)
            waiter.close()
            assert woke == [True], f"round {round_no}: the waiter missed the event"
            late.append(time.monotonic() - published)
    finally:
        publisher.close()
    assert max(late) < 1.0, late


# -- the limiters across processes ----------------------------------------------------


def test_a_concurrent_limit_of_two_is_never_exceeded_by_eight_threads_in_two_processes(
    database_url, limiter_tables
):
    conn = limiter_tables
    finish(limiter_processes(database_url, "concurrent", processes=2, threads=4, seconds=2))
    peak = conn.execute("SELECT live, peak FROM limiter_peak").fetchone()
    assert peak == {"live": 0, "peak": rate_limit_app.CONCURRENT_LIMIT}
    runs = runs_by_pid(conn, "concurrent")
    assert len(runs) == 2 and all(n >= 3 for n in runs.values()), runs
    slots = conn.execute("SELECT value FROM receiptq.rate_limits WHERE key = 'ocr'").fetchone()
    assert slots["value"] == 0  # every slot released


def test_a_window_limit_holds_over_every_sliding_window_across_two_processes(
    database_url, limiter_tables
):
    conn = limiter_tables
    finish(limiter_processes(database_url, "window", processes=2, threads=4, seconds=3.5))
    assert len(runs_by_pid(conn, "window")) == 2
    per_second = successes_by_period(conn, "window", 1)
    window = rate_limit_app.WINDOW_S
    sums = [
        sum(per_second.get(s, 0) for s in range(start, start + window))
        for start in range(min(per_second) - window + 1, max(per_second) + 1)
    ]
    assert max(sums) == rate_limit_app.WINDOW_LIMIT, per_second
    assert sum(per_second.values()) >= rate_limit_app.WINDOW_LIMIT * 2


def test_a_bucket_limit_holds_in_every_bucket_across_two_processes(database_url, limiter_tables):
    conn = limiter_tables
    finish(limiter_processes(database_url, "bucket", processes=2, threads=4, seconds=2))
    assert len(runs_by_pid(conn, "bucket")) == 2
    per_bucket = successes_by_period(conn, "bucket", rate_limit_app.BUCKET_MS / 1000)
    assert len(per_bucket) >= 3
    assert max(per_bucket.values()) == rate_limit_app.BUCKET_LIMIT, per_bucket


def test_a_barrier_releases_waiters_in_other_processes_when_the_last_party_arrives(
    database_url, backend
):
    barrier = Barrier(backend, "test-barrier")
    assert barrier.create(parties=3)
    procs = limiter_processes(database_url, "barrier", processes=2, threads=1, seconds=0)
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "waiting"
        time.sleep(0.3)  # both now block in wait(); polling is off in them (60 s)
        assert all(proc.poll() is None for proc in procs)
        released_at = time.monotonic()
        assert barrier.wait(block=False) is True  # the third party clears the barrier
        finish(procs, timeout_s=10)
        assert time.monotonic() - released_at < 5  # woken by NOTIFY, not the 60 s poll
        assert [proc.stdout.read().strip() for proc in procs] == ["True", "True"]
    finally:
        for proc in procs:
            proc.kill()


def test_a_per_user_hourly_limit_counts_each_user_separately(backend):
    def email_limiter(user_id: str) -> WindowRateLimiter:
        return WindowRateLimiter(backend, f"emails:{user_id}", limit=3, window=3600)

    def try_send(user_id: str) -> bool:
        with email_limiter(user_id).acquire(raise_on_failure=False) as allowed:
            return allowed

    assert [try_send("alice") for _ in range(4)] == [True, True, True, False]
    assert try_send("bob") is True


def test_a_concurrent_limiter_slot_is_released_when_the_block_exits(backend):
    mutex = ConcurrentRateLimiter(backend, "mutex", limit=1)
    with mutex.acquire(raise_on_failure=False) as first:
        with mutex.acquire(raise_on_failure=False) as second:
            assert (first, second) == (True, False)
    with mutex.acquire(raise_on_failure=False) as again:
        assert again is True


# -- group completion callbacks -------------------------------------------------------


def test_a_group_completion_callback_runs_once_after_every_member_finished(
    broker, database_url, backend
):
    broker.add_middleware(GroupCallbacks(backend))
    events: list[str] = []
    lock = threading.Lock()

    @dramatiq.actor(queue_name="groups", max_retries=0)
    def member(n: int) -> None:
        time.sleep(0.05 * (n % 3))
        with lock:
            events.append(f"member {n}")

    @dramatiq.actor(queue_name="groups", max_retries=0)
    def all_done() -> None:
        with lock:
            events.append("done")

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        group = dramatiq.group([member.message(n) for n in range(6)])
        group.add_completion_callback(all_done.message())
        group.run()
        wait_until(lambda: "done" in events, 15, "the completion callback")
        broker.join("groups", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert events.count("done") == 1
    assert events[-1] == "done"
    assert sorted(events[:-1]) == sorted(f"member {n}" for n in range(6))
