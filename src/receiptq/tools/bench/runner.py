"""``receiptq bench`` (its options: :mod:`receiptq.cli.bench`): run the chosen
workloads, each within its hard timeout, print a JSON line each, then a table."""

from __future__ import annotations

import argparse
import json
from typing import Any

from receiptq import db
from receiptq.config import database_url
from receiptq.processes import sigterm_exits
from receiptq.tools.bench.backlog import run_backlog
from receiptq.tools.bench.ceiling import run_ceiling
from receiptq.tools.bench.compare import comparison_from, present
from receiptq.tools.bench.report import print_table
from receiptq.tools.bench.workload import (
    BENCH_QUEUE,
    DRAIN_ENQUEUE_CHUNK,
    PEER,
    STEADY_BATCH,
    WORKER_MODULE,
    BenchTimeout,
    Settings,
    Workload,
    log,
    version_string,
)
from receiptq.tools.bench.workloads import run_drain, run_steady, run_tiers, run_users

#: Workloads that need no PostgreSQL (the runner then neither finds nor checks a server).
NO_DATABASE = {"ceiling"}


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        workloads=tuple(args.workload),
        jobs=args.jobs,
        seconds=args.seconds,
        processes=args.processes,
        threads=args.threads,
        timeout=args.timeout,
        database=args.database,
        quiet=args.json,
        rounds=args.rounds,
        backlog_sizes=args.backlog_sizes,
        claim_ahead=args.claim_ahead,
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen workloads; print a JSON line each, then a table. Exit status."""
    settings = settings_from(args)
    comparison = comparison_from(args)  # reads --compare, --from-json first: exit 2 if bad
    if comparison.saved is not None:  # --from-json: nothing to run
        return present(comparison, comparison.saved)
    server_url = ""
    if set(settings.workloads) - NO_DATABASE:
        server_url = database_url(getattr(args, "url", None))
        db.check_connection(server_url)  # unreachable: one line (receiptq's main), exit 1
    results = []
    with sigterm_exits():
        for workload in settings.workloads:
            log(settings, f"[{PEER}] {workload} ...")
            result = run_one(workload, settings, server_url)
            print(json.dumps(result), flush=True)
            results.append(result)
    if not settings.quiet:
        print_table(results)
    present(comparison, results)
    return 1 if any("error" in result for result in results) else 0


def consumers_string(settings: Settings, workload: str) -> str:
    batch = STEADY_BATCH if workload == "steady" else DRAIN_ENQUEUE_CHUNK
    return (
        f"dramatiq CLI {WORKER_MODULE} --processes {settings.processes} "
        f"--threads {settings.threads} --queues {BENCH_QUEUE}, PostgresBroker with "
        f"Dramatiq's default middleware and durable batched acks, claim-ahead "
        f"{'on' if settings.claim_ahead else 'off'} (RECEIPTQ_CLAIM_AHEAD), sync no-op "
        f"actor; enqueue = broker.enqueue_many, {batch} per call"
    )


def run_one(workload: str, settings: Settings, server_url: str) -> dict[str, Any]:
    """Run one workload within its hard timeout and always clean up; its result line."""
    result: dict[str, Any] = {"peer": PEER, "workload": workload}
    if workload in ("drain", "tiers", "users", "backlog", "ceiling"):
        result["jobs"] = settings.jobs
    else:
        result["seconds"] = settings.seconds
        result["enqueue_batch"] = STEADY_BATCH
    result["version"] = version_string()
    result["consumers"] = consumers_string(settings, workload)
    w = Workload(workload, settings, server_url, result)
    try:
        if workload == "drain":
            run_drain(w)
        elif workload == "tiers":
            run_tiers(w)
        elif workload == "users":
            run_users(w)
        elif workload == "backlog":
            run_backlog(w)
        elif workload == "ceiling":
            run_ceiling(w)
        else:
            run_steady(w)
        result["timeout"] = False
    except BenchTimeout:
        result["timeout"] = True
    except Exception as exc:
        result["timeout"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            w.close()
        except Exception as exc:
            result.setdefault("error", f"while stopping: {type(exc).__name__}: {exc}")
    return result
