"""``receiptq dead-letter list|show|retry|purge``: the jobs that failed for good.

``retry`` puts dead letters back in their queues as fresh jobs (a fresh series of
attempts); ``purge`` deletes them. Both refuse ids that are no dead letter,
changing nothing (:mod:`receiptq.dead_letters` does the work).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from receiptq import db, dead_letters
from receiptq.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    add_command,
    command_group,
    error,
    fields_table,
    parse_duration,
    parse_positive_int,
    print_json,
    url,
)
from receiptq.errors import shorten


def call_arguments(args: Any, kwargs: Any) -> str:
    """A job's arguments as one short line: ``42, "eu", lang="de"``."""
    parts = [json.dumps(value) for value in args or ()]
    parts += [f"{key}={json.dumps(value)}" for key, value in (kwargs or {}).items()]
    return shorten(", ".join(parts))


def dead_letters_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Dead letters", title_justify="left")
    headers = ("ID", "Failed at", "Queue", "Actor", "Arguments", "Attempts", "Reason", "Error")
    for header in headers:
        table.add_column(
            header,
            justify="right" if header in ("ID", "Attempts") else "left",
            # Names stay whole; arguments and error share what width is left, cut.
            no_wrap=header in ("ID", "Queue", "Actor"),
            min_width=6 if header in ("Arguments", "Error") else None,
        )
    for row in rows:
        failure = f"{row['error_type'] or ''}: {row['error'] or ''}".strip(": ")
        table.add_row(
            str(row["id"]),
            f"{row['failed_at']:%Y-%m-%d %H:%M:%S}",
            row["queue"],
            row["actor"],
            Text(call_arguments(row["args"], row["kwargs"]), overflow="ellipsis", no_wrap=True),
            str(row["attempts"]),
            row["reason"],
            Text(failure, overflow="ellipsis", no_wrap=True),
        )
    return table


def dead_letter_view(row: dict[str, Any]) -> RenderableType:
    message = row["message"] or {}
    # The retries' copy of a traceback is shown once, below (--json keeps everything).
    options = {k: v for k, v in (message.get("options") or {}).items() if k != "traceback"}
    fields = [(k, v) for k, v in row.items() if k not in ("id", "message", "traceback")]
    fields += [(key, json.dumps(message.get(key))) for key in ("args", "kwargs")]
    table = fields_table(f"Dead letter {row['id']}", [*fields, ("options", json.dumps(options))])
    traceback = Text(row["traceback"] or "(no traceback kept)")
    return Group(table, Text("Traceback", style="bold"), traceback)


def _require(conn: Any, ids: Sequence[int]) -> None:
    missing = dead_letters.missing(conn, ids) if ids else []
    if missing:
        listed = ", ".join(map(str, missing))
        raise CommandError(f"no dead letter with id {listed}; nothing was changed")


def run_list(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        rows = dead_letters.recent(conn, actor=args.actor, queue=args.queue, limit=args.limit)
    if args.json:
        print_json(rows)
    elif rows:
        Console().print(dead_letters_table(rows))
    else:
        Console().print("no dead letters")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        row = dead_letters.get(conn, args.id)
    if row is None:
        raise CommandError(f"no dead letter with id {args.id}")
    if args.json:
        print_json(row)
    else:
        Console().print(dead_letter_view(row))
    return EXIT_OK


def run_retry(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        _require(conn, args.ids)
        moved = dead_letters.retry(conn, ids=args.ids, actor=args.actor, every=args.all)
    skipped = sorted(set(args.ids) - set(moved))
    if args.json:
        print_json({"retried": moved, "count": len(moved), "skipped": skipped})
    else:
        Console().print(f"moved {len(moved)} dead letter(s) back to the queue")
        if skipped:
            ids = ", ".join(map(str, skipped))
            error(f"not retried (their message is queued or running again already): {ids}")
    return EXIT_FAILED if skipped else EXIT_OK


def run_purge(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        _require(conn, args.ids)
        purged = dead_letters.purge(conn, ids=args.ids, every=args.all, older_than=args.older_than)
    if args.json:
        print_json({"purged": purged, "count": len(purged)})
    else:
        Console().print(f"purged {len(purged)} dead letter(s)")
    return EXIT_OK


def _selection(parser: argparse.ArgumentParser) -> Any:
    """IDs or --all (one of them, or a filter the caller adds, is required)."""
    chosen = parser.add_mutually_exclusive_group(required=True)
    chosen.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    chosen.add_argument("--all", action="store_true", help="every dead letter")
    return chosen


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq dead-letter``."""
    group = command_group(subparsers, "dead-letter", "list, show, retry and purge dead letters")
    listing = add_command(group, "list", run_list, "dead letters, newest first")
    listing.add_argument("--actor", help="only this actor's")
    listing.add_argument("--queue", help="only this queue's")
    listing.add_argument("--limit", type=parse_positive_int, default=50, help="default 50")

    show = add_command(group, "show", run_show, "one dead letter and its traceback")
    show.add_argument("id", type=int)

    retry = add_command(group, "retry", run_retry, "queue dead letters again as fresh jobs")
    _selection(retry).add_argument("--actor", help="every dead letter of this actor")

    purge = add_command(group, "purge", run_purge, "delete dead letters for good")
    _selection(purge).add_argument(
        "--older-than",
        type=parse_duration,
        metavar="D",
        help="those that failed more than D ago: 30s, 15m, 2h, 7d",
    )
