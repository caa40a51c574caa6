"""A local SMTP server that keeps what it receives (aiosmtpd): the demo's mailbox,
``receiptq smtp-sink``, and the tests' real SMTP server.

::

    sink = SmtpSink()
    port = sink.start()          # 127.0.0.1, a free port (or port=8025)
    ...                          # RECEIPTQ_SMTP_HOST=127.0.0.1 RECEIPTQ_SMTP_PORT=port
    sink.messages                # [(mail_from, [rcpt_to, ...], EmailMessage)]
    sink.stop()

``on_message`` (optional) is called with each message as it arrives.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (aiosmtpd needs one up front)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class SmtpSink:
    """An aiosmtpd handler that keeps every message; ``refuse`` maps a recipient to the
    SMTP reply that refuses it (e.g. ``"550 no such mailbox"``)."""

    def __init__(self, on_message: Callable[[str, list[str], EmailMessage], None] | None = None):
        self.on_message = on_message
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.refuse: dict[str, str] = {}
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        received = (envelope.mail_from, list(envelope.rcpt_tos), parsed)
        with self._lock:
            self.messages.append(received)
        if self.on_message is not None:
            self.on_message(*received)
        return "250 Message accepted for delivery"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def start(
        self, host: str = "127.0.0.1", port: int | None = None, **controller_options: Any
    ) -> int:
        """Listen on ``port`` (default: a free one) of ``host``; return the port."""
        port = port or free_port(host)
        self._controller = Controller(self, hostname=host, port=port, **controller_options)
        self._controller.start()
        return port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
