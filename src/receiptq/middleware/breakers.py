"""Circuit breakers (pybreaker) whose state lives in PostgreSQL, and the middleware
that postpones jobs while their service's breaker is open.

Services wrap their calls::

    get_breaker("ocr").call(engine.read, image)

Every worker process on every host shares one breaker per name (a row of
``receiptq.breakers`` on the broker's database). An actor declares the services
it needs with the ``breakers`` option; while one of them is open, its jobs are
put back until the breaker may half-open, without using up an attempt::

    @dramatiq.actor(breakers=("ocr",))
    def ocr_receipt(receipt_id): ...

Settings per service: ``RECEIPTQ_BREAKER_<NAME>_FAIL_MAX`` (consecutive
failures that open it, default 5) and ``RECEIPTQ_BREAKER_<NAME>_RESET_S`` (how
long it stays open, default 30), or :func:`configure_breaker` in code.

An opening lasts the row's ``reset_timeout_s`` from its ``opened_at``: the
opening process's reset timeout, or the duration an operator gave to
``receiptq breakers open NAME --for D``; every process and the middleware go by
the row, so the breaker half-opens at the same instant everywhere.
``receiptq breakers reset`` closes a breaker at once.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

import dramatiq
import psycopg
import pybreaker
from dramatiq.broker import Broker, MessageProxy
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage

from receiptq import db
from receiptq.config import env_float, env_int
from receiptq.errors import ConfigError, PermanentError, shorten
from receiptq.pg.delivery import JobProxy

__all__ = [
    "CircuitBreakers",
    "PostgresBreakerStorage",
    "SharedCircuitBreaker",
    "configure_breaker",
    "get_breaker",
]

logger = logging.getLogger(__name__)

#: Consecutive failures that open a breaker.
DEFAULT_FAIL_MAX = 5
#: How long an open breaker refuses calls before a trial call (s).
DEFAULT_RESET_S = 30.0
#: Shortest postponement of a call the breaker refused (ms): the database may
#: already see the breaker half-open while this process's clock does not.
MIN_POSTPONE_MS = 500

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
T = TypeVar("T")
#: Lends a connection that commits on its own (``PostgresBroker.pool_connection``).
Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


@runtime_checkable
class PostgresBroker(Protocol):
    """What breakers need of a broker (:class:`receiptq.broker.PostgresBroker` has it):
    connections that commit on their own, outside any caller's transaction (breaker
    state), and a way to put a delivery back without using an attempt."""

    def pool_connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...

    def postpone(self, message: MessageProxy, *, delay_ms: int) -> None: ...


@dataclass(frozen=True)
class BreakerSettings:
    fail_max: int
    reset_timeout_s: float


def validate_breaker_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid breaker name {shorten(repr(name))}: use lowercase letters, digits and '_', "
            "starting with a letter, at most 63 characters"
        )
    return name


_configured: dict[str, BreakerSettings] = {}


def configure_breaker(name: str, *, fail_max: int, reset_timeout_s: float) -> None:
    """Set a service's breaker thresholds in code (before its first use in the process)."""
    if fail_max < 1 or not reset_timeout_s > 0:
        raise ValueError("fail_max must be >= 1 and reset_timeout_s > 0")
    _configured[validate_breaker_name(name)] = BreakerSettings(fail_max, float(reset_timeout_s))


def breaker_settings(name: str) -> BreakerSettings:
    """Code settings first, then ``RECEIPTQ_BREAKER_<NAME>_*``, then the defaults."""
    if name in _configured:
        return _configured[name]
    prefix = f"RECEIPTQ_BREAKER_{name.upper()}_"
    settings = BreakerSettings(
        env_int(prefix + "FAIL_MAX", DEFAULT_FAIL_MAX),
        env_float(prefix + "RESET_S", DEFAULT_RESET_S),
    )
    if settings.fail_max < 1 or not settings.reset_timeout_s > 0:
        raise ConfigError(f"{prefix}FAIL_MAX must be >= 1 and {prefix}RESET_S > 0")
    return settings


class PostgresBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker storage on a row of ``receiptq.breakers``; each operation is one statement.

    ``opened_at`` is stamped with the database clock, whatever pybreaker passes,
    so that every host measures the reset timeout from the same instant.
    ``connect`` lends a connection outside any caller's transaction;
    ``settings.reset_timeout_s`` must be the breaker's ``reset_timeout``.
    """

    def __init__(self, name: str, connect: Connect, settings: BreakerSettings) -> None:
        super().__init__(validate_breaker_name(name))
        self._connect = connect
        self.settings = settings
        self._register()

    def _register(self) -> None:
        self._run(
            "breaker_register",
            fail_max=self.settings.fail_max,
            reset_timeout_s=self.settings.reset_timeout_s,
        )

    def _run(self, query: str, **params: Any) -> dict[str, Any] | None:
        with self._connect() as conn:
            return db.fetch_one(conn, query, {"name": self.name, **params})

    def _write(self, query: str, **params: Any) -> None:
        with self._connect() as conn:
            db.execute(conn, query, {"name": self.name, **params})

    def _row(self) -> dict[str, Any]:
        row = self._run("breaker_get")
        if row is None:  # an operator deleted the row: start again, closed
            self._register()
            row = self._run("breaker_get")
        assert row is not None
        return row

    @property
    def state(self) -> str:
        return str(self._row()["state"])

    @state.setter
    def state(self, state: str) -> None:
        self._write("breaker_set_state", state=state)

    def increment_counter(self) -> None:
        self._write("breaker_add_failure")

    def reset_counter(self) -> None:
        self._write("breaker_reset_failures")

    def increment_success_counter(self) -> None:
        self._write("breaker_add_success")

    def reset_success_counter(self) -> None:
        self._write("breaker_reset_successes")

    @property
    def counter(self) -> int:
        return int(self._row()["fail_counter"])

    @property
    def success_counter(self) -> int:
        return int(self._row()["success_counter"])

    @property
    def opened_at(self) -> datetime | None:
        """When the current opening began, as this process's reset timeout counts it.

        pybreaker lets an open breaker half-open once ``opened_at`` plus the
        process's own reset timeout has passed; the row says when the opening ends
        (``opened_at + reset_timeout_s``: the opener's timeout, or an operator's
        forced duration). This is that end minus this process's reset timeout, so
        every process half-opens the breaker when the database says.
        """
        value = self._row()["half_open_at"]
        if not isinstance(value, datetime):
            return None
        return value - timedelta(seconds=self.settings.reset_timeout_s)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._write("breaker_mark_opened", reset_timeout_s=self.settings.reset_timeout_s)


class SharedCircuitBreaker(pybreaker.CircuitBreaker):
    """A pybreaker breaker that does not serialize the calls of a process's threads.

    pybreaker runs the guarded call under the breaker's lock, so the worker
    threads of a process would call the service one at a time. With the state in
    Postgres every transition is its own statement, so the call runs unlocked.
    The breaker re-raises the failing call's own exception when it trips (not
    ``CircuitBreakerError``), so that failure counts as a real attempt;
    ``CircuitBreakerError`` means "refused without calling". A
    :class:`PermanentError` (the service answered: bad input) is no failure of
    the service and does not count toward opening it.
    """

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.state.call(func, *args, **kwargs)


# One breaker per name per broker (a test's broker has a database of its own).
_breakers: weakref.WeakKeyDictionary[Any, dict[str, SharedCircuitBreaker]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _forget_breakers_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _breakers.clear()


os.register_at_fork(after_in_child=_forget_breakers_in_child)


def _postgres_broker(broker: Broker | None) -> PostgresBroker:
    broker = broker if broker is not None else dramatiq.get_broker()
    if not isinstance(broker, PostgresBroker):
        raise TypeError(
            "receiptq breakers keep their state in the PostgresBroker's database; "
            f"the broker is a {type(broker).__name__}"
        )
    return broker


def get_breaker(name: str, *, broker: Broker | None = None) -> SharedCircuitBreaker:
    """The process's breaker for a service, shared through the broker's database.

    ``broker`` defaults to Dramatiq's global broker (a PostgresBroker).
    """
    validate_breaker_name(name)
    pg_broker = _postgres_broker(broker)
    with _lock:
        breakers = _breakers.setdefault(pg_broker, {})
        breaker = breakers.get(name)
        if breaker is None:
            settings = breaker_settings(name)
            storage = PostgresBreakerStorage(name, pg_broker.pool_connection, settings)
            breaker = SharedCircuitBreaker(
                fail_max=settings.fail_max,
                reset_timeout=settings.reset_timeout_s,
                state_storage=storage,
                name=name,
                exclude=[PermanentError],
                throw_new_error_on_trip=False,
            )
            breakers[name] = breaker
        return breaker


def open_breaker_wait_ms(broker: PostgresBroker, names: Iterable[str]) -> int:
    """Milliseconds until every named breaker that is open may half-open (0: none is open)."""
    with broker.pool_connection() as conn:
        row = db.fetch_one(conn, "breaker_open_wait", {"names": list(names)})
    return int(row["wait_ms"]) if row is not None and row["wait_ms"] is not None else 0


class CircuitBreakers(Middleware):
    """Postpone a job while a breaker of a service it needs is open.

    Before a delivery runs, the breakers named by its ``breakers`` option
    (message option, else actor option) are read in one query; if one is open
    and its reset timeout has not passed, the delivery goes back to the queue
    until then (``broker.postpone``: no attempt used) and the actor does not run.
    A call the breaker refuses while the actor runs (``CircuitBreakerError``,
    another process opened it meanwhile) is postponed the same way.

    Parameters:
      breakers(tuple[str, ...]): actor option: the services the actor calls
        through :func:`get_breaker`.
    """

    @property
    def actor_options(self) -> set[str]:
        return {"breakers"}

    def after_declare_actor(self, broker: Broker, actor: Any) -> None:
        for name in _names_of(actor.options.get("breakers")):
            validate_breaker_name(name)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        names = self._names(broker, message)
        if not names or not isinstance(broker, PostgresBroker):
            return
        wait_ms = open_breaker_wait_ms(broker, names)
        if wait_ms > 0:
            self._postpone(broker, message, wait_ms)
            raise SkipMessage(f"circuit breaker open for {', '.join(names)}")

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        # Runs before BackoffRetries' hook (after-hooks run in reverse order), which
        # leaves a postponed delivery alone.
        if not isinstance(exception, pybreaker.CircuitBreakerError):
            return
        if not isinstance(broker, PostgresBroker) or not isinstance(message, JobProxy):
            return
        names = self._names(broker, message)
        if names:  # else the refusal is an ordinary failure, retried with backoff
            wait_ms = open_breaker_wait_ms(broker, names)
            self._postpone(broker, message, max(wait_ms, MIN_POSTPONE_MS))

    @staticmethod
    def _postpone(broker: PostgresBroker, message: Any, wait_ms: int) -> None:
        logger.info("Postponing message %r by %d ms: circuit breaker open.",
                    message.message_id, wait_ms)  # fmt: skip
        broker.postpone(message, delay_ms=wait_ms)

    @staticmethod
    def _names(broker: Broker, message: Any) -> list[str]:
        if "breakers" in message.options:
            return _names_of(message.options["breakers"])
        try:
            return _names_of(broker.get_actor(message.actor_name).options.get("breakers"))
        except ActorNotFound:
            return []


def _names_of(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(name) for name in value]
