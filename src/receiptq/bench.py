"""``receiptq bench``: the peers' two workloads (../shared/peers) run on receiptq.

Workloads, each on a fresh database (``--database``, dropped and created on the
server of the URL, then migrated):

  drain   Enqueue N no-op jobs with ``broker.enqueue_many``, 1000 per call, then
          start the real ``dramatiq`` CLI (``receiptq.bench_worker``) and time
          from the first worker process's ``before_worker_boot`` until the last
          job has run. Also reports when the last ack landed (jobs table empty).
  steady  Workers run; after 20 warm-up jobs, a producer in a process of its own
          enqueues batches of 10 (``enqueue_many``) as fast as it can for T
          seconds. Reports jobs done in the window per second, the producer's
          rate, and the enqueue-to-start latency (p50, p99, nearest rank).
  tiers   The cost and the effect of fair tiers (not run by default). Two drains of
          N jobs, split evenly over the tiers of the policy (``RECEIPTQ_TIERS``,
          default enterprise:6, pro:3, free:1), all enqueued before the workers
          start: (a) plain priority ordering, untiered jobs whose priority is their
          tier's offset (0 / 10 / 20); (b) fair, the same jobs with the tier option.
          ``--rounds`` pairs of these drains run one after the other (plain, fair,
          plain, fair...), so that a slow spell of the machine hits both; reports
          each drain's rate, their medians and the fairness cost, (median plain -
          median fair) / median plain; from the last fair drain,
          each tier's share of the jobs started while every tier still had work
          waiting (until the start of the last job of the tier that ran out first;
          with equal thirds, enterprise), against the weights' share; and each
          tier's p50/p95 wait, from the workers' start (the jobs were queued before
          the workers existed) to the job's start.
  users   Fairness between the users of a tier (not run by default). Two drains of
          N jobs of one tier queued before the workers start; while they drain,
          20 newcomers send one job each (50 ms apart). (a) Without user ids, so
          the tier is FIFO: a newcomer waits behind the flood. (b) The flood sent
          by one user and each newcomer as a user of its own: user rounds put a
          newcomer's job level with the flood's next one. Reports both drain
          rates and the newcomers' p50/p95 wait from send to start.

A job counts as done when its function has run, as for the peers. The worker
processes record that in memory and write it every 50 ms into the bench-only
tables (schema ``bench``), with each job's start time, so that "last done" and
the window's end are exact rather than bounded by a polling interval.

Output: one JSON line per workload on stdout, with the peers' keys, then a
table (left out with ``--json``). Progress goes to stderr. Benchmarks never fail
on speed: the exit status is 1 only when a workload raised an error.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from dramatiq.message import Message
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.config import database_url
from receiptq.settings import child_environment
from receiptq.stats import percentile
from receiptq.tiers import TierPolicy

PEER = "receiptq"
WORKLOADS = ("drain", "steady", "tiers", "users")
#: The users workload: newcomers that each send one job while the flood drains.
USERS_NEWCOMERS = 20
USERS_NEWCOMER_GAP_S = 0.05
DEFAULT_WORKLOADS = ("drain", "steady")

#: The benchmark's worker module, queue and actor (see receiptq/bench_worker.py;
#: importing that module here would set up a broker from the environment).
WORKER_MODULE = "receiptq.bench_worker"
BENCH_QUEUE = "bench"
BENCH_ACTOR = "bench_noop"

DEFAULT_DATABASE = "receiptq_bench"
DRAIN_ENQUEUE_CHUNK = 1000  # drain: jobs per enqueue_many call
STEADY_BATCH = 10  # steady: jobs per enqueue_many call of the producer
WARMUP_JOBS = 20  # steady: jobs run before the window opens
POLL_S = 0.02  # how often the figures are read while waiting (as the peers)
ACK_POLL_S = 0.005  # how often "is the jobs table empty" is asked once all jobs ran
RECORD_SETTLE_S = 0.25  # the workers write their figures every 50 ms: wait this long for them
STOP_TIMEOUT_S = 10.0  # grace when stopping subprocesses

DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


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


# --- the command (its options: receiptq.cli.bench) -----------------------------------


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        workloads=tuple(args.workload),
        jobs=args.jobs,
        seconds=args.seconds,
        processes=args.processes,
        threads=args.threads,
        timeout=args.timeout,
        database=args.database,
        quiet=args.json,
        rounds=args.rounds,
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen workloads; print a JSON line each, then a table. Exit status."""
    settings = settings_from(args)
    server_url = database_url(getattr(args, "url", None))
    db.check_connection(server_url)  # an unreachable server: one line (receiptq's main), exit 1
    results = []
    with sigterm_exits():
        for workload in settings.workloads:
            _log(settings, f"[{PEER}] {workload} ...")
            result = run_one(workload, settings, server_url)
            print(json.dumps(result), flush=True)
            results.append(result)
    if not settings.quiet:
        print_table(results)
    return 1 if any("error" in result for result in results) else 0


_signalled: list[int] = []  # SIGTERMs and SIGINTs received inside sigterm_exits()


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM and a first SIGINT (Ctrl-C) into SystemExit at the next
    check_signals(), which every wait loop calls, so that the finally blocks stop
    every subprocess. Raising from the handler itself could break off a query in the
    middle (psycopg then warns "another command is already in progress" and the
    connection is lost). A second Ctrl-C raises KeyboardInterrupt at once."""

    def handler(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and signal.SIGINT in _signalled:
            raise KeyboardInterrupt
        _signalled.append(signum)

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
        _signalled.clear()


def check_signals() -> None:
    """Raise SystemExit when a SIGTERM arrived (see sigterm_exits)."""
    if _signalled:
        raise SystemExit(128 + _signalled[0])


def _log(settings: Settings, message: str) -> None:
    if not settings.quiet:
        print(message, file=sys.stderr, flush=True)


# --- databases and subprocesses (also used by receiptq.demo) ------------------------------


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create the database ``name`` on the server of ``server_url``; its URL."""
    if not DATABASE_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")
    admin_url = server_url
    if conninfo_to_dict(server_url).get("dbname") == name:
        admin_url = make_conninfo(server_url, dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for query in ("bench_drop_database", "bench_create_database"):
            conn.execute(sql.SQL(db.query(query)).format(database=sql.Identifier(name)))
    return make_conninfo(server_url, dbname=name)


def start_dramatiq(
    module: str,
    url: str,
    *,
    processes: int,
    threads: int,
    queues: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the real ``dramatiq`` CLI over ``module`` in a session of its own
    (``env``: more environment variables)."""
    command = [
        sys.executable, "-m", "dramatiq", module,
        "--processes", str(processes),
        "--threads", str(threads),
        "--queues", *queues,
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_environment(RECEIPTQ_DATABASE_URL=url, **(env or {})),
            start_new_session=True,  # its own process group: see stop_process()
        )


def stop_process(proc: subprocess.Popen[Any], grace_s: float = STOP_TIMEOUT_S) -> None:
    """Stop a subprocess started with start_new_session=True, and whatever it forked.

    SIGTERM goes to the process itself, not its group: the dramatiq CLI forwards it
    to its worker processes, and a worker that gets a second SIGTERM exits at once
    ("Killing worker process") without writing its pending acks and statistics.
    Whatever is left of the process group after the grace gets SIGKILL.
    """
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def bench_messages(count: int) -> list[Message[Any]]:
    """``count`` messages for the no-op actor, stamped with the current time."""
    now = time.time()
    return [
        Message(queue_name=BENCH_QUEUE, actor_name=BENCH_ACTOR, args=(now,), kwargs={}, options={})
        for _ in range(count)
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
    broker = PostgresBroker(url)
    broker.declare_queue(BENCH_QUEUE)
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
            raise RuntimeError(
                f"dramatiq exited with {self.workers.returncode} "
                f"(log {self.log_path}: {log_tail(self.log_path)})"
            )

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


def consumers_string(settings: Settings, workload: str) -> str:
    batch = STEADY_BATCH if workload == "steady" else DRAIN_ENQUEUE_CHUNK
    return (
        f"dramatiq CLI {WORKER_MODULE} --processes {settings.processes} "
        f"--threads {settings.threads} --queues {BENCH_QUEUE}, PostgresBroker with "
        f"Dramatiq's default middleware and durable batched acks, sync no-op actor; "
        f"enqueue = broker.enqueue_many, {batch} per call"
    )


def run_one(workload: str, settings: Settings, server_url: str) -> dict[str, Any]:
    """Run one workload within its hard timeout and always clean up; its result line."""
    result: dict[str, Any] = {"peer": PEER, "workload": workload}
    if workload in ("drain", "tiers", "users"):
        result["jobs"] = settings.jobs
    else:
        result["seconds"] = settings.seconds
        result["enqueue_batch"] = STEADY_BATCH
    result["version"] = version_string()
    result["consumers"] = consumers_string(settings, workload)
    w = Workload(workload, settings, server_url, result)
    try:
        if workload == "drain":
            run_drain(w)
        elif workload == "tiers":
            run_tiers(w)
        elif workload == "users":
            run_users(w)
        else:
            run_steady(w)
        result["timeout"] = False
    except BenchTimeout:
        result["timeout"] = True
    except Exception as exc:
        result["timeout"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            w.close()
        except Exception as exc:
            result.setdefault("error", f"while stopping: {type(exc).__name__}: {exc}")
    return result


def _progress(settings: Settings) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=settings.quiet,
    )


def run_drain(w: Workload) -> None:
    """Fill ``w.result`` as it goes, so that a timeout still leaves partial figures."""
    jobs, result = w.settings.jobs, w.result
    w.setup()

    broker = w.broker()
    start = time.perf_counter()
    remaining = jobs
    while remaining > 0:
        chunk = min(DRAIN_ENQUEUE_CHUNK, remaining)
        broker.enqueue_many(bench_messages(chunk))
        remaining -= chunk
        result["enqueued"] = jobs - remaining
        w.check()
    enqueue_s = time.perf_counter() - start
    result["enqueue_s"] = round(enqueue_s, 3)
    result["enqueue_jobs_per_s"] = round(jobs / enqueue_s, 1)
    broker.close()  # writes its statistics; the bench process stays idle from here

    _log(w.settings, f"[{PEER}] drain: {jobs} jobs enqueued, starting the workers")
    started_at = w.start_workers()

    def note(done: int) -> None:
        drain_s = time.time() - started_at
        result["done"] = done
        result["drain_s"] = round(drain_s, 3)
        result["drain_jobs_per_s"] = round(done / drain_s, 1) if drain_s > 0 else None
        progress.update(task, completed=min(done, jobs))

    with _progress(w.settings) as progress:
        task = progress.add_task("drain", total=jobs)
        row = w.wait_done(jobs, note)

    # "last done" is the start of the last job, as the worker recorded it.
    drain_s = float(row["last_at"]) - started_at
    result["done"] = int(row["done"])
    result["drain_s"] = round(drain_s, 3)
    result["drain_jobs_per_s"] = round(jobs / drain_s, 1)

    # When the last ack landed: the jobs table holds no job of the queue any more.
    while w.jobs_left() > 0:
        w.check()
        time.sleep(ACK_POLL_S)
    result["last_ack_s"] = round(time.time() - started_at, 3)


def tier_mix(policy: TierPolicy, jobs: int) -> tuple[list[tuple[str, dict[str, Any]]], ...]:
    """The tiers workload's two drains as (label, message options) per job: the tiers
    in equal parts, interleaved; (a) plain, untiered with the tier's priority offset as
    the priority, labelled by that priority; (b) fair, with the tier option."""
    tiers = [policy.tiers[i % len(policy.tiers)] for i in range(jobs)]
    plain = [(str(t.priority_offset), {"priority": t.priority_offset}) for t in tiers]
    fair = [(t.name, {"tier": t.name}) for t in tiers]
    return plain, fair


def expected_shares(policy: TierPolicy) -> dict[str, float]:
    """Each tier's share of the claims while every tier has work waiting."""
    total = sum(t.weight for t in policy.tiers)
    return {t.name: round(t.weight / total, 4) for t in policy.tiers}


def drain_labelled(
    w: Workload,
    name: str,
    kinds: list[tuple[str, dict[str, Any]]],
    during: Callable[[PostgresBroker], int] | None = None,
) -> tuple[float, dict[str, dict[str, Any]]]:
    """One drain of labelled jobs on a fresh database; (jobs per s, figures per label).

    ``during`` runs once the workers started, with a broker, and returns how many
    more jobs it sent (the users workload's newcomers)."""
    jobs = len(kinds)
    w.deadline = time.monotonic() + w.settings.timeout
    conn = w.setup()
    broker = w.broker()
    for start in range(0, jobs, DRAIN_ENQUEUE_CHUNK):
        broker.enqueue_many(labelled_messages(kinds[start : start + DRAIN_ENQUEUE_CHUNK]))
        w.check()
    broker.close()
    _log(w.settings, f"[{PEER}] {name} drain, {jobs} jobs enqueued, starting the workers")
    started_at = w.start_workers()
    if during is not None:
        jobs += during(w.broker())
    with _progress(w.settings) as progress:
        task = progress.add_task(name, total=jobs)
        row = w.wait_done(jobs, lambda done: progress.update(task, completed=min(done, jobs)))
    rate = jobs / (float(row["last_at"]) - started_at)
    figures = db.fetch_all(conn, "bench_label_figures", {"since": started_at})
    w.close()
    return rate, {str(f["label"]): f for f in figures}


def _label_summary(figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    saturated = sum(int(f["saturated"]) for f in figures.values())
    return {
        "share_under_saturation": {
            label: round(int(f["saturated"]) / saturated, 4) if saturated else None
            for label, f in figures.items()
        },
        "wait_p95_ms": {label: _round(f["wait_p95_ms"]) for label, f in figures.items()},
        "wait_p50_ms": {label: _round(f["wait_p50_ms"]) for label, f in figures.items()},
        "done": {label: int(f["done"]) for label, f in figures.items()},
    }


def run_tiers(w: Workload) -> None:
    """Rounds of a plain priority drain then a fair drain; fill ``w.result`` as it goes."""
    policy = TierPolicy.from_env()
    result = w.result
    plain_kinds, fair_kinds = tier_mix(policy, w.settings.jobs)
    result["expected_share"] = expected_shares(policy)
    rates: dict[str, list[float]] = {"plain": [], "fair": []}
    order = [t.name for t in policy.tiers]  # best tier first, as the policy names them
    for round_no in range(1, w.settings.rounds + 1):
        for name, kinds in (("plain", plain_kinds), ("fair", fair_kinds)):
            label = f"tiers {name} {round_no}/{w.settings.rounds}"
            rate, figures = drain_labelled(w, label, kinds)
            rates[name].append(round(rate, 1))
            result[f"{name}_drain_jobs_per_s_rounds"] = rates[name]
            result[f"{name}_drain_jobs_per_s"] = round(statistics.median(rates[name]), 1)
            summary = _label_summary(figures)
            for key in ("share_under_saturation", "wait_p95_ms", "wait_p50_ms", "done"):
                if name == "fair":
                    result[key] = {tier: summary[key].get(tier) for tier in order}
                else:
                    result[f"plain_{key}"] = summary[key]
        plain_rate, fair_rate = result["plain_drain_jobs_per_s"], result["fair_drain_jobs_per_s"]
        result["fairness_cost_percent"] = round((plain_rate - fair_rate) / plain_rate * 100, 2)


def run_users(w: Workload) -> None:
    """A flood of one user's jobs, and newcomers' single jobs sent while it drains: once
    without user ids (FIFO within the tier), once with (user rounds)."""
    result = w.result
    result["newcomers"] = USERS_NEWCOMERS
    for name, with_users in (("without_rounds", False), ("with_rounds", True)):
        flood = [("flood", {"tier": "pro", **({"user_id": "flood"} if with_users else {})})]

        def newcomers(broker: PostgresBroker, with_users: bool = with_users) -> int:
            for n in range(USERS_NEWCOMERS):
                time.sleep(USERS_NEWCOMER_GAP_S)
                options = {"tier": "pro", **({"user_id": f"newcomer-{n}"} if with_users else {})}
                broker.enqueue_many(labelled_messages([("newcomer", options)]))
            return USERS_NEWCOMERS

        rate, figures = drain_labelled(
            w, f"users {name.replace('_', ' ')}", flood * w.settings.jobs, newcomers
        )
        result[f"{name}_drain_jobs_per_s"] = round(rate, 1)
        newcomer = figures.get("newcomer", {})
        for key in ("wait_p50_ms", "wait_p95_ms"):
            result[f"{name}_newcomer_{key}"] = _round(newcomer.get(key))


def _read_line(w: Workload, proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """One line from the producer's stdout, or an error when it takes too long."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return proc.stdout.readline()
        w.check()
        if time.monotonic() >= deadline:
            raise RuntimeError("the producer process did not answer in time")


def run_steady(w: Workload) -> None:
    """Fill ``w.result`` as it goes, so that a timeout still leaves partial figures."""
    seconds, result = w.settings.seconds, w.result
    conn = w.setup()
    w.start_workers()
    broker = w.broker()
    broker.enqueue_many(bench_messages(WARMUP_JOBS))
    broker.close()
    w.wait_done(WARMUP_JOBS)
    db.execute(conn, "bench_reset")

    # The producer runs in a process of its own (this module with --produce), so that
    # it does not share a core's worth of Python with the bench. Handshake: it prints
    # "ready" once connected, we answer "go", it enqueues for `seconds` and prints
    # {"enqueued": n}.
    w.producer = subprocess.Popen(
        [
            sys.executable, "-m", "receiptq.bench", "--produce",
            "--url", w.url, "--seconds", str(seconds),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    producer = w.producer
    stdin: IO[bytes] | None = producer.stdin
    assert stdin is not None
    if _read_line(w, producer, STOP_TIMEOUT_S * 3).strip() != b"ready":
        raise RuntimeError("the producer process did not start")
    _log(w.settings, f"[{PEER}] steady: producing for {seconds:g} s")
    start = time.monotonic()
    stdin.write(b"go\n")
    stdin.flush()

    while (elapsed := time.monotonic() - start) < seconds:
        time.sleep(min(0.25, seconds - elapsed))
        w.check()
        completed = int(w.fetch("bench_progress")["done"])
        result["completed"] = completed
        result["completed_jobs_per_s"] = round(completed / (time.monotonic() - start), 1)
    window_end = time.time()
    window_s = time.monotonic() - start

    line = _read_line(w, producer, STOP_TIMEOUT_S + seconds)
    enqueued = int(json.loads(line)["enqueued"])
    producer.wait(STOP_TIMEOUT_S)  # let it close cleanly

    # The figures of jobs that started before the window closed (the workers write
    # them every 50 ms: give them time to land).
    time.sleep(RECORD_SETTLE_S)
    window = w.fetch("bench_window", {"until": window_end})
    completed = int(window["done"])
    latencies = [float(value) for value in window["latencies_ms"]]

    result["enqueued"] = enqueued
    result["enqueue_jobs_per_s"] = round(enqueued / seconds, 1)
    result["completed"] = completed
    result["completed_jobs_per_s"] = round(completed / window_s, 1)
    result["latency_samples"] = len(latencies)
    result["latency_p50_ms"] = _round(percentile(latencies, 0.50))
    result["latency_p99_ms"] = _round(percentile(latencies, 0.99))
    # Jobs enqueued in the window but not run at its end: when large, the consumers
    # did not keep up and the latencies leave out the jobs still waiting.
    result["backlog_at_end"] = max(0, enqueued - completed)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- the producer subprocess (steady) ----------------------------------------------------


def produce(url: str, seconds: float) -> int:
    broker = open_broker(url)
    try:
        with broker.connection():
            pass  # connect before "ready", as the peers' producers do
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        enqueued = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            broker.enqueue_many(bench_messages(STEADY_BATCH))
            enqueued += STEADY_BATCH
        print(json.dumps({"enqueued": enqueued}), flush=True)
    finally:
        broker.close()
    return 0


# --- output ------------------------------------------------------------------------------


def print_table(results: list[dict[str, Any]]) -> None:
    def cell(value: Any, digits: int = 0) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    table = Table(title="receiptq bench")
    for header in ("peer", "workload", "jobs", "enqueue/s", "done/s", "p50 ms", "p99 ms"):
        table.add_column(header, justify="left" if header in ("peer", "workload") else "right")
    table.add_column("last ack s", justify="right")
    table.add_column("note")
    for r in results:
        note = "TIMEOUT" if r.get("timeout") else ""
        if "error" in r:
            note = "ERROR: " + r["error"][:60]
        if r["workload"] == "drain":
            jobs, rate = r.get("done"), r.get("drain_jobs_per_s")
        elif r["workload"] == "tiers":
            jobs, rate = r.get("jobs"), r.get("fair_drain_jobs_per_s")
            if r.get("fairness_cost_percent") is not None:
                note = (note + f" fairness cost {r['fairness_cost_percent']:.1f}%").strip()
        elif r["workload"] == "users":
            jobs, rate = r.get("jobs"), r.get("with_rounds_drain_jobs_per_s")
            if r.get("with_rounds_newcomer_wait_p95_ms") is not None:
                note = (
                    note + f" newcomer wait p95 {r['with_rounds_newcomer_wait_p95_ms']:.0f} ms"
                    f" (FIFO: {r.get('without_rounds_newcomer_wait_p95_ms') or 0:.0f} ms)"
                ).strip()
        else:
            jobs, rate = r.get("completed"), r.get("completed_jobs_per_s")
            if r.get("backlog_at_end"):
                note = (note + f" backlog={r['backlog_at_end']}").strip()
        table.add_row(
            r["peer"],
            r["workload"],
            cell(jobs),
            cell(r.get("enqueue_jobs_per_s")),
            cell(rate),
            cell(r.get("latency_p50_ms"), 1),
            cell(r.get("latency_p99_ms"), 1),
            cell(r.get("last_ack_s"), 2),
            note,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(table)
    console.print(
        "drain: jobs = jobs done, done/s = jobs / seconds from the first worker's boot to the "
        "last job's start; last ack = when the jobs table was empty.\n"
        "steady: jobs = jobs done in the window, done/s over the window, p50/p99 = latency "
        "from enqueue to job start. Compare ratios within one run, not absolute figures."
    )
    for r in results:
        if r["workload"] == "tiers" and "share_under_saturation" in r:
            console.print(tiers_table(r))
        if r["workload"] == "users" and "with_rounds_newcomer_wait_p95_ms" in r:
            console.print(users_table(r))


def tiers_table(r: dict[str, Any]) -> Table:
    """The tiers workload: per tier, the share it got under saturation and its waits."""
    table = Table(
        title="receiptq bench: tiers",
        caption=f"median of {len(r.get('fair_drain_jobs_per_s_rounds', [0]))} drains each: "
        f"plain priority {r['plain_drain_jobs_per_s']:.0f} jobs/s, fair "
        f"{r['fair_drain_jobs_per_s']:.0f} jobs/s: fairness costs "
        f"{r['fairness_cost_percent']:.1f}% (target: under 10%). Share = of the jobs "
        "started while every tier had work waiting; wait = from the workers' start.",
    )
    for header in ("tier", "expected share", "share", "wait p50 ms", "wait p95 ms"):
        table.add_column(header, justify="left" if header == "tier" else "right")
    for tier, share in r["share_under_saturation"].items():
        table.add_row(
            tier,
            f"{r['expected_share'].get(tier, 0):.3f}",
            "-" if share is None else f"{share:.3f}",
            "-" if r["wait_p50_ms"][tier] is None else f"{r['wait_p50_ms'][tier]:.0f}",
            "-" if r["wait_p95_ms"][tier] is None else f"{r['wait_p95_ms'][tier]:.0f}",
        )
    return table


def users_table(r: dict[str, Any]) -> Table:
    """The users workload: a newcomer's wait behind another user's flood, with and
    without user rounds."""
    table = Table(
        title="receiptq bench: users",
        caption=f"{r['jobs']} jobs of one user queued, then {r['newcomers']} other users send "
        "one job each while they drain; wait = from a newcomer's send to its start.",
    )
    for header in ("claim order", "drain jobs/s", "newcomer wait p50 ms", "p95 ms"):
        table.add_column(header, justify="left" if header == "claim order" else "right")
    for name, title in (("without_rounds", "FIFO in the tier"), ("with_rounds", "user rounds")):
        table.add_row(
            title,
            f"{r.get(f'{name}_drain_jobs_per_s') or 0:.0f}",
            f"{r.get(f'{name}_newcomer_wait_p50_ms') or 0:.0f}",
            f"{r.get(f'{name}_newcomer_wait_p95_ms') or 0:.0f}",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m receiptq.bench --produce``: the steady workload's producer process.
    (The benchmark itself is ``receiptq bench``, or ``python -m receiptq bench``.)"""
    parser = argparse.ArgumentParser(prog="python -m receiptq.bench", description=main.__doc__)
    parser.add_argument("--produce", action="store_true", required=True)
    parser.add_argument("--url", default=None, help="PostgreSQL URL of the bench database")
    parser.add_argument("--seconds", type=float, required=True, help="how long to produce")
    args = parser.parse_args(argv)
    # The producer holds nothing that needs cleaning up: SIGTERM just ends it.
    return produce(database_url(args.url), args.seconds)


if __name__ == "__main__":
    sys.exit(main())
