"""The soak: ``python -m receiptq.tools.soak`` (see :mod:`receiptq.tools.soak.run`)."""
