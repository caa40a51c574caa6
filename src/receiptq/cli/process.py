"""``receiptq process``: run the stock Dramatiq worker CLI over the app's actor modules.

The workers run in a process group of their own; SIGINT and SIGTERM are passed on
once, so a Ctrl-C stops them gracefully and a second one kills them, as Dramatiq
intends. ``--burst`` stops them once the queues have nothing ready or running.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from receiptq import actor_modules, db
from receiptq.cli._common import add_command, parse_queue_name, url, url_option, worker_options
from receiptq.settings import child_environment

#: Modules the workers import when ``receiptq process`` is given none.
DEFAULT_WORKER_MODULES = (actor_modules.DEFAULT_MODULE,)
#: How often ``process --burst`` looks at the queues (s).
BURST_POLL_INTERVAL_S = 0.5
#: Consecutive empty looks before ``process --burst`` stops the workers.
BURST_IDLE_POLLS = 2


def dramatiq_command(
    modules: Sequence[str], queues: Sequence[str], processes: int, threads: int
) -> list[str]:
    """The stock Dramatiq CLI over ``modules`` (the first one sets the broker)."""
    command = [sys.executable, "-m", "dramatiq", *modules]
    command += ["--processes", str(processes), "--threads", str(threads)]
    if queues:
        command += ["--queues", *queues]
    return command


def _exit_code(returncode: int) -> int:
    """A child's return code as ours (killed by signal N: 128 + N, as shells do)."""
    return returncode if returncode >= 0 else 128 - returncode


@contextmanager
def _forward_signals(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """Pass SIGINT and SIGTERM on to the child (it runs in its own process group, so a
    Ctrl-C in the terminal reaches it once, through us, and a second one kills it as
    Dramatiq intends)."""

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_when_drained(child: subprocess.Popen[bytes], url: str, queues: Sequence[str]) -> int:
    """Wait until the queues have nothing ready or running, then stop the workers."""
    idle_polls = 0
    with db.connect(url) as conn:
        while idle_polls < BURST_IDLE_POLLS:
            try:
                return _exit_code(child.wait(timeout=BURST_POLL_INTERVAL_S))
            except subprocess.TimeoutExpired:
                pass
            row = db.fetch_one(conn, "job_count_ready_or_running", {"queues": queues or None})
            idle_polls = idle_polls + 1 if row is not None and row["jobs"] == 0 else 0
    child.send_signal(signal.SIGTERM)
    return _exit_code(child.wait())


def run_process(args: argparse.Namespace) -> int:
    database = url(args)
    # The workers would only log the same error every few seconds: say it once, here.
    with db.connect(database) as conn:
        db.fetch_one(conn, "job_count_ready_or_running", {"queues": None})
    command = dramatiq_command(
        args.modules or DEFAULT_WORKER_MODULES, args.queues, args.processes, args.threads
    )
    env = child_environment(RECEIPTQ_DATABASE_URL=database)
    child = subprocess.Popen(command, env=env, process_group=0)
    with _forward_signals(child):
        try:
            if args.burst:
                return _stop_when_drained(child, database, args.queues)
            return _exit_code(child.wait())
        finally:
            if child.poll() is None:  # we are leaving on an error: do not orphan the workers
                child.send_signal(signal.SIGTERM)
                child.wait()


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq process``."""
    process = add_command(
        subparsers, "process", run_process, "run Dramatiq worker processes", [url_option()]
    )
    process.add_argument(
        "modules",
        nargs="*",
        metavar="MODULE",
        help=f"modules that declare the actors (default: {' '.join(DEFAULT_WORKER_MODULES)})",
    )
    process.add_argument(
        "--queues",
        nargs="+",
        type=parse_queue_name,
        default=[],
        metavar="Q",
        help="consume only these queues (default: all the modules declare)",
    )
    worker_options(process, processes=2, threads=8)
    process.add_argument(
        "--burst",
        action="store_true",
        help="stop once the queues (all, without --queues) have nothing ready or running; "
        "scheduled jobs stay for later",
    )
