"""Helpers for tests that run real `dramatiq` worker processes (apps in tests/apps/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def start_workers(
    url: str, *, processes: int, threads: int, lease_s: float = 30
) -> subprocess.Popen:
    env = {
        **os.environ,
        "RECEIPTQ_DATABASE_URL": url,
        "RECEIPTQ_LEASE_S": str(lease_s),
        "PYTHONPATH": str(TESTS),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "apps.worker_app",
         "--processes", str(processes), "--threads", str(threads)],
        env=env,
        cwd=TESTS,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
