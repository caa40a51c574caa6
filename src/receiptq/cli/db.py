"""``receiptq db migrate|sql|grant|stop``: the queue's schema, its migrations as plain
SQL for a platform's tool, least-privilege roles, and the embedded PostgreSQL."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from receiptq import config, db, embedded, grants, migration_sql
from receiptq.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_command,
    command_group,
    json_option,
    print_json,
    print_lines,
    url,
    url_option,
)
from receiptq.errors import ConfigError
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


CHAINS = {"queue": db.QUEUE_CHAIN, "receipts": db.RECEIPTS_CHAIN}


def run_sql(args: argparse.Namespace) -> int:
    chain = CHAINS[args.chain]
    database = None if args.all else getattr(args, "url", None) or config.configured_database_url()
    migrations = migration_sql.pending(database, chain)
    if args.write is None:
        print(migration_sql.script(chain, migrations), end="")
        return EXIT_OK
    try:
        written = migration_sql.write_files(Path(args.write), chain, migrations)
    except migration_sql.FileConflict as exc:
        raise CommandError(f"{exc}: move it away, or write to another folder") from None
    except OSError as exc:
        raise CommandError(f"cannot write to {args.write}: {exc.strerror or exc}") from None
    print_lines(
        (f"{'wrote' if new else 'unchanged'} {path}" for path, new in written),
        none=f"no {chain.name} migration to write",
    )
    return EXIT_OK


def run_grant(args: argparse.Namespace) -> int:
    try:
        grants.validate_role(args.role)
    except ConfigError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    if args.print:
        print(grants.grant_script(args.role, args.kind), end="")
        return EXIT_OK
    count = grants.grant(url(args), args.role, args.kind)
    print(f"granted {args.role} the --{args.kind} privileges ({count} statements)")
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
    sql_command = add_command(
        group,
        "sql",
        run_sql,
        "print the migrations not applied yet as one SQL script (recorded as applied, so "
        "`db migrate` skips them afterwards); every migration without a URL",
        parents=[url_option()],
    )
    sql_command.add_argument(
        "--all", action="store_true", help="every migration, whatever the database holds"
    )
    sql_command.add_argument(
        "--write",
        metavar="DIR",
        help="write one file per migration into DIR (e.g. supabase/migrations), named "
        "<YYYYMMDDHHMMSS>_receiptq_<migration>.sql; never overwrites a file that differs",
    )
    sql_command.add_argument(
        "--chain",
        choices=sorted(CHAINS),
        default="queue",
        help="the queue's migrations (default) or the receipt app's",
    )
    grant_command = add_command(
        group,
        "grant",
        run_grant,
        "grant an existing role what workers, a sending app or a dashboard need "
        "(receiptq's objects only)",
        parents=[url_option()],
    )
    grant_command.add_argument("role", help="the role to grant to (it must exist)")
    kinds = grant_command.add_mutually_exclusive_group(required=True)
    for kind, what in grants.ROLE_KINDS.items():
        kinds.add_argument(
            f"--{kind}", dest="kind", action="store_const", const=kind, help=f"for {what}"
        )
    grant_command.add_argument(
        "--print", action="store_true", help="print the GRANT statements instead of running them"
    )
    add_command(
        group,
        "stop",
        run_stop,
        "stop the embedded PostgreSQL under RECEIPTQ_HOME (started when no URL is set; "
        "never a server given by URL)",
        parents=[json_option("print JSON")],
    )
