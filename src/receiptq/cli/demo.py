"""``receiptq demo``: its options; the demo itself is :mod:`receiptq.tools.demo`."""

from __future__ import annotations

from typing import Any

from receiptq.cli._common import (
    add_command,
    data_options,
    parse_fraction,
    parse_positive_int,
    worker_options,
)
from receiptq.tools.demo import runner

HELP = "run the receipt pipeline end to end on real workers (embedded PostgreSQL by default)"
JSON_HELP = "print the summary as JSON"
DESCRIPTION = (
    "Generate receipt images and bank transactions, submit the receipts, run "
    "real `dramatiq` worker processes (OCR -> matching -> email to a local SMTP sink) with a "
    "live view, and check the outcome against the generated truth. It runs in a database of "
    "its own: without a database URL the embedded PostgreSQL under RECEIPTQ_HOME (default "
    "~/.receiptq; stopped at the end if the demo started it), with one a database named "
    "receiptq_demo on that server (created if missing). It never touches data it did not "
    "create, and refuses a database that holds others' jobs, dead letters or receipts "
    "unless --allow-existing-data. Worker log and summary: RECEIPTQ_HOME/demo/<run>/."
)


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq demo``."""
    parser = add_command(
        subparsers, "demo", runner.run, HELP, [data_options(JSON_HELP)], description=DESCRIPTION
    )
    parser.add_argument(
        "--receipts", type=parse_positive_int, default=40, help="receipts to generate (default 40)"
    )
    worker_options(parser, processes=2, threads=4, flag="--workers")
    parser.add_argument(
        "--fail-rate",
        type=parse_fraction,
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
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="run in the URL's database itself instead of a receiptq_demo database next to it",
    )
    parser.add_argument(
        "--allow-existing-data",
        action="store_true",
        help="run even when the database holds jobs, dead letters or receipts the demo did not "
        "create; it still reads, counts and deletes only its own",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the generated data")
