"""``receiptq breakers list|reset|open``: see and set the shared circuit breakers by hand.

``list`` shows every breaker as ``receiptq status`` does. ``reset`` closes
breakers at once (counters zeroed): workers call the service again at their next
call. ``open NAME --for D`` opens a breaker for a maintenance window: workers
postpone the jobs that need the service (no attempt used) until D has passed,
then the next call is a trial (half-open), as after a real opening. A breaker
exists once a process has called its service (its row in ``receiptq.breakers``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from receiptq import breakers, db
from receiptq.breaker_storage import validate_breaker_name
from receiptq.cli._common import (
    EXIT_OK,
    CommandError,
    add_command,
    arg,
    command_group,
    parse_positive_duration,
    print_json,
    print_lines,
    url,
)
from receiptq.cli.status_views import breakers_table


@contextmanager
def _known_breakers(args: argparse.Namespace) -> Iterator[Any]:
    """A connection; a name without a breaker fails the command (nothing changed)."""
    try:
        with db.connect(url(args)) as conn:
            yield conn
    except breakers.UnknownBreakers as exc:
        raise CommandError(f"{exc} (see `receiptq breakers list`); nothing was changed") from None


def run_list(args: argparse.Namespace) -> int:
    with db.connect(url(args)) as conn:
        listed = breakers.listing(conn)
    if args.json:
        print_json({"breakers": listed})
    elif listed:
        Console().print(breakers_table({"breakers": listed}))
    else:
        Console().print("no circuit breakers (one appears once a process calls its service)")
    return EXIT_OK


def run_reset(args: argparse.Namespace) -> int:
    with _known_breakers(args) as conn:
        rows = breakers.reset(conn, args.names, every=args.all)
    if args.json:
        print_json({"reset": rows, "count": len(rows)})
    else:
        closed = (f"closed {row['name']} (was {row['previous_state']})" for row in rows)
        print_lines(closed, none="no circuit breakers to reset")
    return EXIT_OK


def run_open(args: argparse.Namespace) -> int:
    with _known_breakers(args) as conn:
        breaker = breakers.open_for(conn, args.name, args.duration)
    if args.json:
        print_json(breaker)
    else:
        Console().print(
            f"opened {args.name} until {breaker['closes_at']}: workers postpone its jobs "
            "until then, then the next call is a trial"
        )
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq breakers``."""
    name: Callable[[str], str] = arg(validate_breaker_name)
    group = command_group(subparsers, "breakers", "see, reset or open circuit breakers")
    add_command(group, "list", run_list, "every breaker and its state")

    reset = add_command(
        group, "reset", run_reset, "close breakers now: workers call the service again"
    )
    chosen = reset.add_mutually_exclusive_group(required=True)
    chosen.add_argument("names", nargs="*", type=name, default=[], metavar="NAME")
    chosen.add_argument("--all", action="store_true", help="every breaker")

    force = add_command(
        group,
        "open",
        run_open,
        "open a breaker for a while (maintenance): its jobs wait, no attempt used",
    )
    force.add_argument("name", type=name, metavar="NAME")
    force.add_argument(
        "--for",
        dest="duration",
        type=parse_positive_duration,
        required=True,
        metavar="D",
        help="how long: 30s, 15m, 2h, 1d; then the next call is a trial (half-open)",
    )
