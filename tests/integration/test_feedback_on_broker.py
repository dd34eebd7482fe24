"""Delayed labels through the real broker: they change the accuracy of the right window."""

from __future__ import annotations

import asyncio

import msgspec

from app.config import Settings

from .conftest import consume, produce

T0 = 1_700_000_000.0   # a multiple of the 2 s test window
RULES = [{"name": "accuracy_low", "expr": "performance.accuracy < 0.8", "for": 1,
          "severity": "critical"}]


def prediction(model: str, window: int, i: int) -> dict:
    return {"event_id": f"{model}-{window}-{i}", "timestamp": T0 + 2 * window + i * 0.05,
            "model": model, "model_version": "v1", "prediction": "fraud", "latency_ms": 5.0}


def label(model: str, window: int, i: int, value: str) -> dict:
    return {"event_id": f"{model}-{window}-{i}", "timestamp": T0 + 300, "model": model,
            "label": value}


def test_late_labels_change_the_accuracy_of_the_right_window(settings: Settings, start_worker,
                                                             topics):
    settings = settings.replace(rules=RULES)
    worker = start_worker(rules=RULES, feedback_min_labels=10, revision_interval_seconds=0.5)
    worker.wait_assigned()
    models = ("model-a", "model-b")
    events = [prediction(m, w, i) for m in models for w in range(3) for i in range(20)]
    asyncio.run(produce(settings, topics.predictions,
                        [msgspec.json.encode(events[i:i + 30]) for i in range(0, 120, 30)]))
    closed = asyncio.run(consume(settings, topics.windows,
                                 lambda r: len(r) >= 6, timeout_s=60))
    assert all(w["performance"] is None and w["revision"] == 0 for w in closed)

    # labels arrive after every window closed: model-a's middle window is half wrong,
    # model-b's first window all right; one label cannot be routed (no model)
    labels = ([label("model-a", 1, i, "fraud" if i < 10 else "legit") for i in range(20)]
              + [label("model-b", 0, i, "fraud") for i in range(20)])
    unroutable = msgspec.json.encode({"event_id": "x", "timestamp": T0 + 300, "label": "fraud"})
    asyncio.run(produce(settings, topics.feedback,
                        [msgspec.json.encode(labels[:25]), msgspec.json.encode(labels[25:]),
                         unroutable]))

    def revised(records: list[dict]) -> dict[tuple[str, str], dict]:
        latest: dict[tuple[str, str], dict] = {}
        for w in records:
            if w["revision"] > 0:
                latest[(w["model"], w["window_start"])] = w
        return latest

    def complete(records: list[dict]) -> bool:
        latest = revised(records)
        return sum((w["performance"] or {}).get("labelled", 0) for w in latest.values()) >= 40

    records = asyncio.run(consume(settings, topics.windows, complete, timeout_s=60, settle_s=2))
    latest = revised(records)
    assert set(latest) == {("model-a", "2023-11-14T22:13:22Z"),
                           ("model-b", "2023-11-14T22:13:20Z")}, latest.keys()
    a = latest[("model-a", "2023-11-14T22:13:22Z")]
    b = latest[("model-b", "2023-11-14T22:13:20Z")]
    assert (a["performance"]["accuracy"], a["performance"]["labelled"],
            a["performance"]["label_coverage"]) == (0.5, 20, 1.0)
    assert (b["performance"]["accuracy"], b["count"]) == (1.0, 20)
    assert a["count"] == 20 and a["latency_ms"]["p50"] == closed[0]["latency_ms"]["p50"]

    alerts = asyncio.run(consume(settings, topics.alerts,
                                 lambda r: any(x["rule"] == "accuracy_low" for x in r),
                                 timeout_s=30, settle_s=2))
    accuracy = [x for x in alerts if x["rule"] == "accuracy_low"]
    assert [(x["status"], x["labels"]["model"], x["window_start"], x["value"])
            for x in accuracy] == [("firing", "model-a", "2023-11-14T22:13:22Z", 0.5)]

    dead = asyncio.run(consume(settings, topics.deadletter, lambda r: len(r) >= 1))
    assert "missing required field `model`" in dead[0]["error"]
    assert worker.metric("mlpulse_labels_total", {"outcome": "joined"}) == 40.0
