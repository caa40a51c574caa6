"""What ``receiptq bench`` prints after its JSON lines: a table of the workloads, and
one of its own for the tiers and users workloads."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_table(results: list[dict[str, Any]]) -> None:
    def cell(value: Any, digits: int = 0) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    table = Table(title="receiptq bench")
    for header in ("peer", "workload", "jobs", "enqueue/s", "done/s", "p50 ms", "p99 ms"):
        table.add_column(header, justify="left" if header in ("peer", "workload") else "right")
    table.add_column("last ack s", justify="right")
    table.add_column("note")
    for r in results:
        note = "TIMEOUT" if r.get("timeout") else ""
        if "error" in r:
            note = "ERROR: " + r["error"][:60]
        if r["workload"] in ("drain", "ceiling"):
            jobs, rate = r.get("done"), r.get("drain_jobs_per_s")
        elif r["workload"] == "tiers":
            jobs, rate = r.get("jobs"), r.get("fair_drain_jobs_per_s")
            if r.get("fairness_cost_percent") is not None:
                note = (note + f" fairness cost {r['fairness_cost_percent']:.1f}%").strip()
        elif r["workload"] == "users":
            jobs, rate = r.get("jobs"), r.get("with_rounds_drain_jobs_per_s")
            if r.get("with_rounds_newcomer_wait_p95_ms") is not None:
                note = (
                    note + f" newcomer wait p95 {r['with_rounds_newcomer_wait_p95_ms']:.0f} ms"
                    f" (FIFO: {r.get('without_rounds_newcomer_wait_p95_ms') or 0:.0f} ms)"
                ).strip()
        elif r["workload"] == "backlog":
            jobs, rate, note = r.get("jobs"), None, (note + " " + backlog_note(r)).strip()
        else:
            jobs, rate = r.get("completed"), r.get("completed_jobs_per_s")
            if r.get("backlog_at_end"):
                note = (note + f" backlog={r['backlog_at_end']}").strip()
        table.add_row(
            r["peer"],
            r["workload"],
            cell(jobs),
            cell(r.get("enqueue_jobs_per_s")),
            cell(rate),
            cell(r.get("latency_p50_ms"), 1),
            cell(r.get("latency_p99_ms"), 1),
            cell(r.get("last_ack_s"), 2),
            note,
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(table)
    console.print(
        "drain: jobs = jobs done, done/s = jobs / seconds from the first worker's boot to the "
        "last job's start; last ack = when the jobs table was empty.\n"
        "steady: jobs = jobs done in the window, done/s over the window, p50/p99 = latency "
        "from enqueue to job start. Compare ratios within one run, not absolute figures."
    )
    for r in results:
        if r["workload"] == "tiers" and "share_under_saturation" in r:
            console.print(tiers_table(r))
        if r["workload"] == "users" and "with_rounds_newcomer_wait_p95_ms" in r:
            console.print(users_table(r))
        if r["workload"] == "backlog" and r.get("sizes"):
            console.print(backlog_table(r))


def tiers_table(r: dict[str, Any]) -> Table:
    """The tiers workload: per tier, the share it got under saturation and its waits."""
    table = Table(
        title="receiptq bench: tiers",
        caption=f"median of {len(r.get('fair_drain_jobs_per_s_rounds', [0]))} drains each: "
        f"plain priority {r['plain_drain_jobs_per_s']:.0f} jobs/s, fair "
        f"{r['fair_drain_jobs_per_s']:.0f} jobs/s; fairness costs "
        f"{r['fairness_cost_percent']:.1f}% (the rounds' pairs, in turn plain first and "
        "fair first: the mean of the two orders' medians; target: 5% at most). "
        "Share = of the jobs "
        "started while every tier had work waiting; wait = from the workers' start.",
    )
    for header in ("tier", "expected share", "share", "wait p50 ms", "wait p95 ms"):
        table.add_column(header, justify="left" if header == "tier" else "right")
    for tier, share in r["share_under_saturation"].items():
        table.add_row(
            tier,
            f"{r['expected_share'].get(tier, 0):.3f}",
            "-" if share is None else f"{share:.3f}",
            "-" if r["wait_p50_ms"][tier] is None else f"{r['wait_p50_ms'][tier]:.0f}",
            "-" if r["wait_p95_ms"][tier] is None else f"{r['wait_p95_ms'][tier]:.0f}",
        )
    return table


def users_table(r: dict[str, Any]) -> Table:
    """The users workload: a newcomer's wait behind another user's flood, with and
    without user rounds."""
    table = Table(
        title="receiptq bench: users",
        caption=f"{r['jobs']} jobs of one user queued, then {r['newcomers']} other users send "
        "one job each while they drain; wait = from a newcomer's send to its start.",
    )
    for header in ("claim order", "drain jobs/s", "newcomer wait p50 ms", "p95 ms"):
        table.add_column(header, justify="left" if header == "claim order" else "right")
    for name, title in (("without_rounds", "FIFO in the tier"), ("with_rounds", "user rounds")):
        table.add_row(
            title,
            f"{r.get(f'{name}_drain_jobs_per_s') or 0:.0f}",
            f"{r.get(f'{name}_newcomer_wait_p50_ms') or 0:.0f}",
            f"{r.get(f'{name}_newcomer_wait_p95_ms') or 0:.0f}",
        )
    return table


def backlog_note(r: dict[str, Any]) -> str:
    """The backlog workload's verdict for the main table: each mode's rate ratio."""
    ratios = [
        f"{mode} {r[f'rate_ratio_{mode}']:.2f}"
        for mode in ("untiered", "tiered")
        if r.get(f"rate_ratio_{mode}") is not None
    ]
    return f"rate ratio {', '.join(ratios)}" if ratios else ""


def backlog_table(r: dict[str, Any]) -> Table:
    """The backlog workload: per size and mode, the fill, the claim statement's time
    and indexes, and the drain rate; the caption holds the ratios against the target."""
    sizes = r.get("backlog_sizes") or [int(s) for s in r["sizes"]]
    ratios = ", ".join(
        f"{mode} {'-' if r.get(f'rate_ratio_{mode}') is None else r[f'rate_ratio_{mode}']}"
        for mode in ("untiered", "tiered")
    )
    table = Table(
        title="receiptq bench: backlog",
        caption=f"{r.get('jobs')} jobs timed per drain, with {r.get('scheduled')} scheduled "
        f"and {r.get('dead_letters')} dead letters besides; claim = EXPLAIN ANALYZE of the "
        f"claim of {r.get('claim_limit')} jobs, median ms. Rate at {sizes[-1]} over rate at "
        f"{sizes[0]}: {ratios} (target >= {r.get('target_ratio')}).",
    )
    for header in ("size", "mode", "fill s", "claim ms", "claim index", "due ms", "drain jobs/s"):
        table.add_column(header, justify="left" if header in ("mode", "claim index") else "right")
    for size, modes in r["sizes"].items():
        for mode, f in modes.items():
            index = [name for name in f.get("claim_index", []) if name.startswith("jobs_")]
            table.add_row(
                size,
                mode,
                "-" if f.get("fill_s") is None else f"{f['fill_s']:.1f}",
                "-" if f.get("claim_ms_p50") is None else f"{f['claim_ms_p50']:.2f}",
                ", ".join(index) or "-",
                "-" if f.get("due_ms_p50") is None else f"{f['due_ms_p50']:.2f}",
                "-" if f.get("drain_jobs_per_s") is None else f"{f['drain_jobs_per_s']:.0f}",
            )
    return table
