"""``/metrics``: Prometheus figures read from PostgreSQL at scrape time.

Why not prometheus-client's multiprocess mode: receiptq's workers run as many
processes on many hosts (dynos, containers), and multiprocess mode only sums
the processes of one host that share a directory. The workers already write
their counts and histograms to ``receiptq.stats_minute`` (in batches), and the
live backlog is in ``receiptq.jobs``, so the web process reads those at scrape
time: one scrape target sees the whole deployment, a restarted worker loses
nothing, and the numbers are the same as ``receiptq status`` and the page.

Counters are sums over the statistics rows kept; Prometheus' ``rate()`` and
``increase()`` handle them as usual (a pruning of old rows looks like a
counter reset).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from receiptq import monitor
from receiptq.stats import BUCKET_BOUNDS_MS

#: snapshot key -> the ``state`` label of ``receiptq_queue_jobs``.
QUEUE_STATES = {
    "queued": "ready",
    "scheduled": "scheduled",
    "running": "running",
    "reserved": "reserved",
    "dead": "dead",
}
#: stats_minute column -> counter name (``_total`` is added) and help.
COUNTERS = {
    "enqueued": ("receiptq_jobs_enqueued", "Jobs sent."),
    "succeeded": ("receiptq_jobs_done", "Deliveries that finished without an exception."),
    "failed": ("receiptq_jobs_failed", "Deliveries that raised (then retried or dead-lettered)."),
    "retried": ("receiptq_jobs_retried", "Failed deliveries scheduled to run again."),
    "dead_lettered": ("receiptq_jobs_dead_lettered", "Jobs moved to the dead letters."),
    "postponed": ("receiptq_jobs_postponed", "Deliveries put back unrun (breaker open, throttle)."),
}
#: The states a circuit breaker can be in (``receiptq_breaker_state``).
BREAKER_STATES = ("closed", "open", "half-open")


def histogram_buckets(counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts over BUCKET_BOUNDS_MS as Prometheus' cumulative buckets, in s."""
    buckets = []
    cumulative = 0
    for bound_ms, count in zip(BUCKET_BOUNDS_MS, counts, strict=False):
        cumulative += count
        buckets.append((f"{bound_ms / 1000:g}", float(cumulative)))
    buckets.append(("+Inf", float(sum(counts))))
    return buckets


def breaker_states(status: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, state) of each breaker in a snapshot's ``breakers`` (absent: none).

    Accepts ``{"name": {"state": ...}}``, ``{"name": "state"}`` or ``[{"name", "state"}]``.
    """
    breakers = status.get("breakers") or {}
    if isinstance(breakers, dict):
        items = [
            (name, value.get("state") if isinstance(value, dict) else value)
            for name, value in breakers.items()
        ]
    else:
        items = [(item.get("name"), item.get("state")) for item in breakers]
    return [(str(name), str(state).lower()) for name, state in items if name and state]


class PostgresCollector(Collector):
    """Reads the monitor's figures on each scrape."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        with self.pool.connection() as conn:
            status = monitor.snapshot(conn)
            totals = monitor.actor_totals(conn)
        yield from status_metrics(status)
        yield from total_metrics(totals)


def status_metrics(status: dict[str, Any]) -> Iterator[Metric]:
    """Gauges from a :func:`receiptq.monitor.snapshot`."""
    jobs = GaugeMetricFamily(
        "receiptq_queue_jobs",
        "Jobs per queue and state (running: started by a worker thread; reserved: "
        "claimed by a worker, not started; dead: dead letters).",
        labels=["queue", "state"],
    )
    oldest = GaugeMetricFamily(
        "receiptq_queue_oldest_ready_seconds",
        "How long the oldest ready job of a queue has waited (0: none ready).",
        labels=["queue"],
    )
    for queue, figures in status["queues"].items():
        for key, state in QUEUE_STATES.items():
            jobs.add_metric([queue, state], figures[key])
        oldest.add_metric([queue], figures["oldest_ready_s"] or 0.0)
    workers = GaugeMetricFamily(
        "receiptq_workers",
        "Worker processes with a heartbeat row, alive or lost.",
        labels=["state"],
    )
    alive = sum(1 for worker in status["workers"] if worker["alive"])
    workers.add_metric(["alive"], alive)
    workers.add_metric(["lost"], len(status["workers"]) - alive)
    breakers = GaugeMetricFamily(
        "receiptq_breaker_state",
        "1 for the state each circuit breaker is in, 0 for the others.",
        labels=["breaker", "state"],
    )
    for name, current in breaker_states(status):
        for state in sorted({*BREAKER_STATES, current}):
            breakers.add_metric([name, state], 1 if state == current else 0)
    yield from (jobs, oldest, workers, breakers)


def total_metrics(totals: list[dict[str, Any]]) -> Iterator[Metric]:
    """Counters and histograms from :func:`receiptq.monitor.actor_totals`."""
    labels = ["queue", "actor"]
    for column, (name, help_text) in COUNTERS.items():
        counter = CounterMetricFamily(name, help_text, labels=labels)
        for row in totals:
            counter.add_metric([row["queue"], row["actor"]], row[column])
        yield counter
    for kind, help_text in (
        ("run", "Run time of finished deliveries."),
        ("latency", "Wait from due (enqueue or run_at) to start."),
    ):
        histogram = HistogramMetricFamily(f"receiptq_job_{kind}_seconds", help_text, labels=labels)
        for row in totals:
            histogram.add_metric(
                [row["queue"], row["actor"]],
                histogram_buckets(row[f"{kind}_ms_hist"]),
                sum_value=row[f"{kind}_ms_sum"] / 1000,
            )
        yield histogram
