"""``receiptq demo``: sample jobs end to end, on real Dramatiq worker processes.

With no database URL it starts the embedded PostgreSQL (under ``RECEIPTQ_HOME``).
It migrates, clears what a previous demo left (the jobs of the demo queue and
the sample actor's dead letters), enqueues N ``sample_job`` messages with mixed
priorities (0/5/10), about 10 % delayed by 1-5 s, some with 1-20 ms of work,
and a failure rate so that some jobs retry and a few end in the dead letters.
Then it runs ``dramatiq receiptq.actors`` while a live view shows the queues
draining, stops the workers once every job is done or dead, and prints a
summary (``--json``: as JSON). Exit status 0 when every job was accounted for.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
from dramatiq.message import Message
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from receiptq import db, monitor
from receiptq.bench import (
    check_signals,
    log_tail,
    sigterm_exits,
    start_dramatiq,
    stop_process,
)
from receiptq.broker import PostgresBroker
from receiptq.config import configured_database_url, database_url, receiptq_home
from receiptq.stats import add_histograms, empty_histogram, histogram_percentile

#: The sample actor as receiptq.actors.samples declares it (importing that package
#: here would set up a broker from the environment, so its facts are repeated).
DEMO_QUEUE = "default"
DEMO_ACTOR = "sample_job"
SAMPLE_MAX_RETRIES = 3
WORKER_MODULE = "receiptq.actors"

PRIORITIES = (0, 5, 10)
DELAYED_SHARE = 0.10
DELAY_S = (1.0, 5.0)
WORK_SHARE = 0.30
#: Share of jobs that always fail when --fail-rate > 0 (they end as dead letters).
POISON_SHARE = 0.003
WORK_MS = (1, 20)
ENQUEUE_CHUNK = 1000
POLL_S = 0.25
STOP_GRACE_S = 20.0
COUNTERS = ("enqueued", "succeeded", "failed", "retried", "dead_lettered")


# --- command line ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq demo`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="run sample jobs end to end on real workers (embedded PostgreSQL by default)",
        description="Enqueue sample jobs (mixed priorities, some delayed, some failing and "
        "retried, a few dead-lettered), run real `dramatiq` worker processes with a live view "
        "of the queues, and print a summary. Without a database URL it uses the embedded "
        "PostgreSQL under RECEIPTQ_HOME (default ~/.receiptq).",
    )
    parser.add_argument("--jobs", type=_positive_int, default=3000, help="jobs (default 3000)")
    parser.add_argument(
        "--workers", type=_positive_int, default=2, help="worker processes (default 2)"
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=8, help="threads per worker process (default 8)"
    )
    parser.add_argument(
        "--fail-rate",
        type=_rate,
        default=0.05,
        help="probability that one run of a job fails (default 0.05); a job is retried "
        f"up to {SAMPLE_MAX_RETRIES} times, then dead-lettered",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up (exit 1) when the jobs are not all finished after this many seconds "
        "(default 300)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the job mix")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    # The CLI has a global --url; SUPPRESS keeps this one from overwriting it.
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="PostgreSQL URL (default: as configured, else the embedded PostgreSQL)",
    )
    parser.set_defaults(func=run)


# --- figures -----------------------------------------------------------------------------


@dataclass
class Totals:
    """Statistics counters of one queue (or actor) summed over minute rows."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    latency_hist: list[int] = field(default_factory=empty_histogram)
    run_hist: list[int] = field(default_factory=empty_histogram)

    def add_row(self, row: dict[str, Any]) -> None:
        for name in COUNTERS:
            self.counts[name] += int(row[name])
        self.latency_hist = add_histograms([self.latency_hist, row["latency_ms_hist"] or []])
        self.run_hist = add_histograms([self.run_hist, row["run_ms_hist"] or []])

    def minus(self, other: Totals) -> Totals:
        return Totals(
            counts={name: self.counts[name] - other.counts[name] for name in COUNTERS},
            latency_hist=[
                a - b for a, b in zip(self.latency_hist, other.latency_hist, strict=True)
            ],
            run_hist=[a - b for a, b in zip(self.run_hist, other.run_hist, strict=True)],
        )


def minute_of(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s // 60 * 60, tz=UTC)


def stats_totals(conn: psycopg.Connection[Any], since: datetime) -> dict[tuple[str, str], Totals]:
    """Statistics since a minute, summed per (queue, actor)."""
    totals: dict[tuple[str, str], Totals] = {}
    for row in db.fetch_all(conn, "stats_since", {"since": since}):
        totals.setdefault((row["queue"], row["actor"]), Totals()).add_row(row)
    return totals


class RunStats:
    """The statistics of this run: what was added since the run began (other runs may
    have written to the same minutes before)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.since = minute_of(time.time())
        self.baseline = stats_totals(conn, self.since)

    def read(self) -> dict[tuple[str, str], Totals]:
        now = stats_totals(self.conn, self.since)
        return {key: totals.minus(self.baseline.get(key, Totals())) for key, totals in now.items()}

    def per_queue(self) -> dict[str, Totals]:
        queues: dict[str, Totals] = {}
        for (queue, _), totals in self.read().items():
            total = queues.setdefault(queue, Totals())
            total.counts = {name: total.counts[name] + totals.counts[name] for name in COUNTERS}
        return queues


def queue_status(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Live counts per queue: queued (ready), scheduled, running, dead."""
    snap = monitor.snapshot(conn)
    return {
        name: {key: int(figures[key]) for key in ("queued", "scheduled", "running", "dead")}
        for name, figures in snap["queues"].items()
    }


# --- the demo ----------------------------------------------------------------------------


def describe(url: str) -> str:
    """Where a URL points, without its password."""
    params = conninfo_to_dict(url)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('user') or ''}@{host}:{port}/{params.get('dbname') or ''}".lstrip("@")


def demo_broker(url: str) -> PostgresBroker:
    """A broker for sending: the sample actor declared as the workers declare it."""
    broker = PostgresBroker(url)

    def sample_job(job_no: int, work_ms: int = 0, fail_rate: float = 0.0) -> int:
        raise RuntimeError("sample_job runs in the worker processes")  # pragma: no cover

    dramatiq.Actor(
        sample_job,
        broker=broker,
        actor_name=DEMO_ACTOR,
        queue_name=DEMO_QUEUE,
        priority=0,
        options={"max_retries": SAMPLE_MAX_RETRIES},
    )
    return broker


def clear_previous(broker: PostgresBroker, conn: psycopg.Connection[Any]) -> int:
    """Drop the demo queue's jobs and the sample actor's dead letters; how many letters."""
    broker.flush(DEMO_QUEUE)
    rows = db.fetch_all(
        conn, "dead_letter_list", {"actor": DEMO_ACTOR, "queue": DEMO_QUEUE, "limit": None}
    )
    ids = [row["id"] for row in rows]
    if ids:
        db.fetch_all(conn, "dead_letter_purge", {"all": False, "ids": ids, "before": None})
    return len(ids)


def demo_messages(
    first: int, count: int, fail_rate: float, rng: random.Random
) -> list[Message[Any]]:
    """Messages for the jobs numbered first .. first+count-1."""
    now_ms = time.time() * 1000
    messages: list[Message[Any]] = []
    for job_no in range(first, first + count):
        options: dict[str, Any] = {"priority": rng.choice(PRIORITIES)}
        if rng.random() < DELAYED_SHARE:
            options["eta"] = int(now_ms + rng.uniform(*DELAY_S) * 1000)
        work_ms = rng.randint(*WORK_MS) if rng.random() < WORK_SHARE else 0
        # A few poison jobs fail every time, so the dead letters have something to show.
        job_fail_rate = 1.0 if fail_rate and rng.random() < POISON_SHARE else fail_rate
        messages.append(
            Message(
                queue_name=DEMO_QUEUE,
                actor_name=DEMO_ACTOR,
                args=(job_no,),
                kwargs={"work_ms": work_ms, "fail_rate": job_fail_rate},
                options=options,
            )
        )
    return messages


def status_table(
    status: dict[str, dict[str, int]], stats: dict[str, Totals], jobs: int, finished: int
) -> Table:
    table = Table(title=f"queues ({finished}/{jobs} demo jobs finished)", title_justify="left")
    table.add_column("queue")
    for name in ("queued", "scheduled", "running", "done", "retried", "dead"):
        table.add_column(name, justify="right")
    for name in sorted(status.keys() | stats.keys() | {DEMO_QUEUE}):
        live = status.get(name, {})
        counts = stats.get(name, Totals()).counts
        table.add_row(
            name,
            str(live.get("queued", 0)),
            str(live.get("scheduled", 0)),
            str(live.get("running", 0)),
            str(counts["succeeded"]),
            str(counts["retried"]),
            str(live.get("dead", 0)),
        )
    return table


def unfinished(status: dict[str, dict[str, int]]) -> int:
    live = status.get(DEMO_QUEUE, {})
    return live.get("queued", 0) + live.get("scheduled", 0) + live.get("running", 0)


def watch(
    conn: psycopg.Connection[Any],
    workers: Any,
    log_path: Path,
    run_stats: RunStats,
    jobs: int,
    timeout_s: float,
    console: Console,
) -> tuple[bool, float]:
    """Live view until every demo job is done or dead; (finished, wall seconds)."""
    started = time.monotonic()
    progress = Progress(
        TextColumn("[bold]jobs finished"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    task = progress.add_task("finished", total=jobs)
    with Live(progress, console=console, refresh_per_second=4) as live:
        while True:
            status = queue_status(conn)
            finished = jobs - unfinished(status)
            progress.update(task, completed=finished)
            live.update(
                Group(progress, status_table(status, run_stats.per_queue(), jobs, finished))
            )
            if finished >= jobs:
                return True, time.monotonic() - started
            check_signals()
            if workers.poll() is not None:
                raise RuntimeError(
                    f"the workers exited with {workers.returncode} "
                    f"(log {log_path}: {log_tail(log_path)})"
                )
            if time.monotonic() - started > timeout_s:
                return False, time.monotonic() - started
            time.sleep(POLL_S)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def run(args: argparse.Namespace) -> int:
    """Run the demo; print the summary. Exit status 0 when every job was accounted for."""
    with sigterm_exits():  # SIGTERM unwinds through the finally blocks: workers stopped
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    explicit = getattr(args, "url", None) or configured_database_url()
    if explicit is None:
        console.print(
            f"No database URL set: using the embedded PostgreSQL in {receiptq_home() / 'pgdata'}"
        )
    url = database_url(explicit)
    console.print(f"database: {describe(url)}")
    applied = db.migrate(url)
    if applied:
        console.print(f"migrated: {', '.join(applied)}")

    rng = random.Random(args.seed)
    jobs: int = args.jobs
    broker = demo_broker(url)
    log_path = Path(tempfile.gettempdir()) / "receiptq-demo-dramatiq.log"
    try:
        with db.connect(url) as conn:
            cleared = clear_previous(broker, conn)
            if cleared:
                console.print(f"cleared {cleared} dead letters of a previous demo")
            run_stats = RunStats(conn)

            start = time.perf_counter()
            stored = 0
            for first in range(0, jobs, ENQUEUE_CHUNK):
                count = min(ENQUEUE_CHUNK, jobs - first)
                stored += broker.enqueue_many(demo_messages(first, count, args.fail_rate, rng))
                check_signals()
            enqueue_s = time.perf_counter() - start
            console.print(
                f"enqueued {stored} jobs in {enqueue_s:.2f} s; starting {args.workers} worker "
                f"processes x {args.threads} threads (log: {log_path})"
            )

            workers = start_dramatiq(
                WORKER_MODULE,
                url,
                processes=args.workers,
                threads=args.threads,
                queues=[DEMO_QUEUE],
                log_path=log_path,
            )
            try:
                finished, wall_s = watch(
                    conn, workers, log_path, run_stats, jobs, args.timeout, console
                )
            finally:
                stop_process(workers, STOP_GRACE_S)  # graceful: the workers write their stats

            summary = summarize(conn, run_stats, jobs, stored, finished, wall_s, enqueue_s)
            summary.update(
                database=describe(url),
                workers=args.workers,
                threads=args.threads,
                fail_rate=args.fail_rate,
            )
    finally:
        broker.close()

    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print_summary(summary)
    return 0 if summary["accounted"] else 1


def summarize(
    conn: psycopg.Connection[Any],
    run_stats: RunStats,
    jobs: int,
    stored: int,
    finished: bool,
    wall_s: float,
    enqueue_s: float,
) -> dict[str, Any]:
    status = queue_status(conn)
    left = unfinished(status)
    dead = status.get(DEMO_QUEUE, {}).get("dead", 0)
    totals = run_stats.read().get((DEMO_QUEUE, DEMO_ACTOR), Totals())
    done = totals.counts["succeeded"]
    return {
        "jobs": jobs,
        "enqueued": stored,
        "done": done,
        "retried": totals.counts["retried"],
        "failed_runs": totals.counts["failed"],
        "dead": dead,
        "left": left,
        "accounted": stored == jobs and left == 0 and done + dead == jobs,
        "timeout": not finished,
        "enqueue_s": round(enqueue_s, 3),
        "wall_s": round(wall_s, 3),
        "throughput_jobs_per_s": round((done + dead) / wall_s, 1) if wall_s > 0 else None,
        "latency_p50_ms": _round(histogram_percentile(totals.latency_hist, 0.50)),
        "latency_p95_ms": _round(histogram_percentile(totals.latency_hist, 0.95)),
        "run_p50_ms": _round(histogram_percentile(totals.run_hist, 0.50)),
        "run_p95_ms": _round(histogram_percentile(totals.run_hist, 0.95)),
    }


def print_summary(summary: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    table = Table(title="receiptq demo", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    rows = [
        ("jobs", str(summary["jobs"])),
        ("done", str(summary["done"])),
        ("retried (runs that failed and were retried)", str(summary["retried"])),
        ("dead-lettered", str(summary["dead"])),
        ("not finished", str(summary["left"])),
        ("wall time (workers started → all finished)", f"{summary['wall_s']:.2f} s"),
        ("throughput", f"{summary['throughput_jobs_per_s']} jobs/s"),
        ("latency p50 / p95 (due → start)", f"{ms(summary['latency_p50_ms'])} / "
         f"{ms(summary['latency_p95_ms'])}"),
        ("run time p50 / p95", f"{ms(summary['run_p50_ms'])} / {ms(summary['run_p95_ms'])}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print(table)
    if summary["accounted"]:
        console.print("[green]every job was accounted for (done or dead-lettered)[/green]")
    else:
        why = "timed out" if summary["timeout"] else "counts do not add up"
        console.print(f"[red]not every job was accounted for ({why})[/red]")
        print("see `receiptq status` and `receiptq dead-letter list`", file=sys.stderr)
