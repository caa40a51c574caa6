"""``receiptq queue``: pause, resume and cap queues and actors (settings that every
worker honours at claim time)."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from rich.console import Console
from rich.table import Table

from receiptq import config, db, monitor

#: What an actor name may look like (Dramatiq actor names are Python identifiers).
ACTOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}")


def _listing(url: str) -> dict[str, dict[str, Any]]:
    """Every known queue (jobs, dead letters, recent statistics or a setting)."""
    return monitor.queue_list(monitor.snapshot(url))


def _set_cap(conn: Any, args: argparse.Namespace, err: Console) -> int:
    cap = None if args.max_running in ("none", "off") else int(args.max_running)
    if args.actor is None:
        db.execute(conn, "queue_set_cap", {"queue": args.queue, "max_running": cap})
        return 0
    if not ACTOR_NAME.fullmatch(args.actor):
        err.print(f"[red]error:[/red] invalid actor name {args.actor!r}")
        return 2
    params = {"queue": args.queue, "actor": args.actor, "max_running": cap}
    if cap is None:
        db.execute(conn, "actor_cap_clear", params)
        return 0
    seen = db.fetch_one(conn, "actor_seen_on_queue", params)
    if not (seen and seen["seen"]):
        err.print(
            f"[yellow]warning:[/yellow] no job of actor {args.actor!r} was seen on queue "
            f"{args.queue!r} yet; the cap applies only to that actor's jobs on that queue"
        )
    db.execute(conn, "actor_cap_set", params)
    return 0


def run(args: argparse.Namespace) -> int:
    url = config.database_url(args.url)
    err = Console(stderr=True)
    if args.action != "list":
        try:
            config.validate_queue_name(args.queue)
        except ValueError as exc:
            err.print(f"[red]error:[/red] {exc}")
            return 2
        with db.connect(url) as conn:
            if args.action == "pause":
                db.execute(conn, "queue_pause", {"queue": args.queue})
            elif args.action == "resume":
                db.execute(conn, "queue_resume", {"queue": args.queue})
            elif status := _set_cap(conn, args, err):
                return status
    listing = _listing(url)
    if args.json:
        print(json.dumps(listing, default=str))
        return 0
    Console().print(*_listing_tables(listing))
    return 0


#: The columns of the listing's tables after the names: a cap counts the jobs
#: claimed, running (started by a worker thread) and reserved (not started yet).
_COUNT_COLUMNS = ("max running", "running", "reserved")


def _listing_tables(listing: dict[str, dict[str, Any]]) -> list[Table]:
    queues = Table(title="queues", caption="a cap counts running and reserved jobs")
    for column in ("queue", "paused", *_COUNT_COLUMNS):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    caps = Table(title="actor caps")
    for column in ("queue", "actor", *_COUNT_COLUMNS):
        caps.add_column(column, justify="left" if column in ("queue", "actor") else "right")
    for name, q in listing.items():
        queues.add_row(name, "yes" if q["paused"] else "no", *_counts(q))
        for actor, cap in q["actors"].items():
            caps.add_row(name, actor, *_counts(cap))
    if not listing:
        queues.caption = "no queue is known yet: no job, dead letter, statistic or setting"
    return [queues, caps] if caps.row_count else [queues]


def _counts(figures: dict[str, Any]) -> list[str]:
    limit = figures["max_running"]
    return ["-" if limit is None else str(limit), str(figures["running"]), str(figures["reserved"])]


def _cap(text: str) -> str:
    if text in ("none", "off") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(f"invalid cap {text!r}: a whole number, or 'none'")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "queue", help="pause, resume or cap queues (honoured by every worker at claim time)"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("pause", "stop handing out the queue's jobs; sends are still accepted"),
        ("resume", "hand out the queue's jobs again"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("queue")
    cap = actions.add_parser(
        "cap", help="at most N of the queue's (or one actor's) jobs run at once, cluster-wide"
    )
    cap.add_argument("queue")
    cap.add_argument("max_running", type=_cap, help="a number, or 'none' to remove the cap")
    cap.add_argument(
        "--actor", default=None, help="cap only this actor's jobs on the queue (e.g. ocr_receipt)"
    )
    actions.add_parser(
        "list", help="show every known queue with its settings, actor caps and claimed jobs"
    )
    for sub in actions.choices.values():
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.add_argument("--url", default=argparse.SUPPRESS, help="PostgreSQL URL")
    parser.set_defaults(func=run)
