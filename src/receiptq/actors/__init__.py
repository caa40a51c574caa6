"""The actors the workers run: ``dramatiq receiptq.actors``.

Importing this package sets the global broker (a :class:`PostgresBroker`
configured from the environment) and declares the sample actors.
"""

from __future__ import annotations

import dramatiq

from receiptq.broker import PostgresBroker

broker = PostgresBroker()
dramatiq.set_broker(broker)

from receiptq.actors import samples  # noqa: E402,F401  (declares the actors)
