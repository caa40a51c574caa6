"""One LISTEN connection per process that wakes the consumers of a queue.

The payload of a notification on channel ``receiptq`` is a queue name. Wake-ups
are only hints: consumers poll as well, so a lost notification costs latency, never a
job. With ``RECEIPTQ_POOLER=transaction`` (a pooler in transaction mode, where LISTEN
does not work) the broker starts no listener and consumers only poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from receiptq import db
from receiptq.pg.outage import Backoff, DatabaseWatch

logger = logging.getLogger(__name__)

CHANNEL = "receiptq"
#: Pauses between reconnection attempts (s): growing from the first to the last.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 5.0
#: How long one wait for notifications lasts: close() waits at most this long.
WAIT_S = 0.2


class Listener:
    """A daemon thread that calls ``wake(queue_name)`` for each notification.

    When its connection is lost it reconnects after growing pauses; a database that
    is gone is reported once by ``watch`` (the process's), not at every attempt."""

    def __init__(
        self, url: str, wake: Callable[[str], None], *, watch: DatabaseWatch | None = None
    ) -> None:
        self._url = url
        self._wake = wake
        self._watch = watch or DatabaseWatch(url)
        self._stop = threading.Event()
        self._conn: psycopg.Connection[object] | None = None
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiptq-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pauses = Backoff(RECONNECT_FIRST_S, RECONNECT_MAX_S)
        while not self._stop.is_set():
            try:
                self._listen(pauses)
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                if not self._watch.failed(exc):
                    logger.warning("listener stopped (%s); polling until it is back", exc)
                self._stop.wait(pauses.next())
            finally:
                self._conn = None

    def _listen(self, pauses: Backoff) -> None:
        with db.connect(self._url, **db.connect_timeout(self._url)) as conn:
            self._conn = conn
            conn.execute("LISTEN receiptq")
            self.connected.set()
            pauses.reset()
            self._watch.answered(time.monotonic())
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=WAIT_S):
                    self._wake(notify.payload)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)  # a daemon thread: at worst it dies with the process
