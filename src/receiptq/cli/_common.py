"""What every ``receiptq`` command shares: exit codes, :class:`CommandError`, the
``--url`` and ``--json`` options, the argument validators, JSON and error output and
table cells.

A command module registers its parsers with ``add_parser(subparsers)``; each
command is a function ``(args) -> exit code``. A command that cannot do what was
asked raises :class:`CommandError` (or lets a receiptq error through):
:func:`receiptq.cli.main` prints it as one line.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
from rich.table import Table

from receiptq import config, db, jsonable
from receiptq.errors import shorten

EXIT_OK = 0
#: The command failed: the database is unreachable or not migrated, an id does not exist.
EXIT_FAILED = 1
#: Bad usage: a malformed argument or setting; nothing was written.
EXIT_USAGE = 2

URL_HELP = (
    "PostgreSQL URL (default: RECEIPTQ_DATABASE_URL, then DATABASE_URL, "
    "then the embedded PostgreSQL under RECEIPTQ_HOME)"
)
POOLER_HELP = (
    "how connections reach PostgreSQL: session (direct, or a session pooler) or "
    "transaction (a pooler in transaction mode: no prepared statements, no LISTEN) "
    "(default: RECEIPTQ_POOLER, then session)"
)
JSON_HELP = "print JSON instead of tables"

T = TypeVar("T")
N = TypeVar("N", int, float)


class CommandError(Exception):
    """A command cannot do what was asked; the message is for the operator."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- options every command group uses -------------------------------------------------


def url_option() -> argparse.ArgumentParser:
    """A parent parser with ``--url`` and ``--pooler``. SUPPRESS keeps them from
    overwriting one given before the subcommand (``receiptq --url U status``)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--url", default=argparse.SUPPRESS, help=URL_HELP)
    parent.add_argument(
        "--pooler", choices=db.POOLER_MODES, default=argparse.SUPPRESS, help=POOLER_HELP
    )
    return parent


def json_option(help: str = JSON_HELP) -> argparse.ArgumentParser:
    """A parent parser with ``--json``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help=help)
    return parent


def data_options(json_help: str = JSON_HELP) -> argparse.ArgumentParser:
    """A parent parser with ``--url`` and ``--json``: a command that prints data."""
    return argparse.ArgumentParser(add_help=False, parents=[url_option(), json_option(json_help)])


def worker_options(
    parser: argparse.ArgumentParser, *, processes: int, threads: int, flag: str = "--processes"
) -> None:
    """How many ``dramatiq`` worker processes a command starts (``flag``), and threads each."""
    parser.add_argument(
        flag,
        type=parse_positive_int,
        default=processes,
        help=f"dramatiq worker processes (default {processes})",
    )
    parser.add_argument(
        "--threads",
        type=parse_positive_int,
        default=threads,
        help=f"threads per worker process (default {threads})",
    )


def command_group(
    subparsers: Any, name: str, help: str, dest: str | None = None, metavar: str = "COMMAND"
) -> Any:
    """Register ``receiptq NAME COMMAND ...``; the subparsers its commands go on
    (the chosen command in ``args.<dest>``, by default ``<name>_command``)."""
    parser = subparsers.add_parser(name, help=help)
    dest = dest or f"{name.replace('-', '_')}_command"
    return parser.add_subparsers(dest=dest, required=True, metavar=metavar)


def add_command(
    subparsers: Any,
    name: str,
    run: Callable[[argparse.Namespace], int],
    help: str,
    parents: list[argparse.ArgumentParser] | None = None,
    **settings: Any,
) -> argparse.ArgumentParser:
    """Register the command ``name`` that ``run`` runs; with ``--url`` and ``--json``
    unless ``parents`` says otherwise. ``settings``: more of argparse's (description)."""
    parents = [data_options()] if parents is None else parents
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, parents=parents, help=help, **settings
    )
    parser.set_defaults(func=run)
    return parser


def url(args: argparse.Namespace) -> str:
    """The database URL: ``--url``, else the environment, else the embedded server."""
    return config.database_url(getattr(args, "url", None), setting="--url")


# -- argument validators --------------------------------------------------------------


class BadArgument(argparse.ArgumentTypeError, ValueError):
    """A malformed argument. argparse prints the message of an ArgumentTypeError (it
    hides a ValueError's), and code that calls a validator itself catches ValueError."""


def arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a validator that raises ValueError, whose message
    argparse then prints."""

    @functools.wraps(parse)
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise BadArgument(str(exc)) from None

    return convert


def _number(
    text: str,
    kind: Callable[[str], N],
    fits: Callable[[N], bool],
    expected: str,
    what: str = "number",
) -> N:
    problem = BadArgument(f"invalid {what} {shorten(text)!r}: expected {expected}")
    try:
        value = kind(text)
    except ValueError:
        raise problem from None
    if not fits(value):  # NaN fits no bound
        raise problem
    return value


def parse_positive_int(text: str) -> int:
    return _number(text, int, lambda value: value >= 1, "a whole number >= 1")


def parse_non_negative_int(text: str) -> int:
    return _number(text, int, lambda value: value >= 0, "a whole number >= 0")


def parse_positive_float(text: str) -> float:
    return _number(text, float, lambda value: value > 0, "a number > 0")


def parse_fraction(text: str) -> float:
    return _number(text, float, lambda value: 0 <= value <= 1, "a number between 0 and 1")


def parse_port(text: str) -> int:
    return _number(text, int, lambda value: 1 <= value <= 65535, "1-65535", what="port")


def number_at_least(minimum: float) -> Callable[[str], float]:
    """A validator of numbers >= ``minimum``."""

    def parse_number(text: str) -> float:
        return _number(text, float, lambda value: value >= minimum, f"a number >= {minimum}")

    return parse_number


_DURATION = re.compile(r"(\d+)\s*([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``2h`` or ``7d`` as a timedelta."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise BadArgument(
            f"invalid duration {shorten(text)!r}: use a whole number and a unit s, m, h or d "
            "(e.g. 30s, 15m, 2h, 7d)"
        )
    amount, unit = match.groups()
    try:
        return timedelta(**{_DURATION_UNITS[unit]: int(amount)})
    except OverflowError:
        raise BadArgument(f"duration {shorten(text)!r} is too long") from None


def parse_positive_duration(text: str) -> timedelta:
    duration = parse_duration(text)
    if not duration > timedelta(0):
        raise BadArgument(f"duration {shorten(text)!r} must be more than 0")
    return duration


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadArgument(f"invalid JSON {shorten(text)!r}: {exc}") from None


def parse_json_list(text: str) -> list[Any]:
    """A JSON array (an actor's positional arguments)."""
    value = _parse_json(text)
    if not isinstance(value, list):
        raise BadArgument(f"expected a JSON list such as '[1, \"a\"]', got {shorten(text)!r}")
    return value


def parse_json_object(text: str) -> dict[str, Any]:
    """A JSON object (an actor's keyword arguments)."""
    value = _parse_json(text)
    if not isinstance(value, dict):
        raise BadArgument(f"expected a JSON object such as '{{\"key\": 1}}', got {shorten(text)!r}")
    return value


#: Actor names: Python identifiers, and the dotted or colon-separated names some apps
#: give their actors; 1 to 200 characters. The database's receiptq.enqueue() takes up
#: to 256 (migration 0003), so every name allowed here can be stored; 200 is the
#: stricter of the two limits the commands had, and a name that long is still quoted
#: whole in an error message (errors.QUOTE_LIMIT).
ACTOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}")


def parse_actor_name(text: str) -> str:
    if not ACTOR_NAME.fullmatch(text):
        raise BadArgument(
            f"invalid actor name {shorten(text)!r}: use letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or '_', at most 200 characters"
        )
    return text


parse_queue_name = arg(config.validate_queue_name)


# -- output ---------------------------------------------------------------------------


def print_json(value: Any) -> None:
    """One JSON document on stdout (``--json``)."""
    print(json.dumps(value, indent=2, default=jsonable.default))


def print_json_line(value: Any) -> None:
    """One JSON document on one line, at once (a stream: ``status --watch --json``)."""
    print(json.dumps(value, default=jsonable.default), flush=True)


def error(message: str) -> None:
    print(f"receiptq: error: {message}", file=sys.stderr)


def warn(message: str) -> None:
    print(f"receiptq: warning: {message}", file=sys.stderr)


def print_lines(lines: Iterable[str], *, none: str) -> None:
    """Each line, or ``none`` when there is not one."""
    printed = False
    for line in lines:
        print(line)
        printed = True
    if not printed:
        print(none)


def cell(value: Any, spec: str | None = None, suffix: str = "") -> str:
    """A table cell: "-" for None; a float with two decimals unless ``spec`` says."""
    if value is None:
        return "-"
    if spec is None:
        spec = ".2f" if isinstance(value, float) else ""
    return f"{value:{spec}}{suffix}"


def fields_table(title: str, fields: Iterable[tuple[str, Any]]) -> Table:
    """One record as a two-column table: names in bold, values as :func:`cell`."""
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in fields:
        table.add_row(name, cell(value))
    return table


def needs_app_tables(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A command on the receipt app's tables: where they (or the queue's) are missing,
    say which command creates them."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            # The app's tables or the queue's: `receipts migrate` applies both chains.
            raise CommandError(
                f"the database at {db.describe_database(url(args))} has no receipt app "
                "tables: run `receiptq receipts migrate`"
            ) from None

    return run
