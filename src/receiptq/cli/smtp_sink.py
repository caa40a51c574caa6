"""``receiptq smtp-sink``: a local SMTP server that prints each email it receives, to
try the receipt pipeline without a real mail server."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from receiptq import extras
from receiptq.cli._common import (
    EXIT_OK,
    CommandError,
    add_command,
    json_option,
    parse_port,
    print_json_line,
)


def run(args: argparse.Namespace) -> int:
    extras.import_optional("aiosmtpd", "demo", "receiptq smtp-sink")
    from receiptq.services.smtp_sink import SmtpSink

    def show(sender: str, recipients: list[str], message: Any) -> None:
        if args.json:
            print_json_line({"from": sender, "to": recipients, "subject": message["subject"]})
        else:
            print(f"to {', '.join(recipients)}: {message['subject']}", flush=True)

    sink = SmtpSink(on_message=show)
    try:
        sink.start(args.host, args.port)
    except (OSError, RuntimeError) as exc:
        raise CommandError(
            f"cannot listen on {args.host}:{args.port}: {exc}; choose another --port"
        ) from None
    print(
        f"SMTP sink on {args.host}:{args.port}, printing each email it receives; point the "
        f"workers at it: RECEIPTQ_SMTP_HOST={args.host} RECEIPTQ_SMTP_PORT={args.port} "
        "(Ctrl-C stops it)",
        file=sys.stderr,
        flush=True,
    )
    try:
        threading.Event().wait()
    finally:
        sink.stop()
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq smtp-sink``."""
    sink = add_command(
        subparsers,
        "smtp-sink",
        run,
        "a local SMTP server that prints the emails it receives (for trying the pipeline)",
        [json_option("one JSON object per email")],
    )
    sink.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    sink.add_argument("--port", type=parse_port, default=8025, help="default 8025")
