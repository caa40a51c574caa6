"""The actors the workers run: ``dramatiq receiptq.actors``.

Importing this package sets the global broker (a :class:`PostgresBroker`
configured from the environment, with receiptq's middleware: backoff retries,
circuit breakers, group callbacks, tiers resolved from the user) and declares the
receipt pipeline's actors (queues ``ocr``, ``matching``, ``email``) and the
maintenance jobs (``maintenance``): workers over this package consume those
queues and no others.
"""

from __future__ import annotations

import dramatiq

from receiptq.broker import PostgresBroker
from receiptq.middleware import add_app_middleware, receiptq_middleware

broker = PostgresBroker(middleware=receiptq_middleware())
add_app_middleware(broker)
dramatiq.set_broker(broker)

from receiptq.actors import receipts  # noqa: E402,F401,I001  (the receipt pipeline)
from receiptq.actors import periodic  # noqa: E402, F401  (maintenance jobs)
