"""receiptq's Dramatiq middleware: backoff retries, circuit breakers, results.

A receiptq broker is built with::

    broker = PostgresBroker(middleware=receiptq_middleware())
    backend = with_results(broker)   # optional: results in PostgreSQL

:func:`receiptq_middleware` is Dramatiq's default middleware with ``Retries``
replaced by :class:`BackoffRetries`, then :class:`CircuitBreakers` (after the
retries, so that its after-hook sees a refused call first) and
``CurrentMessage``. Results are added by :func:`with_results` because their
backend needs the broker's database URL; call it before declaring actors that
use ``store_results`` (Dramatiq checks actor options against the middleware).
"""

from __future__ import annotations

import functools
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import (
    CurrentMessage,
    GroupCallbacks,
    Middleware,
    Retries,
    default_middleware,
)
from dramatiq.results import Results

from receiptq.middleware.backoff import BackoffRetries, PermanentError, RetryAfter, compute_backoff
from receiptq.middleware.breakers import CircuitBreakers, configure_breaker, get_breaker
from receiptq.middleware.tier_resolver import TierResolver, app_user_tier
from receiptq.rate_limits import PostgresRateLimiterBackend
from receiptq.results import PostgresResultBackend

__all__ = [
    "BackoffRetries",
    "CircuitBreakers",
    "PermanentError",
    "RetryAfter",
    "compute_backoff",
    "configure_breaker",
    "get_breaker",
    "add_app_middleware",
    "receiptq_middleware",
    "with_results",
]


def add_app_middleware(broker: Any) -> None:
    """What the receipt app's brokers add to :func:`receiptq_middleware`, on the
    broker's own database: group completion callbacks (a PostgreSQL rate-limiter
    backend, so no Redis) and tiers resolved from ``receiptq_app.users`` at send time."""
    settings = broker.read_settings()
    url = functools.partial(getattr, broker, "url")  # resolved on first use, not now
    broker.add_middleware(GroupCallbacks(PostgresRateLimiterBackend(url, settings=settings)))
    broker.add_middleware(TierResolver(app_user_tier(url)))


def receiptq_middleware(**retry_options: Any) -> list[Middleware]:
    """Dramatiq's default middleware with receiptq's retries, breakers and CurrentMessage.

    ``retry_options`` go to :class:`BackoffRetries` (``max_retries``,
    ``min_backoff_ms``, ``max_backoff_ms``, ``permanent``, ``rand``).
    """
    middleware: list[Middleware] = []
    defaults: list[type[Middleware]] = list(default_middleware)
    for cls in defaults:
        if issubclass(cls, Retries):
            middleware.append(BackoffRetries(**retry_options))
            middleware.append(CircuitBreakers())
        else:
            middleware.append(cls())
    middleware.append(CurrentMessage())
    return middleware


def with_results(
    broker: Broker,
    *,
    backend: PostgresResultBackend | None = None,
    store_results: bool = False,
    result_ttl_ms: int | None = None,
) -> PostgresResultBackend:
    """Store actor results in the broker's database; return the backend.

    Actors opt in with ``store_results=True`` (or every actor, with
    ``store_results=True`` here); ``message.get_result()`` and pipeline results
    then read them back. ``result_ttl_ms`` defaults to Dramatiq's 10 minutes.
    """
    if backend is None:
        url = getattr(broker, "url", None)
        if not isinstance(url, str):
            raise TypeError("with_results() needs a broker with a database url (PostgresBroker)")
        backend = PostgresResultBackend(url)
    broker.add_middleware(
        Results(backend=backend, store_results=store_results, result_ttl=result_ttl_ms)
    )
    return backend
