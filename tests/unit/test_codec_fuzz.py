"""Property-based: no input makes the codec raise, and nothing is lost or counted twice."""

from __future__ import annotations

import json
import os

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpulse.codec import Codec
from mlpulse.events import LogEvent, PredictionEvent

NOW = 1_700_000_000.0
SCALE = int(os.environ.get("MLPULSE_FUZZ_SCALE", "1"))
"""``make fuzz`` multiplies the examples (50×)."""
codec = Codec(PredictionEvent, max_message_bytes=100_000, max_batch_events=50)
log_codec = Codec(LogEvent, max_message_bytes=100_000, max_batch_events=50)

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)

field_values = {
    "event_id": st.one_of(st.text(max_size=140), st.integers()),
    "timestamp": st.one_of(st.floats(-1e12, 1e13, allow_nan=False), st.integers(-5, 2**40),
                           st.just("2023-11-14T22:13:20Z"), st.just("2023-11-14T22:13:20"),
                           st.text(max_size=30)),
    "model": st.one_of(st.sampled_from(["m", "fraud.v2", "a/b:c-d_e", "", "bad name"]),
                       st.text(max_size=130)),
    "latency_ms": st.one_of(finite, st.integers(), st.text(max_size=5)),
    "status": st.sampled_from(["ok", "error", "OK", "maybe"]),
    "confidence": st.floats(-1, 2, allow_nan=False),
    "prediction": json_values,
    "features": st.one_of(st.dictionaries(st.text(max_size=130), json_values, max_size=6),
                          json_values),
    "segment": st.dictionaries(st.text(max_size=20), st.one_of(st.text(max_size=20),
                                                                 st.integers()), max_size=3),
    "trace_id": st.one_of(st.text("0123456789abcdefABCDEF", min_size=30, max_size=33),
                          st.integers()),
    "tokens_in": st.one_of(st.integers(-3, 2**60), finite),
    "cost_usd": st.floats(-1, 1e308, allow_nan=False, allow_infinity=False),
    "cache_hit": json_values,
}
events = st.fixed_dictionaries({}, optional=field_values)


@settings(max_examples=400 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, max_size=8), st.booleans())
def test_every_event_is_either_accepted_or_rejected_once(items, as_envelope):
    data = msgspec.json.encode(items if as_envelope else (items[0] if items else {}))
    decoded = codec.decode(data, NOW)
    if as_envelope:
        indices = [r.index for r in decoded.rejected]
        assert len(decoded.events) + len(decoded.rejected) == len(items)
        assert sorted(indices) == sorted(set(indices))  # type: ignore[type-var]
        for rejected in decoded.rejected:
            assert json.loads(rejected.payload) == items[rejected.index]  # type: ignore[index]
    else:
        assert len(decoded.events) + len(decoded.rejected) == 1
    for rejected in decoded.rejected:
        assert rejected.reason
    for event in decoded.events:
        assert isinstance(event.event_time_s, float)
        assert event.event_time_s <= NOW + 300


@settings(max_examples=400 * SCALE, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    for c in (codec, log_codec):
        decoded = c.decode(data, NOW)
        assert decoded.events or decoded.rejected or data.strip() == b"[]"


@settings(max_examples=300 * SCALE, deadline=None)
@given(json_values)
def test_arbitrary_json_never_raises(value):
    decoded = codec.decode(json.dumps(value).encode(), NOW)
    for rejected in decoded.rejected:
        assert rejected.reason
