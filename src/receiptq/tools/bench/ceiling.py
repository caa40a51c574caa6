"""The ceiling workload: Dramatiq's own per-message cost, with no queue behind it.

The drain workload, on Dramatiq's in-memory ``StubBroker`` instead of PostgreSQL:
Dramatiq's default middleware (the stack ``receiptq.tools.bench.worker`` runs), a
no-op actor that notes its start in memory as the bench actor does, ``--jobs``
messages sent one by one (``actor.send``: there is no batch send), then one
``dramatiq.Worker`` with ``--threads`` worker threads timed from its start until the
last job started. Whatever a real broker adds (a database, a network, a second
process) comes on top of this, so it is the ceiling of any Dramatiq broker on this
machine with one process: a line to set beside the drains of receiptq and the peers.

It runs in a process of its own (``python -m receiptq.tools.bench --ceiling``) so that
it shares neither the bench's imports and threads nor its broker; the process prints
its figures as JSON lines (the enqueue's, then the drain's), which the bench merges
into its result line, so that a timeout still leaves the enqueue figures.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import subprocess
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import dramatiq

if TYPE_CHECKING:
    from receiptq.tools.bench.workload import Workload

QUEUE = "bench"
ACTOR = "bench_noop"
POLL_S = 0.02  # how often the process looks whether every job started (as the drain)


def consumers_string(threads: int) -> str:
    """The ``consumers`` key of the ceiling's result line."""
    return (
        f"StubBroker (in memory), 1 process x {threads} threads "
        f"(dramatiq.Worker(worker_threads={threads})), Dramatiq default middleware, "
        "sync no-op actor; enqueue = actor.send() per job"
    )


# --- the process of its own ---------------------------------------------------------


def drain_in_memory(jobs: int, threads: int, timeout_s: float) -> None:
    """Send ``jobs`` messages to a StubBroker, then drain them with one Worker; print
    the enqueue's figures, then the drain's, each as a JSON line."""
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.middleware import default_middleware

    broker = StubBroker(middleware=[cls() for cls in default_middleware])
    broker.emit_after("process_boot")
    started: deque[tuple[float, float, str]] = deque()
    actor = declare_noop(broker, started)

    begin = time.perf_counter()
    for _ in range(jobs):
        actor.send(time.time())
    enqueue_s = time.perf_counter() - begin
    emit(
        {
            "enqueued": jobs,
            "enqueue_s": round(enqueue_s, 3),
            "enqueue_jobs_per_s": round(jobs / enqueue_s, 1),
        }
    )
    emit(drain(broker, started, jobs, threads, timeout_s))


def declare_noop(
    broker: dramatiq.Broker, started: deque[tuple[float, float, str]]
) -> dramatiq.Actor[..., None]:
    """The bench's no-op actor on ``broker``: it notes its start and latency in memory,
    as the bench worker's ``bench_noop`` does (without the thread that writes them)."""

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name=ACTOR)
    def bench_noop(enqueued_at: float, label: str = "") -> None:
        now = time.time()
        started.append((now, (now - enqueued_at) * 1000, label))

    return bench_noop


def drain(
    broker: dramatiq.Broker,
    started: deque[tuple[float, float, str]],
    jobs: int,
    threads: int,
    timeout_s: float,
) -> dict[str, Any]:
    """Start one Worker; time from its start until the last of ``jobs`` started."""
    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker_start = time.time()
    worker.start()
    try:
        deadline = time.monotonic() + timeout_s
        while len(started) < jobs and time.monotonic() < deadline:
            time.sleep(POLL_S)
    finally:
        worker.stop()
    done = len(started)
    drain_s = max((s for s, _, _ in started), default=worker_start) - worker_start
    return {
        "done": done,
        "drain_s": round(drain_s, 4),
        "drain_jobs_per_s": round(done / drain_s, 1) if drain_s > 0 else None,
    }


def emit(figures: dict[str, Any]) -> None:
    print(json.dumps(figures), flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m receiptq.tools.bench --ceiling``: the ceiling workload's process.
    (The benchmark itself is ``receiptq bench --workload ceiling``.)"""
    parser = argparse.ArgumentParser(
        prog="python -m receiptq.tools.bench", description=main.__doc__
    )
    parser.add_argument("--ceiling", action="store_true", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the drain")
    args = parser.parse_args(argv)
    drain_in_memory(args.jobs, args.threads, args.timeout)
    return 0


# --- in the bench -------------------------------------------------------------------


def run_ceiling(w: Workload) -> None:
    """Run the ceiling's process and merge the figures it prints into ``w.result``."""
    from receiptq.processes import exited_error, stop_process
    from receiptq.tools.bench.workloads import _read_line

    settings, result = w.settings, w.result
    result["consumers"] = consumers_string(settings.threads)
    result["version"] = (
        f"dramatiq {importlib.metadata.version('dramatiq')}, Python {platform.python_version()}"
    )
    with w.log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "receiptq.tools.bench",
                "--ceiling",
                "--jobs",
                str(settings.jobs),
                "--threads",
                str(settings.threads),
                "--timeout",
                str(settings.timeout),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    try:
        while "done" not in result:
            line = _read_line(w, proc, settings.timeout * 2)
            if not line:  # it exited without its figures
                proc.wait()
                raise exited_error("the ceiling process", proc, w.log_path)
            result.update(json.loads(line))
    finally:
        stop_process(proc)
