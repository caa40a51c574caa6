"""``receiptq top``: the jobs running now, redrawn live, like ``top``.

One row per running delivery (a worker thread started it): actor, a summary of
its arguments, the worker holding it, how long it has run since it started, and
its attempt. Below, the reserved jobs (claimed by a worker process, waiting for
a free thread), with how long they have waited since the claim. ``--json``
prints one snapshot (:func:`receiptq.monitor.claimed_jobs`) and exits.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import Any

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
        "top", help="the jobs running now and those reserved, live (actor, arguments, worker)"
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


def jobs_table(title: str, jobs: list[dict[str, Any]], elapsed: str) -> Table:
    """One row per job: id, queue, actor, arguments, worker, ``elapsed``, attempt."""
    table = Table(title=title, title_justify="left")
    for header in ("Job", "Queue", "Actor", "Arguments", "Worker", elapsed, "Attempt"):
        table.add_column(
            header, justify="right" if header in ("Job", elapsed, "Attempt") else "left"
        )
    for job in jobs:
        table.add_row(
            str(job["id"]),
            job["queue"],
            job["actor"],
            Text(job["args"], overflow="ellipsis", no_wrap=True),
            job["worker"] or "-",
            f"{job['elapsed_s']:.1f} s",
            str(job["attempt"]),
        )
    return table


def _shown(snap: dict[str, Any], kind: str) -> str:
    total, shown = snap["counts"][kind], len(snap[kind])
    return str(total) if total == shown else f"{shown} of {total}"


def top_view(snap: dict[str, Any]) -> RenderableType:
    running = jobs_table(f"Running jobs ({_shown(snap, 'running')})", snap["running"], "Elapsed")
    if not snap["running"]:
        running.caption = "nothing is running"
    parts: list[RenderableType] = [running]
    if snap["reserved"]:
        title = f"Reserved: claimed by a worker, not started ({_shown(snap, 'reserved')})"
        parts.append(jobs_table(title, snap["reserved"], "Waiting"))
    stamp = datetime.fromisoformat(snap["generated_at"])
    parts.append(Text(f"as of {stamp:%H:%M:%S} · Ctrl-C to quit", style="dim"))
    return Group(*parts)


def run(args: argparse.Namespace) -> int:
    url = config.database_url(getattr(args, "url", None))
    with db.connect(url) as conn:
        snap = monitor.claimed_jobs(conn, args.limit)
        if args.json:
            print(json.dumps(snap, indent=2))
            return EXIT_OK
        try:
            with Live(top_view(snap), console=Console(), auto_refresh=False) as live:
                while True:
                    time.sleep(args.interval_s)
                    live.update(top_view(monitor.claimed_jobs(conn, args.limit)), refresh=True)
        except KeyboardInterrupt:
            pass
    return EXIT_OK
