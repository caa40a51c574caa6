"""The delivery of one job: the message a consumer hands to Dramatiq's workers,
and what became of it.

It lives below the broker and the middleware so that both can use it (the
circuit-breaker middleware postpones deliveries, the backoff middleware reads
their attempt and says when one goes to the dead letters) without the
middleware importing the broker.

A delivery's outcome is said on the delivery (:attr:`JobProxy.outcome`), by
whoever decides it, and read in one place, :mod:`receiptq.pg.settle`, which
decides what to write when the worker acks or nacks it:

- ``None``: nothing was said: the ack finishes the job (succeeded, or failed
  with no retries middleware), the nack dead-letters it as "failed";
- :class:`Retried`: a retry re-queued the job while it ran here (the ack then
  leaves the row alone and counts a retry);
- :class:`Postponed`: put back unrun, without using an attempt (an open breaker);
- :class:`DeadLettered`: the nack dead-letters it with this reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dramatiq.broker import MessageProxy
from dramatiq.message import Message


@dataclass(frozen=True, slots=True)
class Retried:
    """A retry re-queued the job, due in ``delay_ms`` (None: at once)."""

    delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Postponed:
    """Put back to queued unrun for ``delay_ms``, without using up an attempt."""

    delay_ms: int


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """Goes to the dead letters with ``reason`` (e.g. "permanent error")."""

    reason: str


#: What became of a delivery (None: nothing said yet).
Outcome = Retried | Postponed | DeadLettered


class JobProxy(MessageProxy):
    """A message handed out by the broker, with the delivery it belongs to."""

    def __init__(self, message: Message[Any], *, job_id: int, attempt: int, due_at: float) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.attempt = attempt
        self.due_at = due_at
        self.started_at: float | None = None
        self.outcome: Outcome | None = None

    @property
    def postponed(self) -> bool:
        """The delivery was put back unrun (its outcome is :class:`Postponed`)."""
        return isinstance(self.outcome, Postponed)


def outcome_of(message: Any) -> Outcome | None:
    """The outcome said on a delivery; None for a message no PostgresBroker delivered."""
    return message.outcome if isinstance(message, JobProxy) else None
