"""``receiptq db migrate|stop``: the queue's schema, and the embedded PostgreSQL."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from receiptq import db, embedded
from receiptq.cli._common import (
    EXIT_OK,
    add_command,
    command_group,
    json_option,
    print_json,
    print_lines,
    url,
)
from receiptq.services import receipts

#: What `receiptq db migrate` says about the receipt app's chain, which it does not apply.
SEPARATE_CHAIN = (
    "the receipt app's tables (schema receiptq_app) are a separate migration chain, "
    "not applied here: `receiptq receipts migrate`"
)
LEGACY_TABLES = (
    "this database has the receipt app's tables of receiptq 0.1 in schema app: "
    "`receiptq receipts migrate` moves them to schema receiptq_app"
)


def receipt_chain_notes(url: str) -> list[str]:
    """What `receiptq db migrate` says after applying the queue's chain: the receipt
    app's chain is separate, and (on a database migrated by receiptq 0.1, whose queue
    chain created the app's tables in schema app) how to move those tables."""
    return [SEPARATE_CHAIN, LEGACY_TABLES] if receipts.tables_of_0_1(url) else [SEPARATE_CHAIN]


def run_migrate(args: argparse.Namespace) -> int:
    database = url(args)
    applied = db.migrate(database)
    notes = receipt_chain_notes(database)
    if args.json:
        print_json({"applied": applied, "up_to_date": not applied, "notes": notes})
        return EXIT_OK
    print_lines((f"applied {name}" for name in applied), none="up to date")
    console = Console()
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    return EXIT_OK


def run_stop(args: argparse.Namespace) -> int:
    pid = embedded.stop()
    folder = embedded.data_dir()
    if args.json:
        print_json({"stopped": pid is not None, "pid": pid, "data_dir": str(folder)})
    elif pid is None:
        print(f"the embedded PostgreSQL ({folder}) is not running")
    else:
        print(f"stopped the embedded PostgreSQL (pid {pid}, data in {folder})")
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq db``."""
    group = command_group(subparsers, "db", "database schema")
    add_command(group, "migrate", run_migrate, "apply the migrations not applied yet (idempotent)")
    add_command(
        group,
        "stop",
        run_stop,
        "stop the embedded PostgreSQL under RECEIPTQ_HOME (started when no URL is set; "
        "never a server given by URL)",
        parents=[json_option("print JSON")],
    )
