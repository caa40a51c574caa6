"""Queue settings: the one module that pauses, resumes, caps, sets the prefetch of and
resets queues and actors, and reads those settings back.

Every worker honours them at claim time (``claim_jobs``). A queue whose settings
are back to the defaults (running, uncapped) keeps no row, so a mistyped name
leaves no trace. The callers hold the transaction: ``receiptq queue`` checks
whether the queue was ever seen in the same one as the change.
"""

from __future__ import annotations

from typing import Any

from receiptq import db

Row = dict[str, Any]


def pause(conn: Any, queue: str) -> None:
    """Stop handing out the queue's jobs (sends are still accepted)."""
    _change(conn, "queue_pause", {"queue": queue})


def resume(conn: Any, queue: str) -> None:
    """Hand out the queue's jobs again."""
    _change(conn, "queue_resume", {"queue": queue})


def set_cap(conn: Any, queue: str, max_running: int | None) -> None:
    """At most ``max_running`` of the queue's jobs claimed at once, cluster-wide
    (None: no cap)."""
    _change(conn, "queue_set_cap", {"queue": queue, "max_running": max_running})


def set_prefetch(conn: Any, queue: str, prefetch: int | None) -> None:
    """Each worker process holds at most ``prefetch`` of the queue's jobs (and never
    more than its threads); None: Dramatiq's prefetch."""
    _change(conn, "queue_set_prefetch", {"queue": queue, "prefetch": prefetch})


def set_actor_cap(conn: Any, queue: str, actor: str, max_running: int | None) -> None:
    """The same for one actor's jobs on the queue (None: remove its cap)."""
    params = {"queue": queue, "actor": actor, "max_running": max_running}
    _change(conn, "actor_cap_clear" if max_running is None else "actor_cap_set", params)


def _change(conn: Any, statement: str, params: db.Params) -> None:
    db.execute(conn, statement, params)
    db.execute(conn, "queue_settings_prune", params)  # back to the defaults: no row


def reset(conn: Any, queue: str) -> bool:
    """Remove every setting of the queue (pause, cap, actor caps); whether it had any."""
    removed = db.fetch_one(conn, "queue_reset", {"queue": queue})
    return bool(removed and (removed["settings"] or removed["actor_caps"]))


def seen(conn: Any, queue: str) -> bool:
    """Whether the queue is known: jobs, dead letters, statistics, settings, or a
    worker that consumes it (a setting for any other name is most likely a typo)."""
    row = db.fetch_one(conn, "queue_seen", {"queue": queue})
    return bool(row and row["seen"])


def actor_seen(conn: Any, queue: str, actor: str) -> bool:
    """Whether a job of the actor was ever seen on the queue."""
    row = db.fetch_one(conn, "actor_seen_on_queue", {"queue": queue, "actor": actor})
    return bool(row and row["seen"])


def settings(conn: Any) -> dict[str, Row]:
    """Every queue's settings row (paused, max_running, prefetch), by queue."""
    return {row["queue"]: row for row in db.fetch_all(conn, "queue_settings_list")}


def actor_caps(conn: Any) -> dict[str, list[Row]]:
    """Every actor cap, by queue, with the jobs it counts (running, reserved)."""
    caps: dict[str, list[Row]] = {}
    for cap in db.fetch_all(conn, "actor_caps_list"):
        caps.setdefault(cap["queue"], []).append(cap)
    return caps
