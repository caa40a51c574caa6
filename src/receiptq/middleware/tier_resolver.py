"""TierResolver: fills a message's ``tier`` from its ``user_id`` when it is sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq.broker import Broker
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from receiptq import db

#: How long a looked-up tier is reused (s): a user's upgrade shows within this time.
DEFAULT_TTL_S = 30.0

Resolver = Callable[[str], str | None]


class TierResolver(Middleware):
    """Set ``options["tier"]`` of messages sent with a ``user_id`` and no tier.

    Parameters:
      resolver(Callable[[str], str | None]): user id -> tier name (None: no tier),
        e.g. :func:`app_user_tier`.
      ttl_s(float): how long an answer is cached, in seconds (default 30).

    An explicit ``tier`` option always wins. The broker validates the tier
    against its policy afterwards, so a resolver that returns an unknown tier
    makes the send fail with a clear MessageError instead of storing it.
    """

    def __init__(self, resolver: Resolver, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.resolver = resolver
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def tier_of(self, user_id: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(user_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        tier = self.resolver(user_id)
        with self._lock:
            self._cache[user_id] = (now, tier)
        return tier

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        options = message.options
        if options.get("tier") is None and options.get("user_id") is not None:
            tier = self.tier_of(str(options["user_id"]))
            if tier is not None:
                options["tier"] = tier


def app_user_tier(url: str | Callable[[], str]) -> Resolver:
    """A resolver that reads the tier from the receipt app's ``receiptq_app.users`` table
    (``url`` may be a function that gives it when first needed)."""

    def resolve(user_id: str) -> str | None:
        with db.connect(url() if callable(url) else url) as conn:
            row = db.fetch_one(conn, "user_tier", {"user_id": user_id})
        return None if row is None else row["tier"]

    return resolve
