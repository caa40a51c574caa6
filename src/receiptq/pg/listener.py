"""One LISTEN connection per process, routing each channel's notifications.

The broker's consumers subscribe to channel ``receiptq`` (payload: a queue name),
the result backend to ``receiptq_results`` (a message key), the rate limiter to
``receiptq_rate_limits`` (a key's digest): one connection serves them all (see
:class:`receiptq.pg.runtime.Runtime`). Notifications are only hints: every
subscriber polls as well, so a lost notification costs latency, never a job. With
``RECEIPTQ_POOLER=transaction`` (a pooler in transaction mode, where LISTEN does
not work) nobody subscribes and everything polls.
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

#: Pauses between reconnection attempts (s): growing from the first to the last.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 5.0
#: How long one wait for notifications lasts: close() waits at most this long, and a
#: new subscription is listened to within this time.
WAIT_S = 0.2

Callback = Callable[[str], None]


class _Channel:
    """A subscribed channel: its LISTEN statement, its callbacks, and whether the
    current connection listens to it."""

    def __init__(self, statement: str) -> None:
        self.statement = statement
        self.callbacks: list[Callback] = []
        self.on_listen: list[Callable[[], None]] = []
        self.listening = threading.Event()


class Listener:
    """A daemon thread that LISTENs to the channels subscribed (:meth:`subscribe`)
    and calls each channel's callbacks with the payload of its notifications.

    When its connection is lost it reconnects after growing pauses; a database that
    is gone is reported once by ``watch`` (the process's), not at every attempt."""

    def __init__(self, url: str, *, watch: DatabaseWatch | None = None) -> None:
        self._url = url
        self._watch = watch or DatabaseWatch(url)
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._stop = threading.Event()
        self._conn: psycopg.Connection[object] | None = None
        self._thread = threading.Thread(target=self._run, name="receiptq-listener", daemon=True)
        self._thread.start()

    def subscribe(
        self,
        channel: str,
        statement: str,
        callback: Callback,
        *,
        on_listen: Callable[[], None] | None = None,
    ) -> threading.Event:
        """Call ``callback(payload)`` for each notification on ``channel``, which
        ``statement`` (a constant: ``LISTEN channel``) LISTENs to; ``on_listen()`` each time LISTEN is in place again
        (notifications sent meanwhile were missed). Returns the event set while the
        connection listens to the channel."""
        with self._lock:
            subscribed = self._channels.setdefault(channel, _Channel(statement))
            subscribed.callbacks.append(callback)
            if on_listen is not None:
                subscribed.on_listen.append(on_listen)
            return subscribed.listening

    def unsubscribe(
        self, channel: str, callback: Callback, on_listen: Callable[[], None] | None = None
    ) -> None:
        """Stop calling ``callback`` (and ``on_listen``); the channel stays listened
        to: cheap, and ready for the next subscriber."""
        with self._lock:
            subscribed = self._channels.get(channel)
            if subscribed is None:
                return
            if callback in subscribed.callbacks:
                subscribed.callbacks.remove(callback)
            if on_listen is not None and on_listen in subscribed.on_listen:
                subscribed.on_listen.remove(on_listen)

    def _run(self) -> None:
        pauses = Backoff(RECONNECT_FIRST_S, RECONNECT_MAX_S)
        while not self._stop.is_set():
            try:
                self._listen(pauses)
            except Exception as exc:
                with self._lock:
                    for subscribed in self._channels.values():
                        subscribed.listening.clear()
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
            pauses.reset()
            self._watch.answered(time.monotonic())
            while not self._stop.is_set():
                self._listen_to_new(conn)
                for notify in conn.notifies(timeout=WAIT_S):
                    self._route(notify.channel, notify.payload)

    def _listen_to_new(self, conn: psycopg.Connection[object]) -> None:
        """LISTEN to the channels subscribed since the last look (all of them on a
        new connection); then tell their subscribers."""
        with self._lock:
            new = [c for c in self._channels.values() if not c.listening.is_set()]
        for subscribed in new:
            conn.execute(subscribed.statement)
            subscribed.listening.set()
            with self._lock:
                hooks = list(subscribed.on_listen)
            for hook in hooks:
                hook()

    def _route(self, channel: str, payload: str) -> None:
        with self._lock:
            subscribed = self._channels.get(channel)
            callbacks = [] if subscribed is None else list(subscribed.callbacks)
        for callback in callbacks:
            callback(payload)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)  # a daemon thread: at worst it dies with the process
