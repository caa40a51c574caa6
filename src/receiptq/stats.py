"""Pure figures: latency histograms and percentiles (no I/O).

Histograms are lists of bucket counts over :data:`BUCKET_BOUNDS_MS`; bucket i
counts values <= BUCKET_BOUNDS_MS[i] (and above the previous bound); the last
bucket counts everything larger than the last bound.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

#: Upper bounds, in milliseconds, of the histogram buckets (one more bucket is open-ended).
BUCKET_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
)  # fmt: skip
BUCKETS = len(BUCKET_BOUNDS_MS) + 1


def bucket_of(value_ms: float) -> int:
    """Index of the bucket that counts ``value_ms``."""
    return bisect.bisect_left(BUCKET_BOUNDS_MS, value_ms)


def empty_histogram() -> list[int]:
    return [0] * BUCKETS


def add_histograms(histograms: Iterable[Sequence[int]]) -> list[int]:
    total = empty_histogram()
    for histogram in histograms:
        for i, count in enumerate(histogram[:BUCKETS]):
            total[i] += count
    return total


def histogram_percentile(histogram: Sequence[int], fraction: float) -> float | None:
    """Estimate a percentile (0 < fraction <= 1) from bucket counts, in ms.

    Interpolates linearly inside the bucket that holds the rank; the open last
    bucket reports its lower bound. None when the histogram is empty.
    """
    total = sum(histogram)
    if total == 0:
        return None
    rank = fraction * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = BUCKET_BOUNDS_MS[i - 1] if i > 0 else 0.0
            if i >= len(BUCKET_BOUNDS_MS):
                return float(lower)
            upper = BUCKET_BOUNDS_MS[i]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(BUCKET_BOUNDS_MS[-1])


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of exact values (as the peers harness computes it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
