"""``receiptq web``: serve the dashboard and ``/metrics`` with uvicorn.

Binds to 127.0.0.1 unless told otherwise; any other host needs
``RECEIPTQ_WEB_TOKEN`` (the command refuses to start without it). On SIGTERM
uvicorn stops accepting connections and finishes the requests in flight.
"""

from __future__ import annotations

import argparse
from typing import Any

from receiptq import monitor
from receiptq.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_command,
    number_at_least,
    parse_port,
    url,
    url_option,
)
from receiptq.settings import Settings
from receiptq.web import security

#: Seconds uvicorn gives requests in flight after SIGTERM (below the usual 10-30 s
#: grace period of a PaaS before SIGKILL).
GRACEFUL_SHUTDOWN_S = 5
#: The shortest time between two queue-depth samples (s).
MIN_SAMPLE_INTERVAL_S = 0.1


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from receiptq.web.app import create_app

    settings = Settings.from_env()
    token = settings.web_token
    try:
        security.check_bind(args.host, token)
    except security.UnsafeBindError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    interval_s = settings.replace(
        web_sample_interval_s=args.sample_interval_s
    ).web_sample_interval_s
    database = url(args)
    # A database that is not migrated or not reachable fails here, in one line
    # (receiptq's main), not as a traceback in the server's startup.
    monitor.snapshot(database)
    app = create_app(database, token=token, sample_interval_s=interval_s)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq web``."""
    parser = add_command(
        subparsers,
        "web",
        run,
        "the live dashboard and Prometheus /metrics",
        [url_option()],
        description="Serve the dashboard (one page, a JSON API, /metrics). Binds to "
        f"127.0.0.1 by default; any other host needs {security.TOKEN_VARIABLE}, which "
        "every request must then carry.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=parse_port, default=8000, help="default 8000")
    parser.add_argument(
        "--sample-interval-s",
        type=number_at_least(MIN_SAMPLE_INTERVAL_S),
        default=None,
        help="seconds between queue-depth samples for the charts "
        "(RECEIPTQ_WEB_SAMPLE_INTERVAL_S, default 2)",
    )
