"""A worker's resource guard: it stops claiming while the host or the database is short.

Each heartbeat samples the host's CPU and memory use (psutil) and the share of
the database's connections in use. When a sample is above its threshold the
worker stops claiming new jobs (jobs it holds keep running) until a later
sample is back under it, and says why in its ``receiptq.workers`` row.

Thresholds are percentages; 0 turns a check off:

  RECEIPTQ_THROTTLE_CPU_PERCENT       default 0 (off: a busy worker is meant to use its CPU)
  RECEIPTQ_THROTTLE_MEMORY_PERCENT    default 95
  RECEIPTQ_THROTTLE_DB_CONNECTIONS_PERCENT  default 95
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from receiptq.settings import Settings


@dataclass(frozen=True, slots=True)
class Thresholds:
    cpu_percent: float = 0.0
    memory_percent: float = 95.0
    db_connections_percent: float = 95.0

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> Thresholds:
        """The thresholds of ``settings`` (default: the environment's)."""
        settings = settings or Settings.from_env()
        return cls(
            cpu_percent=settings.throttle_cpu_percent,
            memory_percent=settings.throttle_memory_percent,
            db_connections_percent=settings.throttle_db_connections_percent,
        )


@dataclass(frozen=True, slots=True)
class Sample:
    cpu_percent: float
    memory_percent: float
    db_connections_percent: float | None


def throttle_reason(sample: Sample, limits: Thresholds) -> str | None:
    """Why a worker with this sample should not claim, or None when it may."""
    checks = (
        ("cpu", sample.cpu_percent, limits.cpu_percent),
        ("memory", sample.memory_percent, limits.memory_percent),
        ("database connections", sample.db_connections_percent, limits.db_connections_percent),
    )
    for name, value, limit in checks:
        if limit > 0 and value is not None and value >= limit:
            return f"{name} at {value:.0f}% (limit {limit:.0f}%)"
    return None


def sample_host(db_connections_percent: float | None) -> Sample:
    """CPU use since the previous call (psutil), memory use now, and the database figure."""
    return Sample(
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_percent=psutil.virtual_memory().percent,
        db_connections_percent=db_connections_percent,
    )
