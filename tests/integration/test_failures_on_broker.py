"""Bad input, trace context, the SDK and two workers, on the real broker (late events, log
windows and the cardinality guard run in process: tests/unit/test_engine.py)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import time

import msgspec

from mlpulse.sdk.monitor import monitor_prediction
from mlpulse.sdk.producer import Telemetry
from mlpulse.sdk.simulator import MALFORMED_SAMPLES

from .conftest import consume, produce

T0 = 1_700_000_000.0


def ev(i: int, t: float, model: str = "m", **extra) -> dict:
    return {"event_id": f"{model}-{i}", "timestamp": t, "model": model, **extra}


async def test_fifty_malformed_messages_land_fifty_dead_letters(settings, topics, start_worker):
    worker = start_worker()
    worker.wait_assigned()
    good = [ev(i, T0 + 0.1 * i, latency_ms=5.0) for i in range(10)]
    # one bad event per message (a bad array of n events would give n records)
    bad_samples = [*(m for m in MALFORMED_SAMPLES if m != b"[1, 2, 3]"), b"", b"\x00\x01",
                   b'{"event_id": "x"}', b"[1]", b'{"event_id": "trunc',
                   b'{"event_id":"x","timestamp":1,"model":"m","confidence":"high"}']
    values: list[bytes] = []
    for i in range(50):
        values.append(bad_samples[i % len(bad_samples)])
        if i % 5 == 0:
            values.append(msgspec.json.encode(good[i // 5]))
    # one envelope mixing 2 valid events and 1 invalid one: only that one is dead-lettered
    mixed = msgspec.json.encode([ev(100, T0 + 1), {"event_id": "bad"}, ev(101, T0 + 1.5)])
    await produce(settings, topics.predictions, [*values, mixed], keys=None)

    dead = await consume(settings, topics.deadletter, lambda r: len(r) >= 51, settle_s=2.0)
    assert len(dead) == 51
    for record in dead:
        assert record["error"] and record["source_topic"] == topics.predictions
        assert record["offset"] is not None and record["received_at"].endswith("Z")
    from_mixed = [r for r in dead if r["payload"] == '{"event_id":"bad"}']
    assert len(from_mixed) == 1 and from_mixed[0]["index"] == 1
    assert all(r["index"] == 0 for r in dead if r["payload"] == "1")   # from b"[1]"
    assert any(r.get("payload_encoding") == "base64" for r in dead)
    assert {r["error"].split(":")[0] for r in dead} >= {
        "JSON is malformed", "invalid prediction event", "message is empty"}

    windows = await consume(settings, topics.windows, lambda r: len(r) >= 1, settle_s=1.0)
    assert [w["count"] for w in windows] == [12]
    labels = {"topic": topics.predictions, "outcome": "dead_lettered"}
    assert worker.metric("mlpulse_events_total", labels) == 51
    labels["outcome"] = "accepted"
    assert worker.metric("mlpulse_events_total", labels) == 12
    reasons = {r: worker.metric("mlpulse_dead_letters_total",
                                {"topic": topics.predictions, "reason": r})
               for r in ("malformed_json", "invalid_event", "empty")}
    assert all(reasons.values()), reasons
    assert worker.process.poll() is None, "the worker must survive bad input"
    # the worker logs JSON lines (its stderr is not a terminal), with the input's position
    records = [msgspec.json.decode(line) for line in worker.log().splitlines()
               if line.startswith("{")]
    assert len(records) > 5 and all({"time", "level", "logger", "message"} <= set(r)
                                    for r in records)
    logged = [r for r in records if r["message"].startswith("dead-lettered")]
    assert sum(r["count"] for r in logged) == 51
    assert all(r["topic"] == topics.predictions and r["offset"] >= 0 for r in logged)


async def test_traceparent_header_reaches_window_exemplars_and_dead_letters(
        settings, topics, start_worker):
    worker = start_worker()
    worker.wait_assigned()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = [("traceparent", f"00-{trace}-00f067aa0ba902b7-01".encode())]
    await produce(settings, topics.predictions,
                  [msgspec.json.encode(ev(1, T0 + 0.5)), b'{"event_id": "broken"'],
                  headers=parent)
    await produce(settings, topics.predictions, [msgspec.json.encode(ev(2, T0 + 0.6))])
    windows = await consume(settings, topics.windows, lambda r: len(r) >= 1)
    assert windows[0]["count"] == 2 and windows[0]["trace_ids"] == [trace]
    dead = await consume(settings, topics.deadletter, lambda r: len(r) >= 1)
    assert dead[0]["trace_id"] == trace


async def test_sdk_batches_into_envelopes_and_flushes_on_close(settings, topics, start_worker):
    worker = start_worker()
    worker.wait_assigned()
    telemetry = Telemetry(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix,
                          max_batch_events=50)

    @monitor_prediction(model="decorated", version="v2", telemetry=telemetry)
    def predict(x: float) -> float:
        if x < 0:
            raise ValueError("negative")
        return x * 2

    for i in range(300):
        telemetry.log_prediction(model="sdk", model_version="v1", timestamp=T0 + i * 0.005,
                                 latency_ms=float(i % 17), features={"x": float(i)})
    for x in (1.0, 2.0, -1.0):
        with contextlib.suppress(ValueError):
            predict(x)
    telemetry.close()
    assert telemetry.dropped == 0
    assert telemetry.sent_events == 303
    assert telemetry.sent_messages < 303 / 10, "events must travel in envelopes"
    windows = await consume(settings, topics.windows, lambda r: len(r) >= 2, timeout_s=90,
                            settle_s=1.0)
    by_model = {w["model"]: w for w in windows}
    assert by_model["sdk"]["count"] == 300
    assert by_model["sdk"]["features"]["x"]["max"] == 299.0
    decorated = by_model["decorated"]
    assert (decorated["model_version"], decorated["count"], decorated["error_count"]) == (
        "v2", 3, 1)
    assert decorated["error_types"] == {"ValueError": 1}


def test_sdk_never_blocks_and_counts_drops_when_the_buffer_is_full():
    telemetry = Telemetry("127.0.0.1:1", max_buffer_events=10)   # nothing listens there
    started = time.perf_counter()
    for i in range(1000):
        telemetry.log_prediction(model="m", timestamp=T0 + i)
    assert time.perf_counter() - started < 1.0
    assert telemetry.dropped >= 990
    telemetry.close(timeout_s=1)


async def test_two_workers_split_partitions_and_emit_each_window_once(
    settings, topics, start_worker
):
    first = start_worker("w1")
    first.wait_assigned()
    second = start_worker("w2")
    second.wait_assigned()
    # wait for the rebalance to settle: the latest assignments of both cover all partitions
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        a, b = first.assignments(), second.assignments()
        if a and b:
            mine = {p for t, p in ast.literal_eval(a[-1]) if t == topics.predictions_by_model}
            theirs = {p for t, p in ast.literal_eval(b[-1]) if t == topics.predictions_by_model}
            if mine and theirs and not mine & theirs and len(mine | theirs) == 4:
                break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"no split:\n{first.assignments()}\n{second.assignments()}")

    models = [f"model-{i}" for i in range(8)]
    events = [ev(i, T0 + 0.02 * i, model=models[i % 8], latency_ms=1.0) for i in range(600)]
    values, keys = [], []
    for model in models:   # envelopes of one model, keyed by it, as the SDK sends them
        mine = [e for e in events if e["model"] == model]
        for i in range(0, len(mine), 15):
            values.append(msgspec.json.encode(mine[i:i + 15]))
            keys.append(model.encode())
    await produce(settings, topics.predictions, values, keys)
    expected_windows = {(m, w) for m in models for w in range(6)}
    records = await consume(settings, topics.windows,
                            lambda r: len(r) >= len(expected_windows), settle_s=3.0)
    keys = [(r["model"], r["window_start"]) for r in records]
    assert len(keys) == len(set(keys)) == len(expected_windows), "each window exactly once"
    assert sum(r["count"] for r in records) == 600
    both = "mlpulse assigned" in first.log() and "mlpulse assigned" in second.log()
    assert both
