"""``receiptq demo`` (its options: :mod:`receiptq.cli.demo`; the whole story:
:mod:`receiptq.tools.demo`): choose the database, generate and submit, run the
workers under the live view, print the summary."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from receiptq import db, embedded, extras
from receiptq.config import receiptq_home
from receiptq.processes import sigterm_exits, start_dramatiq, stop_process
from receiptq.services import receipts
from receiptq.services.faults import FAIL_RATE_VARIABLE
from receiptq.tools.demo import database as place
from receiptq.tools.demo.database import QUEUE_PREFIX, QUEUES, DemoRefused, describe
from receiptq.tools.demo.figures import RunStats
from receiptq.tools.demo.summary import print_summary, summarize
from receiptq.tools.demo.view import STOP_GRACE_S, Run, live_console, new_run_id, watch
from receiptq.tools.demo.world import generate, submit_all

WORKER_MODULE = "receiptq.actors"
#: Breakers reopen quickly in the demo so that an outage is visible, not endless.
BREAKER_RESET_S = 3


def start_workers(
    url: str, args: argparse.Namespace, smtp_port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """The stock Dramatiq CLI over receiptq.actors, pointed at the SMTP sink."""
    ocr_threads = max(1, (os.cpu_count() or 1) // args.workers)
    env = {
        "RECEIPTQ_SMTP_HOST": "127.0.0.1",
        "RECEIPTQ_SMTP_PORT": str(smtp_port),
        "RECEIPTQ_SMTP_TLS": "none",
        "RECEIPTQ_OCR_THREADS": str(ocr_threads),
        "RECEIPTQ_BREAKER_OCR_RESET_S": str(BREAKER_RESET_S),
        "RECEIPTQ_BREAKER_EMAIL_RESET_S": str(BREAKER_RESET_S),
        "RECEIPTQ_POLL_INTERVAL_MS": "200",
        "RECEIPTQ_RECEIPT_QUEUE_PREFIX": QUEUE_PREFIX,
        FAIL_RATE_VARIABLE: str(args.fail_rate),
    }
    return start_dramatiq(
        WORKER_MODULE,
        url,
        processes=args.workers,
        threads=args.threads,
        queues=QUEUES,
        log_path=log_path,
        env=env,
        unset=("RECEIPTQ_OCR_URL",),
    )


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
