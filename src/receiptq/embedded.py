"""The embedded PostgreSQL under ``RECEIPTQ_HOME``: whether it runs, and stopping it.

receiptq starts it when no database URL is set (:func:`receiptq.config.embedded_database_url`,
with the ``demo`` extra's pgserver) and leaves it running, for the worker processes
and the commands after. ``receiptq db stop`` stops it; so does the demo, when the
demo is what started it. Both read the server's own ``postmaster.pid`` and ask the
postmaster for a fast shutdown (SIGINT: sessions end, nothing is lost), so stopping
needs neither pgserver nor a connection.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from receiptq.config import receiptq_home

#: How long :func:`stop` waits for the server to exit (s).
STOP_TIMEOUT_S = 60.0


def data_dir() -> Path:
    return receiptq_home() / "pgdata"


def running_pid() -> int | None:
    """The postmaster's pid while the embedded server runs, else None."""
    try:
        pid = int((data_dir() / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs as another user: it runs
        return True
    return True


def stop(timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """Stop the embedded server and wait until it has exited; the pid it had, or None
    when it was not running. TimeoutError when it is still running after ``timeout_s``."""
    pid = running_pid()
    if pid is None:
        return None
    os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    deadline = time.monotonic() + timeout_s
    # Its pid file goes as it exits (a process nobody reaps would look alive for ever).
    while running_pid() == pid:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the embedded PostgreSQL (pid {pid}) did not stop in {timeout_s} s")
        time.sleep(0.1)
    return pid
