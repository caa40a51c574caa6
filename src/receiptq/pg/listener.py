"""One LISTEN connection per process that wakes the consumers of a queue.

The payload of a notification on channel ``receiptq`` is a queue name. Wake-ups
are only hints: consumers poll as well, so a lost notification (or a pooler in
transaction mode, where LISTEN does not work) costs latency, never a job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

logger = logging.getLogger(__name__)

CHANNEL = "receiptq"
RECONNECT_DELAY_S = 1.0
#: How long one wait for notifications lasts: close() waits at most this long.
WAIT_S = 0.2


class Listener:
    """A daemon thread that calls ``wake(queue_name)`` for each notification."""

    def __init__(self, url: str, wake: Callable[[str], None]) -> None:
        self._url = url
        self._wake = wake
        self._stop = threading.Event()
        self._conn: psycopg.Connection[object] | None = None
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiptq-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    self._conn = conn
                    conn.execute("LISTEN receiptq")
                    self.connected.set()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=WAIT_S):
                            self._wake(notify.payload)
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                logger.warning("listener connection lost (%s); polling until it is back", exc)
                self._stop.wait(RECONNECT_DELAY_S)
            finally:
                self._conn = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3.0)
