"""Trace context: traceparent headers and OpenTelemetry spans become events' trace ids."""

from __future__ import annotations

import msgspec
from opentelemetry.sdk.trace import TracerProvider

from mlpulse.config import Settings
from mlpulse.ingest import Ingest
from mlpulse.tracing import current_trace_id, trace_from_headers

PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_header_trace_goes_to_events_without_one_and_to_dead_letters():
    ingest = Ingest(Settings(max_future_skew_seconds=1e12))
    own = "ab" * 16
    value = msgspec.json.encode([
        {"event_id": "1", "timestamp": 1, "model": "m"},
        {"event_id": "2", "timestamp": 1, "model": "m", "trace_id": own},
        {"event_id": "3"}])
    routed = ingest.predictions(value, topic="t", partition=0, offset=5, now_s=10,
                                trace_id=trace_from_headers([("traceparent", PARENT)]))
    assert [e.trace_id for e in routed.by_key["m"]] == [TRACE, own]
    assert routed.dead_letters[0].trace_id == TRACE


def test_sdk_takes_the_current_span_trace_id():
    assert current_trace_id() is None   # no span
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("predict") as span:
        expected = f"{span.get_span_context().trace_id:032x}"
        assert current_trace_id() == expected
