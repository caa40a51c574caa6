"""``receiptq queue pause|resume|cap|prefetch|reset|list``: settings every worker
honours at claim time, and every known queue.

A setting on a queue never seen (no jobs, dead letters, statistics, settings or
workers) is most likely a typo: it is stored, with a warning. A queue whose
settings are back to the defaults (resumed, uncapped) has no row left, and
``reset`` removes them all, so a mistyped name does not stay listed. Every action
prints the listing afterwards.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from receiptq import db, monitor, queues
from receiptq.cli._common import (
    EXIT_OK,
    BadArgument,
    add_command,
    command_group,
    data_options,
    parse_actor_name,
    parse_non_negative_int,
    parse_positive_int,
    parse_queue_name,
    print_json,
    url,
    warn,
)
from receiptq.errors import shorten

#: The columns of the listing's tables after the names: a cap counts the jobs
#: claimed, running (started by a worker thread) and reserved (not started yet).
_COUNT_COLUMNS = ("max running", "running", "reserved")


def run(args: argparse.Namespace) -> int:
    database = url(args)
    if args.action != "list":
        _apply(database, args)
    listing = monitor.queue_list(monitor.snapshot(database))
    if args.json:
        print_json(listing)
    else:
        Console().print(*_listing_tables(listing))
    return EXIT_OK


def _apply(database: str, args: argparse.Namespace) -> None:
    """Change a queue's settings, warning when the queue was never seen."""
    with db.connect(database) as conn, conn.transaction():
        if args.action == "reset":
            if not queues.reset(conn, args.queue):
                warn(f"queue {args.queue!r} had no settings; nothing was changed")
            return
        seen = queues.seen(conn, args.queue)
        _change(conn, args)
    if not seen:
        warn(
            f"queue {args.queue!r} was never seen (no jobs, dead letters, statistics, "
            "settings or workers): check its name; `receiptq queue reset "
            f"{args.queue}` removes its settings"
        )


def _change(conn: Any, args: argparse.Namespace) -> None:
    if args.action == "pause":
        queues.pause(conn, args.queue)
    elif args.action == "resume":
        queues.resume(conn, args.queue)
    elif args.action == "prefetch":
        queues.set_prefetch(conn, args.queue, args.prefetch)
    elif args.actor is None:
        queues.set_cap(conn, args.queue, args.max_running)
    else:
        if args.max_running is not None and not queues.actor_seen(conn, args.queue, args.actor):
            warn(
                f"no job of actor {args.actor!r} was seen on queue {args.queue!r} yet; the "
                "cap applies only to that actor's jobs on that queue"
            )
        queues.set_actor_cap(conn, args.queue, args.actor, args.max_running)


def _listing_tables(listing: dict[str, dict[str, Any]]) -> list[Table]:
    all_queues = Table(title="queues", caption="a cap counts running and reserved jobs")
    for column in ("queue", "paused", "prefetch", *_COUNT_COLUMNS):
        all_queues.add_column(column, justify="left" if column == "queue" else "right")
    caps = Table(title="actor caps")
    for column in ("queue", "actor", *_COUNT_COLUMNS):
        caps.add_column(column, justify="left" if column in ("queue", "actor") else "right")
    for name, q in listing.items():
        prefetch = "-" if q["prefetch"] is None else str(q["prefetch"])
        all_queues.add_row(name, "yes" if q["paused"] else "no", prefetch, *_counts(q))
        for actor, cap in q["actors"].items():
            caps.add_row(name, actor, *_counts(cap))
    if not listing:
        all_queues.caption = "no queue is known yet: no job, dead letter, statistic or setting"
    return [all_queues, caps] if caps.row_count else [all_queues]


def _counts(figures: dict[str, Any]) -> list[str]:
    limit = figures["max_running"]
    return ["-" if limit is None else str(limit), str(figures["running"]), str(figures["reserved"])]


def _number_or_none(
    parse: Callable[[str], int], what: str, number: str
) -> Callable[[str], int | None]:
    """An argument parser: ``parse``'s number, or ``none`` (``off``) for no setting."""

    def parse_or_none(text: str) -> int | None:
        if text in ("none", "off"):
            return None
        try:
            return parse(text)
        except BadArgument:
            raise BadArgument(
                f"invalid {what} {shorten(text, 80)!r}: {number}, or 'none'"
            ) from None

    return parse_or_none


#: A cap: a whole number, or ``none`` for no cap.
_cap = _number_or_none(parse_non_negative_int, "cap", "a whole number")
#: A queue's prefetch: a whole number >= 1, or ``none`` for Dramatiq's.
_prefetch = _number_or_none(parse_positive_int, "prefetch", "a whole number >= 1")


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq queue``."""
    what = "pause, resume or cap queues (honoured by every worker at claim time)"
    actions = command_group(subparsers, "queue", what, dest="action")
    parents = [data_options("print JSON")]
    for name, text in (
        ("pause", "stop handing out the queue's jobs; sends are still accepted"),
        ("resume", "hand out the queue's jobs again"),
        ("reset", "remove every setting of the queue: pause, cap and actor caps"),
        ("cap", "at most N of the queue's (or one actor's) jobs run at once, cluster-wide"),
        (
            "prefetch",
            "each worker process holds at most N of the queue's jobs (and no more than its "
            "threads): for queues whose jobs run long",
        ),
    ):
        add_command(actions, name, run, text, parents).add_argument("queue", type=parse_queue_name)
    cap = actions.choices["cap"]
    cap.add_argument("max_running", type=_cap, help="a number, or 'none' to remove the cap")
    cap.add_argument(
        "--actor",
        type=parse_actor_name,
        default=None,
        help="cap only this actor's jobs on the queue (e.g. ocr_receipt)",
    )
    actions.choices["prefetch"].add_argument(
        "prefetch", type=_prefetch, help="a number >= 1, or 'none' for Dramatiq's prefetch"
    )
    add_command(actions, "list", run, "every known queue, its settings and actor caps", parents)
