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
from datetime import timedelta
from typing import Any

import psycopg
from rich.console import Console

# cli imports this module to register its commands; only cli's attributes are used,
# when a command runs or the parser is built, once both modules are loaded.
from receiptq import cli, db, monitor
from receiptq.middleware.breakers import validate_breaker_name


def _breakers(conn: Any) -> list[dict[str, Any]]:
    return [monitor.breaker_figures(row) for row in db.fetch_all(conn, "breaker_list")]


def run_list(args: argparse.Namespace) -> int:
    with db.connect(cli._url(args)) as conn:
        breakers = _breakers(conn)
    if args.json:
        cli._print_json({"breakers": breakers})
    elif breakers:
        Console().print(cli.breakers_table({"breakers": breakers}))
    else:
        Console().print("no circuit breakers (one appears once a process calls its service)")
    return cli.EXIT_OK


def _unknown(names: list[str]) -> int:
    # Not cli.CommandError: under `python -m receiptq.cli` that class is __main__'s.
    cli._error(
        f"no circuit breaker named {', '.join(names)} (see `receiptq breakers list`); "
        "nothing was changed"
    )
    return cli.EXIT_FAILED


def run_reset(args: argparse.Namespace) -> int:
    names = sorted(set(args.names))
    with db.connect(cli._url(args)) as conn, conn.transaction():
        rows = db.fetch_all(conn, "breaker_reset", {"all": args.all, "names": names})
        unknown = sorted(set(names) - {row["name"] for row in rows})
        if unknown:
            raise psycopg.Rollback()  # reset none of them
    if unknown:
        return _unknown(unknown)
    rows.sort(key=lambda row: row["name"])
    if args.json:
        cli._print_json({"reset": rows, "count": len(rows)})
        return cli.EXIT_OK
    console = Console()
    for row in rows:
        console.print(f"closed {row['name']} (was {row['previous_state']})")
    if not rows:
        console.print("no circuit breakers to reset")
    return cli.EXIT_OK


def run_open(args: argparse.Namespace) -> int:
    params = {"name": args.name, "for_s": args.duration.total_seconds()}
    with db.connect(cli._url(args)) as conn:
        if db.fetch_one(conn, "breaker_force_open", params) is None:
            return _unknown([args.name])
        [breaker] = [b for b in _breakers(conn) if b["name"] == args.name]
    if args.json:
        cli._print_json(breaker)
    else:
        Console().print(
            f"opened {args.name} until {breaker['closes_at']}: workers postpone its jobs "
            "until then, then the next call is a trial"
        )
    return cli.EXIT_OK


def _positive_duration(text: str) -> timedelta:
    duration = cli.parse_duration(text)
    if not duration > timedelta(0):
        raise ValueError(f"duration {text!r} must be more than 0")
    return duration


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq breakers`` on the CLI's subparsers."""
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--url", default=argparse.SUPPRESS, help="PostgreSQL URL")
    data.add_argument("--json", action="store_true", help="print JSON instead of tables")
    name = cli._arg(validate_breaker_name)

    parser = subparsers.add_parser("breakers", help="see, reset or open circuit breakers")
    sub = parser.add_subparsers(dest="breakers_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", parents=[data], help="every breaker and its state")
    listing.set_defaults(func=run_list)

    reset = sub.add_parser(
        "reset", parents=[data], help="close breakers now: workers call the service again"
    )
    chosen = reset.add_mutually_exclusive_group(required=True)
    chosen.add_argument("names", nargs="*", type=name, default=[], metavar="NAME")
    chosen.add_argument("--all", action="store_true", help="every breaker")
    reset.set_defaults(func=run_reset)

    force = sub.add_parser(
        "open",
        parents=[data],
        help="open a breaker for a while (maintenance): its jobs wait, no attempt used",
    )
    force.add_argument("name", type=name, metavar="NAME")
    force.add_argument(
        "--for",
        dest="duration",
        type=cli._arg(_positive_duration),
        required=True,
        metavar="D",
        help="how long: 30s, 15m, 2h, 1d; then the next call is a trial (half-open)",
    )
    force.set_defaults(func=run_open)
