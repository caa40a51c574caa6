"""``receiptq bench``: its options; the benchmark itself is :mod:`receiptq.tools.bench`."""

from __future__ import annotations

from typing import Any

from receiptq.cli._common import (
    BadArgument,
    add_command,
    data_options,
    parse_positive_float,
    parse_positive_int,
    worker_options,
)
from receiptq.errors import shorten
from receiptq.tools.bench import runner
from receiptq.tools.bench.workload import (
    DEFAULT_BACKLOG_SIZES,
    DEFAULT_DATABASE,
    DEFAULT_WORKLOADS,
    WORKLOADS,
)
from receiptq.tools.scratch import DATABASE_NAME

HELP = "benchmark receiptq: the peers' drain and steady workloads, tiers, backlog, ceiling"
JSON_HELP = "JSON lines only, no table"
DESCRIPTION = (
    "Run the peer benchmark's two workloads on receiptq, with real "
    "`dramatiq` worker processes: drain (enqueue N no-op jobs, then time the workers "
    "until all ran) and steady (a producer enqueues batches of 10 for T seconds; "
    "throughput and enqueue-to-start latency); with --workload tiers also the fair "
    "share each tier receives under saturation, its wait, and the throughput cost "
    "of fairness against plain priority ordering; with --workload backlog the drain "
    "rate and the claim's time and plan with a big backlog queued; with --workload "
    "ceiling the drain on Dramatiq's in-memory StubBroker. Each workload starts from a "
    "fresh database on the URL's server. One JSON line per workload, then a table; "
    "--compare, --markdown and --plot set the peers' lines beside them."
)


def parse_workloads(text: str) -> tuple[str, ...]:
    """Comma-separated workload names, each one of
    :data:`receiptq.tools.bench.workload.WORKLOADS`."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown or not names:
        raise BadArgument(
            f"unknown workload {shorten(', '.join(unknown) or text)!r}; "
            f"known: {', '.join(WORKLOADS)}"
        )
    return names


def parse_sizes(text: str) -> tuple[int, ...]:
    """Comma-separated backlog sizes, each a whole number >= 1; ascending, each once."""
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise BadArgument(
            f"invalid backlog sizes {shorten(text)!r}: comma-separated whole numbers >= 1"
        )
    return tuple(sizes)


def parse_database_name(text: str) -> str:
    if not DATABASE_NAME.match(text):
        raise BadArgument(
            f"invalid database name {shorten(text)!r}: letters, digits and '_', at most 63"
        )
    return text


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq bench``."""
    parser = add_command(
        subparsers, "bench", runner.run, HELP, [data_options(JSON_HELP)], description=DESCRIPTION
    )
    parser.add_argument(
        "--workload",
        type=parse_workloads,
        default=DEFAULT_WORKLOADS,
        metavar="drain,steady,tiers,users,backlog,ceiling",
        help="comma-separated workloads (default: drain,steady); ceiling: the drain on "
        "Dramatiq's in-memory StubBroker, in one process of --threads threads",
    )
    parser.add_argument(
        "--jobs",
        type=parse_positive_int,
        default=20_000,
        help="drain: jobs; tiers, users: jobs per drain; backlog: jobs timed per drain "
        "(default 20000)",
    )
    parser.add_argument(
        "--seconds",
        type=parse_positive_float,
        default=15.0,
        help="steady: length of the window in seconds (default 15)",
    )
    parser.add_argument(
        "--rounds",
        type=parse_positive_int,
        default=3,
        help="tiers: pairs of drains, plain and fair, the pairs in turn plain first "
        "and fair first; the fairness cost is the mean of the two orders' median "
        "costs (default 3)",
    )
    parser.add_argument(
        "--backlog-sizes",
        type=parse_sizes,
        default=DEFAULT_BACKLOG_SIZES,
        metavar="N,N",
        help="backlog: comma-separated jobs queued before each drain, compared largest "
        "against smallest (default 20000,1000000)",
    )
    worker_options(parser, processes=2, threads=8)
    parser.add_argument(
        "--no-claim-ahead",
        dest="claim_ahead",
        action="store_false",
        help="run the workers with RECEIPTQ_CLAIM_AHEAD=0, each process holding no more "
        "than its prefetch (default: claim-ahead on, for throughput)",
    )
    parser.add_argument(
        "--timeout",
        type=parse_positive_float,
        default=120.0,
        help="hard limit per workload in seconds (tiers: per drain; backlog: per size and "
        "mode); partial figures are printed (default 120)",
    )
    parser.add_argument(
        "--database",
        type=parse_database_name,
        default=DEFAULT_DATABASE,
        help=f"benchmark database, dropped and created on the URL's server "
        f"(default {DEFAULT_DATABASE})",
    )
    compare_options(parser)


def compare_options(parser: Any) -> None:
    """The peers beside receiptq: --compare, --from-json, --plot, --markdown."""
    parser.add_argument(
        "--compare",
        action="append",
        metavar="FILE",
        help="the peers' JSON lines of the same sitting (../shared/peers/run.sh --json-only "
        "> FILE), set beside receiptq's by --plot and --markdown; repeatable",
    )
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        help="receiptq's lines saved earlier (receiptq bench --json > FILE) instead of "
        "running the workloads",
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw the results against the peers' into a PNG"
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the comparison as a markdown table (ratios receiptq / peer)",
    )
