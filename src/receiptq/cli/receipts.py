"""``receiptq receipts migrate|submit|list|show|retry``: the receipt app's receipts.

``submit`` stores each image with its receipt row and starts its pipeline (OCR ->
matching -> email) in one transaction: either every file is submitted or none
is. ``show`` tells where a receipt is: uploaded, read, matched (with the score and
the transaction) or unmatched (with the reason), notified, or failed (with the
reason), and whether it is stuck: no job of its pipeline is queued or running, so
nothing will move it on (its job is a dead letter, or there is none left).
``list --stuck`` lists those; ``retry`` runs one again. ``migrate`` creates the
receipt app's tables (its own migration chain, after the queue's).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_command,
    arg,
    cell,
    command_group,
    fields_table,
    needs_app_tables,
    parse_positive_int,
    print_json,
    print_lines,
    url,
)
from receiptq.services import receipts

LIST_COLUMNS = ("id", "email", "status", "merchant", "purchased_on", "total", "currency", "score")
SHOW_FIELDS = ("where", "email", "status", "merchant", "purchased_on", "total", "currency",
               "score", "reason", "created_at", "updated_at")  # fmt: skip
#: Where a receipt waits for its email (an SMTP server that is down keeps it there).
EMAIL_PENDING = (
    "email not sent yet: its send_email job is queued or retrying (SMTP server: "
    "RECEIPTQ_SMTP_HOST, RECEIPTQ_SMTP_PORT; `receiptq breakers list` shows an open email breaker)"
)


def run_migrate(args: argparse.Namespace) -> int:
    applied = receipts.migrate(url(args))
    up_to_date = not any(applied.values())
    if args.json:
        print_json({**applied, "up_to_date": up_to_date})
        return EXIT_OK
    lines = (f"applied {chain} {name}" for chain, names in applied.items() for name in names)
    print_lines(lines, none="up to date")
    return EXIT_OK


def _receipt_broker(database: str) -> PostgresBroker:
    """A broker on this command's URL and the receipt app's queues."""
    from receiptq.actors.app import receipt_broker

    return receipt_broker(database)


def run_submit(args: argparse.Namespace) -> int:
    images: list[tuple[str, bytes]] = []
    for path in args.paths:
        try:
            images.append((path, Path(path).read_bytes()))
        except OSError as exc:
            raise CommandError(
                f"cannot read {path}: {exc.strerror or exc}; nothing was submitted", EXIT_USAGE
            ) from None
    database = url(args)
    broker = _receipt_broker(database)
    from receiptq.actors.receipts import submit_receipt

    submitted = []
    try:
        with db.connect(database) as conn, conn.transaction():
            for path, image in images:
                receipt_id = submit_receipt(args.user, image, conn, broker=broker)
                submitted.append({"path": path, "receipt_id": receipt_id})
    except (receipts.UnknownUser, ValueError) as exc:
        raise CommandError(f"{exc}; nothing was submitted") from None
    finally:
        broker.close()
    if args.json:
        print_json({"submitted": submitted})
    else:
        for item in submitted:
            print(f"receipt {item['receipt_id']}: {item['path']}")
    return EXIT_OK


def _status_text(row: dict[str, Any]) -> str:
    """The status, and why a stuck receipt is stuck: "uploaded (stuck: dead letter 12)"."""
    stuck = row["stuck"]
    if stuck is None:
        return str(row["status"])
    if stuck["dead_letter_id"] is None:
        return f"{row['status']} (stuck: no job)"
    return f"{row['status']} (stuck: dead letter {stuck['dead_letter_id']})"


def run_list(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        rows = receipts.list_receipts(conn, status=args.status, stuck=args.stuck, limit=args.limit)
    if args.json:
        print_json({"receipts": rows})
        return EXIT_OK
    title = f"{'stuck ' if args.stuck else ''}receipts ({len(rows)})"
    table = Table(title=title, title_justify="left")
    for column in LIST_COLUMNS:
        table.add_column(column, justify="right" if column in ("id", "total", "score") else "left")
    table.add_column("reason")
    for row in rows:
        cells = [_status_text(row) if c == "status" else cell(row[c]) for c in LIST_COLUMNS]
        table.add_row(*cells, cell(row["reason"]))
    if any(row["stuck"] for row in rows):
        table.caption = (
            "stuck: nothing will process them; `receiptq receipts show ID` says why, "
            "`receiptq dead-letter retry N` runs dead letter N again"
        )
    Console().print(table)
    return EXIT_OK


def where(receipt: dict[str, Any]) -> str:
    """One sentence: where the receipt is in the pipeline."""
    status = receipt["status"]
    stuck = receipt.get("stuck")
    if stuck is not None and stuck["dead_letter_id"] is not None:
        dead = stuck["dead_letter_id"]
        return (
            f"stuck: its {stuck['actor']} job is dead letter {dead} ({stuck['error']}); "
            f"`receiptq dead-letter retry {dead}` runs it again"
        )
    if stuck is not None:
        return (
            f"stuck: no {stuck['actor']} job of it is queued, running or dead-lettered "
            "(its dead letter was purged, or it was never queued), so nothing will process "
            f"it; `receiptq receipts retry {receipt['id']}` starts it again"
        )
    matched = (
        f"matched to transaction {receipt['transaction_id']} "
        f"({receipt['transaction_description']}, {receipt['transaction_amount']} "
        f"{receipt['transaction_currency']} on {receipt['transaction_posted_on']}), "
        f"score {receipt['score']:.2f}"
        if receipt["transaction_id"] is not None
        else f"unmatched: {receipt['reason']}"
    )
    return {
        "uploaded": "uploaded, waiting for OCR",
        "read": "read by OCR, waiting for matching",
        "matched": f"{matched}; {EMAIL_PENDING}",
        "unmatched": f"{matched}; {EMAIL_PENDING}",
        "notified": f"notified: {matched}",
        "failed": f"failed: {receipt['reason']}",
    }[status]


def run_show(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        try:
            receipt = receipts.get_receipt(conn, args.id)
        except receipts.UnknownReceipt as exc:
            raise CommandError(str(exc)) from None
        receipt["stuck"] = receipts.stuck_of(conn, args.id)
    receipt["where"] = where(receipt)
    if args.json:
        print_json(receipt)
        return EXIT_OK
    Console().print(
        fields_table(f"receipt {receipt['id']}", [(k, receipt[k]) for k in SHOW_FIELDS])
    )
    if receipt["raw_text"]:
        Console().print("[dim]OCR text:[/dim]\n" + receipt["raw_text"], markup=True)
    return EXIT_OK


def run_retry(args: argparse.Namespace) -> int:
    broker = _receipt_broker(url(args))
    from receiptq.actors.receipts import retry_receipt

    try:
        done = retry_receipt(args.id, broker=broker)
    except (receipts.UnknownReceipt, receipts.NotStuck) as exc:
        raise CommandError(str(exc)) from None
    finally:
        broker.close()
    if args.json:
        print_json(done)
    elif done["dead_letter_id"] is not None:
        print(
            f"receipt {args.id}: dead letter {done['dead_letter_id']} (its {done['actor']} job) "
            "is back in its queue"
        )
    else:
        print(f"receipt {args.id}: its pipeline starts again at {done['actor']}")
    return EXIT_OK


def _status(text: str) -> str:
    if text not in receipts.STATUSES:
        raise ValueError(f"choose from {', '.join(receipts.STATUSES)}")
    return text


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq receipts``."""
    group = command_group(subparsers, "receipts", "submit receipts and see where they are")
    add_command(
        group,
        "migrate",
        run_migrate,
        "create or upgrade the receipt app's tables (schema receiptq_app), after the "
        "queue's migrations; moves receiptq 0.1's tables out of schema app",
    )
    submit = add_command(
        group,
        "submit",
        needs_app_tables(run_submit),
        "store receipt images and start their pipelines",
    )
    submit.add_argument("paths", nargs="+", metavar="PATH", help="image files")
    submit.add_argument("--user", required=True, help="the user's id or email")

    listing = add_command(group, "list", needs_app_tables(run_list), "receipts, newest first")
    listing.add_argument(
        "--status", type=arg(_status), help=f"one of {', '.join(receipts.STATUSES)}"
    )
    listing.add_argument(
        "--stuck",
        action="store_true",
        help="only the receipts nothing will process (a job is a dead letter, or none is left)",
    )
    listing.add_argument("--limit", type=parse_positive_int, default=100, help="default 100")

    show = add_command(group, "show", needs_app_tables(run_show), "where one receipt is, and why")
    show.add_argument("id", type=parse_positive_int, metavar="ID")

    retry = add_command(
        group,
        "retry",
        needs_app_tables(run_retry),
        "run a stuck receipt again: its dead-lettered job back to its queue, or, with "
        "no job left, its pipeline from the step it waits for (refused when it is not stuck)",
    )
    retry.add_argument("id", type=parse_positive_int, metavar="ID")
