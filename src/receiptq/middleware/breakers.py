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
failures that open it, default 5), ``RECEIPTQ_BREAKER_<NAME>_RESET_S`` (how
long it stays open, default 30) and ``RECEIPTQ_BREAKER_<NAME>_TRIAL_TIMEOUT_S``
(how long a trial call may take before another caller may try, default 60), or
:func:`configure_breaker` in code.

An opening lasts the row's ``reset_timeout_s`` from its ``opened_at``: the
opening process's reset timeout, or the duration an operator gave to
``receiptq breakers open NAME --for D``; every process and the middleware go by
the row, so the breaker half-opens at the same instant everywhere.
``receiptq breakers reset`` closes a breaker at once.

While half-open, one call at a time is the trial, across every process: the
caller that takes the trial lease on the row calls the service; the others are
refused (``CircuitBreakerError``) and their jobs postponed until it resolves.
Postponed jobs come back spread over a quarter of the reset timeout after the
breaker may half-open, not all at that instant.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import dramatiq
import psycopg
import pybreaker
from dramatiq.broker import Broker, MessageProxy
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage

from receiptq import db
from receiptq.errors import ConfigError, PermanentError, shorten
from receiptq.pg.delivery import JobProxy
from receiptq.settings import Settings

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
#: How long a trial call may take before another caller may make one (s): a trial
#: whose worker died keeps the breaker half-open this long.
DEFAULT_TRIAL_TIMEOUT_S = 60.0
#: Shortest postponement of a job whose breaker refuses calls (ms).
MIN_POSTPONE_MS = 500
#: Postponed jobs come back spread over this share of the breaker's reset timeout
#: after it may half-open: one of them makes the trial, the others find it under
#: way (postponed again) or over (the service answers), never all at one instant.
JITTER_SHARE = 0.25

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
    trial_timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S


def validate_breaker_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid breaker name {shorten(repr(name))}: use lowercase letters, digits and '_', "
            "starting with a letter, at most 63 characters"
        )
    return name


_configured: dict[str, BreakerSettings] = {}


def configure_breaker(
    name: str,
    *,
    fail_max: int,
    reset_timeout_s: float,
    trial_timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S,
) -> None:
    """Set a service's breaker thresholds in code (before its first use in the process)."""
    if fail_max < 1 or not reset_timeout_s > 0 or not trial_timeout_s > 0:
        raise ValueError("fail_max must be >= 1, reset_timeout_s and trial_timeout_s > 0")
    _configured[validate_breaker_name(name)] = BreakerSettings(
        fail_max, float(reset_timeout_s), float(trial_timeout_s)
    )


def breaker_settings(name: str, environment: Settings | None = None) -> BreakerSettings:
    """Code settings first, then ``RECEIPTQ_BREAKER_<NAME>_*`` (of ``environment``,
    default the process's), then the defaults."""
    if name in _configured:
        return _configured[name]
    prefix = f"RECEIPTQ_BREAKER_{name.upper()}_"
    given = (environment or Settings.from_env()).breaker(name)
    settings = BreakerSettings(
        given.fail_max if given.fail_max is not None else DEFAULT_FAIL_MAX,
        given.reset_s if given.reset_s is not None else DEFAULT_RESET_S,
        given.trial_timeout_s if given.trial_timeout_s is not None else DEFAULT_TRIAL_TIMEOUT_S,
    )
    if settings.fail_max < 1 or not settings.reset_timeout_s > 0:
        raise ConfigError(f"{prefix}FAIL_MAX must be >= 1 and {prefix}RESET_S > 0")
    if not settings.trial_timeout_s > 0:
        raise ConfigError(f"{prefix}TRIAL_TIMEOUT_S must be > 0")
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

    # -- beyond pybreaker's storage: whole transitions, the half-open trial ---------

    def move_to(self, state: str) -> None:
        """Enter a state with what entering it resets, in one statement (see breaker_move)."""
        self._write("breaker_move", state=state, reset_timeout_s=self.settings.reset_timeout_s)

    def half_open_when_due(self) -> str:
        """Half-open the breaker if it is open and its opening is over; the state after."""
        row = self._run("breaker_half_open_when_due")
        return str(row["state"]) if row is not None else self.state

    def claim_trial(self) -> str | None:
        """Take the half-open breaker's trial call: a token for :meth:`end_trial`, or
        None while another caller holds it (for ``settings.trial_timeout_s`` at most)."""
        owner = uuid.uuid4().hex
        claimed = self._run(
            "breaker_claim_trial", owner=owner, trial_s=self.settings.trial_timeout_s
        )
        return owner if claimed is not None else None

    def end_trial(self, owner: str) -> None:
        """Free the trial if it is still this caller's (the breaker stayed half-open)."""
        self._write("breaker_end_trial", owner=owner)


class SharedCircuitBreaker(pybreaker.CircuitBreaker):
    """A pybreaker breaker on a :class:`PostgresBreakerStorage`, for many processes.

    pybreaker runs the guarded call under the breaker's lock, so the worker
    threads of a process would call the service one at a time; here the call
    runs unlocked and only what follows it (counters, transitions, listeners) is
    serialized in the process, and skipped for a call whose state the breaker
    has left meanwhile (a failure that began before another call opened it does
    not count). A transition is one statement on the row (``move_to``); a change
    made elsewhere is only noted (listeners hear of each change once per
    process). Half-open, one call at a time across every process is the trial
    (a lease on the row; see the module docstring).

    With ``throw_new_error_on_trip=False`` the call that trips the breaker
    re-raises its own exception (so that failure counts as a real attempt);
    ``CircuitBreakerError`` then means "refused without calling". A
    :class:`PermanentError` (the service answered: bad input) is no failure of
    the service when listed in ``exclude``, as :func:`get_breaker` does.
    """

    def __init__(self, *, state_storage: PostgresBreakerStorage, **kwargs: Any) -> None:
        self.storage = state_storage
        #: Counts the state changes noted here: a reading of the row that began
        #: before the last one may be older than it, and is not noted.
        self._generation = 0
        super().__init__(state_storage=state_storage, **kwargs)

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Seen open: the open state's first query reads the row's state anyway.
        state = self._state if self._state.name == pybreaker.STATE_OPEN else self.state
        return cast(T, state.call(func, *args, **kwargs))

    @property
    def state(self) -> Any:
        """The state on the row (a change made elsewhere is noted)."""
        generation = self._generation
        return self._note_state(self.current_state, read_in=generation)

    @state.setter
    def state(self, state_str: str) -> None:
        self._note_state(state_str)

    def _note_state(self, name: str, *, read_in: int | None = None) -> Any:
        with self._lock:
            if name != self._state.name and read_in in (None, self._generation):
                self._state = self._create_new_state(name, prev_state=self._state, notify=True)
                self._generation += 1
            return self._state

    def _move_to(self, name: str) -> None:
        with self._lock:  # the row first: a thread reading it now finds the new state
            self.storage.move_to(name)
            self._note_state(name)

    def open(self) -> bool:
        self._move_to(pybreaker.STATE_OPEN)
        return self._throw_new_error_on_trip

    def half_open(self) -> None:
        self._move_to(pybreaker.STATE_HALF_OPEN)

    def close(self) -> None:
        self._move_to(pybreaker.STATE_CLOSED)

    def _create_new_state(
        self,
        new_state: str,
        prev_state: pybreaker.CircuitBreakerState | None = None,
        notify: bool = False,
    ) -> Any:
        shared = _SHARED_STATES.get(new_state)
        if shared is None:  # pybreaker's error for an unknown state
            return super()._create_new_state(new_state, prev_state, notify)
        state = shared(self, new_state)
        if notify:  # the row was reset by the transition (breaker_move): listeners only
            for listener in self.listeners:
                listener.state_change(self, prev_state, state)
        return state


class _SharedState(pybreaker.CircuitBreakerState):
    """A state of a shared breaker: entering it writes nothing (the transition did),
    and a call's outcome is recorded under the breaker's lock, only while the
    breaker is still in the state the call began in."""

    def __init__(self, cb: pybreaker.CircuitBreaker, name: str) -> None:
        # Not the concrete pybreaker state's __init__, which resets counters on entry.
        pybreaker.CircuitBreakerState.__init__(self, cb, name)

    def _current(self) -> bool:
        return self._breaker._state is self

    def _handle_error(self, exc: BaseException, reraise: bool = True) -> None:  # type: ignore[override]
        with self._breaker._lock:
            if self._current():
                super()._handle_error(exc, reraise=False)
        if reraise:
            raise exc

    def _handle_success(self) -> None:
        with self._breaker._lock:
            if self._current():
                super()._handle_success()


class _ClosedState(_SharedState, pybreaker.CircuitClosedState):
    pass


class _OpenState(_SharedState, pybreaker.CircuitOpenState):
    """Open: calls are refused until the opening is over; then the first caller
    half-opens the breaker in the database and goes on as a trial."""

    def before_call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        breaker = cast(SharedCircuitBreaker, self._breaker)
        generation = breaker._generation
        state = breaker._note_state(breaker.storage.half_open_when_due(), read_in=generation)
        if state.name == pybreaker.STATE_OPEN:
            raise pybreaker.CircuitBreakerError(
                "Timeout not elapsed yet, circuit breaker still open"
            )
        return cast(T, state.call(func, *args, **kwargs))


class _TrialState(_SharedState, pybreaker.CircuitHalfOpenState):
    """Half-open: the caller holding the trial lease calls; the others are refused."""

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        storage = cast(SharedCircuitBreaker, self._breaker).storage
        owner = storage.claim_trial()
        if owner is None:
            raise pybreaker.CircuitBreakerError(
                "Circuit breaker half-open: another caller's trial call is under way"
            )
        try:
            return super().call(func, *args, **kwargs)
        finally:
            storage.end_trial(owner)


_SHARED_STATES: dict[str, Callable[..., pybreaker.CircuitBreakerState]] = {
    pybreaker.STATE_CLOSED: _ClosedState,
    pybreaker.STATE_OPEN: _OpenState,
    pybreaker.STATE_HALF_OPEN: _TrialState,
}


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


@dataclass(frozen=True)
class Refusal:
    """Breakers refusing calls now: ``wait_ms`` until the latest open one may half-open
    (0 when only trial calls are under way), ``reset_ms`` their longest reset timeout."""

    wait_ms: int
    reset_ms: int


def breaker_refusal(broker: PostgresBroker, names: Iterable[str]) -> Refusal | None:
    """Whether some of the named breakers refuse calls now (None: all take calls)."""
    with broker.pool_connection() as conn:
        row = db.fetch_one(conn, "breaker_refusal", {"names": list(names)})
    return Refusal(int(row["wait_ms"]), int(row["reset_ms"])) if row is not None else None


def open_breaker_wait_ms(broker: PostgresBroker, names: Iterable[str]) -> int:
    """Milliseconds until every named breaker that is open may half-open (0: none is open)."""
    refusal = breaker_refusal(broker, names)
    return refusal.wait_ms if refusal is not None else 0


def postponement_ms(refusal: Refusal | None, rand: Callable[[], float]) -> int:
    """How long to postpone a job its breakers refuse: until they may half-open (at
    least MIN_POSTPONE_MS), plus a random share of JITTER_SHARE of their reset
    timeout, so that the postponed jobs come back one by one. ``rand()`` returns a
    float in [0, 1) (``random.random``; tests pin it)."""
    if refusal is None:  # it took calls again by the time we looked
        return MIN_POSTPONE_MS
    return max(refusal.wait_ms, MIN_POSTPONE_MS) + int(rand() * refusal.reset_ms * JITTER_SHARE)


class CircuitBreakers(Middleware):
    """Postpone a job while a breaker of a service it needs refuses calls.

    Before a delivery runs, the breakers named by its ``breakers`` option
    (message option, else actor option) are read in one query; if one is open
    and its reset timeout has not passed, or half-open with another caller's
    trial call under way, the delivery goes back to the queue (``broker.postpone``:
    no attempt used) and the actor does not run. A call the breaker refuses while
    the actor runs (``CircuitBreakerError``: another process opened it, or made
    the trial, meanwhile) is postponed the same way. The postponement lasts
    until the breaker may half-open, plus a random share of a quarter of its
    reset timeout (see :func:`postponement_ms`).

    Parameters:
      breakers(tuple[str, ...]): actor option: the services the actor calls
        through :func:`get_breaker`.
      rand(Callable[[], float]): the jitter's random source (default ``random.random``).
    """

    def __init__(self, *, rand: Callable[[], float] = random.random) -> None:
        self.rand = rand

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
        refusal = breaker_refusal(broker, names)
        if refusal is not None:
            self._postpone(broker, message, postponement_ms(refusal, self.rand))
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
            refusal = breaker_refusal(broker, names)
            self._postpone(broker, message, postponement_ms(refusal, self.rand))

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
