"""The shared circuit breakers as an operator sees them: list, reset and open by hand.

One row per breaker in ``receiptq.breakers`` (created once a process calls its
service). The breakers' own transitions, made by the workers, are their
storage's (:mod:`receiptq.breaker_storage`); this module is what ``receiptq
breakers``, ``receiptq status`` and the dashboard read and do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from receiptq import db


class UnknownBreakers(LookupError):
    """Names that have no breaker; nothing was changed."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"no circuit breaker named {', '.join(names)}")
        self.names = names


def figures(row: Mapping[str, Any]) -> dict[str, Any]:
    """One breaker as shown; ``closes_at``: when an open one may half-open."""
    return {
        "name": row["name"],
        "state": row["state"],
        "fail_counter": row["fail_counter"],
        "fail_max": row["fail_max"],
        "opened_at": _iso(row["opened_at"]),
        "closes_at": _iso(row["closes_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def listing(conn: Any) -> list[dict[str, Any]]:
    """Every breaker's :func:`figures`, by name."""
    return [figures(row) for row in db.fetch_all(conn, "breaker_list")]


def reset(conn: Any, names: Iterable[str] = (), *, every: bool = False) -> list[dict[str, Any]]:
    """Close breakers at once (counters zeroed), these or every one: all or none, so
    :class:`UnknownBreakers` when a name has no breaker. Each one closed with its
    ``previous_state``, by name."""
    wanted = sorted(set(names))
    with conn.transaction():
        rows = db.fetch_all(conn, "breaker_reset", {"all": every, "names": wanted})
        unknown = sorted(set(wanted) - {row["name"] for row in rows})
        if unknown:
            raise UnknownBreakers(unknown)  # leaving the transaction rolls the resets back
    return sorted(rows, key=lambda row: row["name"])


def open_for(conn: Any, name: str, duration: timedelta) -> dict[str, Any]:
    """Open a breaker now for ``duration`` (a maintenance window); its :func:`figures`."""
    params = {"name": name, "for_s": duration.total_seconds()}
    if db.fetch_one(conn, "breaker_force_open", params) is None:
        raise UnknownBreakers([name])
    return next(breaker for breaker in listing(conn) if breaker["name"] == name)
