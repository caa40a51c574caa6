"""One workload run of ``receiptq bench``: its settings, the resources it holds (a
fresh database, the ``dramatiq`` workers, brokers) and the figures it reads while
the workers run. The workloads themselves: :mod:`receiptq.tools.bench.workloads`."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from dramatiq.message import Message
from rich.console import Console
from rich.progress import Progress

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.processes import check_signals, exited_error, start_dramatiq, stop_process
from receiptq.tools.progress import progress_bar as bar
from receiptq.tools.scratch import recreate_database

PEER = "receiptq"
WORKLOADS = ("drain", "steady", "tiers", "users", "backlog", "ceiling")
#: The users workload: newcomers that each send one job while the flood drains.
USERS_NEWCOMERS = 20
USERS_NEWCOMER_GAP_S = 0.05
DEFAULT_WORKLOADS = ("drain", "steady")
#: The backlog workload: jobs queued before each measurement (--backlog-sizes).
DEFAULT_BACKLOG_SIZES = (20_000, 1_000_000)

#: The benchmark's worker module, queue and actor (see receiptq/tools/bench/worker.py;
#: importing that module here would set up a broker from the environment).
WORKER_MODULE = "receiptq.tools.bench.worker"
BENCH_QUEUE = "bench"
BENCH_ACTOR = "bench_noop"

#: drain: after the drain, the same number of jobs is sent again with a user_id on each
#: (this many users in turn), to a queue no worker consumes.
ENQUEUE_USERS = 1000
USERS_QUEUE = "bench_users"

DEFAULT_DATABASE = "receiptq_bench"
DRAIN_ENQUEUE_CHUNK = 1000  # drain: jobs per enqueue_many call
STEADY_BATCH = 10  # steady: jobs per enqueue_many call of the producer
WARMUP_JOBS = 20  # steady: jobs run before the window opens
POLL_S = 0.02  # how often the figures are read while waiting (as the peers)
ACK_POLL_S = 0.005  # how often "is the jobs table empty" is asked once all jobs ran
RECORD_SETTLE_S = 0.25  # the workers write their figures every 50 ms: wait this long for them
STOP_TIMEOUT_S = 10.0  # grace when stopping subprocesses


class BenchTimeout(Exception):
    """The workload's hard timeout elapsed; partial figures are reported."""


@dataclass(frozen=True)
class Settings:
    workloads: tuple[str, ...]
    jobs: int
    seconds: float
    processes: int
    threads: int
    timeout: float
    database: str
    quiet: bool
    rounds: int = 3
    backlog_sizes: tuple[int, ...] = DEFAULT_BACKLOG_SIZES
    #: The workers' RECEIPTQ_CLAIM_AHEAD (--no-claim-ahead: off, the prefetch a bound).
    claim_ahead: bool = True


def log(settings: Settings, message: str) -> None:
    """Progress, on stderr (not with --json)."""
    if not settings.quiet:
        print(message, file=sys.stderr, flush=True)


def progress_bar(settings: Settings) -> Progress:
    return bar(Console(stderr=True), disable=settings.quiet)


def bench_messages(count: int, queue: str = BENCH_QUEUE, *, users: int = 0) -> list[Message[Any]]:
    """``count`` messages for the no-op actor on ``queue``, stamped with the current
    time; with ``users``, each with a ``user_id`` of that many users in turn (a bulk
    send whose jobs get user rounds)."""
    now = time.time()
    return [
        Message(
            queue_name=queue,
            actor_name=BENCH_ACTOR,
            args=(now,),
            kwargs={},
            options={"user_id": f"user-{n % users}"} if users else {},
        )
        for n in range(count)
    ]


def labelled_messages(kinds: list[tuple[str, dict[str, Any]]]) -> list[Message[Any]]:
    """One message per (label, options) for the no-op actor, stamped with the current time."""
    now = time.time()
    return [
        Message(
            queue_name=BENCH_QUEUE,
            actor_name=BENCH_ACTOR,
            args=(now, label),
            kwargs={},
            options=dict(options),
        )
        for label, options in kinds
    ]


def open_broker(url: str) -> PostgresBroker:
    """A broker for the bench's sends, its pool open and connected: no clock counts
    opening connections (the peers' bench opens its producer connection in setup)."""
    broker = PostgresBroker(url)
    broker.declare_queue(BENCH_QUEUE)
    with broker.connection():
        pass
    return broker


def version_string(conn: psycopg.Connection[Any] | None = None) -> str:
    parts = [
        f"receiptq {importlib.metadata.version('receiptq')}",
        f"dramatiq {importlib.metadata.version('dramatiq')}",
        f"psycopg {importlib.metadata.version('psycopg')}",
    ]
    if conn is not None:
        number = conn.info.server_version
        parts.append(f"PostgreSQL {number // 10000}.{number % 10000}")
    return ", ".join(parts)


# --- one workload ------------------------------------------------------------------------


class Workload:
    """The resources of one workload run; close() releases them whatever happened."""

    def __init__(self, name: str, settings: Settings, server_url: str, result: dict[str, Any]):
        self.name = name
        self.settings = settings
        self.server_url = server_url
        self.result = result
        self.deadline = time.monotonic() + settings.timeout
        self.url = ""
        self.conn: psycopg.Connection[Any] | None = None
        self.workers: subprocess.Popen[bytes] | None = None
        self.producer: subprocess.Popen[bytes] | None = None
        self.brokers: list[PostgresBroker] = []
        self.log_path = (
            Path(tempfile.gettempdir()) / f"receiptq-bench-{settings.database}-{name}.log"
        )

    # -- set-up -----------------------------------------------------------------------

    def setup(self) -> psycopg.Connection[Any]:
        """Fresh database, migrated, with the bench-only tables; a connection to it."""
        self.url = recreate_database(self.server_url, self.settings.database)
        db.migrate(self.url)
        self.conn = db.connect(self.url)
        self.conn.execute(db.query("bench_setup"))
        self.result["version"] = version_string(self.conn)
        return self.conn

    def broker(self) -> PostgresBroker:
        broker = open_broker(self.url)
        self.brokers.append(broker)
        return broker

    def start_workers(self) -> float:
        """Start the dramatiq CLI; return when its first worker process booted (epoch s)."""
        self.workers = start_dramatiq(
            WORKER_MODULE,
            self.url,
            processes=self.settings.processes,
            threads=self.settings.threads,
            queues=[BENCH_QUEUE],
            log_path=self.log_path,
            env={"RECEIPTQ_CLAIM_AHEAD": "1" if self.settings.claim_ahead else "0"},
        )
        while True:
            row = self.fetch("bench_first_boot")
            if row["booted_at"] is not None:
                return float(row["booted_at"])
            self.check()
            time.sleep(POLL_S)

    # -- while it runs ----------------------------------------------------------------

    def fetch(self, query: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.conn is not None
        row = db.fetch_one(self.conn, query, params)
        assert row is not None
        return row

    def check(self) -> None:
        """Raise when the time is up or the workers died."""
        check_signals()
        if time.monotonic() >= self.deadline:
            raise BenchTimeout
        if self.workers is not None and self.workers.poll() is not None:
            raise exited_error("dramatiq", self.workers, self.log_path)

    def wait_done(self, count: int, on_progress: Callable[[int], None] | None = None) -> Any:
        """Poll until ``count`` jobs ran; the progress row (done, last_at) at that point."""
        while True:
            row = self.fetch("bench_progress")
            if on_progress is not None:
                on_progress(int(row["done"]))
            if row["done"] >= count:
                return row
            self.check()
            time.sleep(POLL_S)

    def jobs_left(self) -> int:
        return int(self.fetch("job_count_unfinished", {"queue": BENCH_QUEUE})["jobs"])

    # -- tear-down --------------------------------------------------------------------

    def close(self) -> None:
        """Stop the subprocesses, close the brokers and the connection (setup() may follow)."""
        errors = []
        for proc in (self.producer, self.workers):
            if proc is not None:
                try:
                    stop_process(proc)
                except Exception as exc:  # keep stopping the others
                    errors.append(exc)
        self.producer = self.workers = None
        for broker in self.brokers:
            try:
                broker.close()
            except Exception as exc:
                errors.append(exc)
        self.brokers = []
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        if errors:
            raise errors[0]
