"""The steady workload's producer, a process of its own (``python -m
receiptq.tools.bench --produce``), so that it does not share a core's worth of Python
with the bench. Handshake: it prints "ready" once connected, reads "go", enqueues
batches for the given seconds and prints ``{"enqueued": n}``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from receiptq.config import database_url
from receiptq.tools.bench.workload import STEADY_BATCH, bench_messages, open_broker


def produce(url: str, seconds: float) -> int:
    broker = open_broker(url)  # connected before "ready", as the peers' producers are
    try:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        enqueued = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            broker.enqueue_many(bench_messages(STEADY_BATCH))
            enqueued += STEADY_BATCH
        print(json.dumps({"enqueued": enqueued}), flush=True)
    finally:
        broker.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m receiptq.tools.bench --produce``: the steady workload's producer process.
    (The benchmark itself is ``receiptq bench``, or ``python -m receiptq bench``.)"""
    parser = argparse.ArgumentParser(
        prog="python -m receiptq.tools.bench", description=main.__doc__
    )
    parser.add_argument("--produce", action="store_true", required=True)
    parser.add_argument("--url", default=None, help="PostgreSQL URL of the bench database")
    parser.add_argument("--seconds", type=float, required=True, help="how long to produce")
    args = parser.parse_args(argv)
    # The producer holds nothing that needs cleaning up: SIGTERM just ends it.
    return produce(database_url(args.url), args.seconds)
