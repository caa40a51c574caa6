"""receiptq: a PostgreSQL-backed job system built on Dramatiq."""

__version__ = "0.1.0"
