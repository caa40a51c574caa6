"""``receiptq queue``: pause, resume and cap queues (settings that every worker honours at claim time)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from receiptq import config, db


def _settings(url: str) -> list[dict[str, Any]]:
    with db.connect(url) as conn:
        return db.fetch_all(conn, "queue_settings_list")


def run(args: argparse.Namespace) -> int:
    url = config.database_url(args.url)
    if args.action != "list":
        try:
            config.validate_queue_name(args.queue)
        except ValueError as exc:
            Console(stderr=True).print(f"[red]error:[/red] {exc}")
            return 2
        with db.connect(url) as conn:
            if args.action == "pause":
                db.execute(conn, "queue_pause", {"queue": args.queue})
            elif args.action == "resume":
                db.execute(conn, "queue_resume", {"queue": args.queue})
            else:
                cap = None if args.max_running in ("none", "off") else int(args.max_running)
                if cap is not None and cap < 0:
                    Console(stderr=True).print("[red]error:[/red] a cap must be 0 or more")
                    return 2
                db.execute(conn, "queue_set_cap", {"queue": args.queue, "max_running": cap})
    rows = _settings(url)
    if args.json:
        print(json.dumps({r["queue"]: _public(r) for r in rows}, default=str))
        return 0
    table = Table(title="queue settings")
    for column in ("queue", "paused", "max running", "running now"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for r in rows:
        limit = "-" if r["max_running"] is None else str(r["max_running"])
        table.add_row(r["queue"], "yes" if r["paused"] else "no", limit, str(r["running"]))
    Console().print(table)
    return 0


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {"paused": row["paused"], "max_running": row["max_running"], "running": row["running"]}


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
    cap = actions.add_parser("cap", help="at most N of the queue's jobs run at once, cluster-wide")
    cap.add_argument("queue")
    cap.add_argument("max_running", type=_cap, help="a number, or 'none' to remove the cap")
    actions.add_parser("list", help="show the queues' settings")
    for sub in actions.choices.values():
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.add_argument("--url", default=argparse.SUPPRESS, help="PostgreSQL URL")
    parser.set_defaults(func=run)
