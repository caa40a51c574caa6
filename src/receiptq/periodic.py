"""Periodic actors, scheduled by periodiq and enqueued at most once per tick.

Conventions:

- Declare a periodic actor with :func:`periodic_actor` and a cron spec (UTC
  minutes; periodiq's finest tick is one minute)::

      @periodic_actor("0 * * * *", queue_name="maintenance")
      def hourly_report() -> None: ...

- Run the scheduler with the stock CLI: ``periodiq receiptq.actors`` (the
  Procfile's ``scheduler``). Several schedulers may run at once (a deploy
  overlaps the old and the new one): each tick is enqueued once.
- periodiq sends a tick as ``send_with_options(scheduled_at=<ISO time>)``.
  :class:`PeriodicActor` turns that time into the tick's minute (UTC) and, in
  one transaction, records ``(actor, tick)`` in ``receiptq.periodic_ticks``
  (primary key) and enqueues the job with the unique key
  ``periodic:<actor>:<YYYY-MM-DDTHH:MMZ>``. A second scheduler's insert waits
  for the first to commit and then finds the tick taken, so it enqueues
  nothing, even after the first tick's job has finished.
- A tick older than ``RECEIPTQ_PERIODIC_SKIP_DELAY_S`` (600) when a worker
  picks it up is skipped (periodiq's middleware): a backlog does not replay
  stale ticks. Sending the actor by hand (no ``scheduled_at``) is a plain send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.message import Message
from periodiq import PeriodiqMiddleware, cron

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.settings import Settings

__all__ = ["PeriodicActor", "ensure_periodiq", "periodic_actor", "tick_key", "tick_of"]

logger = logging.getLogger(__name__)


def tick_of(scheduled_at: str) -> datetime:
    """The tick a periodiq ``scheduled_at`` time belongs to: its minute, in UTC.

    Two schedulers that wake a little apart (or in different time zones) agree on it.
    """
    try:
        when = datetime.fromisoformat(scheduled_at)
    except (TypeError, ValueError):
        raise ValueError(f"scheduled_at must be an ISO 8601 time, got {scheduled_at!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"scheduled_at must carry a time zone, got {scheduled_at!r}")
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def tick_key(actor_name: str, tick_at: datetime) -> str:
    """The unique key of a tick's job: ``periodic:<actor>:<YYYY-MM-DDTHH:MMZ>``."""
    return f"periodic:{actor_name}:{tick_at.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def ensure_periodiq(broker: dramatiq.Broker, *, skip_delay_s: int | None = None) -> None:
    """Add periodiq's middleware to ``broker`` once (it declares the ``periodic`` option)."""
    if any(isinstance(m, PeriodiqMiddleware) for m in broker.middleware):
        return
    broker.add_middleware(_Periodiq(broker, skip_delay_s))


class _Periodiq(PeriodiqMiddleware):
    """periodiq's middleware; its skip delay, unless given, is the broker's setting
    (``periodic_skip_delay_s``), read on first use: declaring an actor reads nothing."""

    _skip_delay: int | None = None

    def __init__(self, broker: dramatiq.Broker, skip_delay_s: int | None) -> None:
        self._broker = broker
        super().__init__(skip_delay=skip_delay_s)

    @property
    def skip_delay(self) -> int:
        if self._skip_delay is None:
            broker = self._broker
            settings = (
                broker.read_settings()
                if isinstance(broker, PostgresBroker)
                else Settings.from_env()
            )
            self._skip_delay = settings.periodic_skip_delay_s
        return self._skip_delay

    @skip_delay.setter
    def skip_delay(self, value: int | None) -> None:
        self._skip_delay = value


class PeriodicActor(dramatiq.Actor):
    """An actor whose scheduled sends are enqueued once per tick, whoever schedules them."""

    def send_with_options(  # type: ignore[override]
        self,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        delay: Any = None,
        **options: Any,
    ) -> Message[Any] | None:
        """Send the actor; a periodiq tick (``scheduled_at``) is sent only if no
        scheduler sent it before. Returns None for a tick sent already."""
        scheduled_at = options.get("scheduled_at")
        if scheduled_at is None or not isinstance(self.broker, PostgresBroker):
            return super().send_with_options(args=args, kwargs=kwargs, delay=delay, **options)
        tick_at = tick_of(scheduled_at)
        options["unique_key"] = tick_key(self.actor_name, tick_at)
        broker = self.broker
        with broker.connection() as conn, conn.transaction(), broker.transaction(conn):
            claimed = db.fetch_one(
                conn, "periodic_tick_claim", {"actor": self.actor_name, "tick_at": tick_at}
            )
            if claimed is None:
                logger.info(
                    "tick %s of %s was enqueued by another scheduler; not sending it again",
                    tick_at.isoformat(),
                    self.actor_name,
                )
                return None
            return super().send_with_options(args=args, kwargs=kwargs, delay=delay, **options)


def periodic_actor(
    spec: str, *, broker: dramatiq.Broker | None = None, **options: Any
) -> Callable[[Callable[..., Any]], PeriodicActor]:
    """Declare a periodic actor run on the cron ``spec`` (``"*/5 * * * *"``, ``"@hourly"``).

    Other options are :func:`dramatiq.actor`'s (``queue_name``, ``max_retries``...).
    """
    schedule = cron(spec)
    target = broker or dramatiq.get_broker()
    ensure_periodiq(target)

    def decorate(fn: Callable[..., Any]) -> PeriodicActor:
        return dramatiq.actor(  # type: ignore[call-overload]
            fn, actor_class=PeriodicActor, broker=target, periodic=schedule, **options
        )

    return decorate
