"""``receiptq demo``: the receipt pipeline end to end, on real Dramatiq worker processes.

It runs in a database of its own (:mod:`receiptq.demo_database`: the embedded
PostgreSQL when no URL is set, else a ``receiptq_demo`` database next to the
URL's) and never touches data it did not create: it refuses a database with
others' jobs, dead letters or receipts unless ``--allow-existing-data``, and
even then counts and deletes only what it marked as its own. It migrates (both
chains), clears what a previous demo left, generates N receipt images (Pillow:
varied merchants, items, dates, layouts and fonts, some photographed badly) and
the users' bank transactions (most receipts have theirs, some deliberately none,
a few uploads are not images at all), starts an SMTP sink (aiosmtpd on
127.0.0.1), submits every receipt (image, row and pipeline in one transaction
each, users of mixed tiers) on queues of its own (``demo.ocr``, ...), and runs
``dramatiq receiptq.actors`` on those queues while a live view shows the
receipts and queues. The summary checks the outcome against the generated
truth, from what this run submitted: receipts processed, matched correctly,
emails delivered, jobs retried, postponed by an open circuit breaker, dead
letters, receipts per status and stuck (nothing will process them: a job of
theirs is a dead letter, or none is left), throughput (``--json``: as JSON).
``--fail-rate`` makes the OCR and SMTP services fail part of the time. Each
run's worker log and summary go to a folder of its own under
``RECEIPTQ_HOME/demo``. The embedded server is stopped at the end when the demo
started it. Exit status 0 when every receipt was accounted for.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
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

from receiptq import db, embedded, extras, monitor
from receiptq import demo_database as place
from receiptq.bench import check_signals, log_tail, sigterm_exits, stop_process
from receiptq.broker import PostgresBroker
from receiptq.config import receiptq_home
from receiptq.demo_database import DEMO_DOMAIN, MARK_OPTION, DemoRefused, describe
from receiptq.services import receipts
from receiptq.services.faults import FAIL_RATE_VARIABLE
from receiptq.settings import child_environment
from receiptq.stats import add_histograms, empty_histogram, histogram_percentile

WORKER_MODULE = "receiptq.actors"
#: The demo's receipts go through queues of its own, so its workers never take an
#: app's jobs: the actors' queues with this prefix (RECEIPTQ_RECEIPT_QUEUE_PREFIX).
QUEUE_PREFIX = "demo."
QUEUES = tuple(QUEUE_PREFIX + queue for queue in ("ocr", "matching", "email"))
USERS = (("enterprise", 2), ("pro", 2), ("free", 3))
#: Shares of the generated receipts.
NO_TRANSACTION_SHARE = 0.15  # deliberately unmatched
NOISY_SHARE = 0.2  # skewed, blurred, speckled photos
BROKEN_SHARE = 0.05  # uploads that are not images: failed, dead-lettered
#: Transactions of other purchases per user, so matching has something to reject.
OTHER_TRANSACTIONS = 4
#: Breakers reopen quickly in the demo so that an outage is visible, not endless.
BREAKER_RESET_S = 3
#: The demo's jobs back off for at most 2 s (the email actor's own ceiling is 5 min):
#: a run of injected failures must not stall a short demo.
MAX_BACKOFF_MS = 2_000
POLL_S = 0.25
STOP_GRACE_S = 20.0
COUNTERS = ("enqueued", "succeeded", "failed", "retried", "dead_lettered", "postponed")


# --- figures -----------------------------------------------------------------------------


@dataclass
class Totals:
    """Statistics counters of one queue (or actor) summed over minute rows."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    run_hist: list[int] = field(default_factory=empty_histogram)

    def add(self, row: dict[str, Any]) -> None:
        for name in COUNTERS:
            self.counts[name] += int(row[name])
        self.run_hist = add_histograms([self.run_hist, row["run_ms_hist"] or []])

    def minus(self, other: Totals) -> Totals:
        return Totals(
            counts={name: self.counts[name] - other.counts[name] for name in COUNTERS},
            run_hist=[a - b for a, b in zip(self.run_hist, other.run_hist, strict=True)],
        )


def minute_of(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s // 60 * 60, tz=UTC)


def stats_per_queue(conn: psycopg.Connection[Any], since: datetime) -> dict[str, Totals]:
    totals: dict[str, Totals] = {}
    for row in db.fetch_all(conn, "stats_since", {"since": since}):
        totals.setdefault(row["queue"], Totals()).add(row)
    return totals


class RunStats:
    """The statistics of this run: what was added since it began (earlier runs may
    have written to the same minutes)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.since = minute_of(time.time())
        self.baseline = stats_per_queue(conn, self.since)

    def per_queue(self) -> dict[str, Totals]:
        now = stats_per_queue(self.conn, self.since)
        return {q: t.minus(self.baseline.get(q, Totals())) for q, t in now.items()}

    def total(self, name: str) -> int:
        return sum(t.counts[name] for q, t in self.per_queue().items() if q in QUEUES)


# --- the generated world -----------------------------------------------------------------


@dataclass
class Upload:
    """One receipt to submit, and what the pipeline should make of it."""

    user_id: int
    image: bytes
    expected: str  # "matched", "unmatched" or "failed"
    transaction_id: int | None = None
    receipt_id: int = 0


def create_users(conn: psycopg.Connection[Any]) -> list[int]:
    ids = []
    for tier, count in USERS:
        for n in range(1, count + 1):
            ids.append(receipts.add_user(conn, f"{tier}{n}@{DEMO_DOMAIN}", tier)["id"])
    return ids


def generate(conn: psycopg.Connection[Any], count: int, rng: random.Random) -> list[Upload]:
    """Users, receipt images and bank transactions; the truth about each receipt."""
    from receiptq.services import images  # Pillow and the fonts: the demo extra

    users = create_users(conn)
    today = date.today()
    uploads = []
    for n in range(count):
        user = users[n % len(users)]
        spec = images.random_receipt(rng, today=today)
        image = images.render_receipt(spec, noisy=rng.random() < NOISY_SHARE, seed=n)
        roll = rng.random()
        if roll < BROKEN_SHARE:
            uploads.append(Upload(user, image[: len(image) // 3], "failed"))
        elif roll < BROKEN_SHARE + NO_TRANSACTION_SHARE:
            uploads.append(Upload(user, image, "unmatched"))
        else:
            posted = spec.purchased_on + timedelta(days=rng.randint(0, 3))
            txn = receipts.add_transaction(
                conn, user, posted, spec.total, spec.currency, f"CARD {spec.bank_name}"
            )
            uploads.append(Upload(user, image, "matched", txn))
    for user in users:  # other purchases: amounts no receipt has
        for _ in range(OTHER_TRANSACTIONS):
            other = rng.choice(images.MERCHANTS)[1]
            amount = Decimal(rng.randint(5000, 9000)) / 100
            posted = today - timedelta(days=rng.randint(0, 30))
            receipts.add_transaction(conn, user, posted, amount, "EUR", f"CARD {other}")
    return uploads


def submit_all(
    broker: PostgresBroker, conn: psycopg.Connection[Any], uploads: list[Upload], run_id: str
) -> None:
    """Submit every receipt; each message carries the run's mark."""
    from receiptq.actors.receipts import submit_receipt

    options = {"max_backoff_ms": MAX_BACKOFF_MS, MARK_OPTION: run_id}
    for upload in uploads:
        upload.receipt_id = submit_receipt(
            upload.user_id, upload.image, conn, broker=broker, job_options=options
        )
        check_signals()


# --- workers and the live view -----------------------------------------------------------


def start_workers(
    url: str, args: argparse.Namespace, smtp_port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """The stock Dramatiq CLI over receiptq.actors, pointed at the SMTP sink."""
    ocr_threads = max(1, (os.cpu_count() or 1) // args.workers)
    env = child_environment(
        RECEIPTQ_DATABASE_URL=url,
        RECEIPTQ_SMTP_HOST="127.0.0.1",
        RECEIPTQ_SMTP_PORT=str(smtp_port),
        RECEIPTQ_SMTP_TLS="none",
        RECEIPTQ_OCR_THREADS=str(ocr_threads),
        RECEIPTQ_BREAKER_OCR_RESET_S=str(BREAKER_RESET_S),
        RECEIPTQ_BREAKER_EMAIL_RESET_S=str(BREAKER_RESET_S),
        RECEIPTQ_POLL_INTERVAL_MS="200",
        RECEIPTQ_RECEIPT_QUEUE_PREFIX=QUEUE_PREFIX,
        **{FAIL_RATE_VARIABLE: str(args.fail_rate)},
    )
    env.pop("RECEIPTQ_OCR_URL", None)
    command = [
        sys.executable, "-m", "dramatiq", WORKER_MODULE,
        "--processes", str(args.workers),
        "--threads", str(args.threads),
        "--queues", *QUEUES,
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: see bench.stop_process()
        )


def status_table(snap: dict[str, Any], stats: dict[str, Totals], counts: dict[str, int]) -> Table:
    title = "receipts: " + ", ".join(f"{n} {status}" for status, n in counts.items())
    table = Table(title=title, title_justify="left")
    table.add_column("queue")
    for name in (*monitor.LIVE_FIELDS, "done", "retried", "postponed", "dead"):
        table.add_column(name, justify="right")
    for queue in QUEUES:
        live = snap["queues"].get(queue, {})
        totals = stats.get(queue, Totals()).counts
        table.add_row(
            queue,
            *(str(live.get(key, 0)) for key in monitor.LIVE_FIELDS),
            str(totals["succeeded"]),
            str(totals["retried"]),
            str(totals["postponed"]),
            str(live.get("dead", 0)),
        )
    breakers = ", ".join(f"{b['name']} {b['state']}" for b in snap.get("breakers", []))
    if breakers:
        table.caption = f"circuit breakers: {breakers}"
    return table


@dataclass
class Run:
    """One run of the demo: its id (the mark on its messages), where it runs, its
    folder (worker log, summary), what it submitted and its statistics."""

    run_id: str
    where: place.Place
    folder: Path
    conn: psycopg.Connection[Any]
    uploads: list[Upload] = field(default_factory=list)
    stats: RunStats | None = None

    @property
    def receipt_ids(self) -> list[int]:
        return [upload.receipt_id for upload in self.uploads]

    def counts(self) -> dict[str, int]:
        """This run's receipts per status (and stuck)."""
        return receipts.status_counts(self.conn, ids=self.receipt_ids)

    def jobs_left(self) -> int:
        """This run's jobs still queued, scheduled or claimed."""
        per_queue = place.run_jobs(self.conn, self.run_id)
        return sum(n for figures in per_queue.values() for n in figures.values())

    def per_queue(self) -> dict[str, Totals]:
        return self.stats.per_queue() if self.stats is not None else {}

    def frame(self, progress: Progress, task: Any) -> Group:
        counts = self.counts()
        progress.update(task, completed=counts["notified"] + counts["failed"] + counts["stuck"])
        table = status_table(monitor.snapshot(self.conn), self.per_queue(), counts)
        return Group(progress, table)


def new_run_id() -> str:
    """Sortable and unique: the start time and a random suffix."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def live_console() -> Console:
    """A console on stderr as wide as the terminal: the size the terminal reports for
    stderr, stdout or stdin, whichever answers first with a width (rich alone stops at
    the first stream that answers, even with 0 columns, and takes 80 x 25 for any
    TERM=dumb terminal)."""
    for fd in (2, 1, 0):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        if size.columns > 0:
            return Console(stderr=True, width=size.columns, height=max(size.lines, 10))
    return Console(stderr=True)


def watch(
    run: Run,
    workers: subprocess.Popen[bytes],
    log_path: Path,
    timeout_s: float,
    console: Console,
) -> tuple[bool, float]:
    """Live view until no job of this run is left; (finished, wall seconds)."""
    started = time.monotonic()
    progress = Progress(
        TextColumn("[bold]receipts done"),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("done", total=len(run.uploads))
    with Live(run.frame(progress, task), console=console, refresh_per_second=4) as live:
        while True:
            if run.jobs_left() == 0:
                wall_s = time.monotonic() - started
                # Stop the workers (they write their last statistics as they go), so
                # that the last frame shows every job they ran.
                stop_process(workers, STOP_GRACE_S)
                live.update(run.frame(progress, task))
                return True, wall_s
            live.update(run.frame(progress, task))
            check_signals()
            if workers.poll() is not None:
                raise RuntimeError(
                    f"the workers exited with {workers.returncode} "
                    f"(log {log_path}: {log_tail(log_path)})"
                )
            if time.monotonic() - started > timeout_s:
                return False, time.monotonic() - started
            time.sleep(POLL_S)


# --- the demo ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run the demo; print the summary. Exit status 0 when every receipt was accounted for."""
    with sigterm_exits():  # SIGTERM unwinds through the finally blocks: workers stopped
        try:
            return _run(args)
        except DemoRefused as exc:
            print(f"receiptq: error: {exc}", file=sys.stderr)
            return 1


def _run(args: argparse.Namespace) -> int:
    extras.require("demo", "receiptq demo")
    console = live_console()
    where = place.choose(getattr(args, "url", None), in_place=args.in_place)
    console.print(where.description, highlight=False)
    try:
        place.check_alone(where, allow_existing_data=args.allow_existing_data)
        summary = _run_in(where, args, console)
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            print_summary(summary)
    finally:
        leave_server(where, console)
    return 0 if summary["accounted"] else 1


def leave_server(where: place.Place, console: Console) -> None:
    """Stop the embedded server if the demo started it; else say it keeps running."""
    if where.started_server:
        embedded.stop()
        console.print("stopped the embedded PostgreSQL, which the demo had started")
    elif where.embedded:
        console.print(
            "the embedded PostgreSQL keeps running (it was running before the demo): "
            "`receiptq db stop` stops it",
            highlight=False,
        )


def _run_in(where: place.Place, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Migrate, clear the previous demo, generate, submit, run the workers; the summary."""
    from receiptq.services.smtp_sink import SmtpSink  # aiosmtpd: the demo extra

    url = where.url
    applied = [name for names in receipts.migrate(url).values() for name in names]
    if applied:
        console.print(f"migrated: {', '.join(applied)}")
    # This process sends through a broker of its own on the demo's URL and queues.
    from receiptq.actors.app import receipt_broker

    run_id = new_run_id()
    folder = receiptq_home() / "demo" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "workers.log"
    broker = receipt_broker(url, queue_prefix=QUEUE_PREFIX)
    sink = SmtpSink()
    try:
        with db.connect(url) as conn:
            run = Run(run_id, where, folder, conn)
            place.clear_previous(conn)
            start = time.perf_counter()
            run.uploads = generate(conn, args.receipts, random.Random(args.seed))
            generate_s = time.perf_counter() - start
            run.stats = RunStats(conn)
            start = time.perf_counter()
            submit_all(broker, conn, run.uploads, run_id)
            submit_s = time.perf_counter() - start
            smtp_port = sink.start()
            console.print(
                f"generated {len(run.uploads)} receipts in {generate_s:.2f} s, submitted in "
                f"{submit_s:.2f} s; SMTP sink on 127.0.0.1:{smtp_port}; starting {args.workers} "
                f"worker processes x {args.threads} threads on queues {', '.join(QUEUES)} "
                f"(log: {log_path})",
                highlight=False,
            )
            workers = start_workers(url, args, smtp_port, log_path)
            try:
                finished, wall_s = watch(run, workers, log_path, args.timeout, console)
            finally:
                stop_process(workers, STOP_GRACE_S)  # graceful: the workers write their stats
                console.line()  # the live view ends mid-line
            summary = summarize(run, sink.count, finished, wall_s)
    finally:
        sink.stop()
        broker.close()
    summary.update(
        database=describe(url),
        workers=args.workers,
        threads=args.threads,
        fail_rate=args.fail_rate,
        run=run_id,
        folder=str(folder),
    )
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def check_truth(conn: psycopg.Connection[Any], uploads: list[Upload]) -> dict[str, int]:
    """How the pipeline's outcome compares with the generated truth."""
    result = {"matched_correctly": 0, "unmatched_correctly": 0, "failed_correctly": 0, "wrong": 0}
    for upload in uploads:
        got = receipts.get_receipt(conn, upload.receipt_id)
        if got["status"] in ("uploaded", "read"):
            continue  # stuck (counted as such) or still in flight: not an outcome
        if upload.expected == "failed":
            ok = got["status"] == "failed"
            key = "failed_correctly"
        elif upload.expected == "unmatched":
            ok = got["status"] in ("unmatched", "notified") and got["transaction_id"] is None
            key = "unmatched_correctly"
        else:
            ok = got["transaction_id"] == upload.transaction_id
            key = "matched_correctly"
        result[key if ok else "wrong"] += 1
    return result


def summarize(run: Run, emails: int, finished: bool, wall_s: float) -> dict[str, Any]:
    """The run's figures, every count from what it submitted."""
    conn, uploads = run.conn, run.uploads
    counts = run.counts()
    stuck = receipts.list_receipts(conn, stuck=True, ids=run.receipt_ids)
    jobless = sum(row["stuck"]["dead_letter_id"] is None for row in stuck)
    processed = counts["notified"] + counts["failed"]
    ocr_hist = run.per_queue().get(QUEUES[0], Totals()).run_hist
    left = run.jobs_left()
    return {
        "receipts": len(uploads),
        "processed": processed,
        "notified": counts["notified"],
        "failed": counts["failed"],
        "stuck": counts["stuck"],
        "statuses": counts,
        "expected_matched": sum(u.expected == "matched" for u in uploads),
        "expected_unmatched": sum(u.expected == "unmatched" for u in uploads),
        "expected_failed": sum(u.expected == "failed" for u in uploads),
        **check_truth(conn, uploads),
        "emails_delivered": emails,
        "jobs_retried": run.stats.total("retried") if run.stats else 0,
        "jobs_postponed": run.stats.total("postponed") if run.stats else 0,
        "dead_letters": sum(place.run_dead_letters(conn, run.run_id).values()),
        "jobs_left": left,
        # Every receipt reached the end of its pipeline, or a dead letter holds its job:
        # none in flight, none lost.
        "accounted": finished and left == 0 and jobless == 0
        and processed + counts["stuck"] == len(uploads),
        "timeout": not finished,
        "wall_s": round(wall_s, 3),
        "throughput_receipts_per_s": round(processed / wall_s, 2) if wall_s > 0 else None,
        "ocr_p50_ms": _round(histogram_percentile(ocr_hist, 0.50)),
        "ocr_p95_ms": _round(histogram_percentile(ocr_hist, 0.95)),
    }  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def print_summary(summary: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    table = Table(title="receiptq demo", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    rows = [
        ("receipts", str(summary["receipts"])),
        ("processed (notified or failed)", str(summary["processed"])),
        ("matched correctly", f"{summary['matched_correctly']} of {summary['expected_matched']}"),
        ("unmatched correctly (no transaction)",
         f"{summary['unmatched_correctly']} of {summary['expected_unmatched']}"),
        ("failed correctly (not an image)",
         f"{summary['failed_correctly']} of {summary['expected_failed']}"),
        ("wrong outcome", str(summary["wrong"])),
        ("stuck (a dead letter, or no job left)", str(summary["stuck"])),
        ("by status", ", ".join(f"{n} {s}" for s, n in summary["statuses"].items() if n)),
        ("emails delivered", str(summary["emails_delivered"])),
        ("jobs retried", str(summary["jobs_retried"])),
        ("jobs postponed (circuit breaker open)", str(summary["jobs_postponed"])),
        ("dead letters", str(summary["dead_letters"])),
        ("wall time (workers started → all done)", f"{summary['wall_s']:.2f} s"),
        ("throughput", f"{summary['throughput_receipts_per_s']} receipts/s"),
        ("OCR run time p50 / p95", f"{ms(summary['ocr_p50_ms'])} / {ms(summary['ocr_p95_ms'])}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print()
    console.print(table)
    if summary["accounted"]:
        console.print("[green]every receipt was accounted for[/green]")
    else:
        why = "timed out" if summary["timeout"] else "counts do not add up"
        console.print(f"[red]not every receipt was accounted for ({why})[/red]")
        print(
            "see `receiptq receipts list --stuck` and `receiptq dead-letter list`", file=sys.stderr
        )
