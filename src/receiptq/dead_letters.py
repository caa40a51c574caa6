"""Dead letters: the one module that reads, retries and purges them.

The CLI (``receiptq dead-letter``), the dashboard's API, the receipt app's
``receipts retry`` and the demo all come here. Retry puts a dead letter back in
its queue as a fresh series of attempts (its message id unchanged; one whose
message is queued or running again already is left in place); purge deletes
for good. A message may carry a marking option (the demo's run id, see
:mod:`receiptq.tools.demo.database`), which its dead letter keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from receiptq import db

Row = dict[str, Any]


def recent(
    conn: Any, *, limit: int, actor: str | None = None, queue: str | None = None
) -> list[Row]:
    """Dead letters, newest first, with their arguments; of one actor and/or queue."""
    return db.fetch_all(conn, "dead_letter_list", {"actor": actor, "queue": queue, "limit": limit})


def get(conn: Any, dead_letter_id: int) -> Row | None:
    """One dead letter with everything kept about it (message, traceback), or None."""
    return db.fetch_one(conn, "dead_letter_get", {"id": dead_letter_id})


def search(
    conn: Any, *, limit: int, actor: str | None = None, error: str | None = None
) -> list[Row]:
    """Dead letters, newest first, whose actor and error contain these texts (any case)."""
    return db.fetch_all(
        conn, "dead_letter_search", {"actor": actor, "error": error, "limit": limit}
    )


def missing(conn: Any, ids: Sequence[int]) -> list[int]:
    """Those of ``ids`` that are no dead letter, in order."""
    rows = db.fetch_all(conn, "dead_letter_existing_ids", {"ids": list(ids)})
    return sorted(set(ids) - {row["id"] for row in rows})


def retry(
    conn: Any, *, ids: Sequence[int] = (), actor: str | None = None, every: bool = False
) -> list[int]:
    """Put dead letters (these ids, this actor's, or every one) back in their queues,
    due now; the ids moved, in order."""
    params = {"ids": list(ids), "actor": actor, "all": every}
    return sorted(row["id"] for row in db.fetch_all(conn, "dead_letter_retry", params))


def purge(
    conn: Any,
    *,
    ids: Sequence[int] = (),
    every: bool = False,
    older_than: timedelta | None = None,
    with_option: str | None = None,
) -> list[int]:
    """Delete dead letters for good: these ids, every one, those that failed more than
    ``older_than`` ago (database clock), or those whose message carries the option
    ``with_option``; the ids deleted, in order."""
    params = {"ids": list(ids), "all": every, "older_than": older_than, "option": with_option}
    return sorted(row["id"] for row in db.fetch_all(conn, "dead_letter_purge", params))


def count_by_queue(
    conn: Any, *, option: str | None = None, value: str | None = None
) -> dict[str, int]:
    """How many dead letters each queue has: all, or those whose message's ``option``
    is ``value``."""
    if option is None:
        rows = db.fetch_all(conn, "dead_letter_count_by_queue")
    else:
        rows = db.fetch_all(conn, "dead_letter_count_by_option", {"option": option, "value": value})
    return {row["queue"]: int(row["dead"]) for row in rows}


def count_without_option(conn: Any, option: str) -> int:
    """How many dead letters are of messages without the option ``option``."""
    row = db.fetch_one(conn, "dead_letter_count_without_option", {"option": option})
    return int(row["n"]) if row is not None else 0
