"""``receiptq bench --plot FILE.png``: receiptq's figures against the peers' of the
same sitting, one PNG of small panels (matplotlib, from the dev extras, Agg):

  drain       jobs/s per peer, receiptq highlighted; the ceiling line (Dramatiq's
              StubBroker, :mod:`receiptq.tools.bench.ceiling`) dashed across it
  enqueue     the drain's batch enqueue, jobs/s per peer (the ceiling's sends dashed)
  latency     steady p50 and p99 per peer, log scale (Redis and Procrastinate fall
              behind into seconds); a peer whose backlog grew is marked "fell behind"
  tiers       plain vs fair drain rates and the fairness cost, if a tiers line is there
  backlog     the drain rate per backlog size and mode, if a backlog line is there

Which figures go where is picked by :mod:`receiptq.tools.bench.compare`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from receiptq.tools.bench.compare import (
    PEER,
    PeerFigures,
    latest,
    peer_figures,
    postgres_version,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

RECEIPTQ_COLOUR, PEER_COLOUR, CEILING_COLOUR = "#1f6fb4", "#a9a9a9", "#c0392b"
#: Light (p50) and dark (p99) shades of receiptq's and the peers' colours.
LATENCY_COLOURS = {True: ("#8fbce6", "#1f6fb4"), False: ("#d4d4d4", "#7a7a7a")}

Panel = Callable[["Axes"], str]


# --- the title ----------------------------------------------------------------------


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name on Linux, else None."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return " ".join(value.split())
    except OSError:
        pass
    return None


def title(results: list[dict[str, Any]], measured_on: date | None = None) -> str:
    """The date, the machine (CPU, cores) and PostgreSQL's version."""
    day = (measured_on or datetime.now(UTC).date()).isoformat()
    machine = ", ".join(
        part for part in (cpu_model(), f"{os.cpu_count()} cores", postgres_version(results)) if part
    )
    return f"receiptq bench against its peers, {day}\n{machine}"


# --- the panels ---------------------------------------------------------------------


def _bars(ax: Axes, figures: list[PeerFigures], values: list[float | None], unit: str) -> None:
    """One bar per peer, receiptq's highlighted, each labelled with its value."""
    names = [f.peer for f in figures]
    heights = [v or 0 for v in values]
    colours = [RECEIPTQ_COLOUR if n == PEER else PEER_COLOUR for n in names]
    bars = ax.bar(names, heights, color=colours)
    ax.bar_label(bars, labels=[f"{v:,.0f}" if v else "–" for v in values], fontsize=7)
    ax.set_ylabel(unit, fontsize=8)
    _peer_ticks(ax, names)


def _peer_ticks(ax: Axes, labels: list[str]) -> None:
    """Peer names across the x axis, broken at their dash so that five fit; receiptq bold."""
    wrapped = [label.replace("-", "-\n", 1) for label in labels]
    ax.set_xticks(range(len(labels)), wrapped, fontsize=7)
    for tick, label in zip(ax.get_xticklabels(), labels, strict=True):
        if label.split("\n")[0] == PEER:
            tick.set_fontweight("bold")


def _ceiling(ax: Axes, value: float | None, what: str) -> None:
    if value:
        ax.axhline(
            value,
            color=CEILING_COLOUR,
            ls="--",
            lw=1.2,
            label=f"Dramatiq StubBroker {what}: {value:,.0f}/s",
        )
        ax.legend(fontsize=6, loc="upper right")
        ax.set_ylim(top=max(ax.get_ylim()[1], value * 1.15))


#: The two rate panels: the figure (a PeerFigures field, and the ceiling line's key of
#: the same name), what the ceiling's dashed line is, the panel's title.
RATE_PANELS = [
    (
        "drain_jobs_per_s",
        "drain (1 process, in memory)",
        "drain: jobs/s from the consumers' start\nuntil the last job started",
    ),
    (
        "enqueue_jobs_per_s",
        "send, one per job",
        "enqueue before the drain: jobs/s\n(batches of 1000; Dramatiq: one send per job)",
    ),
]


def rate_panel(
    figures: list[PeerFigures], ceiling: Mapping[str, Any], key: str, what: str, heading: str
) -> Panel:
    """Jobs/s per peer as bars, the ceiling's figure as a dashed line across them."""

    def draw(ax: Axes) -> str:
        _bars(ax, figures, [getattr(f, key) for f in figures], "jobs/s")
        _ceiling(ax, ceiling.get(key), what)
        return heading

    return draw


def latency_panel(figures: list[PeerFigures]) -> Panel:
    def draw(ax: Axes) -> str:
        width = 0.38
        for n, f in enumerate(figures):
            light, dark = LATENCY_COLOURS[f.peer == PEER]
            hatch = "//" if f.fell_behind else None
            for offset, value, colour in (
                (-1, f.latency_p50_ms, light),
                (1, f.latency_p99_ms, dark),
            ):
                if value:
                    bar = ax.bar(
                        n + offset * width / 2,
                        value,
                        width,
                        color=colour,
                        hatch=hatch,
                        edgecolor="white",
                    )
                    ax.bar_label(bar, labels=[_ms(value)], fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)", fontsize=8)
        ax.legend(handles=_latency_legend(), fontsize=6, loc="upper left")
        values = [v for f in figures for v in (f.latency_p50_ms, f.latency_p99_ms) if v]
        if values:  # bars from a round power of ten below the lowest; room for labels
            ax.set_ylim(10 ** math.floor(math.log10(min(values))), max(values) * 4)
        _peer_ticks(ax, [_latency_label(f) for f in figures])
        return "steady: latency from enqueue to start\n(hatched: fell behind, mostly queueing)"

    return draw


def _latency_legend() -> list[Any]:
    from matplotlib.patches import Patch

    light, dark = LATENCY_COLOURS[False]
    return [Patch(color=light, label="p50"), Patch(color=dark, label="p99")]


def _ms(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _latency_label(f: PeerFigures) -> str:
    if not f.fell_behind:
        return f.peer
    return f"{f.peer}\nfell behind\n({f.backlog_at_end:,} left)"


def tiers_panel(line: Mapping[str, Any]) -> Panel:
    def draw(ax: Axes) -> str:
        names = ("plain", "fair")
        medians = [line.get(f"{name}_drain_jobs_per_s") or 0 for name in names]
        bars = ax.bar(names, medians, width=0.5, color=[PEER_COLOUR, RECEIPTQ_COLOUR])
        labels = [f"{m:,.0f}" for m in medians]
        ax.bar_label(bars, labels=labels, label_type="center", fontsize=8, color="white")
        for n, name in enumerate(names):  # each round's drain as a dot
            rounds = line.get(f"{name}_drain_jobs_per_s_rounds") or []
            ax.plot([n] * len(rounds), rounds, "k.", ms=4)
        ax.set_ylabel("jobs/s (median of the rounds)", fontsize=8)
        ax.tick_params(labelsize=7)
        cost = line.get("fairness_cost_percent")
        return "tiers: plain priority vs fair drain" + (
            f"\nfairness cost {cost:.1f} %" if cost is not None else ""
        )

    return draw


def backlog_rates(line: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    """{mode: {backlog size: drain jobs/s}} from a backlog line ({} if it has none):
    its ``sizes`` are {size: {mode: {"drain_jobs_per_s": ...}}}."""
    sizes = line.get("sizes")
    if not isinstance(sizes, Mapping):
        return {}
    rates: dict[str, dict[int, float]] = {}
    for size, modes in sizes.items():
        if not isinstance(modes, Mapping):
            continue
        for mode, run in modes.items():
            rate = run.get("drain_jobs_per_s") if isinstance(run, Mapping) else None
            if rate:
                rates.setdefault(str(mode), {})[int(size)] = float(rate)
    return rates


def _count(size: int) -> str:
    """20000 -> "20k", 1000000 -> "1M"."""
    for unit, scale in (("M", 1_000_000), ("k", 1000)):
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return str(size)


def backlog_panel(rates: Mapping[str, Mapping[int, float]]) -> Panel:
    """The drain rate against the backlog's size, a line per mode (tiered, untiered):
    flat is the target; the legend gives rate at the largest ÷ rate at the smallest."""

    def draw(ax: Axes) -> str:
        for mode, by_size in rates.items():
            sizes = sorted(by_size)
            values = [by_size[s] for s in sizes]
            flat = values[-1] / values[0] if values and values[0] else math.nan
            ax.plot(sizes, values, "o-", lw=1.2, label=f"{mode} (×{flat:.2f} at the largest)")
        ax.set_xscale("log")
        sizes = sorted({size for by_size in rates.values() for size in by_size})
        ax.set_xticks(sizes, [_count(size) for size in sizes], fontsize=7)
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_xlabel("jobs queued", fontsize=8)
        ax.set_ylabel("drain jobs/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower left")
        return "drain rate by backlog size"

    return draw


def panels(results: list[dict[str, Any]]) -> list[Panel]:
    """The panels these results fill: the three comparisons, then tiers and backlog
    when their lines are there."""
    figures = peer_figures(results)
    ceiling = latest(results, None, "ceiling")
    chosen = [rate_panel(figures, ceiling, *panel) for panel in RATE_PANELS]
    chosen.append(latency_panel(figures))
    tiers = latest(results, PEER, "tiers")
    if tiers.get("plain_drain_jobs_per_s") is not None:
        chosen.append(tiers_panel(tiers))
    rates = backlog_rates(latest(results, PEER, "backlog"))
    if rates:
        chosen.append(backlog_panel(rates))
    return chosen


# --- the picture --------------------------------------------------------------------


def draw(results: list[dict[str, Any]], path: Path, heading: str) -> list[str]:
    """Write the PNG; the panels' titles, in order (what the tests check)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = panels(results)
    rows = 1 if len(chosen) <= 3 else 2
    cols = math.ceil(len(chosen) / rows)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.2 * rows), dpi=100, squeeze=False)
    titles = []
    for ax, panel in zip(axes.flat, chosen, strict=False):
        titles.append(panel(ax))
        ax.set_title(titles[-1], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in axes.flat[len(chosen) :]:
        ax.set_visible(False)
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return titles
