"""Injected service failures, so the demo (``--fail-rate``) can show retries,
circuit breakers and dead letters without a real outage.

``RECEIPTQ_SERVICE_FAIL_RATE`` (0..1, default 0): the probability that one call
of the OCR or SMTP service fails with :class:`ServiceUnavailable`.
"""

from __future__ import annotations

import random

from receiptq.settings import Settings

FAIL_RATE_VARIABLE = "RECEIPTQ_SERVICE_FAIL_RATE"


class ServiceUnavailable(RuntimeError):
    """A service failed this time (transient: a retry may succeed)."""


def fail_rate(settings: Settings | None = None) -> float:
    """``settings.service_fail_rate`` (default: the environment's, 0..1)."""
    return (settings or Settings.from_env()).service_fail_rate


def maybe_fail(service: str) -> None:
    """Raise :class:`ServiceUnavailable` with the configured probability."""
    rate = fail_rate()
    if rate and random.random() < rate:
        raise ServiceUnavailable(f"{service}: injected failure ({FAIL_RATE_VARIABLE}={rate})")
