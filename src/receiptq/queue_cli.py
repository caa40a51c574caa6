"""``receiptq queue``: pause, resume and cap queues and actors, and set a queue's
prefetch (settings that every worker honours at claim time)."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from rich.console import Console
from rich.table import Table

from receiptq import config, db

#: What an actor name may look like (Dramatiq actor names are Python identifiers).
ACTOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}")


def _settings(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with db.connect(url) as conn:
        return db.fetch_all(conn, "queue_settings_list"), db.fetch_all(conn, "actor_caps_list")


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
            elif args.action == "prefetch":
                held = None if args.prefetch in ("none", "off") else int(args.prefetch)
                db.execute(conn, "queue_set_prefetch", {"queue": args.queue, "prefetch": held})
            elif status := _set_cap(conn, args, err):
                return status
    queues, actor_caps = _settings(url)
    if args.json:
        listing = {r["queue"]: {**_public(r), "actors": {}} for r in queues}
        for c in actor_caps:
            listing[c["queue"]]["actors"][c["actor"]] = _public_cap(c)
        print(json.dumps(listing, default=str))
        return 0
    table = Table(title="queue settings")
    for column in ("queue", "paused", "max running", "prefetch", "running now"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for r in queues:
        limit = "-" if r["max_running"] is None else str(r["max_running"])
        prefetch = "-" if r["prefetch"] is None else str(r["prefetch"])
        paused = "yes" if r["paused"] else "no"
        table.add_row(r["queue"], paused, limit, prefetch, str(r["running"]))
    Console().print(table)
    if actor_caps:
        table = Table(title="actor caps")
        for column in ("queue", "actor", "max running", "running now"):
            table.add_column(column, justify="right" if "running" in column else "left")
        for c in actor_caps:
            table.add_row(c["queue"], c["actor"], str(c["max_running"]), str(c["running"]))
        Console().print(table)
    return 0


def _public(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("paused", "max_running", "prefetch", "running")
    return {key: row[key] for key in keys}


def _public_cap(row: dict[str, Any]) -> dict[str, Any]:
    return {"max_running": row["max_running"], "running": row["running"]}


def _prefetch(text: str) -> str:
    if text in ("none", "off") or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"invalid prefetch {text!r}: a whole number >= 1, or 'none'")


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
    prefetch = actions.add_parser(
        "prefetch",
        help="each worker process holds at most N of the queue's jobs (and no more than "
        "its threads): for queues whose jobs run long",
    )
    prefetch.add_argument("queue")
    prefetch.add_argument(
        "prefetch", type=_prefetch, help="a number >= 1, or 'none' for Dramatiq's prefetch"
    )
    actions.add_parser("list", help="show the queues' settings and actor caps")
    for sub in actions.choices.values():
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.add_argument("--url", default=argparse.SUPPRESS, help="PostgreSQL URL")
    parser.set_defaults(func=run)
