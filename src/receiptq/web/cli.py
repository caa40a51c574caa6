"""``receiptq web``: serve the dashboard and ``/metrics`` with uvicorn.

Binds to 127.0.0.1 unless told otherwise; any other host needs
``RECEIPTQ_WEB_TOKEN`` (the command refuses to start without it). On SIGTERM
uvicorn stops accepting connections and finishes the requests in flight.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from receiptq import config, monitor
from receiptq.web import security
from receiptq.web.sampler import DEFAULT_SAMPLE_INTERVAL_S

EXIT_USAGE = 2
#: Seconds uvicorn gives requests in flight after SIGTERM (below the usual 10-30 s
#: grace period of a PaaS before SIGKILL).
GRACEFUL_SHUTDOWN_S = 5


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected 1-65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected 1-65535")
    return port


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= 0.1:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0.1, got {text!r}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq web`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "web",
        help="the live dashboard and Prometheus /metrics",
        description="Serve the dashboard (one page, a JSON API, /metrics). Binds to "
        f"127.0.0.1 by default; any other host needs {security.TOKEN_VARIABLE}, which "
        "every request must then carry.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="default 8000")
    parser.add_argument(
        "--sample-interval-s",
        type=_interval,
        default=None,
        help="seconds between queue-depth samples for the charts "
        "(RECEIPTQ_WEB_SAMPLE_INTERVAL_S, default 2)",
    )
    parser.add_argument(
        "--url", default=argparse.SUPPRESS, help="PostgreSQL URL (default: as configured)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from receiptq.web.app import create_app

    token = os.environ.get(security.TOKEN_VARIABLE, "").strip() or None
    try:
        security.check_bind(args.host, token)
    except security.UnsafeBindError as exc:
        print(f"receiptq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        interval_s = args.sample_interval_s or config.env_float(
            "RECEIPTQ_WEB_SAMPLE_INTERVAL_S", DEFAULT_SAMPLE_INTERVAL_S
        )
    except config.ConfigError as exc:
        print(f"receiptq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    url = config.database_url(getattr(args, "url", None))
    # A database that is not migrated or not reachable fails here, in one line
    # (receiptq's main), not as a traceback in the server's startup.
    monitor.snapshot(url)
    app = create_app(url, token=token, sample_interval_s=interval_s)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return 0
