"""``receiptq bench`` beside the peers: ``--compare`` reads the peers' JSON lines
(``../shared/peers/run.sh --json-only``), ``--from-json`` receiptq's saved ones
(``receiptq bench --json``) instead of running the workloads; ``--markdown`` prints
the comparison as a markdown table (for the README) and ``--plot`` draws it
(:mod:`receiptq.tools.bench.plot`).

The figures are picked from the lines and set side by side by pure functions, so
that the arithmetic is tested without a run. A ratio is always receiptq's figure
divided by the peer's: above 1 is better for jobs/s, below 1 for latency.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from receiptq.errors import ConfigError, shorten
from receiptq.extras import MissingExtra

PEER = "receiptq"
#: A steady run "fell behind" when the jobs still queued at the end of the window are
#: more than this share of those enqueued in it (and at least FELL_BEHIND_MIN_JOBS):
#: its latency is then mostly queueing time, and leaves out the jobs still waiting.
FELL_BEHIND_SHARE = 0.05
FELL_BEHIND_MIN_JOBS = 100
CEILING_LABEL = "Dramatiq StubBroker (ceiling)"


class ResultsFileError(ConfigError):
    """A --compare or --from-json file is missing or is not result lines (one line, exit 2)."""


# --- reading the lines -------------------------------------------------------------


def load_lines(path: Path, option: str) -> list[dict[str, Any]]:
    """The result lines of a JSON-lines file; other lines (a table printed after the
    JSON lines) are skipped. ResultsFileError when it holds none or a line is garbled."""
    where = f"{option} {shorten(str(path))}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFileError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{where}: cannot read it ({exc})") from None
    lines = [
        _result_line(line, f"{where}, line {number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.lstrip().startswith("{")
    ]
    if not lines:
        raise ResultsFileError(
            f"{where}: no result lines (expected JSON lines as `receiptq bench --json` "
            "or the peers' run.sh --json-only print)"
        )
    return lines


def _result_line(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(value, dict) or not all(
        isinstance(value.get(key), str) for key in ("peer", "workload")
    ):
        raise ResultsFileError(f"{where}: a result line is an object with 'peer' and 'workload'")
    return value


# --- picking the figures -----------------------------------------------------------


@dataclass(frozen=True)
class PeerFigures:
    """One peer's figures from its drain and steady lines (None: not measured)."""

    peer: str
    drain_jobs_per_s: float | None = None
    enqueue_jobs_per_s: float | None = None
    enqueue_users_jobs_per_s: float | None = None
    steady_jobs_per_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    backlog_at_end: int | None = None
    steady_enqueued: int | None = None

    @property
    def fell_behind(self) -> bool:
        return fell_behind(self.backlog_at_end, self.steady_enqueued)


def fell_behind(backlog_at_end: int | None, enqueued: int | None) -> bool:
    """Whether a steady run's consumers did not keep up (see FELL_BEHIND_SHARE)."""
    if not backlog_at_end:
        return False
    threshold = max(FELL_BEHIND_MIN_JOBS, FELL_BEHIND_SHARE * (enqueued or 0))
    return backlog_at_end > threshold


def latest(results: Iterable[dict[str, Any]], peer: str | None, workload: str) -> dict[str, Any]:
    """The last line of that peer (any with None) and workload without an error, or {}."""
    found: dict[str, Any] = {}
    for line in results:
        if (peer is None or line["peer"] == peer) and line["workload"] == workload:
            if "error" not in line:
                found = line
    return found


def peers_in_order(results: Iterable[dict[str, Any]]) -> list[str]:
    """receiptq first, then the peers in the order their lines came."""
    names = [line["peer"] for line in results if line["workload"] in ("drain", "steady")]
    return sorted(dict.fromkeys(names), key=lambda name: name != PEER)


def peer_figures(results: list[dict[str, Any]]) -> list[PeerFigures]:
    """Each peer's drain and steady figures, receiptq first."""
    figures = []
    for peer in peers_in_order(results):
        drain, steady = latest(results, peer, "drain"), latest(results, peer, "steady")
        figures.append(
            PeerFigures(
                peer=peer,
                drain_jobs_per_s=drain.get("drain_jobs_per_s"),
                enqueue_jobs_per_s=drain.get("enqueue_jobs_per_s"),
                enqueue_users_jobs_per_s=drain.get("enqueue_users_jobs_per_s"),
                steady_jobs_per_s=steady.get("completed_jobs_per_s"),
                latency_p50_ms=steady.get("latency_p50_ms"),
                latency_p99_ms=steady.get("latency_p99_ms"),
                backlog_at_end=steady.get("backlog_at_end"),
                steady_enqueued=steady.get("enqueued"),
            )
        )
    return figures


def ratio(own: float | None, peer: float | None) -> float | None:
    """receiptq's figure divided by the peer's; None when either is missing or zero."""
    if own is None or not peer:
        return None
    return own / peer


def postgres_version(results: Iterable[dict[str, Any]]) -> str | None:
    """ "PostgreSQL 16.4" from the first line whose ``version`` names it (receiptq's)."""
    for line in results:
        version = str(line.get("version", ""))
        for part in version.split(", "):
            if part.startswith("PostgreSQL "):
                return part
    return None


# --- the markdown table ------------------------------------------------------------


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def _with_ratio(value: float | None, own: float | None) -> str:
    share = ratio(own, value)
    if share is None:
        return _number(value)
    return (
        f"{_number(value)} ({share:.2f}×)" if share >= 0.1 else f"{_number(value)} ({share:.2g}×)"
    )


#: The table's rows: label, the figure, whether it has a ratio.
ROWS: list[tuple[str, Callable[[PeerFigures], float | None], bool]] = [
    ("drain jobs/s", lambda f: f.drain_jobs_per_s, True),
    ("enqueue jobs/s (drain)", lambda f: f.enqueue_jobs_per_s, True),
    ("enqueue jobs/s, a user_id on each", lambda f: f.enqueue_users_jobs_per_s, False),
    ("steady jobs/s", lambda f: f.steady_jobs_per_s, False),
    ("steady p50 ms", lambda f: f.latency_p50_ms, True),
    ("steady p99 ms", lambda f: f.latency_p99_ms, True),
    ("steady backlog at end", lambda f: f.backlog_at_end, False),
]


def ceiling_figures(results: list[dict[str, Any]]) -> PeerFigures | None:
    """The ceiling line as a column of the table (drain and enqueue only)."""
    line = latest(results, None, "ceiling")
    if not line:
        return None
    return PeerFigures(
        peer=CEILING_LABEL,
        drain_jobs_per_s=line.get("drain_jobs_per_s"),
        enqueue_jobs_per_s=line.get("enqueue_jobs_per_s"),
    )


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The peers side by side, each peer's figure followed by receiptq ÷ peer."""
    columns = peer_figures(results)
    ceiling = ceiling_figures(results)
    if ceiling is not None:
        columns.append(ceiling)
    own = next((c for c in columns if c.peer == PEER), PeerFigures(PEER))
    header = ["", *(c.peer for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, pick, has_ratio in ROWS:
        if all(pick(c) is None for c in columns):
            continue  # not measured in these lines (e.g. lines of an older receiptq)
        cells = [
            _with_ratio(pick(c), pick(own)) if has_ratio and c is not own else _number(pick(c))
            for c in columns
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + table_notes(results, columns)


def table_notes(results: list[dict[str, Any]], columns: list[PeerFigures]) -> str:
    """What the table's figures are, and what each peer ran."""
    behind = [c.peer for c in columns if c.fell_behind]
    notes = [
        "(n×) = receiptq's figure ÷ the peer's: above 1 is better for jobs/s, below 1 "
        "for latency. Enqueue: batches of 1000 where the peer has a batch API (one send "
        "per job for Dramatiq). Latency: enqueue to job start."
    ]
    if behind:
        notes.append(
            f"Fell behind in the steady run (backlog > {FELL_BEHIND_SHARE:.0%} of what was "
            f"enqueued): {', '.join(behind)}; their latency is mostly queueing time."
        )
    consumers = []
    for c in columns:
        line = latest(results, c.peer, "drain") or latest(results, c.peer, "steady")
        if c.peer == CEILING_LABEL:
            line = latest(results, None, "ceiling")
        if line.get("consumers"):
            consumers.append(f"- {c.peer} ({line.get('version', '?')}): {line['consumers']}")
    return "\n\n".join([*notes, "\n".join(consumers)] if consumers else notes) + "\n"


# --- the options -------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """What to do with the results once they are there (the options, files read)."""

    peers: list[dict[str, Any]]
    saved: list[dict[str, Any]] | None = None
    plot: Path | None = None
    markdown: bool = False
    measured_on: date | None = None


def comparison_from(args: argparse.Namespace) -> Comparison:
    """Read the --compare and --from-json files and check --plot before anything runs,
    so that a typo does not cost a benchmark run."""
    paths = [Path(p) for p in (getattr(args, "compare", None) or [])]
    peers = [line for path in paths for line in load_lines(path, "--compare")]
    saved_path = getattr(args, "from_json", None)
    saved = load_lines(Path(saved_path), "--from-json") if saved_path else None
    plot = getattr(args, "plot", None)
    if plot is not None:
        plot = Path(plot)
        if not plot.parent.is_dir():
            raise ResultsFileError(f"--plot {shorten(str(plot))}: no such directory")
        if importlib.util.find_spec("matplotlib") is None:
            raise MissingExtra(
                "receiptq bench --plot needs matplotlib (in receiptq's dev extra): "
                "pip install matplotlib"
            )
    measured_on = None
    if saved_path:  # redrawn: the day the saved lines were written
        measured_on = datetime.fromtimestamp(Path(saved_path).stat().st_mtime, UTC).date()
    return Comparison(peers, saved, plot, bool(getattr(args, "markdown", False)), measured_on)


def present(comparison: Comparison, results: list[dict[str, Any]]) -> int:
    """Draw the plot and print the markdown table, as asked; with --from-json and
    neither, the table of the saved lines and the peers'. Exit status."""
    every = [*results, *comparison.peers]
    if comparison.plot is not None:
        from receiptq.tools.bench.plot import draw, title

        draw(every, comparison.plot, title(every, comparison.measured_on))
        print(f"plot: {comparison.plot}", file=sys.stderr)
    if comparison.markdown:
        print(markdown_table(every), flush=True)
    if comparison.saved is not None and comparison.plot is None and not comparison.markdown:
        from receiptq.tools.bench.report import print_table

        print_table(every)
    return 0
