"""Helpers for tests that run real `dramatiq` worker processes (apps in tests/apps/),
and for tests that read a named statement's plan."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from psycopg.rows import dict_row

from receiptq import db
from receiptq import processes as receiptq_processes

TESTS = Path(__file__).resolve().parent


def start_dramatiq(
    module: str, url: str, *, env: dict[str, str] | None = None, **options: Any
) -> subprocess.Popen:
    """The stock `dramatiq` CLI over `module` (importable from tests/), on `url`
    (``options``: those of receiptq.processes.start_dramatiq); its output goes to
    `log_path` when given (appended)."""
    return receiptq_processes.start_dramatiq(
        module,
        url,
        env={"PYTHONPATH": str(TESTS), **(env or {})},
        cwd=TESTS,
        append_log=True,
        **options,
    )


def start_workers(
    url: str, *, processes: int, threads: int, lease_s: float = 30
) -> subprocess.Popen:
    """Workers of tests/apps/worker_app.py."""
    return start_dramatiq(
        "apps.worker_app",
        url,
        processes=processes,
        threads=threads,
        env={"RECEIPTQ_LEASE_S": str(lease_s)},
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """SIGTERM: to the main process only, which passes it on once (a graceful stop;
    signalling the whole group would deliver it twice, which Dramatiq treats as
    "kill now"). SIGKILL: to the whole group (a crash). Then wait, killing
    whatever is left after 20 s."""
    receiptq_processes.stop_process(proc, grace_s=20, sig=sig)


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1
) -> Any:
    """Poll `predicate` until it returns something true (returned), or fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (a database that cannot be reached)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_deliveries(broker: Any, *jobs: Any) -> None:
    """What a worker thread does as it takes claimed jobs (``JobProxy``s of
    ``broker.claim``): the broker's delivery clock notes each start, and the
    heartbeat writes the started deliveries to the worker's row."""
    from receiptq.broker import _DeliveryClock

    clock = next(m for m in broker.middleware if isinstance(m, _DeliveryClock))
    for job in jobs:
        clock.before_process_message(broker, job)
    broker.heartbeat_now()


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A plan node and every node under it."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def explain(conn: Any, name: str, params: dict[str, Any], options: str = "") -> dict[str, Any]:
    """The top node of a named statement's plan, ``EXPLAIN (options FORMAT JSON)``
    (``options`` e.g. ``"ANALYZE, BUFFERS,"``: then the statement runs, so roll back
    what it writes)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"EXPLAIN ({options} FORMAT JSON) ".encode() + db.query(name).encode(), params)
        row = cur.fetchone()
    assert row is not None
    plan = row["QUERY PLAN"]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Plan"]
