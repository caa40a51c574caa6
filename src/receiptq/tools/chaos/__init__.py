"""The chaos run: real ``dramatiq`` workers SIGKILLed again and again and PostgreSQL
restarted under them, on a server of its own (:mod:`receiptq.tools.chaos.run`);
``python -m receiptq.tools.chaos`` (:mod:`receiptq.tools.chaos.command`)."""
