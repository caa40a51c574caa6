"""How a worker process lives through a database that is down or not migrated.

The background parts of a worker (consumers, heartbeat, listener, ack flusher) hand
the errors of their statements to the process's :class:`DatabaseWatch`. An error
that means the database is not there (refused, restarting, a lost connection, no
pooled connection in time) or not migrated is expected: the watch says so once, in
one line that says what to do, and once more when the database answers again; the
part waits a growing pause (:class:`Backoff`) and tries again. Any other error is
the caller's to raise or log, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from receiptq.errors import DatabaseNotMigrated, DatabaseUnreachable

logger = logging.getLogger(__name__)

UNREACHABLE = "unreachable"
NOT_MIGRATED = "not migrated"
#: How long after a problem was noted a statement must begin to prove it is over (s).
SETTLE_S = 0.5

#: Server-side errors that mean "not available now": admin shutdown, crash shutdown,
#: starting up (or recovering), too many connections. Class 08 is the connection's.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
#: A receiptq object the code needs is missing: the schema is older than the code.
_SCHEMA_ERRORS = (
    errors.UndefinedTable,
    errors.UndefinedFunction,
    errors.UndefinedColumn,
    errors.InvalidSchemaName,
)
#: Where psycopg_pool says, per connection, that the database is gone: the watch says
#: it once instead (the first two name the pool, the last one only the connection).
_POOL_NOISE = ("error connecting in %r: %s", "reconnection attempt in pool %r failed after %s sec")
_CONNECTION_NOISE = "discarding closed connection: %s"
#: Where psycopg says it could not end a pipeline on a connection that was lost.
_PIPELINE_NOISE = "error ignored terminating %r: %s"


def database_problem(exc: BaseException) -> str | None:
    """``UNREACHABLE``, ``NOT_MIGRATED``, or None for an error that is not about the
    database's availability (a bug, a constraint, a deadlock: the caller's). The
    driver's errors, and receiptq's one-line errors for them (e.g. opening a pool
    while the database is down raises DatabaseUnreachable)."""
    if isinstance(exc, DatabaseNotMigrated):
        return NOT_MIGRATED
    if isinstance(exc, DatabaseUnreachable):
        return UNREACHABLE
    if isinstance(exc, _SCHEMA_ERRORS):
        return NOT_MIGRATED
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        state = getattr(exc, "sqlstate", None)
        if state is None or state.startswith("08") or state in _UNAVAILABLE_SQLSTATES:
            return UNREACHABLE
    return None


def server_of(url: str) -> str:
    """``host:port/dbname`` of a URL, for messages (never the password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured URL"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Backoff:
    """Growing pauses: ``first_s``, doubled after each failure, at most ``max_s``."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._next_s = first_s

    def next(self) -> float:
        pause = self._next_s
        self._next_s = min(self._next_s * 2, self._max_s)
        return pause

    def reset(self) -> None:
        self._next_s = self._first_s


class _QuietPoolFilter(logging.Filter):
    """Drops psycopg_pool's line per failed connection attempt of receiptq's pools, per
    lost connection it discards, and psycopg's line per pipeline it could not end on a
    lost connection (in a worker process, the watch says why)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        ours = bool(args) and str(args[0]).startswith("receiptq")
        lost = record.msg == _PIPELINE_NOISE and "connection is lost" in str(args[-1:])
        return not ((ours and record.msg in _POOL_NOISE) or record.msg == _CONNECTION_NOISE or lost)


_pool_filter = _QuietPoolFilter()


class DatabaseWatch:
    """One per worker process: what is wrong with the database now (None: nothing),
    said once when it starts and once when it ends."""

    def __init__(self, url: str) -> None:
        self.server = server_of(url)
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._since = 0.0
        self._answered_at = float("-inf")  # when the last problem ended (monotonic)
        for name in ("psycopg.pool", "psycopg"):
            psycopg_logger = logging.getLogger(name)
            if _pool_filter not in psycopg_logger.filters:
                psycopg_logger.addFilter(_pool_filter)

    @property
    def problem(self) -> str | None:
        return self._problem

    def failed(self, exc: BaseException, started_at: float | None = None) -> bool:
        """Note an error; True when it is a database problem the caller waits out
        (logged here, once per problem), False when it is the caller's to handle.

        ``started_at`` (monotonic): when the failed attempt began. An attempt begun
        before the database answered again (e.g. a wait for a pooled connection that
        began during the outage and timed out just after it) tells nothing new: it
        does not open a new problem (the outage is said once, not once more at its end).
        """
        problem = database_problem(exc)
        if problem is None:
            return False
        with self._lock:
            if started_at is not None and started_at < self._answered_at:
                return True
            changed = problem != self._problem
            if self._problem is None:
                self._since = time.monotonic()
            self._problem = problem
        if changed:
            logger.warning(self._describe(problem, exc))
        return True

    def answered(self, started_at: float) -> None:
        """A statement that began at ``started_at`` (monotonic) went through: the
        database is back, if it was gone. Only a statement begun a moment after the
        problem was noted counts: while a server shuts down, a statement on a
        connection it has not closed yet may still go through."""
        if self._problem is None or started_at < self._since + SETTLE_S:
            return
        with self._lock:
            was, self._problem = self._problem, None
            if was is not None:
                self._answered_at = time.monotonic()
        if was is not None:
            logger.warning(
                "the database at %s answers again (after %.1f s); workers carry on",
                self.server,
                time.monotonic() - self._since,
            )

    def _describe(self, problem: str, exc: BaseException) -> str:
        if problem == NOT_MIGRATED:
            return (
                f"the database at {self.server} is not migrated ({first_line(exc)}): "
                "run `receiptq db migrate`; workers check again with growing pauses"
            )
        return (
            f"waiting for the database at {self.server} ({first_line(exc)}); workers retry "
            "with growing pauses and carry on when it answers (check that PostgreSQL runs "
            "there and that RECEIPTQ_DATABASE_URL points to it)"
        )


#: How long a part waits for a pooled connection while the database is known to be
#: gone, or before the pool ever connected (s): a probe, so it finds out at once.
PROBE_WAIT_S = 2.0
#: How long, in all, a worker's shutdown may spend on the database (s): giving back
#: claimed jobs, the last acks and statistics, removing its workers row. With the
#: database gone, each of those fails once this is spent; their jobs run again once
#: their leases expire (nothing is lost).
SHUTDOWN_BUDGET_S = 3.0


class PoolGate:
    """The process pool's connections as a worker's parts use them: with a wait that
    fits the moment (the pool's default while all is well; :data:`PROBE_WAIT_S` while
    the database is known to be gone; what is left of :data:`SHUTDOWN_BUDGET_S` once
    shutdown started), and every failure and success reported to the watch."""

    def __init__(self, pool_getter: Callable[[], ConnectionPool], watch: DatabaseWatch) -> None:
        self._pool_getter = pool_getter
        self.watch = watch
        self._connected_once = False
        self._shutdown_deadline: float | None = None

    def start_shutdown(self, budget_s: float = SHUTDOWN_BUDGET_S) -> None:
        """From now on every wait for a connection fits in ``budget_s`` (from the first call)."""
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + budget_s

    def wait_s(self) -> float | None:
        """How long the next caller may wait for a connection (None: the pool's default)."""
        if self._shutdown_deadline is not None:
            # Spent: a connection that is ready is still taken, none is waited for.
            return max(self._shutdown_deadline - time.monotonic(), 0.05)
        if self.watch.problem is not None or not self._connected_once:
            return PROBE_WAIT_S
        return None

    @contextmanager
    def connection(self, *, at_most_s: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; ``at_most_s`` bounds the wait for it further."""
        wait_s = self.wait_s()
        if at_most_s is not None:
            wait_s = at_most_s if wait_s is None else min(wait_s, at_most_s)
        started_at = time.monotonic()
        pool: ConnectionPool | None = None
        try:
            pool = self._pool_getter()  # opening it fails while the database is down
            with pool.connection(timeout=wait_s) as conn:
                self._connected_once = True
                yield conn
        except BaseException as exc:
            if not (isinstance(exc, PoolTimeout) and pool is not None and _busy(pool)):
                self.watch.failed(exc, started_at)
            raise
        self.watch.answered(started_at)


def _busy(pool: ConnectionPool) -> bool:
    """Every connection of the pool is open and lent out: a wait that timed out says
    the pool is too small for the work, not that the database is gone."""
    stats = pool.get_stats()
    return stats["pool_size"] >= stats["pool_max"] and stats["pool_available"] == 0
