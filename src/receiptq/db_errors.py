"""Database errors as one line that says what to do: what is wrong with the database
at a URL (not reachable, not migrated, no such database or user) and what to check.
:func:`receiptq.db.explain_error` and friends are these (re-exported there): the one
place that classifies them, for the library and every command.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolTimeout

from receiptq.errors import (
    ConfigError,
    DatabaseNotMigrated,
    DatabaseUnreachable,
    ReceiptqError,
    shorten,
)
from receiptq.settings import libpq_environment

__all__ = ["database_error", "describe_database", "explain_error", "explained"]

#: Errors of a database that lacks receiptq's objects, or some of them (partly migrated).
_NOT_MIGRATED = (
    pg_errors.UndefinedTable,
    pg_errors.InvalidSchemaName,
    pg_errors.UndefinedColumn,
    pg_errors.UndefinedFunction,
)
_NO_DATABASE = re.compile(r'database "([^"]*)" does not exist')
_NO_ROLE = re.compile(r'role "([^"]*)" does not exist')
#: (words in libpq's message, what they mean, what to check) for an unreachable server.
_CONNECT_FAILURES = (
    ("Connection refused", "connection refused",
     "check that PostgreSQL is running there and that the URL's host and port are right"),
    ("resolve host", "unknown host",
     "check the host name in the URL"),
    ("translate host name", "unknown host",
     "check the host name in the URL"),
    ("timeout expired", "no answer in time",
     "check the host, the port and any firewall in between"),
    ("No such file or directory", "no server socket there",
     "check that PostgreSQL is running and the URL's host (socket directory) and port"),
    ("authentication failed", "the login was refused",
     "check the user and password in the URL"),
    ("no password supplied", "a password is needed",
     "put the password in the URL"),
)  # fmt: skip


def describe_database(url: str | None) -> str:
    """``HOST:PORT/DBNAME`` of a URL for messages (never the user or the password)."""
    params = {**libpq_environment(), **{k: v for k, v in _conninfo(url).items() if v}}
    host = params.get("host") or params.get("PGHOST") or "localhost"
    port = params.get("port") or params.get("PGPORT") or "5432"
    name = params.get("dbname") or params.get("PGDATABASE") or params.get("user") or "?"
    return f"{host}:{port}/{name}"


def _conninfo(url: str | None) -> dict[str, Any]:
    try:
        return conninfo_to_dict(url or "")
    except psycopg.Error:
        return {}


def database_error(exc: BaseException, url: str | None) -> ReceiptqError | None:
    """The error an operator should see for ``exc``, raised talking to the database
    at ``url``: one line that says what is wrong and what to do. None for errors
    that are not about reaching or migrating the database (bugs keep their traceback)."""
    if isinstance(exc, ReceiptqError):
        return exc
    where = describe_database(url)
    if isinstance(exc, _NOT_MIGRATED):
        return DatabaseNotMigrated(
            f"the database at {where} is not migrated: run `receiptq db migrate`"
        )
    if isinstance(exc, PoolTimeout):
        return DatabaseUnreachable(
            f"no connection to the database at {where} came free in time: check that "
            "PostgreSQL is up and not out of connections (RECEIPTQ_POOL_MAX_SIZE)"
        )
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnreachable(_unreachable(str(exc), where, _conninfo(url)))
    if isinstance(exc, psycopg.ProgrammingError) and "connection info string" in str(exc):
        return ConfigError("the database URL is not a PostgreSQL URL: use postgresql://...")
    return None


def _unreachable(text: str, where: str, params: dict[str, Any]) -> str:
    server = where.rpartition("/")[0]
    if match := _NO_DATABASE.search(text):
        name = shorten(match.group(1), 63)
        return (
            f"there is no database {name} on the PostgreSQL at {server}: create it "
            f"(createdb {name}) or fix the database name in the URL"
        )
    if match := _NO_ROLE.search(text):
        return (
            f"the PostgreSQL at {server} has no user {shorten(match.group(1), 63)}: "
            "create it or fix the user in the URL"
        )
    for words, meaning, advice in _CONNECT_FAILURES:
        if words in text:
            return f"cannot reach the database at {where} ({meaning}): {advice}"
    first_line = shorten(text.strip().splitlines()[0]) if text.strip() else "no details"
    return (
        f"cannot reach the database at {where} ({first_line}): check that PostgreSQL "
        "is running there and the URL"
    )


@contextmanager
def explained(url: str) -> Iterator[None]:
    """Raise the database errors of the block as receiptq's one-line errors
    (DatabaseNotMigrated, DatabaseUnreachable); others pass unchanged. The original
    stays reachable as the error's ``__context__``."""
    try:
        yield
    except psycopg.Error as exc:
        error = database_error(exc, url)
        if error is None:
            raise
        raise error from None


def explain_error(exc: BaseException, url: str | None) -> str | None:
    """The one line to print for ``exc`` (see :func:`database_error`), or None."""
    error = database_error(exc, url)
    return None if error is None else str(error)
