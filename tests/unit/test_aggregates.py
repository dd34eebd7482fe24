"""Aggregates: exact counts and moments, quantiles within 1%, merge == whole."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpulse.aggregates import PredictionAggregate
from mlpulse.events import PredictionEvent
from mlpulse.sketches import (
    OTHER,
    value_key,
)


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
