"""SDK pieces that need no broker."""

from __future__ import annotations

import json

from mlpulse.sdk.producer import Telemetry, chunked_with_counts, monitor_prediction


def test_envelopes_stay_under_the_message_size():
    batch = [{"event_id": str(i), "pad": "x" * 100} for i in range(1000)]
    chunks = chunked_with_counts(batch, max_bytes=10_000)
    assert all(len(payload) <= 10_000 for payload, _ in chunks)
    assert sum(count for _, count in chunks) == 1000
    events = [e for payload, _ in chunks for e in json.loads(payload)]
    assert events == batch


def test_disabled_telemetry_counts_drops_and_decorator_keeps_results_and_errors():
    telemetry = Telemetry.disabled()

    @monitor_prediction(model="m", telemetry=telemetry)
    def predict(x: float) -> float:
        if x < 0:
            raise ValueError(x)
        return x + 1

    assert predict(1.0) == 2.0
    try:
        predict(-1.0)
    except ValueError:
        pass
    else:
        raise AssertionError("the error must reach the caller")
    assert telemetry.dropped == 2


def test_flush_on_a_disabled_telemetry_returns_at_once():
    telemetry = Telemetry.disabled()
    telemetry.log_prediction(model="m")
    assert telemetry.flush(timeout_s=5) is True
    assert telemetry.dropped == 1
