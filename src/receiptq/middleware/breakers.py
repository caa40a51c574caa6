"""The middleware that postpones jobs while their service's circuit breaker is open.

The breakers themselves (storage in PostgreSQL, the shared breaker, the
registry) live in :mod:`receiptq.breaker_storage`, below the middleware, so that
services use them without it. An actor declares the services it needs with the
``breakers`` option; while one of them is open, its jobs are put back until the
breaker may half-open, without using up an attempt::

    @dramatiq.actor(breakers=("ocr",))
    def ocr_receipt(receipt_id): ...

While half-open, the callers refused by the one trial have their jobs postponed
until it resolves. Postponed jobs come back spread over a quarter of the reset
timeout after the breaker may half-open, not all at that instant.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import pybreaker
from dramatiq.broker import Broker
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage

from receiptq.breaker_storage import (
    PostgresBreakerStorage,
    PostgresBroker,
    SharedCircuitBreaker,
    breaker_refusal,
    configure_breaker,
    get_breaker,
    postponement_ms,
    validate_breaker_name,
)
from receiptq.pg.delivery import JobProxy

__all__ = [
    "CircuitBreakers",
    "PostgresBreakerStorage",
    "SharedCircuitBreaker",
    "configure_breaker",
    "get_breaker",
]

logger = logging.getLogger(__name__)


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
