"""Unit tests of receiptq.stats: histogram buckets and percentiles."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiptq.stats import (
    BUCKET_BOUNDS_MS,
    BUCKETS,
    add_histograms,
    bucket_of,
    empty_histogram,
    histogram_percentile,
    percentile,
)


def histogram_of(values: list[float]) -> list[int]:
    histogram = empty_histogram()
    for value in values:
        histogram[bucket_of(value)] += 1
    return histogram


@pytest.mark.parametrize(
    "value, bucket",
    [(0, 0), (0.5, 0), (1, 0), (1.01, 1), (2, 1), (4, 3), (10, 5), (10.5, 6), (3_600_000, 25)],
)
def test_a_value_falls_in_the_first_bucket_whose_bound_holds_it(value, bucket):
    assert bucket_of(value) == bucket


def test_values_above_the_last_bound_fall_in_the_open_bucket():
    assert bucket_of(3_600_001) == BUCKETS - 1 == len(BUCKET_BOUNDS_MS)
    assert bucket_of(10**12) == BUCKETS - 1


@given(st.floats(min_value=0, max_value=10**8, allow_nan=False))
def test_every_value_lies_within_its_bucket(value):
    i = bucket_of(value)
    lower = BUCKET_BOUNDS_MS[i - 1] if i > 0 else 0.0
    upper = BUCKET_BOUNDS_MS[i] if i < len(BUCKET_BOUNDS_MS) else float("inf")
    assert lower <= value <= upper
    assert i == 0 or value > lower


def test_histograms_add_element_wise():
    a = empty_histogram()
    b = empty_histogram()
    a[0], a[3], b[3], b[-1] = 1, 2, 5, 7
    total = add_histograms([a, b])
    assert total[0] == 1 and total[3] == 7 and total[-1] == 7 and sum(total) == 15


def test_empty_histogram_has_no_percentile():
    assert histogram_percentile(empty_histogram(), 0.5) is None


def test_histogram_percentile_interpolates_inside_the_bucket():
    # 10 values in (10, 15]: the median is halfway through that bucket.
    histogram = histogram_of([12.0] * 10)
    assert histogram_percentile(histogram, 0.5) == pytest.approx(12.5)
    assert histogram_percentile(histogram, 1.0) == pytest.approx(15.0)


def test_histogram_percentile_on_known_data():
    # 90 fast jobs (<= 1 ms) and 10 slow ones in (100, 150] ms.
    histogram = histogram_of([0.5] * 90 + [120.0] * 10)
    assert histogram_percentile(histogram, 0.5) <= 1.0
    assert histogram_percentile(histogram, 0.9) == pytest.approx(1.0)
    assert 100 < histogram_percentile(histogram, 0.95) <= 150


def test_open_bucket_reports_its_lower_bound():
    histogram = histogram_of([5_000_000.0, 9_000_000.0])
    assert histogram_percentile(histogram, 0.99) == BUCKET_BOUNDS_MS[-1]


values_ms = st.lists(st.floats(min_value=0, max_value=5_000_000), min_size=1, max_size=200)


@given(values=values_ms, a=st.floats(0.01, 1.0), b=st.floats(0.01, 1.0))
def test_histogram_percentile_is_monotonic_in_the_fraction(values, a, b):
    histogram = histogram_of(values)
    low, high = sorted((a, b))
    assert histogram_percentile(histogram, low) <= histogram_percentile(histogram, high)


@given(values=values_ms, fraction=st.floats(0.01, 1.0))
def test_histogram_percentile_lies_within_the_bucket_of_the_exact_percentile(values, fraction):
    estimate = histogram_percentile(histogram_of(values), fraction)
    exact = percentile(values, fraction)
    i = bucket_of(exact)
    lower = BUCKET_BOUNDS_MS[i - 1] if i > 0 else 0.0
    upper = BUCKET_BOUNDS_MS[i] if i < len(BUCKET_BOUNDS_MS) else BUCKET_BOUNDS_MS[-1]
    assert lower <= estimate <= upper


def test_percentile_is_nearest_rank():
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_percentile_of_a_tiny_fraction_is_the_smallest_value():
    assert percentile([5, 1, 9], 0.0001) == 1
    assert percentile([5, 1, 9], 0.0) == 1


def test_percentile_of_nothing_is_none():
    assert percentile([], 0.5) is None
