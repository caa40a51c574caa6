"""Queue figures for ``receiptq status`` and the dashboard: the one source of numbers.

:func:`snapshot` reads the live job counts, the dead letters, the per-minute
statistics and the workers, and returns plain JSON-ready dicts, exactly what
``receiptq status --json`` prints::

    {"queues": {"<queue>": QUEUE_FIGURES + QUEUE_SETTINGS}, "totals": QUEUE_FIGURES,
     "workers": [{"id", "host", "pid", "queues", "running", "reserved", "in_flight",
                  "heartbeat_age_s", "alive", ...}],
     "breakers": [{"name", "state", "fail_counter", "fail_max", "opened_at", "closes_at"}],
     "generated_at": "<iso time>"}

QUEUE_FIGURES are the keys of :data:`QUEUE_FIELDS`, QUEUE_SETTINGS those of
:data:`SETTING_FIELDS`. A queue is listed when it has jobs, dead letters,
statistics in the last hour, or a setting (paused, a cap, an actor cap).
Everything is computed against one reading of the database clock, and every
query of one snapshot reads the same state of the database (one repeatable-read
transaction), so the figures add up.

Running and reserved: a claimed job is *running* once a worker thread started it
and *reserved* while its worker process holds it unstarted (its prefetch). Each
worker process reports the deliveries its threads started in its workers row
about once a second (migration 0007), so a start or an end shows about a second
late; the claimed jobs themselves are counted exactly.

Windows: statistics are kept per minute, so the window of N minutes is made of
whole minute rows: the current (partial) minute and the N minutes before it.
It spans between N and N+1 minutes; the throughput divides by the time the
window really covers (from the start of its oldest minute until now), so it is
a true rate. Percentiles and the success rate are over the 5-minute window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from receiptq import breakers, db, dead_letters, queues
from receiptq.settings import Settings
from receiptq.stats import add_histograms, empty_histogram, histogram_percentile

#: The statistics windows, in minutes.
WINDOWS_MIN = (1, 5, 60)
#: Latency and run-time percentiles and the success rate cover this window (minutes).
PERCENTILE_WINDOW_MIN = 5
#: A worker whose heartbeat is older than one lease (``Settings.lease_s``,
#: ``RECEIPTQ_LEASE_S``) is reported lost: its jobs are rescued by others then.

#: The figures of one queue (and of the totals), in display order.
QUEUE_FIELDS = (
    "queued",
    "scheduled",
    "running",
    "reserved",
    "dead",
    "oldest_ready_s",
    "done_1m",
    "done_5m",
    "done_60m",
    "failed_1m",
    "failed_5m",
    "failed_60m",
    "throughput_per_s_1m",
    "latency_p50_ms",
    "latency_p95_ms",
    "run_p50_ms",
    "run_p95_ms",
    "success_rate_5m",
)
#: The settings of one queue, after its figures: paused, its cap (None: none), and
#: its actor caps ``{actor: {"max_running", "running", "reserved"}}``.
SETTING_FIELDS = ("paused", "max_running", "prefetch", "actor_caps")
#: The live counts of a queue (and of a tier).
LIVE_FIELDS = ("queued", "scheduled", "running", "reserved")


@contextmanager
def one_reading(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction whose queries all read one state of the database (repeatable
    read, read only), so that counts read by separate queries add up. Inside a
    transaction the caller opened, that transaction's reading holds."""
    outermost = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction():
        if outermost:
            db.execute(conn, "db_read_one_state")
        yield


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = db.fetch_one(conn, "db_now")
    assert row is not None
    return row["now"]


@dataclass
class WindowStats:
    """Finished deliveries of a queue (or of all queues) in each window."""

    done: dict[int, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS_MIN, 0))
    failed: dict[int, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS_MIN, 0))
    run_ms_hist: list[int] = field(default_factory=empty_histogram)
    latency_ms_hist: list[int] = field(default_factory=empty_histogram)

    def add(self, other: WindowStats) -> None:
        for minutes in WINDOWS_MIN:
            self.done[minutes] += other.done[minutes]
            self.failed[minutes] += other.failed[minutes]
        self.run_ms_hist = add_histograms([self.run_ms_hist, other.run_ms_hist])
        self.latency_ms_hist = add_histograms([self.latency_ms_hist, other.latency_ms_hist])


def window_start(now: datetime, minutes: int) -> datetime:
    """The oldest minute row inside the window of ``minutes`` minutes ending at ``now``."""
    return now.replace(second=0, microsecond=0) - timedelta(minutes=minutes)


def window_stats(
    rows: Iterable[Mapping[str, Any]], now: datetime, key: str = "queue"
) -> dict[str, WindowStats]:
    """Sum ``stats_minute`` rows per queue (or per ``key``, e.g. actor) into the windows
    ending at ``now``.

    Rows older than the longest window are ignored (their queue is not listed).
    """
    starts = {minutes: window_start(now, minutes) for minutes in WINDOWS_MIN}
    oldest = min(starts.values())
    by_queue: dict[str, WindowStats] = {}
    for row in rows:
        if row["minute"] < oldest:
            continue
        stats = by_queue.setdefault(row[key], WindowStats())
        for minutes, start in starts.items():
            if row["minute"] >= start:
                stats.done[minutes] += row["succeeded"]
                stats.failed[minutes] += row["failed"]
        if row["minute"] >= starts[PERCENTILE_WINDOW_MIN]:
            stats.run_ms_hist = add_histograms([stats.run_ms_hist, row["run_ms_hist"]])
            stats.latency_ms_hist = add_histograms([stats.latency_ms_hist, row["latency_ms_hist"]])
    return by_queue


def queue_figures(
    live: Mapping[str, Any] | None, dead: int, stats: WindowStats, now: datetime
) -> dict[str, Any]:
    """The figures of one queue (or of the totals) with the keys of :data:`QUEUE_FIELDS`."""
    live = live or {}
    span_1m_s = (now - window_start(now, 1)).total_seconds()
    finished_5m = stats.done[5] + stats.failed[5]
    return {
        "queued": live.get("queued", 0),
        "scheduled": live.get("scheduled", 0),
        "running": live.get("running", 0),
        "reserved": live.get("reserved", 0),
        "dead": dead,
        "oldest_ready_s": live.get("oldest_ready_s"),
        **{f"done_{minutes}m": stats.done[minutes] for minutes in WINDOWS_MIN},
        **{f"failed_{minutes}m": stats.failed[minutes] for minutes in WINDOWS_MIN},
        "throughput_per_s_1m": stats.done[1] / span_1m_s,
        "latency_p50_ms": histogram_percentile(stats.latency_ms_hist, 0.50),
        "latency_p95_ms": histogram_percentile(stats.latency_ms_hist, 0.95),
        "run_p50_ms": histogram_percentile(stats.run_ms_hist, 0.50),
        "run_p95_ms": histogram_percentile(stats.run_ms_hist, 0.95),
        "success_rate_5m": stats.done[5] / finished_5m if finished_5m else None,
    }


def total_live(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Live counts summed over queues; the oldest ready job is the oldest of all."""
    rows = list(rows)
    ages = [row["oldest_ready_s"] for row in rows if row.get("oldest_ready_s") is not None]
    totals: dict[str, Any] = {name: sum(row.get(name, 0) for row in rows) for name in LIVE_FIELDS}
    totals["oldest_ready_s"] = max(ages) if ages else None
    return totals


def live_by(rows: Iterable[Mapping[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    """The ``job_counts_by_queue_and_tier`` rows summed per ``key`` ("queue" or "tier")."""
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return {name: total_live(group) for name, group in groups.items()}


def live_counts(source: psycopg.Connection[Any], now: datetime) -> list[dict[str, Any]]:
    """The live counts per queue and tier as of ``now`` (see :data:`LIVE_FIELDS`)."""
    return db.fetch_all(source, "job_counts_by_queue_and_tier", {"now": now})


def queue_settings(
    settings: Mapping[str, Any] | None, actor_caps: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The settings of one queue with the keys of :data:`SETTING_FIELDS`, from its
    ``queue_settings_list`` row (None: no row) and its ``actor_caps_list`` rows."""
    settings = settings or {}
    return {
        "paused": bool(settings.get("paused")),
        "max_running": settings.get("max_running"),
        "prefetch": settings.get("prefetch"),
        "actor_caps": {
            cap["actor"]: {key: cap[key] for key in ("max_running", "running", "reserved")}
            for cap in actor_caps
        },
    }


def worker_figures(row: Mapping[str, Any], alive_s: float) -> dict[str, Any]:
    """One worker as shown; its heartbeat age is clamped at 0 (a beat after our clock
    read). ``running``: jobs its threads run; ``reserved``: jobs it claimed and has
    not started; ``in_flight``: both."""
    age = max(0.0, row["heartbeat_age_s"])
    running, reserved = row.get("running", 0), row.get("reserved", 0)
    return {
        "id": row["id"],
        "host": row["host"],
        "pid": row["pid"],
        "queues": list(row["queues"]),
        "running": running,
        "reserved": reserved,
        "in_flight": running + reserved,
        "heartbeat_age_s": age,
        "alive": age <= alive_s,
        "cpu_percent": row.get("cpu_percent"),
        "memory_percent": row.get("memory_percent"),
        "db_connections_percent": row.get("db_connections_percent"),
        "throttled": row.get("throttled_reason"),
    }


def snapshot(
    source: psycopg.Connection[Any] | str,
    *,
    now: datetime | None = None,
    alive_s: float | None = None,
) -> dict[str, Any]:
    """Everything ``receiptq status`` shows, as plain JSON-ready data.

    ``source`` is a connection or a URL. ``now`` (tests) replaces the database
    clock reading; ``alive_s`` the age past which a worker counts as lost.
    """
    if isinstance(source, str):
        with db.connect(source) as conn:
            return snapshot(conn, now=now, alive_s=alive_s)
    if alive_s is None:
        alive_s = Settings.from_env().lease_s
    with one_reading(source):
        now = now or db_now(source)
        live = live_by(live_counts(source, now), "queue")
        dead = dead_letters.count_by_queue(source)
        since = window_start(now, max(WINDOWS_MIN))
        stats = window_stats(db.fetch_all(source, "stats_since", {"since": since}), now)
        settings = (queues.settings(source), queues.actor_caps(source))
        workers = db.fetch_all(source, "worker_list", {"now": now})
        breaker_list = breakers.listing(source)
    snap = _assemble(live, dead, stats, settings, workers, now, alive_s)
    snap["breakers"] = breaker_list
    return snap


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _assemble(
    live: dict[str, dict[str, Any]],
    dead: dict[str, int],
    stats: dict[str, WindowStats],
    settings: tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]],
    workers: list[dict[str, Any]],
    now: datetime,
    alive_s: float,
) -> dict[str, Any]:
    """``settings``: the ``queue_settings_list`` rows and the ``actor_caps_list`` rows,
    each by queue."""
    queue_rows, caps = settings
    queues = {}
    all_stats = WindowStats()
    consumed = {queue for row in workers for queue in row["queues"] or ()}
    known = live.keys() | dead.keys() | stats.keys() | queue_rows.keys() | caps.keys() | consumed
    for name in sorted(known):
        queue_stats = stats.get(name, WindowStats())
        all_stats.add(queue_stats)
        queues[name] = {
            **queue_figures(live.get(name), dead.get(name, 0), queue_stats, now),
            **queue_settings(queue_rows.get(name), caps.get(name, [])),
        }
    totals = queue_figures(total_live(live.values()), sum(dead.values()), all_stats, now)
    return {
        "queues": queues,
        "workers": [worker_figures(row, alive_s) for row in workers],
        "totals": totals,
        "generated_at": now.isoformat(),
    }


# -- the dashboard's and the metrics' extra figures ------------------------------------

#: The figures of one actor (over :data:`PERCENTILE_WINDOW_MIN` minutes), in display order.
ACTOR_FIELDS = (
    "done_5m",
    "failed_5m",
    "latency_p50_ms",
    "latency_p95_ms",
    "run_p50_ms",
    "run_p95_ms",
    "success_rate_5m",
)
#: Minutes of per-minute throughput the dashboard draws.
HISTORY_MIN = 60


def actor_figures(stats: WindowStats) -> dict[str, Any]:
    """The figures of one actor with the keys of :data:`ACTOR_FIELDS`."""
    window = PERCENTILE_WINDOW_MIN
    finished = stats.done[window] + stats.failed[window]
    return {
        "done_5m": stats.done[window],
        "failed_5m": stats.failed[window],
        "latency_p50_ms": histogram_percentile(stats.latency_ms_hist, 0.50),
        "latency_p95_ms": histogram_percentile(stats.latency_ms_hist, 0.95),
        "run_p50_ms": histogram_percentile(stats.run_ms_hist, 0.50),
        "run_p95_ms": histogram_percentile(stats.run_ms_hist, 0.95),
        "success_rate_5m": stats.done[window] / finished if finished else None,
    }


def tier_figures(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Jobs waiting per tier (None: sent without a tier) and each tier's share of the
    ready jobs (None when nothing is ready)."""
    rows = list(rows)
    ready = sum(row["queued"] for row in rows)
    return [
        {
            "tier": row["tier"],
            **{key: row[key] for key in LIVE_FIELDS},
            "oldest_ready_s": row["oldest_ready_s"],
            "ready_share": row["queued"] / ready if ready else None,
        }
        for row in rows
    ]


def minute_history(
    rows: Iterable[Mapping[str, Any]], now: datetime, minutes: int = HISTORY_MIN
) -> list[dict[str, Any]]:
    """Jobs done and failed per minute, all queues together, for the ``minutes`` whole
    minutes before the current one and the current one, oldest first (minutes without
    a row count 0)."""
    start = window_start(now, minutes)
    slots = {start + timedelta(minutes=i): [0, 0] for i in range(minutes + 1)}
    for row in rows:
        slot = slots.get(row["minute"])
        if slot is not None:
            slot[0] += row["succeeded"]
            slot[1] += row["failed"]
    return [
        {"minute": minute.isoformat(), "done": done, "failed": failed}
        for minute, (done, failed) in slots.items()
    ]


def dashboard(
    source: psycopg.Connection[Any] | str,
    *,
    now: datetime | None = None,
    alive_s: float | None = None,
) -> dict[str, Any]:
    """The dashboard's figures against one clock reading::

        {"status": snapshot(), "actors": {"<actor>": ACTOR_FIGURES},
         "tiers": [TIER_FIGURES], "history": [{"minute", "done", "failed"}]}

    ``status`` is exactly :func:`snapshot` (what ``receiptq status --json`` prints).
    """
    if isinstance(source, str):
        with db.connect(source) as conn:
            return dashboard(conn, now=now, alive_s=alive_s)
    with one_reading(source):
        now = now or db_now(source)
        status = snapshot(source, now=now, alive_s=alive_s)
        since = window_start(now, max(WINDOWS_MIN + (HISTORY_MIN,)))
        rows = db.fetch_all(source, "stats_since", {"since": since})
        tiers = live_by(live_counts(source, now), "tier")
    by_actor = window_stats(rows, now, key="actor")
    return {
        "status": status,
        "actors": {name: actor_figures(by_actor[name]) for name in sorted(by_actor)},
        "tiers": tier_figures(
            {"tier": tier, **tiers[tier]}
            for tier in sorted(tiers, key=lambda t: (t is None, t or ""))
        ),
        "history": minute_history(rows, now),
    }


def actor_totals(source: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every queue and actor's counters and histograms summed over all the statistics
    kept (the Prometheus counters): the columns of ``stats_minute`` per (queue, actor),
    histograms as full bucket lists."""
    with one_reading(source):
        totals = db.fetch_all(source, "stats_totals_by_actor")
        buckets = db.fetch_all(source, "stats_histogram_totals_by_actor")
    by_key = {(row["queue"], row["actor"]): row for row in totals}
    for row in totals:
        row["run_ms_hist"] = empty_histogram()
        row["latency_ms_hist"] = empty_histogram()
    for bucket in buckets:
        owner = by_key.get((bucket["queue"], bucket["actor"]))
        index = bucket["bucket"] - 1
        if owner is not None and index < len(owner["run_ms_hist"]):
            owner["run_ms_hist"][index] = bucket["run"] or 0
            owner["latency_ms_hist"][index] = bucket["latency"] or 0
    return totals


def queue_list(snap: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every queue of a :func:`snapshot` with its settings and the jobs its caps count
    (running and reserved), as ``receiptq queue list --json`` prints it::

        {"<queue>": {"paused", "max_running", "running", "reserved",
                     "actors": {"<actor>": {"max_running", "running", "reserved"}}}}
    """
    return {
        name: {
            "paused": figures["paused"],
            "max_running": figures["max_running"],
            "prefetch": figures["prefetch"],
            "running": figures["running"],
            "reserved": figures["reserved"],
            "actors": figures["actor_caps"],
        }
        for name, figures in snap["queues"].items()
    }
