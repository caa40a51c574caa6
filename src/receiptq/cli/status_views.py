"""How ``receiptq status``, ``receiptq top`` and ``receiptq breakers list`` draw the
monitor's figures (:func:`receiptq.monitor.snapshot`, :func:`~receiptq.claimed_jobs.claimed_jobs`)
as rich tables."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from receiptq.cli._common import cell

BREAKER_STYLES = {"closed": "green", "half-open": "yellow", "open": "red"}


def _queue_rows(snap: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(name, figures, is_total) for each queue, then the totals."""
    for name, figures in snap["queues"].items():
        yield name, figures, False
    yield "total", snap["totals"], True


def queue_settings_text(figures: dict[str, Any]) -> Text:
    """A queue's settings in a few words: ``paused, cap 4, ocr_receipt cap 2`` (or "-")."""
    parts = [Text("paused", style="yellow")] if figures.get("paused") else []
    if figures.get("max_running") is not None:
        parts.append(Text(f"cap {figures['max_running']}"))
    for actor, cap in (figures.get("actor_caps") or {}).items():
        parts.append(Text(f"{actor} cap {cap['max_running']}"))
    return Text(", ").join(parts) if parts else Text("-")


def backlog_table(snap: dict[str, Any]) -> Table:
    table = Table(
        title="Queues",
        title_justify="left",
        caption="running: started by a worker thread; reserved: claimed by a worker, not started",
        caption_justify="left",
    )
    table.add_column("Queue")
    for header in ("Ready", "Scheduled", "Running", "Reserved", "Dead", "Oldest ready"):
        table.add_column(header, justify="right")
    table.add_column("Settings")
    for name, f, is_total in _queue_rows(snap):
        if is_total:
            table.add_section()
        table.add_row(
            name,
            *(str(f[key]) for key in ("queued", "scheduled", "running", "reserved", "dead")),
            cell(f["oldest_ready_s"], ".1f", " s"),
            "" if is_total else queue_settings_text(f),
            style="bold" if is_total else None,
        )
    return table


def throughput_table(snap: dict[str, Any]) -> Table:
    table = Table(title="Finished jobs (1m / 5m / 60m)", title_justify="left")
    table.add_column("Queue")
    for header in ("Done", "Failed", "Jobs/s", "Wait p50/p95", "Run p50/p95", "Success 5m"):
        table.add_column(header, justify="right")
    for name, f, is_total in _queue_rows(snap):
        if is_total:
            table.add_section()
        success = f["success_rate_5m"]
        table.add_row(
            name,
            f"{f['done_1m']}/{f['done_5m']}/{f['done_60m']}",
            f"{f['failed_1m']}/{f['failed_5m']}/{f['failed_60m']}",
            f"{f['throughput_per_s_1m']:.1f}",
            f"{cell(f['latency_p50_ms'], '.1f')}/{cell(f['latency_p95_ms'], '.1f')} ms",
            f"{cell(f['run_p50_ms'], '.1f')}/{cell(f['run_p95_ms'], '.1f')} ms",
            cell(None if success is None else 100 * success, ".1f", "%"),
            style="bold" if is_total else None,
        )
    return table


def _worker_state(worker: dict[str, Any]) -> Text:
    if not worker["alive"]:
        return Text("lost", style="red")
    if worker.get("throttled"):
        return Text(f"throttled: {worker['throttled']}", style="yellow")
    return Text("alive", style="green")


def workers_table(snap: dict[str, Any]) -> Table:
    table = Table(title="Workers", title_justify="left")
    headers = ("Worker", "Queues", "Running", "Reserved", "CPU", "Memory", "Heartbeat", "State")
    for header in headers:
        table.add_column(
            header, justify="left" if header in ("Worker", "Queues", "State") else "right"
        )
    for w in snap["workers"]:
        table.add_row(
            w["id"],
            ", ".join(w["queues"]),
            str(w["running"]),
            str(w["reserved"]),
            cell(w.get("cpu_percent"), ".0f", "%"),
            cell(w.get("memory_percent"), ".0f", "%"),
            f"{w['heartbeat_age_s']:.0f} s ago",
            _worker_state(w),
        )
    if not snap["workers"]:
        table.caption = "no worker has a heartbeat"
    return table


def breakers_table(snap: dict[str, Any]) -> Table:
    """The ``breakers`` of a snapshot (or of ``{"breakers": [...]}``)."""
    table = Table(title="Circuit breakers", title_justify="left")
    for header in ("Breaker", "State", "Failures", "Opened at", "May close at"):
        table.add_column(header, justify="right" if header == "Failures" else "left")
    for b in snap.get("breakers", []):
        table.add_row(
            b["name"],
            Text(b["state"], style=BREAKER_STYLES.get(b["state"], "")),
            f"{b['fail_counter']}/{b['fail_max']}",
            b["opened_at"] or "-",
            b["closes_at"] or "-",
        )
    return table


def status_view(snap: dict[str, Any]) -> RenderableType:
    """The human form of a :func:`receiptq.monitor.snapshot`."""
    parts: list[RenderableType] = [backlog_table(snap), throughput_table(snap), workers_table(snap)]
    if snap.get("breakers"):
        parts.append(breakers_table(snap))
    return Group(*parts, Text(f"as of {snap['generated_at']}", style="dim"))


# -- receiptq top ---------------------------------------------------------------------


def jobs_table(title: str, jobs: list[dict[str, Any]], elapsed: str) -> Table:
    """One row per job: id, queue, actor, arguments, worker, ``elapsed``, attempt."""
    table = Table(title=title, title_justify="left")
    for header in ("Job", "Queue", "Actor", "Arguments", "Worker", elapsed, "Attempt"):
        table.add_column(
            header, justify="right" if header in ("Job", elapsed, "Attempt") else "left"
        )
    for job in jobs:
        table.add_row(
            str(job["id"]),
            job["queue"],
            job["actor"],
            Text(job["args"], overflow="ellipsis", no_wrap=True),
            job["worker"] or "-",
            f"{job['elapsed_s']:.1f} s",
            str(job["attempt"]),
        )
    return table


def _shown(snap: dict[str, Any], kind: str) -> str:
    total, shown = snap["counts"][kind], len(snap[kind])
    return str(total) if total == shown else f"{shown} of {total}"


def top_view(snap: dict[str, Any]) -> RenderableType:
    """The human form of :func:`receiptq.claimed_jobs.claimed_jobs`."""
    running = jobs_table(f"Running jobs ({_shown(snap, 'running')})", snap["running"], "Elapsed")
    if not snap["running"]:
        running.caption = "nothing is running"
    parts: list[RenderableType] = [running]
    if snap["reserved"]:
        title = f"Reserved: claimed by a worker, not started ({_shown(snap, 'reserved')})"
        parts.append(jobs_table(title, snap["reserved"], "Waiting"))
    stamp = datetime.fromisoformat(snap["generated_at"])
    parts.append(Text(f"as of {stamp:%H:%M:%S} · Ctrl-C to quit", style="dim"))
    return Group(*parts)
