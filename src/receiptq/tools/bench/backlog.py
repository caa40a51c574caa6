"""``receiptq bench --workload backlog``: does a big backlog cost the claim anything?

For each backlog size and each mode (untiered, tiered) on a fresh database: fill
the bench queue with SIZE ready jobs, :data:`SCHEDULED_JOBS` jobs due hours later
and :data:`DEAD_LETTERS` dead letters, with set-based SQL (``bench_backlog.sql``);
time the claim statement the workers would run at that size under ``EXPLAIN
(ANALYZE, BUFFERS)`` in a rolled-back transaction, and the plan's indexes; then
time the real workers through the first ``--jobs`` jobs. The figure that matters
is the rate at the largest size over the rate at the smallest (target >= 0.8).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from dramatiq.message import Message
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.tiers import UNTIERED, StrideState, TierPolicy, quotas
from receiptq.tools.bench.workload import (
    BENCH_ACTOR,
    BENCH_QUEUE,
    PEER,
    RECORD_SETTLE_S,
    Workload,
    log,
    progress_bar,
)

MODES = ("untiered", "tiered")
#: Besides the ready backlog: jobs due later (from SCHEDULED_DELAY_S, over an hour)...
SCHEDULED_JOBS = 100_000
SCHEDULED_DELAY_S = 2 * 3600.0
#: ... and dead letters.
DEAD_LETTERS = 10_000
#: Tiered mode: the user ids of each tier ('user-0'..), so that user rounds are in play.
BACKLOG_USERS = 1000
#: Rows per fill statement (a progress step; each commits).
FILL_CHUNK = 50_000
#: EXPLAIN ANALYZE runs of each statement; the median is reported.
EXPLAIN_RUNS = 5
#: What the rates are held against: the rate at the largest size over the smallest.
TARGET_RATIO = 0.8
EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "


def claim_limit(threads: int) -> int:
    """The claim a consumer makes with every slot free: Dramatiq's queue prefetch
    (``worker_threads * 2``, Worker.queue_prefetch)."""
    return threads * 2


def run_backlog(w: Workload) -> None:
    """Each size, each mode: fill, explain, drain; fill ``w.result`` as it goes."""
    result = w.result
    sizes = w.settings.backlog_sizes
    result.update(
        backlog_sizes=list(sizes),
        scheduled=SCHEDULED_JOBS,
        dead_letters=DEAD_LETTERS,
        claim_limit=claim_limit(w.settings.threads),
        target_ratio=TARGET_RATIO,
        sizes={},
    )
    for size in sizes:
        for mode in MODES:
            figures: dict[str, Any] = {}
            result["sizes"].setdefault(str(size), {})[mode] = figures
            w.deadline = time.monotonic() + w.settings.timeout  # the timeout is per run
            run_one_backlog(w, size, mode, figures)
            w.close()
            for m in MODES:
                result[f"rate_ratio_{m}"] = rate_ratio(result["sizes"], sizes, m)


def rate_ratio(by_size: dict[str, Any], sizes: tuple[int, ...], mode: str) -> float | None:
    """The drain rate at the largest size over the rate at the smallest (None: not both)."""
    rates = [by_size.get(str(s), {}).get(mode, {}).get("drain_jobs_per_s") for s in sizes]
    if len(rates) < 2 or not rates[0] or not rates[-1]:
        return None
    return round(rates[-1] / rates[0], 3)


def run_one_backlog(w: Workload, size: int, mode: str, figures: dict[str, Any]) -> None:
    """One fresh database: fill it, explain the claim, drain ``--jobs`` of it."""
    conn = w.setup()
    broker = w.broker()
    policy: TierPolicy = broker.tier_policy
    log(w.settings, f"[{PEER}] backlog {size} {mode}: filling")
    figures["fill_s"] = fill(w, broker, size, mode)
    figures.update(db.fetch_one(conn, "bench_backlog_counts") or {})
    limit = claim_limit(w.settings.threads)
    name, params = claim_statement(mode, policy, limit, broker.lease_s)
    figures["claim_statement"] = name
    for key, value in explain(w, name, params).items():
        figures[f"claim_{key}"] = value
    for key, value in explain(w, "job_seconds_until_due", {"queue": BENCH_QUEUE}).items():
        figures[f"due_{key}"] = value
    drain(w, min(w.settings.jobs, size), figures, f"{size} {mode}")


# --- the fill ----------------------------------------------------------------------------


def templates(w: Workload, broker: PostgresBroker, classes: list[str]) -> dict[str, list[Any]]:
    """One message per tier class ('' = no tier) sent by the real broker in a
    transaction that is rolled back: the rows it wrote, as the fill's arrays, so
    that the filled jobs are what an enqueue writes (priority with the tier's
    offset, max_attempts, the message's keys and options)."""
    now = time.time()
    messages: list[Message[Any]] = [
        Message(
            queue_name=BENCH_QUEUE,
            actor_name=BENCH_ACTOR,
            args=(now, cls or "untiered"),
            kwargs={},
            options={"tier": cls} if cls else {},
        )
        for cls in classes
    ]
    with db.connect(w.url, autocommit=False) as conn:
        with conn.transaction(force_rollback=True), broker.transaction(conn):
            broker.enqueue_many(messages)
            ids = [str(m.message_id) for m in messages]
            rows = {
                r["message_id"]: r
                for r in db.fetch_all(conn, "bench_backlog_templates", {"message_ids": ids})
            }
    ordered = [rows[i] for i in ids]
    return {
        "tiers": [r["tier"] for r in ordered],
        "priorities": [r["priority"] for r in ordered],
        "max_attempts": [r["max_attempts"] for r in ordered],
        "messages": [Jsonb(r["message"]) for r in ordered],
        "labels": [cls or "untiered" for cls in classes],
    }


def chunks(total: int, size: int = FILL_CHUNK) -> Iterator[tuple[int, int]]:
    """(first, count) of each fill statement."""
    for first in range(0, total, size):
        yield first, min(size, total - first)


def fill(w: Workload, broker: PostgresBroker, size: int, mode: str) -> float:
    """Fill the fresh database; seconds it took (ready, scheduled, dead letters, ANALYZE)."""
    assert w.conn is not None
    conn = w.conn
    start = time.perf_counter()
    tiered = mode == "tiered"
    classes = list(broker.tier_policy.names) if tiered else [UNTIERED]
    base = templates(w, broker, classes)
    users = BACKLOG_USERS if tiered else 0
    sent_at = time.time()
    common = {**base, "users": users, "sent_at": sent_at, "sent_ms": int(sent_at * 1000)}
    with progress_bar(w.settings) as progress:
        task = progress.add_task(f"fill {size} {mode}", total=size + SCHEDULED_JOBS)
        for total, delay_s in ((size, 0.0), (SCHEDULED_JOBS, SCHEDULED_DELAY_S)):
            for first, count in chunks(total):
                params = {**common, "first": first, "count": count, "delay_s": delay_s}
                with conn.transaction():
                    db.execute(conn, "bench_backlog_rounds_off")
                    db.execute(conn, "bench_backlog_fill", params)
                    db.execute(conn, "bench_backlog_rounds_on")
                progress.advance(task, count)
                w.check()
    db.execute(conn, "bench_backlog_dead_letters", {**base, "count": DEAD_LETTERS})
    db.execute(conn, "bench_backlog_analyze")
    return round(time.perf_counter() - start, 3)


# --- the claim's plan ---------------------------------------------------------------------


def claim_statement(
    mode: str, policy: TierPolicy, limit: int, lease_s: float
) -> tuple[str, dict[str, Any]]:
    """The statement a consumer claims ``limit`` jobs with, and its parameters, as
    :class:`receiptq.pg.claims.Claimer` builds them for a queue with jobs not due
    yet (the backlog's scheduled jobs): ``job_claim_classes_later``; untiered, for
    the untiered class alone; tiered, with the quotas of a consumer that found the
    untiered class idle (it has no job here) and every tier busy."""
    params: dict[str, Any] = {
        "queue": BENCH_QUEUE,
        "worker_id": f"bench-explain-{uuid.uuid4().hex[:8]}",
        "lease_s": lease_s,
    }
    if mode != "tiered":
        return "job_claim_classes_later", {
            **params,
            "classes": [UNTIERED],
            "quotas": [limit],
            "limit": limit,
        }
    stride = StrideState()
    stride.idle = {UNTIERED}
    classes = policy.classes()
    weights = [policy.weight(c) for c in classes]
    counts = quotas(classes, stride.passes_for(classes), weights, limit, stride.idle)
    return "job_claim_classes_later", {**params, "classes": classes, "quotas": counts}


def explain(w: Workload, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` of a named statement, EXPLAIN_RUNS
    times, each in a transaction rolled back (a claim changes rows): the median
    execution time, the indexes the plan reads and, from the median run, the rows
    they returned and the buffers the statement touched."""
    assert w.conn is not None
    runs = []
    for _ in range(EXPLAIN_RUNS):
        with w.conn.transaction(force_rollback=True):
            runs.append(explain_once(w.conn, name, params))
        w.check()
    runs.sort(key=lambda plan: plan["Execution Time"])
    median = runs[len(runs) // 2]
    scans = list(index_scans(median["Plan"]))
    return {
        "ms_p50": round(statistics.median(p["Execution Time"] for p in runs), 3),
        "ms": [round(p["Execution Time"], 3) for p in runs],
        "index": sorted({scan["index"] for scan in scans}),
        "index_rows": sum(scan["rows"] for scan in scans),
        "buffers_hit": median["Plan"].get("Shared Hit Blocks"),
        "buffers_read": median["Plan"].get("Shared Read Blocks"),
    }


def explain_once(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> Any:
    """The JSON plan of one ``EXPLAIN (ANALYZE, BUFFERS)`` run of a named statement."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(EXPLAIN + db.query(name), params).fetchone()
    assert row is not None
    return row[0][0]


def index_scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan that reads an index: its name and the rows it
    returned over all its loops."""
    if "Index Name" in node:
        rows = int(node.get("Actual Rows", 0) * node.get("Actual Loops", 1))
        yield {"index": node["Index Name"], "rows": rows}
    for child in node.get("Plans", []):
        yield from index_scans(child)


# --- the drain ----------------------------------------------------------------------------


def drain(w: Workload, measure: int, figures: dict[str, Any], label: str) -> None:
    """Start the real workers, time them through ``measure`` jobs (from the first
    worker's boot to the start of the ``measure``-th job), stop them."""
    log(w.settings, f"[{PEER}] backlog {label}: starting the workers")
    started_at = w.start_workers()
    figures["measured_jobs"] = measure
    with progress_bar(w.settings) as progress:
        task = progress.add_task(f"drain {label}", total=measure)
        w.wait_done(measure, lambda done: progress.update(task, completed=min(done, measure)))
    time.sleep(RECORD_SETTLE_S)  # every process's starts up to then have landed
    row = w.fetch("bench_nth_start", {"n": measure})
    drain_s = float(row["started"]) - started_at
    figures["drain_s"] = round(drain_s, 3)
    figures["drain_jobs_per_s"] = round(measure / drain_s, 1) if drain_s > 0 else None
