"""The statistics of a demo run: what its queues' minute rows gained since it began."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from receiptq import db
from receiptq.stats import add_histograms, empty_histogram
from receiptq.tools.demo.database import QUEUES

COUNTERS = ("enqueued", "succeeded", "failed", "retried", "dead_lettered", "postponed")


# --- figures -----------------------------------------------------------------------------


@dataclass
class Totals:
    """Statistics counters of one queue (or actor) summed over minute rows."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    run_hist: list[int] = field(default_factory=empty_histogram)

    def add(self, row: dict[str, Any]) -> None:
        for name in COUNTERS:
            self.counts[name] += int(row[name])
        self.run_hist = add_histograms([self.run_hist, row["run_ms_hist"] or []])

    def minus(self, other: Totals) -> Totals:
        return Totals(
            counts={name: self.counts[name] - other.counts[name] for name in COUNTERS},
            run_hist=[a - b for a, b in zip(self.run_hist, other.run_hist, strict=True)],
        )


def minute_of(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s // 60 * 60, tz=UTC)


def stats_per_queue(conn: psycopg.Connection[Any], since: datetime) -> dict[str, Totals]:
    totals: dict[str, Totals] = {}
    for row in db.fetch_all(conn, "stats_since", {"since": since}):
        totals.setdefault(row["queue"], Totals()).add(row)
    return totals


class RunStats:
    """The statistics of this run: what was added since it began (earlier runs may
    have written to the same minutes)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.since = minute_of(time.time())
        self.baseline = stats_per_queue(conn, self.since)

    def per_queue(self) -> dict[str, Totals]:
        now = stats_per_queue(self.conn, self.since)
        return {q: t.minus(self.baseline.get(q, Totals())) for q, t in now.items()}

    def total(self, name: str) -> int:
        return sum(t.counts[name] for q, t in self.per_queue().items() if q in QUEUES)
