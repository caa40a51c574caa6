"""``receiptq queue``: pause, resume, cap and reset queues and actors, set a queue's
prefetch (settings that every worker honours at claim time), and list every known
queue.

A setting on a queue never seen (no jobs, dead letters, statistics, settings or
workers) is most likely a typo: it is stored, with a warning. A queue whose
settings are back to the defaults (resumed, uncapped) has no row left, and
``reset`` removes them all, so a mistyped name does not stay listed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from receiptq import config, db, monitor
from receiptq.errors import shorten

#: What an actor name may look like (Dramatiq actor names are Python identifiers).
ACTOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}")

EXIT_USAGE = 2


def _say(kind: str, message: str) -> None:
    print(f"receiptq: {kind}: {message}", file=sys.stderr)


def _listing(url: str) -> dict[str, dict[str, Any]]:
    """Every known queue (jobs, dead letters, recent statistics or a setting)."""
    return monitor.queue_list(monitor.snapshot(url))


def _set_cap(conn: Any, args: argparse.Namespace) -> int:
    cap = None if args.max_running in ("none", "off") else int(args.max_running)
    if args.actor is None:
        db.execute(conn, "queue_set_cap", {"queue": args.queue, "max_running": cap})
        return 0
    if not ACTOR_NAME.fullmatch(args.actor):
        _say("error", f"invalid actor name {shorten(args.actor, 80)!r}")
        return EXIT_USAGE
    params = {"queue": args.queue, "actor": args.actor, "max_running": cap}
    if cap is None:
        db.execute(conn, "actor_cap_clear", params)
        return 0
    seen = db.fetch_one(conn, "actor_seen_on_queue", params)
    if not (seen and seen["seen"]):
        _say(
            "warning",
            f"no job of actor {args.actor!r} was seen on queue {args.queue!r} yet; the cap "
            "applies only to that actor's jobs on that queue",
        )
    db.execute(conn, "actor_cap_set", params)
    return 0


def _change(conn: Any, args: argparse.Namespace) -> int:
    """Apply a pause, resume, cap or prefetch; an exit status (0: done)."""
    params = {"queue": args.queue}
    if args.action == "pause":
        db.execute(conn, "queue_pause", params)
    elif args.action == "resume":
        db.execute(conn, "queue_resume", params)
    elif args.action == "prefetch":
        held = None if args.prefetch in ("none", "off") else int(args.prefetch)
        db.execute(conn, "queue_set_prefetch", {**params, "prefetch": held})
    elif status := _set_cap(conn, args):
        return status
    db.execute(conn, "queue_settings_prune", params)
    return 0


def _reset(conn: Any, queue: str) -> None:
    removed = db.fetch_one(conn, "queue_reset", {"queue": queue})
    if not (removed and (removed["settings"] or removed["actor_caps"])):
        _say("warning", f"queue {queue!r} had no settings; nothing was changed")


def _apply(url: str, args: argparse.Namespace) -> int:
    """Change a queue's settings, warning when the queue was never seen."""
    with db.connect(url) as conn, conn.transaction():
        if args.action == "reset":
            _reset(conn, args.queue)
            return 0
        row = db.fetch_one(conn, "queue_seen", {"queue": args.queue})
        if status := _change(conn, args):
            return status
    if not (row and row["seen"]):
        _say(
            "warning",
            f"queue {args.queue!r} was never seen (no jobs, dead letters, statistics, "
            "settings or workers): check its name; `receiptq queue reset "
            f"{args.queue}` removes its settings",
        )
    return 0


def run(args: argparse.Namespace) -> int:
    url = config.database_url(args.url)
    if args.action != "list":
        try:
            config.validate_queue_name(args.queue)
        except ValueError as exc:
            _say("error", str(exc))
            return EXIT_USAGE
        if status := _apply(url, args):
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
    for column in ("queue", "paused", "prefetch", *_COUNT_COLUMNS):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    caps = Table(title="actor caps")
    for column in ("queue", "actor", *_COUNT_COLUMNS):
        caps.add_column(column, justify="left" if column in ("queue", "actor") else "right")
    for name, q in listing.items():
        prefetch = "-" if q["prefetch"] is None else str(q["prefetch"])
        queues.add_row(name, "yes" if q["paused"] else "no", prefetch, *_counts(q))
        for actor, cap in q["actors"].items():
            caps.add_row(name, actor, *_counts(cap))
    if not listing:
        queues.caption = "no queue is known yet: no job, dead letter, statistic or setting"
    return [queues, caps] if caps.row_count else [queues]


def _counts(figures: dict[str, Any]) -> list[str]:
    limit = figures["max_running"]
    return ["-" if limit is None else str(limit), str(figures["running"]), str(figures["reserved"])]


def _prefetch(text: str) -> str:
    if text in ("none", "off") or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"invalid prefetch {text!r}: a whole number >= 1, or 'none'")


def _cap(text: str) -> str:
    if text in ("none", "off") or text.isdigit():
        return text
    raise argparse.ArgumentTypeError(
        f"invalid cap {shorten(text, 80)!r}: a whole number, or 'none'"
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "queue", help="pause, resume or cap queues (honoured by every worker at claim time)"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("pause", "stop handing out the queue's jobs; sends are still accepted"),
        ("resume", "hand out the queue's jobs again"),
        ("reset", "remove every setting of the queue: pause, cap and actor caps"),
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
    actions.add_parser("list", help="every known queue, its settings and actor caps")
    for sub in actions.choices.values():
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.add_argument("--url", default=argparse.SUPPRESS, help="PostgreSQL URL")
    parser.set_defaults(func=run)
