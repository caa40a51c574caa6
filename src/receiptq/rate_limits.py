"""Dramatiq's rate limiters and barriers on PostgreSQL, with no Redis.

:class:`PostgresRateLimiterBackend` stores each key as a row of
``receiptq.rate_limits`` (value and expiry). Every operation is one atomic
statement, except ``incr_and_sum``, which sums several keys and so runs in a
short transaction under an advisory lock on the limiter's key. ``wait`` blocks
on LISTEN/NOTIFY (one listening connection per process) and polls as well; with
``RECEIPTQ_POOLER=transaction`` (a transaction-mode pooler, where LISTEN is
unavailable) it only polls.

Per-key limits are plain Dramatiq limiters with a key per user, e.g. at most
10 emails per user per hour::

    backend = PostgresRateLimiterBackend()
    limiter = WindowRateLimiter(backend, f"emails:{user_id}", limit=10, window=3600)
    with limiter.acquire(raise_on_failure=False) as allowed:
        if allowed:
            send()

and group completion callbacks work with ``GroupCallbacks(backend)``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from dramatiq.rate_limits import RateLimiterBackend
from psycopg_pool import ConnectionPool

from receiptq import db
from receiptq.config import database_url
from receiptq.settings import Settings

__all__ = ["PostgresRateLimiterBackend"]

logger = logging.getLogger(__name__)

#: How long the listener waits for notifications per round (s): close() waits at most this.
LISTEN_WAIT_S = 0.2
#: Pause before the listener reconnects after losing its connection (s).
RECONNECT_DELAY_S = 1.0


def key_scope(key: str) -> str:
    """The limiter a key belongs to: window and bucket keys are ``<limiter>@<time>``."""
    scope, at, _ = key.rpartition("@")
    return scope if at else key


def key_digest(key: str) -> str:
    """The NOTIFY payload of a key (md5 hex, as the SQL computes it)."""
    return hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()


class PostgresRateLimiterBackend(RateLimiterBackend):
    """A Dramatiq rate limiter backend whose state lives in PostgreSQL.

    Parameters:
      url(str): PostgreSQL URL (or a function returning it, asked on first use).
        Default: ``RECEIPTQ_DATABASE_URL``, then ``DATABASE_URL``, then the
        embedded PostgreSQL.
      pool_max_size(int): connections of this backend per process
        (``RECEIPTQ_RATE_LIMIT_POOL_MAX_SIZE``, 4).
      poll_interval_ms(int): how often ``wait`` re-reads without a notification
        (``RECEIPTQ_RATE_LIMIT_POLL_INTERVAL_MS``, 500).
      settings(Settings): where the values not given come from (default: the
        environment's).
      listen(bool): wake waiters with LISTEN/NOTIFY (``RECEIPTQ_LISTEN``, on);
        with it off, or with ``RECEIPTQ_POOLER=transaction``, ``wait`` only polls.

    Keys whose TTL has passed count as absent; the retention job deletes them.
    """

    def __init__(
        self,
        url: str | Callable[[], str] | None = None,
        *,
        pool_max_size: int | None = None,
        poll_interval_ms: int | None = None,
        listen: bool | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = (settings or Settings.from_env()).replace(
            rate_limit_pool_max_size=pool_max_size,
            rate_limit_poll_interval_ms=poll_interval_ms,
            listen=listen,
        )
        self._settings = settings
        self._url = url if callable(url) else database_url(url, settings=settings)
        self.pool_max_size = settings.rate_limit_pool_max_size
        self.poll_interval_s = settings.rate_limit_poll_interval_ms / 1000
        self.listen = settings.listen
        self._reset()
        this = weakref.ref(self)

        def reset_in_child() -> None:  # a forked worker gets its own pool and listener
            backend = this()
            if backend is not None:
                backend._reset()

        os.register_at_fork(after_in_child=reset_in_child)

    @property
    def url(self) -> str:
        """The database URL (given as a function: asked on first use)."""
        if callable(self._url):
            self._url = database_url(self._url(), settings=self._settings)
        return self._url

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._listener: _EventListener | None = None
        self._waiters: dict[str, set[_Waiter]] = {}

    def _get_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = db.open_pool(
                    self.url, max_size=self.pool_max_size, name="receiptq-rate-limits"
                )
            return self._pool

    def _one(self, name: str, params: dict[str, Any]) -> bool:
        """Run a statement that returns a row when it took effect."""
        with self._get_pool().connection() as conn:
            return db.fetch_one(conn, name, params) is not None

    # -- the RateLimiterBackend contract --------------------------------------------

    def add(self, key: str, value: int, ttl: int) -> bool:
        """Create ``key`` with ``value`` for ``ttl`` ms unless it exists; True if created."""
        return self._one("rate_limit_add", {"key": key, "value": value, "ttl_ms": ttl})

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        """Add ``amount`` unless the value would exceed ``maximum``; True if added."""
        return self._change(key, amount, minimum=None, maximum=maximum, ttl=ttl)

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        """Subtract ``amount`` unless the value would go below ``minimum``; True if done."""
        return self._change(key, -amount, minimum=minimum, maximum=None, ttl=ttl)

    def _change(
        self, key: str, delta: int, *, minimum: int | None, maximum: int | None, ttl: int
    ) -> bool:
        params = {"key": key, "delta": delta, "minimum": minimum, "maximum": maximum, "ttl_ms": ttl}
        return self._one("rate_limit_change", params)

    def incr_and_sum(
        self, key: str, keys: Callable[[], Iterable[str]], amount: int, maximum: int, ttl: int
    ) -> bool:
        """Add ``amount`` to ``key`` unless it, or ``amount`` plus the sum of ``keys()``,
        would exceed ``maximum``; True if added. Atomic across processes."""
        summed = list(keys())
        scopes = sorted({key_scope(k) for k in [key, *summed]})
        params = {"key": key, "keys": summed, "amount": amount, "maximum": maximum, "ttl_ms": ttl}
        with self._get_pool().connection() as conn, conn.transaction():
            db.fetch_all(conn, "rate_limit_lock_scopes", {"scopes": scopes})
            return db.fetch_one(conn, "rate_limit_incr_within_sum", params) is not None

    def wait(self, key: str, timeout: int | None) -> bool:
        """Block until an event is published on ``key`` (or was, within its TTL), at most
        ``timeout`` ms (None: no limit). True if there was an event."""
        return bool(self.wait_many([key], timeout))

    def wait_notify(self, key: str, ttl: int) -> None:
        """Publish an event on ``key``: waiters in every process return; later waits
        return at once for ``ttl`` ms."""
        with self._get_pool().connection() as conn:
            db.fetch_all(conn, "rate_limit_notify", {"key": key, "ttl_ms": ttl})

    def wait_many(self, keys: Iterable[str], timeout: int | None) -> list[str]:
        """Block until an event is published on any of ``keys``, at most ``timeout`` ms.

        Returns the keys that have an event, or an empty list on timeout. (An
        extension: Dramatiq's own backends only wait on one key.)
        """
        keys = list(keys)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0) / 1000
        digests = [key_digest(k) for k in keys]
        waiter = _Waiter()
        self._register(digests, waiter)
        self._await_listener()
        try:
            while True:
                # Taken before reading: a notify from now on ends the next wait early.
                notified = waiter.take_notified()
                if notified:  # a notify is a publish: no need to read it back
                    return [k for k, d in zip(keys, digests, strict=True) if d in notified]
                with self._get_pool().connection() as conn:
                    fired = [
                        r["key"] for r in db.fetch_all(conn, "rate_limit_live_keys", {"keys": keys})
                    ]
                if fired:
                    return fired
                pause = self.poll_interval_s
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return []
                    pause = min(pause, remaining)
                waiter.woken.wait(pause)
        finally:
            self._unregister(digests, waiter)

    # -- waking waiters ---------------------------------------------------------------

    def _register(self, digests: list[str], waiter: _Waiter) -> None:
        with self._lock:
            for digest in digests:
                self._waiters.setdefault(digest, set()).add(waiter)
            if self.listen and self._listener is None and db.listens(self.url):
                self._listener = _EventListener(self.url, self._wake, on_listen=self._wake_all)

    def _await_listener(self) -> None:
        """Listen before checking: a key published between the first read and LISTEN
        would wake nobody. Waits at most one poll interval (a listener that cannot
        connect by then is no better than polling); a listener that connects later,
        or again after losing its connection, wakes every waiter to read again."""
        listener = self._listener
        if listener is not None:
            listener.connected.wait(self.poll_interval_s)

    def _unregister(self, digests: list[str], waiter: _Waiter) -> None:
        with self._lock:
            for digest in digests:
                waiting = self._waiters.get(digest)
                if waiting is not None:
                    waiting.discard(waiter)
                    if not waiting:
                        del self._waiters[digest]

    def _wake(self, digest: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(digest, ()))
        for waiter in waiters:
            waiter.wake(digest)

    def _wake_all(self) -> None:
        with self._lock:
            waiters = {waiter for waiting in self._waiters.values() for waiter in waiting}
        for waiter in waiters:
            waiter.wake(None)

    def close(self) -> None:
        """Stop the listener and close the pool (both reopen on next use)."""
        with self._lock:
            listener, self._listener = self._listener, None
            pool, self._pool = self._pool, None
        if listener is not None:
            listener.close()
        if pool is not None:
            pool.close()


class _Waiter:
    """One blocked ``wait_many``: the digests notified since it last looked, and the
    event that wakes it (set with no digest: read the keys again)."""

    def __init__(self) -> None:
        self.woken = threading.Event()
        self._lock = threading.Lock()
        self._notified: set[str] = set()

    def wake(self, digest: str | None) -> None:
        with self._lock:
            if digest is not None:
                self._notified.add(digest)
            self.woken.set()

    def take_notified(self) -> set[str]:
        with self._lock:
            self.woken.clear()
            notified, self._notified = self._notified, set()
            return notified


class _EventListener:
    """A daemon thread that LISTENs for rate-limit events and calls ``wake(digest)``,
    and ``on_listen()`` each time LISTEN is in place (events published while it
    was not were missed)."""

    def __init__(
        self, url: str, wake: Callable[[str], None], *, on_listen: Callable[[], None]
    ) -> None:
        self._url = url
        self._wake = wake
        self._on_listen = on_listen
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="receiptq-rate-limit-listener", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with db.connect(self._url, **db.connect_timeout(self._url)) as conn:
                    conn.execute(db.query("rate_limit_listen"))
                    self.connected.set()
                    self._on_listen()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=LISTEN_WAIT_S):
                            self._wake(notify.payload)
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                logger.warning("rate-limit listener lost its connection (%s); polling", exc)
                self._stop.wait(RECONNECT_DELAY_S)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(3.0)
