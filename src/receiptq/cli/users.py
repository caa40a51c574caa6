"""``receiptq users add|list`` and ``receiptq transactions add|import|list``: the
receipt app's users and their bank transactions, which receipts are matched against
(one, or a CSV file: see :mod:`receiptq.services.transactions`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from receiptq import db
from receiptq.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_command,
    cell,
    command_group,
    needs_app_tables,
    parse_positive_int,
    print_json,
    url,
)
from receiptq.services import receipts, transactions
from receiptq.tiers import TierError, TierPolicy

TRANSACTION_COLUMNS = ("id", "email", "posted_on", "amount", "currency", "description",
                       "receipt_id")  # fmt: skip
CSV_HELP = (
    "A CSV file with the header user,posted_on,amount,currency,description (any order, "
    "UTF-8) and one transaction per line, e.g. `ana@example.com,2026-03-14,12.50,EUR,CARD "
    "CORNER CAFE`: user = email or id, posted_on = YYYY-MM-DD, amount = digits with a dot "
    "and at most 2 decimals, currency = 3 letters, description = the bank's text. Every "
    "line is stored, or none (the first bad line is named)."
)


def _table(
    title: str, columns: tuple[str, ...], rows: list[dict[str, Any]], right: tuple[str, ...] = ()
) -> Table:
    """Rows under a title that counts them; the ``right`` columns right-justified."""
    table = Table(title=f"{title} ({len(rows)})", title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    for row in rows:
        table.add_row(*(cell(row[column]) for column in columns))
    return table


def run_user_add(args: argparse.Namespace) -> int:
    try:
        TierPolicy.from_env().get(args.tier)
    except TierError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    with db.connect(url(args)) as conn:
        try:
            user = receipts.add_user(conn, args.email, args.tier)
        except ValueError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    if args.json:
        print_json(user)
    else:
        print(f"user {user['id']}: {user['email']} ({user['tier']})")
    return EXIT_OK


def run_user_list(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        users = db.fetch_all(conn, "user_list")
    if args.json:
        print_json({"users": users})
    else:
        Console().print(_table("users", ("id", "email", "tier"), users))
    return EXIT_OK


def _store_transactions(args: argparse.Namespace, items: list[transactions.NewTransaction]) -> int:
    try:
        with db.connect(url(args)) as conn, conn.transaction():
            stored = transactions.store(conn, items)
    except receipts.UnknownUser as exc:
        raise CommandError(f"{exc}; nothing was stored") from None
    if args.json:
        print_json({"stored": len(stored), "transactions": stored})
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
        raise CommandError(f"{exc}; nothing was stored", EXIT_USAGE) from None
    return _store_transactions(args, [item])


def run_transaction_import(args: argparse.Namespace) -> int:
    try:
        text = Path(args.path).read_text(encoding="utf-8")
        items = transactions.parse_csv(text)
    except OSError as exc:
        raise CommandError(
            f"cannot read {args.path}: {exc.strerror or exc}; nothing was stored", EXIT_USAGE
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise CommandError(
            f"{args.path}: {why}; nothing was stored (format: `receiptq transactions import "
            "--help`)",
            EXIT_USAGE,
        ) from None
    return _store_transactions(args, items)


def run_transaction_list(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        try:
            user_id = receipts.get_user(conn, args.user)["id"] if args.user else None
        except receipts.UnknownUser as exc:
            raise CommandError(str(exc)) from None
        rows = db.fetch_all(conn, "transaction_list", {"user_id": user_id, "limit": args.limit})
    if args.json:
        print_json({"transactions": rows})
    else:
        Console().print(_table("bank transactions", TRANSACTION_COLUMNS, rows, ("id", "amount")))
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq users`` and ``receiptq transactions``."""
    users = command_group(subparsers, "users", "the receipt app's users")
    add = add_command(
        users, "add", needs_app_tables(run_user_add), "add a user (or change its tier)"
    )
    add.add_argument("email")
    add.add_argument("--tier", default="free", help="enterprise, pro or free (default free)")
    add_command(users, "list", needs_app_tables(run_user_list), "every user")

    bank = command_group(
        subparsers,
        "transactions",
        "the users' bank transactions, which receipts are matched against",
    )
    one = add_command(
        bank, "add", needs_app_tables(run_transaction_add), "add one bank transaction"
    )
    one.add_argument("--user", required=True, help="the user's email or id")
    one.add_argument("--date", required=True, help="when the bank posted it: YYYY-MM-DD")
    one.add_argument("--amount", required=True, help="e.g. 12.50 (negative for a refund)")
    one.add_argument("--currency", required=True, help="3 letters, e.g. EUR")
    one.add_argument("--description", required=True, help="the bank's text, e.g. CARD CAFE")
    load = add_command(
        bank,
        "import",
        needs_app_tables(run_transaction_import),
        "add the transactions of a CSV file",
        description=CSV_HELP,
    )
    load.add_argument("path", metavar="FILE.csv")
    listing = add_command(
        bank, "list", needs_app_tables(run_transaction_list), "bank transactions, newest first"
    )
    listing.add_argument("--user", help="only this user's (email or id)")
    listing.add_argument("--limit", type=parse_positive_int, default=100, help="default 100")
