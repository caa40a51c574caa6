"""Settings read from the environment, and the embedded PostgreSQL fallback.

Every setting is a ``RECEIPTQ_*`` environment variable with its unit in the
name. The database URL falls back from ``RECEIPTQ_DATABASE_URL`` to
``DATABASE_URL`` to an embedded PostgreSQL (the ``pgserver`` package) whose
data directory lives under ``RECEIPTQ_HOME`` (default ``~/.receiptq``).
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from receiptq.errors import ConfigError, shorten

__all__ = ["ConfigError", "database_url", "env_float", "env_int", "validate_database_url"]

from receiptq.extras import import_optional

#: Environment variables consulted for the database URL, in order.
DATABASE_URL_VARIABLES = ("RECEIPTQ_DATABASE_URL", "DATABASE_URL")

#: What a database URL looks like (error messages show it).
URL_EXAMPLE = "postgresql://USER:PASSWORD@HOST:5432/DBNAME"
#: URL schemes libpq reads as PostgreSQL.
POSTGRES_SCHEMES = ("postgresql", "postgres")

#: Queue names: Dramatiq's own rule, bounded in length so they fit an index nicely.
QUEUE_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,127}$")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: The password in a URL's user info, or in a key=value string, hidden in messages.
_URL_PASSWORD = re.compile(r"((?:^|[/\s])[^:/@\s]*:)\S*@")
_KEY_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
#: What needs the ``demo`` extra's pgserver, said when it is missing.
EMBEDDED_NEEDS = (
    "no database URL is set (RECEIPTQ_DATABASE_URL, DATABASE_URL or --url), and the "
    "embedded PostgreSQL used then"
)

_embedded_lock = threading.Lock()
_embedded_url: str | None = None


def env_int(name: str, default: int) -> int:
    """Read an integer setting; a malformed value is a clear error, not a silent default."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def receiptq_home() -> Path:
    return Path(os.environ.get("RECEIPTQ_HOME", "~/.receiptq")).expanduser()


def configured_database_url() -> str | None:
    """The URL from the environment, or None when none is set (an empty variable is
    unset); ConfigError naming the variable when its value is not a PostgreSQL URL."""
    for name in DATABASE_URL_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return validate_database_url(value, name)
    return None


def database_url(url: str | None = None, *, setting: str = "the database URL") -> str:
    """Resolve the database URL: the argument, the environment, else the embedded server.

    A given ``url`` must be a PostgreSQL URL (an empty one too is a ConfigError
    naming ``setting``, not a request for the embedded server).
    """
    if url is not None:
        return validate_database_url(url, setting)
    return configured_database_url() or embedded_database_url()


def validate_database_url(url: str, setting: str) -> str:
    """Return ``url`` when libpq can read it (a ``postgresql://`` URL or a
    ``key=value`` string with a numeric port); else a ConfigError that names the
    ``setting`` it came from and shows what a URL looks like, never a password."""
    if not url.strip():
        raise ConfigError(f"{setting} is empty: give a PostgreSQL URL such as {URL_EXAMPLE}")
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme.group(1).lower() not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"{setting} is a {shorten(scheme.group(1), 20)}:// URL, not a PostgreSQL one: "
            f"use {URL_EXAMPLE}"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(
            f"{setting} is not a PostgreSQL URL ({redact_url(url)}): use {URL_EXAMPLE}"
        ) from None
    port = str(params.get("port") or "")
    if not all(part.strip().isdigit() for part in port.split(",") if part):
        raise ConfigError(
            f"{setting} has the port {shorten(port, 20)!r}, not a number: use {URL_EXAMPLE}"
        )
    return url


def redact_url(url: str) -> str:
    """``url`` as a message may show it: any password replaced by ``***``, cut short."""
    hidden = _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))
    return shorten(hidden, 80)


def started_embedded_url() -> str | None:
    """The embedded server's URL if this process started (or joined) it, else None."""
    return _embedded_url


def embedded_database_url() -> str:
    """Start (or reuse) the embedded PostgreSQL under RECEIPTQ_HOME and return its URL.

    The server outlives this process (cleanup_mode=None) so that worker processes
    and later commands share it; pgserver reuses a running postmaster.
    """
    global _embedded_url
    with _embedded_lock:
        if _embedded_url is None:
            with warnings.catch_warnings():
                # platformdirs warns about a missing XDG_RUNTIME_DIR; pgserver copes.
                warnings.simplefilter("ignore")
                pgserver = import_optional("pgserver", "demo", EMBEDDED_NEEDS)

                data_dir = receiptq_home() / "pgdata"
                data_dir.parent.mkdir(parents=True, exist_ok=True)
                server = pgserver.get_server(data_dir, cleanup_mode=None)
            _embedded_url = server.get_uri()
        return _embedded_url


def validate_queue_name(name: str) -> str:
    """Return the queue name, or raise ValueError for a name receiptq will not store."""
    if not isinstance(name, str) or not QUEUE_NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid queue name {shorten(str(name))!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or '_', at most 128 characters"
        )
    return name
