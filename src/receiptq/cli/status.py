"""``receiptq status`` (queues, throughput, workers, breakers; ``--watch`` redraws)
and ``receiptq top`` (the jobs running and reserved now, live, like ``top``).

``top`` shows one row per running delivery (a worker thread started it): actor, a
summary of its arguments, the worker holding it, how long it has run, its attempt;
below, the reserved jobs (claimed by a worker process, waiting for a free thread)
with how long they have waited since the claim. With ``--json`` both print one
snapshot and exit (``status --watch --json``: one JSON line per redraw).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from typing import Any

import psycopg
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from receiptq import claimed_jobs, db, monitor
from receiptq.cli._common import (
    EXIT_OK,
    add_command,
    data_options,
    parse_positive_float,
    parse_positive_int,
    print_json,
    print_json_line,
    url,
)
from receiptq.cli.status_views import status_view, top_view

#: Jobs ``receiptq top`` lists of each kind (running, reserved) by default.
DEFAULT_TOP_LIMIT = 50


def run_status(args: argparse.Namespace) -> int:
    database = url(args)
    if not args.watch:
        snap = monitor.snapshot(database)
        if args.json:
            print_json(snap)
        else:
            Console().print(status_view(snap))
        return EXIT_OK
    with closing(_watch_frames(database, args.interval_s)) as frames:
        _show(frames, _frame_view, as_json=args.json)
    return EXIT_OK


def _show(
    frames: Iterator[dict[str, Any]],
    view: Callable[[dict[str, Any]], RenderableType],
    *,
    as_json: bool,
) -> None:
    """Draw each frame over the last (JSON: one line each) until Ctrl-C."""
    try:
        if as_json:
            for frame in frames:
                print_json_line(frame)
            return
        with Live(view(next(frames)), console=Console(), auto_refresh=False) as live:
            for frame in frames:
                live.update(view(frame), refresh=True)
    except KeyboardInterrupt:
        pass


def _frame_view(frame: dict[str, Any]) -> RenderableType:
    if "error" in frame:
        return Text(frame["error"], style="red")
    return status_view(frame)


def _pause(seconds: float) -> None:
    """The wait between two frames (Ctrl-C ends it)."""
    time.sleep(seconds)


def _watch_frames(url: str, interval_s: float) -> Generator[dict[str, Any]]:
    """A snapshot every ``interval_s``; a lost connection yields an error frame and is
    opened again at the next tick (the first connection must succeed)."""
    conn: psycopg.Connection[Any] | None = db.connect(url)
    try:
        while True:
            try:
                if conn is None:
                    conn = db.connect(url)
                yield monitor.snapshot(conn)
            except psycopg.OperationalError as exc:
                if conn is not None:
                    conn.close()
                conn = None
                yield {"error": f"{db.explain_error(exc, url)}; retrying"}
            _pause(interval_s)
    finally:
        if conn is not None:
            conn.close()


def run_top(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        if args.json:
            print_json(claimed_jobs.claimed_jobs(conn, args.limit))
            return EXIT_OK
        _show(_top_frames(conn, args.limit, args.interval_s), top_view, as_json=False)
    return EXIT_OK


def _top_frames(conn: Any, limit: int, interval_s: float) -> Iterator[dict[str, Any]]:
    yield claimed_jobs.claimed_jobs(conn, limit)
    while True:
        _pause(interval_s)
        yield claimed_jobs.claimed_jobs(conn, limit)


def _interval_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--interval-s", type=parse_positive_float, default=1.0, help=help)


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq status`` and ``receiptq top``."""
    status = add_command(subparsers, "status", run_status, "queues, throughput and workers")
    status.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    _interval_option(status, "seconds between redraws with --watch (default 1)")

    top = add_command(
        subparsers,
        "top",
        run_top,
        "the jobs running now and those reserved, live (actor, arguments, worker)",
        [data_options("print one snapshot as JSON and exit")],
    )
    _interval_option(top, "seconds between redraws (default 1)")
    top.add_argument(
        "--limit",
        type=parse_positive_int,
        default=DEFAULT_TOP_LIMIT,
        help=f"rows shown (default {DEFAULT_TOP_LIMIT})",
    )
