"""``receiptq demo``: the receipt pipeline end to end, on real Dramatiq worker processes.

With no database URL it starts the embedded PostgreSQL (under ``RECEIPTQ_HOME``).
It migrates, clears what a previous demo left (its users, receipts and jobs),
generates N receipt images (Pillow: varied merchants, items, dates, layouts and
fonts, some photographed badly) and the users' bank transactions (most receipts
have theirs, some deliberately none, a few uploads are not images at all),
starts an SMTP sink (aiosmtpd on 127.0.0.1), submits every receipt (image, row
and pipeline in one transaction each, users of mixed tiers), and runs
``dramatiq receiptq.actors`` while a live view shows the receipts and queues.
The summary checks the outcome against the generated truth: receipts processed,
matched correctly, emails delivered, jobs retried, postponed by an open circuit
breaker, dead letters, receipts per status and stuck (nothing will process them:
a job of theirs is a dead letter, or none is left), throughput (``--json``: as
JSON). ``--fail-rate`` makes the OCR and SMTP services fail part of the time.
Exit status 0 when every receipt was accounted for.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
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
from receiptq.bench import check_signals, log_tail, positive_int, sigterm_exits, stop_process
from receiptq.broker import PostgresBroker
from receiptq.config import configured_database_url, database_url, receiptq_home
from receiptq.services import images, receipts
from receiptq.services.faults import FAIL_RATE_VARIABLE
from receiptq.services.smtp_sink import SmtpSink
from receiptq.stats import add_histograms, empty_histogram, histogram_percentile

WORKER_MODULE = "receiptq.actors"
QUEUES = ("ocr", "matching", "email")
ACTORS = ("ocr_receipt", "match_receipt", "send_email")
#: The demo's users live in this email domain (a new demo deletes them first).
DEMO_DOMAIN = "demo.receiptq.test"
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
DEMO_JOB_OPTIONS = {"max_backoff_ms": 2_000}
POLL_S = 0.25
STOP_GRACE_S = 20.0
COUNTERS = ("enqueued", "succeeded", "failed", "retried", "dead_lettered", "postponed")


# --- command line ------------------------------------------------------------------------


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq demo`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="run the receipt pipeline end to end on real workers (embedded PostgreSQL by default)",
        description="Generate receipt images and bank transactions, submit the receipts, run "
        "real `dramatiq` worker processes (OCR -> matching -> email to a local SMTP sink) with a "
        "live view, and check the outcome against the generated truth. Without a database URL "
        "it uses the embedded PostgreSQL under RECEIPTQ_HOME (default ~/.receiptq).",
    )
    parser.add_argument(
        "--receipts", type=positive_int, default=40, help="receipts to generate (default 40)"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=2, help="worker processes (default 2)"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=4, help="threads per worker process (default 4)"
    )
    parser.add_argument(
        "--fail-rate",
        type=_rate,
        default=0.1,
        help="probability that one OCR or SMTP call fails (default 0.1): retries with backoff; "
        "a run of failures opens the service's circuit breaker",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up (exit 1) when the receipts are not all done after this many seconds "
        "(default 300)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the generated data")
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


def describe(url: str) -> str:
    """Where a URL points, without its password."""
    params = conninfo_to_dict(url)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('user') or ''}@{host}:{port}/{params.get('dbname') or ''}".lstrip("@")


# --- the generated world -----------------------------------------------------------------


@dataclass
class Upload:
    """One receipt to submit, and what the pipeline should make of it."""

    user_id: int
    image: bytes
    expected: str  # "matched", "unmatched" or "failed"
    transaction_id: int | None = None
    receipt_id: int = 0


def clear_previous(broker: PostgresBroker, conn: psycopg.Connection[Any]) -> None:
    """Remove a previous demo: its users and their data, its queues' jobs and dead letters."""
    for query in ("app_delete_emails_of_domain", "app_delete_receipts_of_domain",
                  "app_delete_transactions_of_domain", "app_delete_users_of_domain"):  # fmt: skip
        db.execute(conn, query, {"domain": DEMO_DOMAIN})
    for queue in QUEUES:
        broker.flush(queue)
        letters = db.fetch_all(
            conn, "dead_letter_list", {"actor": None, "queue": queue, "limit": None}
        )
        if letters:
            ids = [row["id"] for row in letters]
            db.fetch_all(conn, "dead_letter_purge", {"all": False, "ids": ids, "before": None})


def create_users(conn: psycopg.Connection[Any]) -> list[int]:
    ids = []
    for tier, count in USERS:
        for n in range(1, count + 1):
            ids.append(receipts.add_user(conn, f"{tier}{n}@{DEMO_DOMAIN}", tier)["id"])
    return ids


def generate(conn: psycopg.Connection[Any], count: int, rng: random.Random) -> list[Upload]:
    """Users, receipt images and bank transactions; the truth about each receipt."""
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


def submit_all(broker: PostgresBroker, url: str, uploads: list[Upload]) -> None:
    from receiptq.actors.receipts import submit_receipt

    with db.connect(url) as conn:
        for upload in uploads:
            upload.receipt_id = submit_receipt(
                upload.user_id, upload.image, conn, broker=broker, job_options=DEMO_JOB_OPTIONS
            )
            check_signals()


# --- workers and the live view -----------------------------------------------------------


def start_workers(
    url: str, args: argparse.Namespace, smtp_port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """The stock Dramatiq CLI over receiptq.actors, pointed at the SMTP sink."""
    ocr_threads = max(1, (os.cpu_count() or 1) // args.workers)
    env = dict(
        os.environ,
        RECEIPTQ_DATABASE_URL=url,
        RECEIPTQ_SMTP_HOST="127.0.0.1",
        RECEIPTQ_SMTP_PORT=str(smtp_port),
        RECEIPTQ_SMTP_TLS="none",
        RECEIPTQ_OCR_THREADS=str(ocr_threads),
        RECEIPTQ_BREAKER_OCR_RESET_S=str(BREAKER_RESET_S),
        RECEIPTQ_BREAKER_EMAIL_RESET_S=str(BREAKER_RESET_S),
        RECEIPTQ_POLL_INTERVAL_MS="200",
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


def unfinished_jobs(snap: dict[str, Any]) -> int:
    queues = snap["queues"]
    return sum(int(queues.get(q, {}).get(key, 0)) for q in QUEUES for key in monitor.LIVE_FIELDS)


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


def watch(
    conn: psycopg.Connection[Any],
    workers: subprocess.Popen[bytes],
    log_path: Path,
    run_stats: RunStats,
    total: int,
    timeout_s: float,
    console: Console,
) -> tuple[bool, float]:
    """Live view until no receipt job is left; (finished, wall seconds)."""
    started = time.monotonic()
    progress = Progress(
        TextColumn("[bold]receipts done"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    task = progress.add_task("done", total=total)
    with Live(progress, console=console, refresh_per_second=4) as live:
        while True:
            snap = monitor.snapshot(conn)
            counts = receipts.status_counts(conn)
            progress.update(task, completed=counts["notified"] + counts["failed"])
            live.update(Group(progress, status_table(snap, run_stats.per_queue(), counts)))
            if unfinished_jobs(snap) == 0:
                wall_s = time.monotonic() - started
                # Stop the workers (they write their last statistics as they go), so
                # that the last frame shows every job they ran.
                stop_process(workers, STOP_GRACE_S)
                snap = monitor.snapshot(conn)
                counts = receipts.status_counts(conn)
                live.update(Group(progress, status_table(snap, run_stats.per_queue(), counts)))
                return True, wall_s
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
    # receiptq.actors builds the workers' broker from the environment when imported;
    # this process sends through a broker of its own on the demo's URL.
    os.environ.setdefault("RECEIPTQ_DATABASE_URL", url)
    from receiptq.actors.receipts import receipt_broker

    rng = random.Random(args.seed)
    broker = receipt_broker(url)
    sink = SmtpSink()
    log_path = Path(tempfile.gettempdir()) / "receiptq-demo-dramatiq.log"
    try:
        with db.connect(url) as conn:
            clear_previous(broker, conn)
            start = time.perf_counter()
            uploads = generate(conn, args.receipts, rng)
            generate_s = time.perf_counter() - start
            run_stats = RunStats(conn)
            start = time.perf_counter()
            submit_all(broker, url, uploads)
            submit_s = time.perf_counter() - start
            smtp_port = sink.start()
            console.print(
                f"generated {len(uploads)} receipts in {generate_s:.2f} s, submitted in "
                f"{submit_s:.2f} s; SMTP sink on 127.0.0.1:{smtp_port}; starting {args.workers} "
                f"worker processes x {args.threads} threads (log: {log_path})"
            )
            workers = start_workers(url, args, smtp_port, log_path)
            try:
                finished, wall_s = watch(
                    conn, workers, log_path, run_stats, len(uploads), args.timeout, console
                )
            finally:
                stop_process(workers, STOP_GRACE_S)  # graceful: the workers write their stats
            summary = summarize(conn, run_stats, uploads, sink.count, finished, wall_s)
            summary.update(
                database=describe(url),
                workers=args.workers,
                threads=args.threads,
                fail_rate=args.fail_rate,
            )
    finally:
        sink.stop()
        broker.close()

    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print_summary(summary)
    return 0 if summary["accounted"] else 1


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


def summarize(
    conn: psycopg.Connection[Any],
    run_stats: RunStats,
    uploads: list[Upload],
    emails: int,
    finished: bool,
    wall_s: float,
) -> dict[str, Any]:
    counts = receipts.status_counts(conn)
    snap = monitor.snapshot(conn)
    dead = sum(int(snap["queues"].get(q, {}).get("dead", 0)) for q in QUEUES)
    processed = counts["notified"] + counts["failed"]
    stats = run_stats.per_queue()
    ocr_hist = stats.get("ocr", Totals()).run_hist
    truth = check_truth(conn, uploads)
    left = unfinished_jobs(snap)
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
        **truth,
        "emails_delivered": emails,
        "jobs_retried": run_stats.total("retried"),
        "jobs_postponed": run_stats.total("postponed"),
        "dead_letters": dead,
        "jobs_left": left,
        # No job left: every receipt reached the end of its pipeline or a dead letter.
        "accounted": finished and left == 0,
        "timeout": not finished,
        "wall_s": round(wall_s, 3),
        "throughput_receipts_per_s": round(processed / wall_s, 2) if wall_s > 0 else None,
        "ocr_p50_ms": _round(histogram_percentile(ocr_hist, 0.50)),
        "ocr_p95_ms": _round(histogram_percentile(ocr_hist, 0.95)),
    }


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
    console.print()  # the live view ends without a newline
    console.print(table)
    if summary["accounted"]:
        console.print("[green]every receipt was accounted for[/green]")
    else:
        why = "timed out" if summary["timeout"] else "counts do not add up"
        console.print(f"[red]not every receipt was accounted for ({why})[/red]")
        print(
            "see `receiptq receipts list --stuck` and `receiptq dead-letter list`", file=sys.stderr
        )
