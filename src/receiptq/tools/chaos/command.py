"""``python -m receiptq.tools.chaos``: the chaos run's options, and its report (one
JSON line on stdout, a few lines on stderr). The run: :mod:`receiptq.tools.chaos.run`."""

from __future__ import annotations

import argparse
import json
import sys

from receiptq.processes import log_folder
from receiptq.tools.chaos.run import ChaosSettings, run_chaos


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS or LOW-HIGH, got {text!r}") from None
    if not 0 < pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH, got {text!r}")
    return pair


def _restarts(text: str) -> tuple[str, ...]:
    modes = tuple(m for m in text.split(",") if m)
    if any(m not in ("fast", "immediate") for m in modes):
        raise argparse.ArgumentTypeError(f"restart modes are fast and immediate, got {text!r}")
    return modes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m receiptq.tools.chaos",
        description="Kill workers and restart PostgreSQL under a drain; report what was "
        "lost, dead-lettered, and how long killed workers' jobs waited to run again.",
    )
    d = ChaosSettings()
    parser.add_argument("--jobs", type=int, default=d.jobs, help=f"default {d.jobs}")
    parser.add_argument("--invocations", type=int, default=d.invocations,
                        help=f"dramatiq invocations (default {d.invocations})")  # fmt: skip
    parser.add_argument("--processes", type=int, default=d.processes, help="per invocation")
    parser.add_argument("--threads", type=int, default=d.threads, help="per process")
    parser.add_argument("--lease-s", type=float, default=d.lease_s, help="RECEIPTQ_LEASE_S")
    parser.add_argument("--kill-every", type=_range, default=d.kill_every_s, metavar="LOW-HIGH",
                        help="seconds between kills (default 2-5)")  # fmt: skip
    parser.add_argument("--min-kills", type=int, default=d.min_kills,
                        help="kills at evenly spaced points of the drain, besides the timed ones")  # fmt: skip
    parser.add_argument("--restarts", type=_restarts, default=d.restarts,
                        help="database restarts, in order (default fast,immediate)")  # fmt: skip
    parser.add_argument("--outage-s", type=float, default=d.outage_s,
                        help="how long each restart keeps the database down")  # fmt: skip
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--timeout-s", type=float, default=d.timeout_s)
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = ChaosSettings(
        jobs=args.jobs,
        invocations=args.invocations,
        processes=args.processes,
        threads=args.threads,
        lease_s=args.lease_s,
        kill_every_s=args.kill_every,
        min_kills=args.min_kills,
        restarts=args.restarts,
        outage_s=args.outage_s,
        seed=args.seed,
        timeout_s=args.timeout_s,
    )
    log_dir = log_folder("receiptq-chaos-")
    summary = run_chaos(settings, log_dir).summary()
    print(json.dumps(summary), flush=True)
    if not args.json:
        waits = summary["kill_to_rerun_s"]
        print(
            f"jobs {summary['done']}/{summary['jobs']} in {summary['wall_s']} s; "
            f"{summary['kills']} kills ({summary['group_kills']} whole invocations), "
            f"restarts {', '.join(summary['restarts']) or 'none'}\n"
            f"lost {summary['lost']}, dead-lettered {summary['dead_lettered']}, "
            f"deadlocks {summary['deadlocks']}, most held {summary['most_held']} "
            f"(prefetch {summary['prefetch']})\n"
            f"kill-to-rerun p50 {waits['p50']} s, p95 {waits['p95']} s, max {waits['max']} s "
            f"over {waits['jobs']} jobs; recovery after restarts {summary['recovery_s']} s\n"
            f"logs: {log_dir}",
            file=sys.stderr,
        )
    return 0 if summary["finished"] and not summary["lost"] else 1
