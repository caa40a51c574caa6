"""The ``receiptq`` command: migrate the database, watch the queues, feed and drain them.

Every command that shows data takes ``--json`` (one JSON document on stdout);
otherwise it prints rich tables. Exit codes: 0 done, 1 failed (the database is
unreachable or not migrated, an id does not exist), 2 bad usage (a malformed
argument or setting, e.g. the database URL; nothing was written). Whatever the
command, those failures print one line that says what to do (:func:`main`),
never a traceback.

One module per command group registers its parsers (``add_parser``) and runs its
commands; :mod:`receiptq.cli._common` is what they share. A new command goes in
its group's module, or in a new module listed in :data:`COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import psycopg

from receiptq import __version__, config, settings
from receiptq.cli import (
    bench,
    breakers,
    dead_letters,
    demo,
    enqueue,
    imports,
    process,
    queues,
    receipts,
    smtp_sink,
    status,
    users,
    web,
)
from receiptq.cli import db as db_commands
from receiptq.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    POOLER_HELP,
    URL_HELP,
    CommandError,
    error,
)
from receiptq.db import POOLER_MODES, explain_error
from receiptq.errors import QUOTE_LIMIT, ConfigError, MessageError, ReceiptqError, shorten
from receiptq.extras import MissingExtra

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

#: The command groups, in the order ``receiptq --help`` lists them.
COMMAND_GROUPS = (
    db_commands,
    status,
    dead_letters,
    enqueue,
    process,
    bench,
    demo,
    queues,
    web,
    receipts,
    users,
    smtp_sink,
    breakers,
    imports,
)


class _Parser(argparse.ArgumentParser):
    """argparse, with its own messages (e.g. "invalid int value: '...'") cut short, so a
    100 KB argument is not echoed back whole."""

    def error(self, message: str) -> NoReturn:
        super().error(shorten(message, 2 * QUOTE_LIMIT))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="receiptq", description="Background jobs on PostgreSQL, with Dramatiq.")
    parser.add_argument("--url", default=None, help=URL_HELP)
    parser.add_argument("--pooler", choices=POOLER_MODES, default=None, help=POOLER_HELP)
    parser.add_argument("--version", action="version", version=f"receiptq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def _exit_status(code: Any) -> int:
    return code if isinstance(code, int) else EXIT_OK if code is None else EXIT_USAGE


def _database_hint(args: argparse.Namespace) -> str | None:
    """The URL the command was most likely using, to name the database in an error."""
    try:
        url = getattr(args, "url", None) or config.configured_database_url()
    except ConfigError:
        return None
    return url or config.started_embedded_url()


@contextmanager
def _pooler_setting(mode: str | None) -> Iterator[None]:
    """``--pooler`` as RECEIPTQ_POOLER while the command runs (so that the processes
    it starts, e.g. the demo's workers, inherit it), restored afterwards."""
    if mode is None:
        yield
        return
    with settings.environment_with(RECEIPTQ_POOLER=mode):
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``receiptq`` command; return its exit code.

    A bad setting or argument (ConfigError, MessageError: exit 2), a database that
    is not migrated or cannot be reached (exit 1) print one line that says what to
    do, whichever command met them; other errors keep their traceback (bugs).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return _exit_status(exc.code)
    try:
        if getattr(args, "url", None) is not None:
            config.validate_database_url(args.url, "--url")
        with _pooler_setting(getattr(args, "pooler", None)):
            return int(args.func(args))
    except CommandError as exc:
        error(str(exc))
        return exc.exit_code
    except MissingExtra as exc:
        error(str(exc))
        return EXIT_FAILED
    except (ConfigError, MessageError) as exc:
        error(str(exc))
        return EXIT_USAGE
    except (ReceiptqError, psycopg.Error) as exc:
        line = explain_error(exc, _database_hint(args))
        if line is None:
            raise
        error(line)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
