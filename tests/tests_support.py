"""Helpers for tests that run real `dramatiq` worker processes (apps in tests/apps/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent


def start_dramatiq(
    module: str,
    url: str,
    *,
    processes: int,
    threads: int,
    queues: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> subprocess.Popen:
    """The stock `dramatiq` CLI over `module` (importable from tests/), on `url`; its
    output goes to `log_path` when given."""
    environment = {
        **os.environ,
        "RECEIPTQ_DATABASE_URL": url,
        "PYTHONPATH": str(TESTS),
        **(env or {}),
    }
    command = [sys.executable, "-m", "dramatiq", module,
               "--processes", str(processes), "--threads", str(threads)]  # fmt: skip
    if queues:
        command += ["--queues", *queues]
    output = subprocess.DEVNULL if log_path is None else open(log_path, "ab")
    try:
        return subprocess.Popen(
            command,
            env=environment,
            cwd=TESTS,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    finally:
        if log_path is not None:
            output.close()


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
    if proc.poll() is None:
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


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
