"""Aggregates: exact counts and moments, quantiles within 1%, merge == whole."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpulse.aggregates import (
    OTHER,
    RELATIVE_ACCURACY,
    BoundedCounter,
    NumericStats,
    PredictionAggregate,
    QuantileSketch,
    value_key,
)
from mlpulse.events import PredictionEvent


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


def event(i: int, **fields) -> PredictionEvent:
    return PredictionEvent(event_id=str(i), timestamp=float(i), model="m", **fields)


def test_prediction_aggregate_summary():
    agg = PredictionAggregate(max_categories=100, top_values=2)
    agg.add_batch([
        event(1, latency_ms=10.0, confidence=0.9, prediction="cat", tokens_in=5, cost_usd=0.1,
              cache_hit=True, features={"x": 1.0, "c": "a", "b": True}),
        event(2, latency_ms=20.0, confidence=0.2, prediction="dog", status="error",
              error_type="Timeout", features={"x": 3.0, "c": "a", "b": None}),
        event(3, prediction="cow", cache_hit=False, features={"x": None, "c": "b"},
              trace_id="0" * 32),
    ])
    w = agg.result(model="m", model_version="v", window_start="s", window_end="e",
                   late_events=4)
    assert (w.count, w.error_count, w.late_events) == (3, 1, 4)
    assert w.error_rate == pytest.approx(1 / 3)
    assert w.error_types == {"Timeout": 1}
    assert w.latency_ms is not None and w.latency_ms.max == 20.0
    assert w.latency_ms.mean == 15.0
    assert w.confidence is not None and w.confidence.low_rate == 0.5
    assert w.predictions == {"cat": 1, "cow": 1, OTHER: 1}
    assert (w.tokens_in, w.tokens_out, w.cost_usd, w.cache_hit_rate) == (5, 0, 0.1, 0.5)
    x = w.features["x"]
    assert (x.count, x.null_count, x.mean, x.min, x.max, x.top) == (3, 1, 2.0, 1.0, 3.0, None)
    assert w.features["c"].top == {"a": 2, "b": 1}
    assert w.features["b"].top == {"true": 1}
    assert w.features["b"].null_count == 1
    assert w.trace_ids == ["0" * 32]


def test_prediction_aggregate_merge_equals_whole():
    rng = np.random.default_rng(0)
    events = [event(i, latency_ms=float(rng.lognormal(3, 1)), confidence=float(rng.random()),
                    prediction=int(rng.integers(3)) * 1.0,
                    features={"x": float(rng.normal()), "k": str(rng.integers(4))})
              for i in range(500)]
    whole, left, right = PredictionAggregate(), PredictionAggregate(), PredictionAggregate()
    whole.add_batch(events)
    left.add_batch(events[:123])
    right.add_batch(events[123:])
    left.merge(right)
    kw = {"model": "m", "model_version": "v", "window_start": "s", "window_end": "e",
          "late_events": 0}
    a, b = whole.result(**kw), left.result(**kw)
    assert a.count == b.count and a.predictions == b.predictions
    assert a.latency_ms == b.latency_ms
    assert a.features["k"] == b.features["k"]
    assert a.features["x"].mean == pytest.approx(b.features["x"].mean)
    assert a.features["x"].std == pytest.approx(b.features["x"].std)


# ------------------------------------------------------------- state round trip


def _decoded_batches(seed: int, sizes: tuple[int, int]) -> list[list]:
    """Two batches of valid PredictionEvents made by the fuzzing generator."""
    import random

    from mlpulse.codec import Codec
    from mlpulse.events import PredictionEvent
    from tests.fuzzing import NOW_S, _event

    rng = random.Random(seed)
    codec = Codec(PredictionEvent, max_message_bytes=10**7, max_batch_events=10**4)
    out = []
    for size in sizes:
        data = msgspec.json.encode([_event(rng) for _ in range(size)])
        out.append(codec.decode(data, NOW_S).events)
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 80), st.integers(0, 80))
def test_an_aggregate_restored_from_its_state_continues_exactly(seed, first, second):
    """state() → msgpack → restore() → more events gives exactly the summary of the
    aggregate that never stopped (what a checkpoint must guarantee)."""
    from mlpulse.aggregates import PredictionAggregate

    one, two = _decoded_batches(seed, (first, second))
    keys = {"model": "m", "model_version": "v1", "window_start": "s", "window_end": "e",
            "late_events": 0}
    straight = PredictionAggregate(max_categories=5, max_features=4)
    straight.add_batch(one)
    saved = msgspec.msgpack.encode(straight.state())
    restored = PredictionAggregate(max_categories=5, max_features=4).restore(
        msgspec.msgpack.decode(saved))
    assert restored.result(**keys) == straight.result(**keys)
    straight.add_batch(two)
    restored.add_batch(two)
    assert restored.result(**keys) == straight.result(**keys)


def test_log_aggregate_state_round_trip():
    from mlpulse.aggregates import LogAggregate
    from mlpulse.events import LogEvent

    a = LogAggregate()
    a.add_batch([LogEvent(timestamp=1, level="ERROR", service="s", message="x")] * 3)
    b = LogAggregate().restore(msgspec.msgpack.decode(msgspec.msgpack.encode(a.state())))
    assert b.result(service="s", window_start="", window_end="", late_events=0) == \
        a.result(service="s", window_start="", window_end="", late_events=0)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 120))
def test_batch_aggregation_matches_an_event_by_event_oracle(seed, size):
    """The column-wise fast paths (uniform feature rows, all-float or all-string columns,
    no errors...) count exactly what a plain loop over the events counts, on fuzzed
    events of every shape (missing features, None, bools, mixed types)."""
    from collections import Counter

    (events,) = _decoded_batches(seed, (size,))
    agg = PredictionAggregate(max_categories=10**6, max_features=10**6, top_values=10**6)
    agg.add_batch(events)
    w = agg.result(model="m", model_version="v", window_start="s", window_end="e",
                   late_events=0)
    assert w.count == len(events)
    errors = [e for e in events if e.status == "error"]
    assert w.error_count == len(errors)
    assert w.error_types == dict(Counter(e.error_type or "unknown" for e in errors))
    assert w.predictions == dict(Counter(value_key(e.prediction) for e in events))
    latencies = [e.latency_ms for e in events if e.latency_ms is not None]
    assert (w.latency_ms.max if w.latency_ms else None) == (max(latencies) if latencies
                                                            else None)
    confidences = [e.confidence for e in events if e.confidence is not None]
    if confidences:
        assert w.confidence.low_rate == sum(c < 0.5 for c in confidences) / len(confidences)
    assert w.tokens_in == sum(e.tokens_in or 0 for e in events)
    assert w.tokens_out == sum(e.tokens_out or 0 for e in events)
    assert w.cost_usd == pytest.approx(sum(e.cost_usd or 0.0 for e in events))
    cache = [e.cache_hit for e in events if e.cache_hit is not None]
    assert w.cache_hit_rate == (sum(cache) / len(cache) if cache else None)
    assert w.trace_ids == [e.trace_id for e in events if e.trace_id is not None][:5]
    names = {name for e in events for name in e.features}
    assert set(w.features) == names
    for name in names:
        column = [e.features[name] for e in events if name in e.features]
        numbers = [v for v in column if type(v) is float]
        others = Counter(value_key(v) for v in column if v is not None and type(v) is not float)
        summary = w.features[name]
        assert (summary.count, summary.null_count) == (len(column), column.count(None))
        assert (summary.min, summary.max) == ((min(numbers), max(numbers)) if numbers
                                              else (None, None))
        assert (summary.top or {}) == dict(others)
