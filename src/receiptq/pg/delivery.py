"""The delivery of one job: the message a consumer hands to Dramatiq's workers.

It lives below the broker and the middleware so that both can use it (the
circuit-breaker middleware postpones deliveries, the backoff middleware reads
their attempt) without the middleware importing the broker.
"""

from __future__ import annotations

from typing import Any

from dramatiq.broker import MessageProxy
from dramatiq.message import Message


class JobProxy(MessageProxy):
    """A message handed out by the broker, with the delivery it belongs to."""

    def __init__(self, message: Message[Any], *, job_id: int, attempt: int, due_at: float) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.attempt = attempt
        self.due_at = due_at
        self.started_at: float | None = None
        self.postponed = False
