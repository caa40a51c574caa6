"""One connection runtime per process: a worker process that uses results, rate
limits, group callbacks and tiers holds at most its pool and one LISTEN connection."""

from __future__ import annotations

import threading

import dramatiq
import psutil
import pytest
from dramatiq import group

from receiptq.broker import PostgresBroker
from receiptq.middleware import add_app_middleware, with_results
from tests_support import start_dramatiq, stop, wait_until

POOL_MAX_SIZE = 2


def _database_connections(pid: int) -> int:
    """TCP connections of the process to PostgreSQL's port."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return 0
    return sum(1 for c in connections if c.raddr and c.raddr.port == 5432)


def _worker_pids(main_pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(main_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(180)
def test_a_worker_with_results_rate_limits_callbacks_and_tiers_holds_pool_plus_one(
    database_url, conn
):
    users = [
        conn.execute(
            "INSERT INTO receiptq_app.users (email, tier) VALUES (%s, 'pro') RETURNING id",
            (f"u{n}@example.com",),
        ).fetchone()["id"]
        for n in range(20)
    ]
    broker = PostgresBroker(database_url)
    add_app_middleware(broker)
    with_results(broker)
    dramatiq.set_broker(broker)
    parent = dramatiq.actor(
        lambda n, user_id: None, actor_name="parent", queue_name="rt", store_results=True
    )
    child = dramatiq.actor(
        lambda n: None, actor_name="child", queue_name="rt_child", store_results=True
    )
    done = dramatiq.actor(lambda: None, actor_name="done", queue_name="rt")
    workers = start_dramatiq(
        "apps.runtime_app",
        database_url,
        processes=1,
        threads=4,
        env={"RECEIPTQ_POOL_MAX_SIZE": str(POOL_MAX_SIZE)},
    )
    peak = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            for pid in _worker_pids(workers.pid):
                peak = max(peak, _database_connections(pid))
            sampling.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_until(lambda: _worker_pids(workers.pid), 30, "the worker process")
        earlier = [child.send(n) for n in range(40)]
        broker.join("rt_child", timeout=60_000)
        jobs = group(
            [parent.message(n, str(users[n % 20]), earlier[n].asdict()) for n in range(40)]
        )
        jobs.add_completion_callback(done.message())
        jobs.run()
        broker.join("rt", timeout=120_000)
        broker.join("rt_child", timeout=60_000)
        wait_until(
            lambda: (
                conn.execute("SELECT count(*) AS n FROM receiptq.results").fetchone()["n"] >= 80
            ),
            30,
            "the results",
        )
    finally:
        sampling.set()
        sampler.join(2)
        stop(workers)
        broker.close()
    assert peak >= 2, "the sampler saw the worker's connections"
    assert peak <= POOL_MAX_SIZE + 1, f"the worker held {peak} connections"
