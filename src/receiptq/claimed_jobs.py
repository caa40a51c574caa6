"""The claimed jobs one by one, as ``receiptq top`` and the dashboard's jobs table
show them: the running ones (a worker thread started them) and the reserved ones
(claimed by a worker, waiting in its memory), with their arguments in short."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg

from receiptq import db
from receiptq.monitor import db_now, one_reading

__all__ = ["args_summary", "claimed_job", "claimed_jobs"]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


#: Characters of a running job's arguments that ``receiptq top`` shows.
ARGS_SUMMARY_CHARS = 60


def args_summary(message: Mapping[str, Any] | None, limit: int = ARGS_SUMMARY_CHARS) -> str:
    """A job's arguments as a short call-like text: ``42, 'eur', lang='de'``."""
    message = message or {}
    parts = [repr(arg) for arg in message.get("args") or ()]
    parts += [f"{key}={value!r}" for key, value in (message.get("kwargs") or {}).items()]
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def claimed_job(row: Mapping[str, Any]) -> dict[str, Any]:
    """One claimed job as ``receiptq top`` shows it. ``elapsed_s``: since a worker
    thread started it (running) or since its worker claimed it (reserved)."""
    return {
        "id": row["id"],
        "queue": row["queue"],
        "actor": row["actor"],
        "args": args_summary(row["message"]),
        "worker": row["lease_owner"],
        "attempt": row["attempt"],
        "elapsed_s": max(0.0, row["elapsed_s"] or 0.0),
        "claimed_at": _iso(row["claimed_at"]),
        "started_at": _iso(row["started_at"]),
    }


def claimed_jobs(source: psycopg.Connection[Any], limit: int = 100) -> dict[str, Any]:
    """What ``receiptq top`` shows: the jobs running now, longest running first, and the
    reserved ones (claimed, not started), longest waiting first, at most ``limit`` of
    each, with how many of each there are::

        {"running": [JOB], "reserved": [JOB], "counts": {"running", "reserved"},
         "generated_at": "<iso time>"}
    """
    with one_reading(source):
        now = db_now(source)
        rows = db.fetch_all(source, "job_claimed_list", {"limit": limit, "now": now})
        counts = db.fetch_one(source, "job_claimed_counts")
    assert counts is not None
    return {
        "running": [claimed_job(row) for row in rows if row["started_at"] is not None],
        "reserved": [claimed_job(row) for row in rows if row["started_at"] is None],
        "counts": {"running": counts["running"], "reserved": counts["reserved"]},
        "generated_at": now.isoformat(),
    }
