"""``receiptq top``: the jobs running now, redrawn live, like ``top``.

One row per running delivery: actor, a summary of its arguments, the worker
holding it, how long it has run, and its attempt. ``--json`` prints one
snapshot and exits.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import Any

import psycopg
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from receiptq import config, db, monitor

EXIT_OK = 0
EXIT_FAILED = 1
DEFAULT_LIMIT = 50


def _positive(kind: type[int] | type[float]) -> Any:
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
        return value

    return convert


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq top`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "top", help="the jobs running now, live (actor, arguments, worker, elapsed)"
    )
    parser.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    parser.add_argument(
        "--interval-s", type=_positive(float), default=1.0, help="seconds between redraws"
    )
    parser.add_argument(
        "--limit", type=_positive(int), default=DEFAULT_LIMIT, help="rows shown (default 50)"
    )
    parser.add_argument(
        "--url", default=argparse.SUPPRESS, help="PostgreSQL URL (default: as configured)"
    )
    parser.set_defaults(func=run)


def top_snapshot(conn: psycopg.Connection[Any], limit: int) -> dict[str, Any]:
    """What ``top`` shows: ``{"running": [...], "generated_at"}``."""
    with conn.transaction():
        now = db.fetch_one(conn, "db_now")
        running = monitor.running_jobs(conn, limit)
    assert now is not None
    return {"running": running, "generated_at": now["now"].isoformat()}


def top_view(snap: dict[str, Any]) -> RenderableType:
    table = Table(title=f"Running jobs ({len(snap['running'])})", title_justify="left")
    for header in ("Job", "Queue", "Actor", "Arguments", "Worker", "Elapsed", "Attempt"):
        table.add_column(
            header, justify="right" if header in ("Job", "Elapsed", "Attempt") else "left"
        )
    for job in snap["running"]:
        table.add_row(
            str(job["id"]),
            job["queue"],
            job["actor"],
            Text(job["args"], overflow="ellipsis", no_wrap=True),
            job["worker"] or "-",
            f"{job['elapsed_s']:.1f} s",
            str(job["attempt"]),
        )
    if not snap["running"]:
        table.caption = "nothing is running"
    stamp = datetime.fromisoformat(snap["generated_at"])
    return Group(table, Text(f"as of {stamp:%H:%M:%S} · Ctrl-C to quit", style="dim"))


def run(args: argparse.Namespace) -> int:
    url = config.database_url(getattr(args, "url", None))
    with db.connect(url) as conn:
        snap = top_snapshot(conn, args.limit)
        if args.json:
            print(json.dumps(snap, indent=2))
            return EXIT_OK
        try:
            with Live(top_view(snap), console=Console(), auto_refresh=False) as live:
                while True:
                    time.sleep(args.interval_s)
                    live.update(top_view(top_snapshot(conn, args.limit)), refresh=True)
        except KeyboardInterrupt:
            pass
    return EXIT_OK
