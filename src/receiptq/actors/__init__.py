"""The actors the workers run: ``dramatiq receiptq.actors``.

Importing this package sets Dramatiq's global broker to the receipt app's
(:func:`receiptq.actors.app.get_broker`: a :class:`PostgresBroker` with receiptq's
middleware: backoff retries, circuit breakers, group callbacks, tiers resolved from
the user) and declares the maintenance jobs (queue ``maintenance``) on it. The
broker reads its settings and declares the receipt pipeline's actors (queues
``ocr``, ``matching``, ``email``) on first use, so importing this package reads no
environment and connects nowhere; workers over it consume those queues and no
others.
"""

from __future__ import annotations

import dramatiq

from receiptq.actors.app import get_broker

#: The workers' broker (nothing is read or connected until it is first used).
broker = get_broker()
dramatiq.set_broker(broker)

from receiptq.actors import periodic  # noqa: E402, F401  (maintenance jobs)
