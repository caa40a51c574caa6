"""A Dramatiq result backend on PostgreSQL: ``message.get_result()`` without Redis.

Results (and the exceptions of failed messages) are rows of ``receiptq.results``
keyed by Dramatiq's message key, visible until their TTL runs out. Expired rows
are deleted in batches: every ``prune_every`` writes of a process, and by
:meth:`PostgresResultBackend.prune`. A blocking ``get_result`` listens for the
notification the write sends, polling as a fallback. A delivery postponed by a
circuit breaker stores nothing (Dramatiq's Results would store ``None``).

Connections are the process's (:mod:`receiptq.pg.runtime`): the broker's pool and
LISTEN connection when a broker was built on the same database, else a runtime
of its own (``pool_max_size`` connections and one LISTEN connection).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq.encoder import Encoder
from dramatiq.results import ResultBackend, ResultMissing, ResultTimeout
from dramatiq.results.backend import DEFAULT_TIMEOUT, Missing, MResult

from receiptq import db
from receiptq.config import database_url
from receiptq.pg.delivery import Postponed, outcome_of
from receiptq.pg.outage import first_line
from receiptq.pg.pending_retries import database_away
from receiptq.pg.runtime import Runtime, RuntimeRef, reset_in_children

__all__ = ["PostgresResultBackend"]

logger = logging.getLogger(__name__)

#: Every this many writes, a process deletes a batch of expired results.
DEFAULT_PRUNE_EVERY = 1000
#: Expired results deleted per statement.
PRUNE_BATCH = 5000
#: A blocking read re-reads at least this often even without a notification (s).
POLL_FALLBACK_S = 0.5
#: The channel result writes notify (payload: the message key).
CHANNEL = "receiptq_results"
#: How long a result write waits for a pooled connection (s): a worker thread is not
#: held for the pool's 30 s while the database is down (the result is kept instead).
WRITE_WAIT_S = 5.0
#: After its line, an outage is not said again for this long (s): right after a
#: restart the pool may still fail a write or two while it reconnects.
KEPT_QUIET_S = 30.0
#: Results kept per process at most while the database is unavailable.
KEPT_LIMIT = 1000
#: Pause between attempts to store the kept results while the database is away (s).
KEPT_RETRY_S = 0.5


class KeptResults:
    """Results that could not be written because the database was unavailable (a
    restart): kept in the process (at most :data:`KEPT_LIMIT`) and written by one
    daemon thread as soon as it answers. Said in one warning line per outage (when the
    first is kept), not in a CRITICAL traceback per result from Dramatiq's Results."""

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._kept: list[dict[str, Any]] = []
        self._stored_at = float("-inf")  # when the last kept ones were stored (monotonic)
        self._warned_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def keep(self, params: dict[str, Any], exc: BaseException, started_at: float) -> bool:
        """Keep one write that began at ``started_at`` (monotonic); False when
        :data:`KEPT_LIMIT` are kept already. Said once per outage: not again for a
        write that began before the kept ones were stored, nor within
        :data:`KEPT_QUIET_S` of the last line."""
        with self._lock:
            if len(self._kept) >= KEPT_LIMIT or self._stop.is_set():
                return False
            now = time.monotonic()
            first = (
                not self._kept
                and started_at > self._stored_at
                and now - self._warned_at > KEPT_QUIET_S
            )
            if first:
                self._warned_at = now
            self._kept.append(params)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="receiptq-kept-results", daemon=True
                )
                self._thread.start()
        if first:
            logger.warning(
                "results are kept in this process while the database is unavailable (%s); "
                "they are stored once it answers",
                first_line(exc),
            )
        return True

    def _run(self) -> None:
        while not self._stop.wait(KEPT_RETRY_S):
            with self._lock:
                pending, self._kept = self._kept, []
            for i, params in enumerate(pending):
                try:
                    self._write(params)
                except Exception as exc:
                    if database_away(exc):  # still away: keep the rest for the next try
                        with self._lock:
                            self._kept[:0] = pending[i:]
                        break
                    logger.warning("a kept result was not stored (%s)", first_line(exc))
            with self._lock:
                if not self._kept:
                    self._stored_at = time.monotonic()
                    self._thread = None
                    return

    def close(self) -> None:
        """Stop; results not stored by then are lost (their readers time out)."""
        self._stop.set()
        with self._lock:
            thread, lost = self._thread, len(self._kept)
        if thread is not None:
            thread.join(KEPT_RETRY_S * 2)
        if lost:
            logger.warning(
                "%d results kept while the database was unavailable were not stored", lost
            )


class PostgresResultBackend(ResultBackend):
    """Dramatiq results stored in PostgreSQL.

    Parameters:
      url(str): PostgreSQL URL (default: ``RECEIPTQ_DATABASE_URL``, as the broker).
      namespace(str): key namespace, as for every Dramatiq backend.
      encoder(Encoder): how results are encoded (default: Dramatiq's encoder).
      prune_every(int): delete expired results every this many writes (default 1000).
      pool_max_size(int): connections of its own pool, when no broker on the same
        database shares its own (default 4).
      listen(bool): blocking reads wait for LISTEN/NOTIFY (default on); they poll
        instead with ``RECEIPTQ_POOLER=transaction``, whatever this says.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = "dramatiq-results",
        encoder: Encoder | None = None,
        prune_every: int = DEFAULT_PRUNE_EVERY,
        pool_max_size: int = 4,
        listen: bool = True,
    ) -> None:
        super().__init__(namespace=namespace, encoder=encoder)
        if prune_every < 1:
            raise ValueError(f"prune_every must be >= 1, got {prune_every}")
        self.url = database_url(url)
        self.prune_every = prune_every
        self.pool_max_size = pool_max_size
        self.listen = listen
        self._runtime = RuntimeRef(self.url, pool_max_size=pool_max_size, name="receiptq-results")
        self._lock = threading.Lock()
        self._writes = 0
        self._kept = KeptResults(self._write)
        reset_in_children(self, PostgresResultBackend._reset_in_child)

    def _reset_in_child(self) -> None:
        self._lock = threading.Lock()
        self._kept = KeptResults(self._write)

    def close(self) -> None:
        """Close its own connections, if it has any (a broker's are the broker's)."""
        self._kept.close()
        self._runtime.close()

    # -- the ResultBackend contract -----------------------------------------------------

    def store_result(self, message: Any, result: Any, ttl: int) -> None:
        # Dramatiq's Results stores None for a skipped message; a delivery a breaker
        # or a throttle postponed was skipped only for now, so nothing is stored and
        # a reader keeps waiting for the real result.
        if isinstance(outcome_of(message), Postponed):
            return
        super().store_result(message, result, ttl)

    def _get(self, message_key: str) -> MResult:
        with self._runtime().pool().connection() as conn:
            row = db.fetch_one(conn, "result_get", {"key": message_key})
        if row is None:
            return Missing
        return self.encoder.decode(bytes(row["value"]))

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        params = {"key": message_key, "value": self.encoder.encode(result), "ttl_s": ttl / 1000}
        started_at = time.monotonic()
        try:
            self._write(params)
        except Exception as exc:
            if not database_away(exc) or not self._kept.keep(params, exc, started_at):
                raise

    def _write(self, params: dict[str, Any]) -> None:
        with self._runtime().pool().connection(timeout=WRITE_WAIT_S) as conn:
            db.fetch_all(conn, "result_store", params)
        with self._lock:
            self._writes += 1
            due = self._writes % self.prune_every == 0
        if due:
            self._prune_batch()

    def get_result(self, message: Any, *, block: bool = False, timeout: int | None = None) -> Any:
        """The result of a message; with ``block``, wait up to ``timeout`` ms (default 10 s).

        Raises:
          ResultMissing: not blocking, and there is no (unexpired) result.
          ResultTimeout: blocking, and none came in time.
          ResultFailure: the actor failed; the result is its exception.
        """
        key = self.build_message_key(message)
        if not block:
            result = self._get(key)
            if result is Missing:
                raise ResultMissing(message)
            return self.unwrap_result(result)
        deadline = time.monotonic() + (DEFAULT_TIMEOUT if timeout is None else timeout) / 1000
        result = self._wait(key, deadline)
        if result is Missing:
            raise ResultTimeout(message)
        return self.unwrap_result(result)

    def _wait(self, key: str, deadline: float) -> MResult:
        if not self.listen or not db.listens(self.url):
            return self._poll(key, deadline)
        woken = threading.Event()

        def wake(payload: str) -> None:
            if payload == key:
                woken.set()

        runtime: Runtime = self._runtime()
        listening = runtime.subscribe(CHANNEL, db.query("result_listen"), wake)
        try:
            # LISTEN before the first read: a write in between still wakes us.
            listening.wait(max(0.0, min(POLL_FALLBACK_S, deadline - time.monotonic())))
            while True:
                woken.clear()
                result = self._get(key)
                remaining = deadline - time.monotonic()
                if result is not Missing or remaining <= 0:
                    return result
                woken.wait(min(remaining, POLL_FALLBACK_S))
        finally:
            runtime.unsubscribe(CHANNEL, wake)

    def _poll(self, key: str, deadline: float) -> MResult:
        delay = 0.01
        while True:
            result = self._get(key)
            remaining = deadline - time.monotonic()
            if result is not Missing or remaining <= 0:
                return result
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_FALLBACK_S)

    # -- pruning ------------------------------------------------------------------------

    def _prune_batch(self) -> int:
        with self._runtime().pool().connection() as conn:
            return db.execute(conn, "result_prune", {"limit": PRUNE_BATCH})

    def prune(self) -> int:
        """Delete every expired result; return how many were deleted."""
        total = 0
        while True:
            deleted = self._prune_batch()
            total += deleted
            if deleted < PRUNE_BATCH:
                return total
