"""The database URL and the embedded PostgreSQL fallback (settings: :mod:`receiptq.settings`).

The database URL falls back from ``RECEIPTQ_DATABASE_URL`` to ``DATABASE_URL``
to an embedded PostgreSQL (the ``pgserver`` package) whose data directory lives
under ``RECEIPTQ_HOME`` (default ``~/.receiptq``).
"""

from __future__ import annotations

import re
import threading
import warnings
from pathlib import Path

from receiptq.errors import ConfigError, shorten
from receiptq.extras import import_optional
from receiptq.settings import (
    DATABASE_URL_VARIABLES,
    URL_EXAMPLE,
    Settings,
    redact_url,
    validate_database_url,
)

__all__ = [
    "DATABASE_URL_VARIABLES",
    "URL_EXAMPLE",
    "ConfigError",
    "database_url",
    "redact_url",
    "validate_database_url",
]

#: Queue names: Dramatiq's own rule, bounded in length so they fit an index nicely.
QUEUE_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,127}$")

#: What needs the ``demo`` extra's pgserver, said when it is missing.
EMBEDDED_NEEDS = (
    "no database URL is set (RECEIPTQ_DATABASE_URL, DATABASE_URL or --url), and the "
    "embedded PostgreSQL used then"
)

_embedded_lock = threading.Lock()
_embedded_url: str | None = None


def receiptq_home(settings: Settings | None = None) -> Path:
    return (settings or Settings.from_env()).home_dir()


def configured_database_url(settings: Settings | None = None) -> str | None:
    """The URL of the settings (default: the environment's), or None when none is set;
    ConfigError naming the variable when its value is not a PostgreSQL URL."""
    return (settings or Settings.from_env()).database_url


def database_url(
    url: str | None = None,
    *,
    setting: str = "the database URL",
    settings: Settings | None = None,
) -> str:
    """Resolve the database URL: the argument, the settings (default: the environment's),
    else the embedded server.

    A given ``url`` must be a PostgreSQL URL (an empty one too is a ConfigError
    naming ``setting``, not a request for the embedded server).
    """
    if url is not None:
        return validate_database_url(url, setting)
    return configured_database_url(settings) or embedded_database_url(settings)


def started_embedded_url() -> str | None:
    """The embedded server's URL if this process started (or joined) it, else None."""
    return _embedded_url


def embedded_database_url(settings: Settings | None = None) -> str:
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

                data_dir = receiptq_home(settings) / "pgdata"
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
