"""Sketches: exact counts and moments, quantiles within 1%, merge == whole."""

from __future__ import annotations

import numpy as np
import pytest
from ddsketch import DDSketch

from mlpulse.sketches import (
    OTHER,
    RELATIVE_ACCURACY,
    BoundedCounter,
    NumericStats,
    QuantileSketch,
    value_key,
)


def within_one_percent(got: float, values: np.ndarray, q: float) -> bool:
    lo = np.quantile(values, q, method="lower")
    hi = np.quantile(values, q, method="higher")
    return lo * 0.99 <= got <= hi * 1.01


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("q", [0.05, 0.5, 0.95, 0.99])
def test_sketch_quantiles_within_one_percent(seed, q):
    values = np.random.default_rng(seed).lognormal(3, 1.2, size=5000)
    sketch = QuantileSketch()
    for chunk in np.array_split(values, 7):
        sketch.add_many(chunk)
    assert within_one_percent(sketch.quantile(q), values, q)
    assert sketch.count == 5000
    assert sketch.max == values.max()
    assert sketch.mean == pytest.approx(values.mean())


def test_vectorised_add_matches_ddsketch_scalar_add():
    values = np.random.default_rng(3).exponential(50, size=2000)
    values[:10] = 0.0
    ours = QuantileSketch()
    ours.add_many(values)
    reference = DDSketch(relative_accuracy=RELATIVE_ACCURACY)
    for v in values:
        reference.add(float(v))
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0):
        assert ours.quantile(q) == pytest.approx(reference.get_quantile_value(q), rel=1e-9)


def test_sketch_merge_equals_whole():
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2, 10, 1000), rng.gamma(5, 3, 3000)
    left, right, whole = QuantileSketch(), QuantileSketch(), QuantileSketch()
    left.add_many(a)
    right.add_many(b)
    whole.add_many(np.concatenate([a, b]))
    left.merge(right)
    for q in (0.1, 0.5, 0.99):
        assert left.quantile(q) == whole.quantile(q)


@pytest.mark.parametrize("values", [[1.0], [1.0, 1.0], [-5.0, 0.0, 5.0, 1e6], list(range(100))])
def test_numeric_stats_match_numpy_in_any_split(values):
    arr = np.array(values, dtype=float)
    for split in range(1, len(arr) + 1):
        stats = NumericStats()
        stats.add_many(arr[:split])
        other = NumericStats()
        other.add_many(arr[split:])
        stats.merge(other)
        assert stats.count == len(arr)
        assert stats.mean == pytest.approx(arr.mean())
        assert stats.std == pytest.approx(arr.std(), abs=1e-9)
        assert (stats.min, stats.max) == (arr.min(), arr.max())


def test_bounded_counter_folds_overflow_into_other():
    counter = BoundedCounter(max_keys=3)
    counter.add_many(["a", "b", "c", "d", "e", "a"])
    assert counter.counts == {"a": 2, "b": 1, "c": 1}
    assert counter.top(2) == {"a": 2, "b": 1, OTHER: 3}
    assert sum(counter.top(10).values()) == 6


@pytest.mark.parametrize(("value", "key"), [
    (True, "true"), (False, "false"), (None, "null"), (1.0, "1"), (-2.0, "-2"),
    (0.5, "0.5"), ("cat", "cat"), (1e300, "1e+300"),
])
def test_value_keys(value, key):
    assert value_key(value) == key


def test_quantiles_at_once_are_ddsketchs():
    """``quantiles`` (one cumulative sum for several) against the library's own sketch, with
    zeros, one value, and none."""
    rng = np.random.default_rng(4)
    qs = [0.0, 0.05, 0.5, 0.95, 0.99, 1.0]
    for size, zeros in ((0, 0), (1, 0), (50, 10), (1000, 0), (30, 30)):
        values = np.concatenate([rng.lognormal(3, 1, size), np.zeros(zeros)])
        ours, reference = QuantileSketch(), DDSketch(relative_accuracy=RELATIVE_ACCURACY)
        ours.add_many(values)
        for v in values:
            reference.add(float(v))
        got = ours.quantiles(qs)
        if not values.size:
            assert all(np.isnan(got))
            continue
        assert got == pytest.approx([reference.get_quantile_value(q) for q in qs], rel=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_the_quantiles_of_many_sketches_are_each_ones(seed):
    """A window's slices' quantiles found together equal each sketch's own: sketches empty,
    of zeros only, mixed, or spanning decades, at the extreme quantiles too."""
    rng = np.random.default_rng(seed)
    sketches = []
    for _ in range(int(rng.integers(2, 12))):
        sketch = QuantileSketch()
        if rng.random() < 0.8:
            sketch.add_many(rng.lognormal(rng.normal(0, 3), rng.random() * 3,
                                          int(rng.integers(1, 300))))
        if rng.random() < 0.3:
            sketch.add_many(np.zeros(int(rng.integers(1, 100))))
        sketches.append(sketch)
    qs = [(0.0, 0.05, 0.5, 0.95, 0.99, 1.0, 1.5), (0.5,), (0.05, 0.99)]
    asked = [(s, qs[i % 3]) for i, s in enumerate(sketches)]
    assert str(QuantileSketch.quantiles_of(asked)) == str(
        [s.quantiles(q) for s, q in asked])   # (str: NaN, where empty, equals itself)
