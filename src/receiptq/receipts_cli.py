"""``receiptq receipts migrate|submit|list|show|retry``, ``receiptq users add|list``,
``receiptq transactions add|import|list`` and ``receiptq smtp-sink``.

``receipts submit`` stores each image with its receipt row and starts its
pipeline (OCR -> matching -> email) in one transaction: either every file is
submitted or none is. ``receipts show`` tells where a receipt is: uploaded,
read, matched (with the score and the transaction) or unmatched (with the
reason), notified, or failed (with the reason), and whether it is stuck: no job
of its pipeline is queued or running, so nothing will move it on (its job is a
dead letter, or there is none left). ``receipts list --stuck`` lists those;
``receipts retry`` runs one again. ``receipts migrate`` creates the receipt app's
tables (its own migration chain, after the queue's). ``transactions`` adds the
users' bank transactions that receipts are matched against (one, or a CSV file:
see :mod:`receiptq.services.transactions`); ``smtp-sink`` is a local SMTP server
that prints the emails the pipeline sends.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from receiptq import config, db, extras
from receiptq.services import receipts, transactions
from receiptq.tiers import TierError, TierPolicy

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LIST_COLUMNS = ("id", "email", "status", "merchant", "purchased_on", "total", "currency", "score")


def _url(args: argparse.Namespace) -> str:
    return config.database_url(getattr(args, "url", None))


def _json(value: Any) -> None:
    def default(item: Any) -> Any:
        if isinstance(item, datetime | date):
            return item.isoformat()
        if isinstance(item, Decimal):
            return str(item)
        raise TypeError(f"cannot encode {type(item).__name__}")

    print(json.dumps(value, indent=2, default=default))


def _error(message: str) -> None:
    print(f"receiptq: error: {message}", file=sys.stderr)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# --- migrations ----------------------------------------------------------------------------

#: What `receiptq db migrate` says about the receipt app's chain, which it does not apply.
SEPARATE_CHAIN = (
    "the receipt app's tables (schema receiptq_app) are a separate migration chain, "
    "not applied here: `receiptq receipts migrate`"
)
LEGACY_TABLES = (
    "this database has the receipt app's tables of receiptq 0.1 in schema app: "
    "`receiptq receipts migrate` moves them to schema receiptq_app"
)


def _needs_app_tables(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A command on the receipt app's tables: where they (or the queue's) are missing,
    say which command creates them."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            # The app's tables or the queue's: `receipts migrate` applies both chains.
            where = db.describe_database(_url(args))
            _error(
                f"the database at {where} has no receipt app tables: "
                "run `receiptq receipts migrate`"
            )
            return EXIT_FAILED

    return run


def receipt_chain_notes(url: str) -> list[str]:
    """What `receiptq db migrate` says after applying the queue's chain: the receipt
    app's chain is separate, and (on a database migrated by receiptq 0.1, whose queue
    chain created the app's tables in schema app) how to move those tables."""
    return [SEPARATE_CHAIN, LEGACY_TABLES] if receipts.tables_of_0_1(url) else [SEPARATE_CHAIN]


def run_migrate(args: argparse.Namespace) -> int:
    applied = receipts.migrate(_url(args))
    up_to_date = not any(applied.values())
    if args.json:
        _json({**applied, "up_to_date": up_to_date})
        return EXIT_OK
    for chain, names in applied.items():
        for name in names:
            print(f"applied {chain} {name}")
    if up_to_date:
        print("up to date")
    return EXIT_OK


# --- receipts ------------------------------------------------------------------------------


def run_submit(args: argparse.Namespace) -> int:
    images: list[tuple[str, bytes]] = []
    for path in args.paths:
        try:
            images.append((path, Path(path).read_bytes()))
        except OSError as exc:
            _error(f"cannot read {path}: {exc.strerror or exc}; nothing was submitted")
            return EXIT_USAGE
    url = _url(args)
    # The workers' broker of receiptq.actors is built from the environment on import;
    # sending goes through a broker on this command's URL.
    os.environ.setdefault("RECEIPTQ_DATABASE_URL", url)
    from receiptq.actors.receipts import receipt_broker, submit_receipt

    broker = receipt_broker(url)
    submitted = []
    try:
        with db.connect(url) as conn, conn.transaction():
            for path, image in images:
                receipt_id = submit_receipt(args.user, image, conn, broker=broker)
                submitted.append({"path": path, "receipt_id": receipt_id})
    except (receipts.UnknownUser, ValueError) as exc:
        _error(f"{exc}; nothing was submitted")
        return EXIT_FAILED
    finally:
        broker.close()
    if args.json:
        _json({"submitted": submitted})
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
    with db.connect(_url(args)) as conn:
        rows = receipts.list_receipts(conn, status=args.status, stuck=args.stuck, limit=args.limit)
    if args.json:
        _json({"receipts": rows})
        return EXIT_OK
    title = f"{'stuck ' if args.stuck else ''}receipts ({len(rows)})"
    table = Table(title=title, title_justify="left")
    for column in LIST_COLUMNS:
        table.add_column(column, justify="right" if column in ("id", "total", "score") else "left")
    table.add_column("reason")
    for row in rows:
        cells = [_status_text(row) if c == "status" else _text(row[c]) for c in LIST_COLUMNS]
        table.add_row(*cells, _text(row["reason"]))
    if any(row["stuck"] for row in rows):
        table.caption = (
            "stuck: nothing will process them; `receiptq receipts show ID` says why, "
            "`receiptq dead-letter retry N` runs dead letter N again"
        )
    Console().print(table)
    return EXIT_OK


#: Where a receipt waits for its email (an SMTP server that is down keeps it there).
EMAIL_PENDING = (
    "email not sent yet: its send_email job is queued or retrying (SMTP server: "
    "RECEIPTQ_SMTP_HOST, RECEIPTQ_SMTP_PORT; `receiptq breakers list` shows an open email breaker)"
)


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
    with db.connect(_url(args)) as conn:
        try:
            receipt = receipts.get_receipt(conn, args.id)
        except receipts.UnknownReceipt as exc:
            _error(str(exc))
            return EXIT_FAILED
        receipt["stuck"] = receipts.stuck_of(conn, args.id)
    receipt["where"] = where(receipt)
    if args.json:
        _json(receipt)
        return EXIT_OK
    table = Table(title=f"receipt {receipt['id']}", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    for key in ("where", "email", "status", "merchant", "purchased_on", "total", "currency",
                "score", "reason", "created_at", "updated_at"):  # fmt: skip
        table.add_row(key, _text(receipt[key]))
    Console().print(table)
    if receipt["raw_text"]:
        Console().print("[dim]OCR text:[/dim]\n" + receipt["raw_text"], markup=True)
    return EXIT_OK


def run_retry(args: argparse.Namespace) -> int:
    url = _url(args)
    # The workers' broker of receiptq.actors is built from the environment on import.
    os.environ.setdefault("RECEIPTQ_DATABASE_URL", url)
    from receiptq.actors.receipts import receipt_broker, retry_receipt

    broker = receipt_broker(url)
    try:
        done = retry_receipt(args.id, broker=broker)
    except (receipts.UnknownReceipt, receipts.NotStuck) as exc:
        _error(str(exc))
        return EXIT_FAILED
    finally:
        broker.close()
    if args.json:
        _json(done)
    elif done["dead_letter_id"] is not None:
        print(
            f"receipt {args.id}: dead letter {done['dead_letter_id']} (its {done['actor']} job) "
            "is back in its queue"
        )
    else:
        print(f"receipt {args.id}: its pipeline starts again at {done['actor']}")
    return EXIT_OK


# --- users ---------------------------------------------------------------------------------


def run_user_add(args: argparse.Namespace) -> int:
    try:
        TierPolicy.from_env().get(args.tier)
    except TierError as exc:
        _error(str(exc))
        return EXIT_USAGE
    with db.connect(_url(args)) as conn:
        try:
            user = receipts.add_user(conn, args.email, args.tier)
        except ValueError as exc:
            _error(str(exc))
            return EXIT_USAGE
    if args.json:
        _json(user)
    else:
        print(f"user {user['id']}: {user['email']} ({user['tier']})")
    return EXIT_OK


def run_user_list(args: argparse.Namespace) -> int:
    with db.connect(_url(args)) as conn:
        users = db.fetch_all(conn, "user_list")
    if args.json:
        _json({"users": users})
        return EXIT_OK
    table = Table(title=f"users ({len(users)})", title_justify="left")
    for column in ("id", "email", "tier"):
        table.add_column(column)
    for user in users:
        table.add_row(str(user["id"]), user["email"], user["tier"])
    Console().print(table)
    return EXIT_OK


# --- bank transactions ---------------------------------------------------------------------


def _store_transactions(args: argparse.Namespace, items: list[transactions.NewTransaction]) -> int:
    try:
        with db.connect(_url(args)) as conn, conn.transaction():
            stored = transactions.store(conn, items)
    except receipts.UnknownUser as exc:
        _error(f"{exc}; nothing was stored")
        return EXIT_FAILED
    if args.json:
        _json({"stored": len(stored), "transactions": stored})
        return EXIT_OK
    for row in stored:
        print(
            f"transaction {row['id']}: {row['email']}, {row['posted_on']}, {row['amount']} "
            f"{row['currency']}, {row['description']}"
        )
    return EXIT_OK


def run_transaction_add(args: argparse.Namespace) -> int:
    fields = {"user": args.user, "posted_on": args.date, "amount": args.amount,
              "currency": args.currency, "description": args.description}  # fmt: skip
    try:
        item = transactions.parse(fields)
    except ValueError as exc:
        _error(f"{exc}; nothing was stored")
        return EXIT_USAGE
    return _store_transactions(args, [item])


def run_transaction_import(args: argparse.Namespace) -> int:
    try:
        text = Path(args.path).read_text(encoding="utf-8")
        items = transactions.parse_csv(text)
    except OSError as exc:
        _error(f"cannot read {args.path}: {exc.strerror or exc}; nothing was stored")
        return EXIT_USAGE
    except (ValueError, UnicodeDecodeError) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        _error(f"{args.path}: {why}; nothing was stored (format: `receiptq transactions "
               "import --help`)")  # fmt: skip
        return EXIT_USAGE
    return _store_transactions(args, items)


def run_transaction_list(args: argparse.Namespace) -> int:
    with db.connect(_url(args)) as conn:
        try:
            user_id = receipts.get_user(conn, args.user)["id"] if args.user else None
        except receipts.UnknownUser as exc:
            _error(str(exc))
            return EXIT_FAILED
        rows = db.fetch_all(conn, "transaction_list", {"user_id": user_id, "limit": args.limit})
    if args.json:
        _json({"transactions": rows})
        return EXIT_OK
    table = Table(title=f"bank transactions ({len(rows)})", title_justify="left")
    columns = ("id", "email", "posted_on", "amount", "currency", "description", "receipt_id")
    for column in columns:
        table.add_column(column, justify="right" if column in ("id", "amount") else "left")
    for row in rows:
        table.add_row(*(_text(row[c]) for c in columns))
    Console().print(table)
    return EXIT_OK


# --- a local SMTP server -------------------------------------------------------------------


def run_smtp_sink(args: argparse.Namespace) -> int:
    extras.import_optional("aiosmtpd", "demo", "receiptq smtp-sink")
    from receiptq.services.smtp_sink import SmtpSink

    def show(sender: str, recipients: list[str], message: Any) -> None:
        if args.json:
            line = json.dumps({"from": sender, "to": recipients, "subject": message["subject"]})
        else:
            line = f"to {', '.join(recipients)}: {message['subject']}"
        print(line, flush=True)

    sink = SmtpSink(on_message=show)
    try:
        sink.start(args.host, args.port)
    except (OSError, RuntimeError) as exc:
        _error(f"cannot listen on {args.host}:{args.port}: {exc}; choose another --port")
        return EXIT_FAILED
    print(
        f"SMTP sink on {args.host}:{args.port}, printing each email it receives; point the "
        f"workers at it: RECEIPTQ_SMTP_HOST={args.host} RECEIPTQ_SMTP_PORT={args.port} "
        "(Ctrl-C stops it)",
        file=sys.stderr,
        flush=True,
    )
    try:
        threading.Event().wait()
    finally:
        sink.stop()
    return EXIT_OK


# --- the parser ----------------------------------------------------------------------------


def _status(text: str) -> str:
    if text not in receipts.STATUSES:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(receipts.STATUSES)}")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="PostgreSQL URL")
    common.add_argument("--json", action="store_true", help="print JSON")
    return common


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq receipts`` and ``receiptq users`` on the CLI's subparsers."""
    common = _common()
    parser = subparsers.add_parser("receipts", help="submit receipts and see where they are")
    sub = parser.add_subparsers(dest="receipts_command", required=True, metavar="COMMAND")

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="create or upgrade the receipt app's tables (schema receiptq_app), after the "
        "queue's migrations; moves receiptq 0.1's tables out of schema app",
    )
    migrate.set_defaults(func=run_migrate)

    submit = sub.add_parser(
        "submit", parents=[common], help="store receipt images and start their pipelines"
    )
    submit.add_argument("paths", nargs="+", metavar="PATH", help="image files")
    submit.add_argument("--user", required=True, help="the user's id or email")
    submit.set_defaults(func=_needs_app_tables(run_submit))

    listing = sub.add_parser("list", parents=[common], help="receipts, newest first")
    listing.add_argument("--status", type=_status, help=f"one of {', '.join(receipts.STATUSES)}")
    listing.add_argument(
        "--stuck",
        action="store_true",
        help="only the receipts nothing will process (a job is a dead letter, or none is left)",
    )
    listing.add_argument("--limit", type=_positive, default=100, help="default 100")
    listing.set_defaults(func=_needs_app_tables(run_list))

    show = sub.add_parser("show", parents=[common], help="where one receipt is, and why")
    show.add_argument("id", type=_positive, metavar="ID")
    show.set_defaults(func=_needs_app_tables(run_show))

    retry = sub.add_parser(
        "retry",
        parents=[common],
        help="run a stuck receipt again: its dead-lettered job back to its queue, or, with "
        "no job left, its pipeline from the step it waits for (refused when it is not stuck)",
    )
    retry.add_argument("id", type=_positive, metavar="ID")
    retry.set_defaults(func=_needs_app_tables(run_retry))

    users = subparsers.add_parser("users", help="the receipt app's users")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    add = users_sub.add_parser("add", parents=[common], help="add a user (or change its tier)")
    add.add_argument("email")
    add.add_argument("--tier", default="free", help="enterprise, pro or free (default free)")
    add.set_defaults(func=_needs_app_tables(run_user_add))
    user_list = users_sub.add_parser("list", parents=[common], help="every user")
    user_list.set_defaults(func=_needs_app_tables(run_user_list))
    _add_transactions(subparsers, common)
    sink = subparsers.add_parser(
        "smtp-sink",
        help="a local SMTP server that prints the emails it receives (for trying the pipeline)",
    )
    sink.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    sink.add_argument("--port", type=_positive, default=8025, help="default 8025")
    sink.add_argument("--json", action="store_true", help="one JSON object per email")
    sink.set_defaults(func=run_smtp_sink)


CSV_HELP = (
    "A CSV file with the header user,posted_on,amount,currency,description (any order, "
    "UTF-8) and one transaction per line, e.g. `ana@example.com,2026-03-14,12.50,EUR,CARD "
    "CORNER CAFE`: user = email or id, posted_on = YYYY-MM-DD, amount = digits with a dot "
    "and at most 2 decimals, currency = 3 letters, description = the bank's text. Every "
    "line is stored, or none (the first bad line is named)."
)


def _add_transactions(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "transactions", help="the users' bank transactions, which receipts are matched against"
    )
    sub = parser.add_subparsers(dest="transactions_command", required=True, metavar="COMMAND")
    add = sub.add_parser("add", parents=[common], help="add one bank transaction")
    add.add_argument("--user", required=True, help="the user's email or id")
    add.add_argument("--date", required=True, help="when the bank posted it: YYYY-MM-DD")
    add.add_argument("--amount", required=True, help="e.g. 12.50 (negative for a refund)")
    add.add_argument("--currency", required=True, help="3 letters, e.g. EUR")
    add.add_argument("--description", required=True, help="the bank's text, e.g. CARD CAFE")
    add.set_defaults(func=_needs_app_tables(run_transaction_add))
    load = sub.add_parser(
        "import", parents=[common], help="add the transactions of a CSV file", description=CSV_HELP
    )
    load.add_argument("path", metavar="FILE.csv")
    load.set_defaults(func=_needs_app_tables(run_transaction_import))
    listing = sub.add_parser("list", parents=[common], help="bank transactions, newest first")
    listing.add_argument("--user", help="only this user's (email or id)")
    listing.add_argument("--limit", type=_positive, default=100, help="default 100")
    listing.set_defaults(func=_needs_app_tables(run_transaction_list))
