"""Decoding and validation: every bad input is rejected with a reason naming the field."""

from __future__ import annotations

import json

import msgspec
import pytest

from mlpulse.codec import Codec
from mlpulse.deadletter import dead_letter
from mlpulse.events import FeedbackEvent, LogEvent, PredictionEvent

NOW = 1_700_000_000.0
GOOD = {"event_id": "e1", "timestamp": NOW - 5, "model": "fraud"}


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture
def codec() -> Codec[PredictionEvent]:
    return Codec(PredictionEvent, max_message_bytes=200_000, max_batch_events=100)


def test_single_event_decodes_with_defaults(codec):
    decoded = codec.decode(enc(GOOD), NOW)
    assert not decoded.rejected
    event = decoded.events[0]
    assert (event.model, event.model_version, event.status, event.features) == (
        "fraud", "unknown", "ok", {})


def test_rfc3339_and_epoch_timestamps_agree(codec):
    a = codec.decode(enc({**GOOD, "timestamp": "2023-11-14T22:13:20Z"}), NOW).events[0]
    b = codec.decode(enc({**GOOD, "timestamp": 1700000000}), NOW).events[0]
    c = codec.decode(enc({**GOOD, "timestamp": "2023-11-14T23:13:20+01:00"}), NOW).events[0]
    assert a.event_time_s == b.event_time_s == c.event_time_s == 1_700_000_000.0


def test_unknown_fields_are_ignored(codec):
    assert codec.decode(enc({**GOOD, "whatever": {"deep": [1, 2]}}), NOW).events


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "message is empty"),
    (b"   ", "message is empty"),
    (b"hello", "not a JSON object or array"),
    (b"42", "not a JSON object or array"),
    (b'{"event_id": "x"', "JSON is malformed"),
    (enc({k: v for k, v in GOOD.items() if k != "model"}), "missing required field `model`"),
    (enc({**GOOD, "timestamp": "yesterday"}), "`$.timestamp`"),
    (enc({**GOOD, "timestamp": "2023-11-14T22:13:20"}), "timezone"),
    (enc({**GOOD, "timestamp": -1}), "`$.timestamp`"),
    (enc({**GOOD, "model": ""}), "`$.model`"),
    (enc({**GOOD, "model": "bad name!"}), "`$.model`"),
    (enc({**GOOD, "model": "m" * 129}), "`$.model`"),
    (enc({**GOOD, "event_id": "e" * 129}), "`$.event_id`"),
    (enc({**GOOD, "latency_ms": -1}), "`$.latency_ms`"),
    (enc({**GOOD, "latency_ms": "fast"}), "`$.latency_ms`"),
    (enc({**GOOD, "status": "maybe"}), "`$.status`"),
    (enc({**GOOD, "confidence": 1.5}), "`$.confidence`"),
    (enc({**GOOD, "trace_id": "ABC"}), "`$.trace_id`"),
    (enc({**GOOD, "tokens_in": -3}), "`$.tokens_in`"),
    (enc({**GOOD, "tokens_in": 1.5}), "`$.tokens_in`"),
    (enc({**GOOD, "cost_usd": -0.1}), "`$.cost_usd`"),
    (enc({**GOOD, "features": {"a": [1]}}), "`$.features"),
    (enc({**GOOD, "features": {f"f{i}": i for i in range(1001)}}), "length <= 1000"),
    (enc({**GOOD, "segment": {"region": 1}}), "`$.segment"),
    (enc({**GOOD, "prediction": {"a": 1}}), "`$.prediction`"),
    (b'{"event_id": "x", "timestamp": NaN, "model": "m"}', "JSON is malformed"),
    (b'{"event_id": "x", "timestamp": 1, "model": "m", "latency_ms": Infinity}',
     "JSON is malformed"),
    (b'{"event_id": "x", "timestamp": 1, "model": "m", "latency_ms": 1e999}', "`$.latency_ms`"),
    (b'{"event_id": "x", "timestamp": 1, "model": "m", "features": {"a": -1e999}}',
     "`$.features"),
    (b'{"event_id": "\xff\xfe", "timestamp": 1, "model": "m"}', "malformed"),
    (enc({**GOOD, "timestamp": NOW + 3600}), "ahead of the wall clock"),
    (enc({**GOOD, "timestamp": NOW * 1000}), "epoch milliseconds?"),
    (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    (b"{\"a\": " + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply"),
    (enc([GOOD] * 101), "above the limit of 100"),
    (b'{"pad": "' + b"x" * 200_001 + b'"}', "above the limit of 200000"),
])
def test_bad_input_is_rejected_with_a_reason(codec, value, reason):
    decoded = codec.decode(value, NOW)
    assert not decoded.events
    assert decoded.rejected, value[:80]
    assert reason in decoded.rejected[0].reason, decoded.rejected[0].reason


def test_envelope_keeps_valid_events_and_rejects_each_bad_one(codec):
    items = [GOOD, {**GOOD, "latency_ms": -1}, {**GOOD, "event_id": "e3"}, "junk",
             {**GOOD, "timestamp": NOW + 10_000}]
    decoded = codec.decode(enc(items), NOW)
    assert [e.event_id for e in decoded.events] == ["e1", "e3"]
    assert [r.index for r in decoded.rejected] == [1, 3, 4]
    assert json.loads(decoded.rejected[0].payload) == items[1]
    assert decoded.rejected[1].payload == b'"junk"'
    assert json.loads(decoded.rejected[2].payload) == items[4]


def test_envelope_of_valid_events_takes_the_fast_path(codec):
    decoded = codec.decode(enc([GOOD] * 100), NOW)
    assert len(decoded.events) == 100 and not decoded.rejected


def test_future_skew_can_be_disabled():
    codec = Codec(PredictionEvent, max_future_skew_seconds=None)
    assert codec.decode(enc({**GOOD, "timestamp": NOW * 10}), NOW).events


def test_log_levels_any_case_and_aliases():
    codec = Codec(LogEvent)
    base = {"timestamp": NOW, "service": "api", "message": "m"}
    levels = [codec.decode(enc({**base, "level": lv}), NOW).events[0].level
              for lv in ("trace", "Debug", "INFO", "warning", "WARN", "error", "critical", "fatal")]
    assert levels == ["TRACE", "DEBUG", "INFO", "WARN", "WARN", "ERROR", "FATAL", "FATAL"]
    bad = codec.decode(enc({**base, "level": "LOUD"}), NOW)
    assert "level must be one of" in bad.rejected[0].reason


def test_feedback_requires_a_label_or_outcomes_and_its_model():
    codec = Codec(FeedbackEvent)
    ok = codec.decode(enc({"event_id": "e1", "timestamp": NOW, "label": True, "model": "m"}),
                      NOW)
    assert ok.events[0].label is True
    outcomes = codec.decode(enc({"event_id": "e1", "timestamp": NOW, "model": "m",
                                 "outcomes": {"converted": True, "revenue_usd": 12}}), NOW)
    assert outcomes.events[0].label is None
    assert outcomes.events[0].outcomes == {"converted": True, "revenue_usd": 12.0}
    bad = codec.decode(enc({"event_id": "e1", "timestamp": NOW, "model": "m"}), NOW)
    assert "carries a `label`, `outcomes` or both" in bad.rejected[0].reason
    for wrong, why in [({"converted": "yes"}, "Expected `bool | float`"),
                       ({f"o{i}": 1 for i in range(17)}, "length <= 16"),
                       ({"": 1}, "length >= 1")]:
        rejected = codec.decode(enc({"event_id": "e1", "timestamp": NOW, "model": "m",
                                     "outcomes": wrong}), NOW).rejected
        assert why in rejected[0].reason and "$.outcomes" in rejected[0].reason
    unrouted = codec.decode(enc({"event_id": "e1", "timestamp": NOW, "label": 1}), NOW)
    assert "missing required field `model`" in unrouted.rejected[0].reason


def test_dead_letter_keeps_text_or_base64():
    text = dead_letter(Codec(PredictionEvent).decode(b"nope", NOW).rejected[0],
                       "t", 1, 2, NOW)
    assert (text.payload, text.payload_encoding, text.partition, text.offset) == (
        "nope", "utf-8", 1, 2)
    raw = dead_letter(Codec(PredictionEvent).decode(b"\xff", NOW).rejected[0], "t", 1, 2, NOW)
    assert raw.payload_encoding == "base64"
    assert msgspec.json.decode(msgspec.json.encode(raw))["payload"] == "/w=="


SCHEMA_CASES = [
    GOOD,
    {**GOOD, "model": "bad name!"},
    {**GOOD, "model": "ok-Model_1.2:x/y"},
    {**GOOD, "trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736"},
    {**GOOD, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
    {**GOOD, "trace_id": "4bf92f3577b34da6a3ce929d0e0e473"},
    {**GOOD, "features": {"": 1}},
    {**GOOD, "features": {"f" * 128: 1}},
    {**GOOD, "features": {"f" * 129: 1}},
    {**GOOD, "segment": {"r" * 129: "x"}},
    {**GOOD, "segment": {"region": "x" * 129}},
]


@pytest.mark.parametrize("event", SCHEMA_CASES)
def test_published_schema_and_decoder_agree(codec, event):
    """Checks done in __post_init__ (for speed) match what the JSON Schema promises."""
    import jsonschema

    from mlpulse.events import schemas

    schema = schemas()["prediction.schema.json"]
    valid_by_schema = jsonschema.Draft202012Validator(schema).is_valid(event)
    valid_by_codec = bool(codec.decode(enc(event), NOW).events)
    assert valid_by_schema == valid_by_codec
