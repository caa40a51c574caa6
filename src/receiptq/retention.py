"""Retention: prune old statistics, dead letters, tick records and expired rate-limit keys.

Each table is pruned in batches of bounded size (one short statement per
batch), so the job never holds locks on a large part of a table and can run
while workers write. The cut-off is computed once, on the database's clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from receiptq import db
from receiptq.errors import ConfigError
from receiptq.settings import Settings

#: Days of per-minute statistics kept (``RECEIPTQ_STATS_RETENTION_DAYS``).
DEFAULT_STATS_RETENTION_DAYS = 14
#: Days of dead letters kept (``RECEIPTQ_DEAD_LETTER_RETENTION_DAYS``).
DEFAULT_DEAD_LETTER_RETENTION_DAYS = 30
#: Rows deleted per statement (``RECEIPTQ_RETENTION_BATCH_SIZE``).
DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of history is kept, and how many rows one statement deletes."""

    stats_days: int = DEFAULT_STATS_RETENTION_DAYS
    dead_letter_days: int = DEFAULT_DEAD_LETTER_RETENTION_DAYS
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        for name in ("stats_days", "dead_letter_days", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"retention {name} must be an integer >= 1, got {value!r}")

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> RetentionPolicy:
        """The policy of ``settings`` (default: the environment's)."""
        settings = settings or Settings.from_env()
        return cls(
            stats_days=settings.stats_retention_days,
            dead_letter_days=settings.dead_letter_retention_days,
            batch_size=settings.retention_batch_size,
        )


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows deleted by one retention run, per table."""

    stats_minute: int
    dead_letters: int
    periodic_ticks: int
    rate_limits: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = db.fetch_one(conn, "db_now")
    assert row is not None
    return row["now"]


def prune_in_batches(
    conn: psycopg.Connection[Any], query_name: str, params: dict[str, Any], batch_size: int
) -> int:
    """Repeat a batch delete until a batch deletes fewer than ``batch_size`` rows."""
    total = 0
    while True:
        deleted = db.execute(conn, query_name, {**params, "batch_size": batch_size})
        total += deleted
        if deleted < batch_size:
            return total


def prune(
    conn: psycopg.Connection[Any], policy: RetentionPolicy, *, now: datetime | None = None
) -> Pruned:
    """Delete what the policy no longer keeps; ``conn`` must be in autocommit mode,
    so that each batch commits on its own."""
    now = now or db_now(conn)
    stats_before = {"before": now - timedelta(days=policy.stats_days)}
    dead_before = {"before": now - timedelta(days=policy.dead_letter_days)}
    size = policy.batch_size
    return Pruned(
        stats_minute=prune_in_batches(conn, "retention_prune_stats", stats_before, size),
        dead_letters=prune_in_batches(conn, "retention_prune_dead_letters", dead_before, size),
        periodic_ticks=prune_in_batches(conn, "retention_prune_periodic_ticks", stats_before, size),
        rate_limits=prune_in_batches(conn, "rate_limit_prune_expired", {}, size),
    )


def dead_letter_counts(
    conn: psycopg.Connection[Any], *, window: timedelta, now: datetime | None = None
) -> dict[str, Any]:
    """Dead letters of the last ``window``, counted by actor and error type."""
    until = now or db_now(conn)
    since = until - window
    rows = db.fetch_all(conn, "retention_dead_letter_counts", {"since": since, "until": until})
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "total": sum(r["dead"] for r in rows),
        "counts": rows,
    }
