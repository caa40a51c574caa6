"""`receiptq smtp-sink`: a local SMTP server for trying the pipeline; it prints each
email it receives (the README's way to see the receipt app's emails)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from receiptq.services.smtp_sink import free_port

RECEIPTQ = Path(sys.executable).with_name("receiptq")


def read_line(stream, timeout_s: float) -> str:
    """The next line of a child's pipe, or fail after timeout_s."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            return stream.readline()
    raise AssertionError(f"no line within {timeout_s} s")


def test_smtp_sink_prints_each_email_it_receives():
    port = free_port()
    sink = subprocess.Popen(
        [str(RECEIPTQ), "smtp-sink", "--port", str(port), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    try:
        started = read_line(sink.stderr, 60)
        assert f"RECEIPTQ_SMTP_HOST=127.0.0.1 RECEIPTQ_SMTP_PORT={port}" in started
        message = EmailMessage()
        message["From"], message["To"] = "receiptq@localhost", "ana@example.test"
        message["Subject"] = "Your receipt from CORNER CAFE: matched"
        message.set_content("hi")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.send_message(message)

        received = json.loads(read_line(sink.stdout, 30))
        assert received["to"] == ["ana@example.test"]
        assert received["subject"] == "Your receipt from CORNER CAFE: matched"
    finally:
        sink.send_signal(signal.SIGINT)
        sink.wait(30)
    assert sink.returncode == 128 + signal.SIGINT


def test_smtp_sink_on_a_port_in_use_says_so_in_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(RECEIPTQ), "smtp-sink", "--port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
