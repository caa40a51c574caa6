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

from receiptq.extras import import_optional

#: Environment variables consulted for the database URL, in order.
DATABASE_URL_VARIABLES = ("RECEIPTQ_DATABASE_URL", "DATABASE_URL")

#: Queue names: Dramatiq's own rule, bounded in length so they fit an index nicely.
QUEUE_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,127}$")

#: What needs the ``demo`` extra's pgserver, said when it is missing.
EMBEDDED_NEEDS = (
    "no database URL is set (RECEIPTQ_DATABASE_URL, DATABASE_URL or --url), and the "
    "embedded PostgreSQL used then"
)

_embedded_lock = threading.Lock()
_embedded_url: str | None = None


class ConfigError(ValueError):
    """A setting has a value receiptq cannot use."""


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
    """The URL from the environment, or None when none is set."""
    for name in DATABASE_URL_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def database_url(url: str | None = None) -> str:
    """Resolve the database URL: the argument, the environment, else the embedded server."""
    return url or configured_database_url() or embedded_database_url()


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
            f"invalid queue name {name!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or '_', at most 128 characters"
        )
    return name
