"""Retries with exponential backoff and full jitter, stored in PostgreSQL.

:class:`BackoffRetries` replaces Dramatiq's ``Retries`` in receiptq's default
middleware. A failed delivery is put back in the jobs table with ``run_at`` in
the future (``broker.enqueue(message, delay=ms)`` re-queues the same row), so a
job waiting for its retry is held by no worker. Errors are classified:

- :class:`PermanentError` (and the configured ``permanent`` types, and the
  actor's Dramatiq ``throws``): dead-lettered at once, reason "permanent error";
- :class:`RetryAfter`: retried exactly that many seconds later;
- anything else: retried after :func:`compute_backoff`, until the retries run
  out (reason "retries exhausted").

The reason is said on the delivery (``delivery.outcome = DeadLettered(reason)``,
see :mod:`receiptq.pg.delivery`), where the broker's nack reads it.

A retry that cannot be stored because the database is unavailable (a restart)
is handed to the broker's ``keep_retry`` (``PostgresBroker``'s): the job is safe under its lease, the
process stores the retry once the database answers, and the log says so in one
warning line instead of Dramatiq's "Unexpected failure" with a traceback.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from dramatiq.broker import Broker
from dramatiq.errors import ActorNotFound, Retry
from dramatiq.middleware import Retries

from receiptq.errors import PermanentError, RetryAfter
from receiptq.pg.delivery import DeadLettered, JobProxy, Postponed, outcome_of
from receiptq.pg.sending import DEFAULT_MAX_RETRIES

__all__ = ["BackoffRetries", "PermanentError", "RetryAfter", "compute_backoff"]

#: Backoff before the first retry, at least (ms).
DEFAULT_MIN_BACKOFF_MS = 15_000
#: Longest backoff (ms): 7 days, as in Dramatiq.
DEFAULT_MAX_BACKOFF_MS = 7 * 86_400_000

#: Dead-letter reasons this middleware records.
REASON_PERMANENT = "permanent error"
REASON_EXHAUSTED = "retries exhausted"

_MAX_EXPONENT = 62


@runtime_checkable
class KeepsRetries(Protocol):
    """A broker that keeps a retry it could not store while its database was away
    (:meth:`receiptq.broker.PostgresBroker.keep_retry`); True: kept, or left to the
    delivery's lease: the job is safe either way."""

    def keep_retry(self, message: Any, delay_ms: int, error: Exception) -> bool: ...


def compute_backoff(attempt: int, *, min_ms: int, max_ms: int, rand: Callable[[], float]) -> int:
    """The delay before retry number ``attempt + 1`` (``attempt`` = retries so far), in ms.

    Exponential backoff with full jitter: uniform between ``min_ms`` and
    ``min(max_ms, min_ms * 2 ** (attempt + 1))``. ``rand()`` returns a float in
    [0, 1) (``random.random``; tests pin it).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if min_ms < 0 or max_ms < min_ms:
        raise ValueError(f"need 0 <= min_ms <= max_ms, got min_ms={min_ms}, max_ms={max_ms}")
    ceiling = min(max_ms, min_ms * 2 ** min(attempt + 1, _MAX_EXPONENT))
    return min_ms + int(rand() * (ceiling - min_ms))


class BackoffRetries(Retries):
    """Retry failed jobs with exponential backoff and full jitter; dead-letter the hopeless.

    Options are resolved message option -> actor option -> this middleware's
    default. Dramatiq's ``min_backoff``/``max_backoff`` options are honoured when
    the ``_ms`` ones are not given, and so are ``retry_when``, ``throws`` and
    ``on_retry_exhausted``.

    Parameters:
      max_retries(int): retries before a job is dead-lettered (default 20);
        actor option ``max_retries``.
      min_backoff_ms(int): shortest backoff, in ms (default 15 000); actor
        option ``min_backoff_ms``.
      max_backoff_ms(int): longest backoff, in ms (default 7 days); actor option
        ``max_backoff_ms``.
      permanent(tuple[type[BaseException], ...]): exception types dead-lettered
        at once, besides :class:`PermanentError` (default none).
      rand(Callable[[], float]): the jitter's random source (default ``random.random``).
    """

    def __init__(
        self,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        min_backoff_ms: int = DEFAULT_MIN_BACKOFF_MS,
        max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS,
        permanent: tuple[type[BaseException], ...] = (),
        rand: Callable[[], float] = random.random,
    ) -> None:
        compute_backoff(0, min_ms=min_backoff_ms, max_ms=max_backoff_ms, rand=lambda: 0.0)
        super().__init__(
            max_retries=max_retries, min_backoff=min_backoff_ms, max_backoff=max_backoff_ms
        )
        self.min_backoff_ms = min_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.permanent: tuple[type[BaseException], ...] = (PermanentError, *permanent)
        self.rand = rand

    @property
    def actor_options(self) -> set[str]:
        return super().actor_options | {"min_backoff_ms", "max_backoff_ms"}

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is None or message.failed or isinstance(outcome_of(message), Postponed):
            return
        try:
            actor_options = broker.get_actor(message.actor_name).options
        except ActorNotFound:
            actor_options = {}
        options = _Options(message.options, actor_options)
        if self._is_permanent(exception, options):
            self.logger.info("Dead-lettering message %r: permanent error.", message.message_id)
            self._fail(message, REASON_PERMANENT)
            return
        retries = self._retries_so_far(message)
        message.options["retries"] = retries + 1
        message.options["traceback"] = traceback.format_exc(limit=30)
        message.options["requeue_timestamp"] = int(time.time() * 1000)
        if self._exhausted(retries, exception, options):
            self.logger.warning("Retries exceeded for message %r.", message.message_id)
            self._fail(message, REASON_EXHAUSTED)
            self._notify_exhausted(broker, message, retries, options)
            return
        delay_ms = self.delay_ms(retries, exception, options)
        self.logger.info("Retrying message %r in %d ms.", message.message_id, delay_ms)
        try:
            broker.enqueue(message, delay=delay_ms)
        except Exception as exc:
            if not (isinstance(broker, KeepsRetries) and broker.keep_retry(message, delay_ms, exc)):
                raise

    def delay_ms(self, retries: int, exception: BaseException, options: _Options) -> int:
        """When to run again: the exception's own hint, else the backoff."""
        if isinstance(exception, RetryAfter):
            return round(exception.seconds * 1000)
        if isinstance(exception, Retry) and exception.delay is not None:
            return int(exception.delay)
        min_ms = options.get("min_backoff_ms", "min_backoff", default=self.min_backoff_ms)
        max_ms = options.get("max_backoff_ms", "max_backoff", default=self.max_backoff_ms)
        return compute_backoff(retries, min_ms=min_ms, max_ms=max(min_ms, max_ms), rand=self.rand)

    def _is_permanent(self, exception: BaseException, options: _Options) -> bool:
        throws = options.get("throws", default=None)
        return isinstance(exception, self.permanent) or bool(
            throws and isinstance(exception, throws)
        )

    def _exhausted(self, retries: int, exception: BaseException, options: _Options) -> bool:
        retry_when = options.get("retry_when", default=self.retry_when)
        if retry_when is not None:
            return not retry_when(retries, exception)
        max_retries = options.get("max_retries", default=self.max_retries)
        return max_retries is not None and retries >= max_retries

    @staticmethod
    def _retries_so_far(message: Any) -> int:
        # The broker's attempt counts every delivery (a rescued lease too, never a
        # postponement); Dramatiq's "retries" option only the retries it stored.
        attempt = getattr(message, "attempt", None)
        if isinstance(attempt, int) and attempt >= 1:
            return attempt - 1
        return int(message.options.get("retries", 0))

    @staticmethod
    def _fail(message: Any, reason: str) -> None:
        if isinstance(message, JobProxy):
            message.outcome = DeadLettered(reason)
        message.fail()

    def _notify_exhausted(
        self, broker: Broker, message: Any, retries: int, options: _Options
    ) -> None:
        target = options.get("on_retry_exhausted", default=None)
        if target:
            broker.get_actor(target).send(
                message.asdict(),
                {"retries": retries, "max_retries": options.get("max_retries", default=None)},
            )


class _Options:
    """An option looked up as Dramatiq does: the message's, else the actor's, else a default."""

    def __init__(self, message_options: dict[str, Any], actor_options: dict[str, Any]) -> None:
        self.layers = (message_options, actor_options)

    def get(self, *names: str, default: Any) -> Any:
        for layer in self.layers:
            for name in names:
                if name in layer:
                    return layer[name]
        return default
