"""A broker's settings, read on first use: building a broker reads no environment,
starts no embedded PostgreSQL and connects nowhere; the first attribute that needs a
setting (its URL, its lease, its runtime...) reads them all, once, and makes the
process's runtime (:mod:`receiptq.pg.runtime`) and the broker's parts."""

from __future__ import annotations

import threading
from typing import Any

from receiptq import db
from receiptq.config import embedded_database_url
from receiptq.pg.runtime import Runtime
from receiptq.settings import Settings, validate_database_url
from receiptq.tiers import TierPolicy

#: How often an idle consumer looks for work without a notification (ms), unless
#: ``RECEIPTQ_POLL_INTERVAL_MS`` says otherwise.
DEFAULT_POLL_INTERVAL_MS = 500
#: The same behind a transaction pooler, where no notification ever comes (ms).
DEFAULT_POOLED_POLL_INTERVAL_MS = 200
#: The attributes set from the settings on first use (see ``__getattr__``).
FROM_SETTINGS = frozenset(
    {
        "settings",
        "url",
        "pooler",
        "tier_policy",
        "lease_s",
        "poll_interval_s",
        "pool_max_size",
        "max_message_bytes",
        "listen",
        "claim_ahead",
        "runtime",
        "_claims",
        "_settle",
    }
)


class Configured:
    """The settings half of :class:`receiptq.broker.PostgresBroker` (a mixin): the
    values given when it was built, and what is made of them on first use."""

    settings: Settings
    url: str
    pooler: str
    tier_policy: TierPolicy
    lease_s: float
    poll_interval_s: float
    pool_max_size: int
    max_message_bytes: int
    listen: bool
    claim_ahead: bool
    #: This process's connections and threads (reset in a forked child by itself).
    runtime: Runtime

    def _remember(self, settings: Settings | None, tiers: TierPolicy | None, **given: Any) -> None:
        """Keep what was given (None: not given); a malformed URL or pooler mode
        fails now, before anything is set up."""
        if given["database_url"] is not None:
            validate_database_url(given["database_url"], "PostgresBroker(url=...)")
        if given["pooler"] is not None:
            db.pooler_mode(given["pooler"], "PostgresBroker(pooler=...)")
        self._given = (settings, given, tiers)
        self._settings_read: Settings | None = None
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        """An attribute made from the settings: they are read now, on first use."""
        if name not in FROM_SETTINGS or "_lock" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._configure()
        return object.__getattribute__(self, name)

    def _configure(self) -> None:
        """Read the settings (the given ones, else the environment's) and set what
        depends on them; the embedded PostgreSQL starts here when no URL is set."""
        with self._lock:
            if "settings" in self.__dict__:
                return
            settings = self.read_settings()
            given, overrides, tiers = self._given
            self.url = settings.database_url or embedded_database_url(settings)
            if given is not None or overrides["pooler"] is not None:
                # Said for this broker: its URL goes this way in this process (else
                # RECEIPTQ_POOLER, read by receiptq.db for every connection).
                db.use_pooler(settings.pooler, self.url, setting="PostgresBroker(pooler=...)")
            self.pooler = db.pooler(self.url)
            pooled = self.pooler == "transaction"
            self.tier_policy = tiers or TierPolicy.from_env(settings)
            self.lease_s = settings.lease_s
            poll_ms = settings.poll_interval_ms
            if poll_ms is None:
                poll_ms = DEFAULT_POOLED_POLL_INTERVAL_MS if pooled else DEFAULT_POLL_INTERVAL_MS
            self.poll_interval_s = poll_ms / 1000
            self.pool_max_size = settings.pool_max_size
            self.max_message_bytes = settings.max_message_bytes
            self.listen = settings.listen and not pooled
            self.claim_ahead = settings.claim_ahead
            self.runtime = Runtime(
                self.url,
                pool_max_size=self.pool_max_size,
                listen=self.listen,
                ack_flush_ms=settings.ack_flush_ms,
            )
            self._new_parts()
            self.settings = settings  # last: its presence says all of the above is set

    def read_settings(self) -> Settings:
        """The settings given, else the environment's (read once), with the given
        values over them; reading them starts nothing (the URL may still be None)."""
        with self._lock:
            if self._settings_read is None:
                given, overrides, _ = self._given
                self._settings_read = (given or Settings.from_env()).replace(**overrides)
            return self._settings_read

    def _new_parts(self) -> None:
        """What the broker makes of its runtime (its claimer and settler)."""
        raise NotImplementedError
