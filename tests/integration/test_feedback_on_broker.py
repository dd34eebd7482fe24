"""Delayed labels through the real broker: they change the accuracy of the right window."""

from __future__ import annotations

import asyncio

import msgspec

from mlpulse.config import Settings

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


def traffic(models: tuple[str, ...], *, windows: int, per_window: int, right: float, seed: int,
            label_delay_s: float) -> tuple[dict[str, list[dict]], dict[str, list[dict]],
                                           dict[tuple[str, int], list[bool]]]:
    """Predictions of 2 s windows from T0, per model; a label for each (a share ``right``
    equal to the prediction), ``label_delay_s`` after it; per (model, window) which were
    right."""
    import random

    rng = random.Random(seed)
    predictions: dict[str, list[dict]] = {m: [] for m in models}
    labels: dict[str, list[dict]] = {m: [] for m in models}
    truth: dict[tuple[str, int], list[bool]] = {}
    for m in models:
        for w in range(windows):
            for i in range(per_window):
                event = {"event_id": f"{m}-{w}-{i}", "timestamp": T0 + 2 * w + i * 0.01,
                         "model": m, "model_version": "v1",
                         "prediction": rng.choice(["fraud", "legit"]), "latency_ms": 5.0}
                is_right = rng.random() < right
                other = "legit" if event["prediction"] == "fraud" else "fraud"
                predictions[m].append(event)
                labels[m].append({"event_id": event["event_id"],
                                  "timestamp": event["timestamp"] + label_delay_s, "model": m,
                                  "label": event["prediction"] if is_right else other})
                truth.setdefault((m, w), []).append(is_right)
    return predictions, labels, truth


def latest(records: list[dict]) -> dict[tuple[str, str], dict]:
    """The last revision of each (model, window)."""
    out: dict[tuple[str, str], dict] = {}
    for w in records:
        key = (w["model"], w["window_start"])
        if key not in out or w["revision"] >= out[key]["revision"]:
            out[key] = w
    return out


def all_labelled(records: list[dict], windows: int) -> bool:
    done = latest(records)
    return len(done) == windows and all(
        (w["performance"] or {}).get("labelled") == w["count"] for w in done.values())


def assert_accuracy(done: dict[tuple[str, str], dict],
                    truth: dict[tuple[str, int], list[bool]], per_window: int) -> None:
    """Each window's accuracy is what the data says (window i starts at T0 + 2 i)."""
    from datetime import datetime

    for (model, start), w in done.items():
        index = round((datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()
                       - T0) / 2)
        right = truth[(model, index)]
        assert w["count"] == len(right) == per_window
        assert w["performance"]["accuracy"] == sum(right) / len(right), (model, start)


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


def test_labels_before_with_and_after_their_predictions_all_join(settings: Settings,
                                                                 start_worker, topics):
    # three models, six windows of 200 predictions each; model-before's labels are sent
    # before any prediction, model-prompt's right after them, model-after's once every
    # window closed. Every window's final accuracy must be what the data says.

    worker = start_worker(feedback_min_labels=10, revision_interval_seconds=0.5)
    worker.wait_assigned()
    models = ("model-before", "model-prompt", "model-after")
    predictions, labels, truth = traffic(models, windows=6, per_window=200, right=0.8,
                                         seed=5, label_delay_s=0.5)

    def envelopes(events: list[dict]) -> tuple[list[bytes], list[bytes]]:
        chunks = [events[i:i + 100] for i in range(0, len(events), 100)]
        return ([msgspec.json.encode(c) for c in chunks],
                [c[0]["model"].encode() for c in chunks])

    asyncio.run(produce(settings, topics.feedback, *envelopes(labels["model-before"])))
    every = [e for m in models for e in predictions[m]]
    asyncio.run(produce(settings, topics.predictions, *envelopes(every)))
    asyncio.run(produce(settings, topics.feedback, *envelopes(labels["model-prompt"])))
    asyncio.run(consume(settings, topics.windows, lambda r: len(
        {(w["model"], w["window_start"]) for w in r}) >= 18, timeout_s=90))
    asyncio.run(produce(settings, topics.feedback, *envelopes(labels["model-after"])))

    records = asyncio.run(consume(settings, topics.windows, lambda r: all_labelled(r, 18),
                                  timeout_s=90, settle_s=2))
    assert_accuracy(latest(records), truth, 200)
    # labels read before their predictions were held back on the consumer, then resumed
    assert (worker.metric("mlpulse_input_partition_pauses_total",
                          {"topic": topics.feedback}) or 0) > 0
    assert worker.metric("mlpulse_labels_total", {"outcome": "joined"}) == 3600.0
    assert worker.metric("mlpulse_labels_total", {"outcome": "unmatched"}) in (None, 0.0)


def test_labels_sent_after_a_kill_join_the_predictions_made_before_it(
        settings: Settings, start_worker, topics):
    """Predictions, their windows closed and checkpointed, then ``kill -9``: a new worker
    restores the label index from the checkpoint topic, and every label sent afterwards
    joins. One window is still open at the kill (its predictions are in the index too)."""
    import os
    import signal
    import time

    first = start_worker("w1", feedback_min_labels=10, revision_interval_seconds=0.5)
    first.wait_assigned()
    by_model, labelled, truth = traffic(("model-a", "model-b"), windows=4, per_window=150,
                                        right=0.7, seed=7, label_delay_s=300)
    predictions = [e for events in by_model.values() for e in events]
    labels = [e for events in labelled.values() for e in events]
    chunks = [predictions[i:i + 50] for i in range(0, len(predictions), 50)]
    asyncio.run(produce(settings, topics.predictions, [msgspec.json.encode(c) for c in chunks]))
    asyncio.run(consume(settings, topics.windows, lambda r: len(
        {(w["model"], w["window_start"]) for w in r}) >= 6, timeout_s=60))
    time.sleep(3)   # a checkpoint (each second) holds the index
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()

    second = start_worker("w2", feedback_min_labels=10, revision_interval_seconds=0.5)
    second.wait_assigned()
    chunks = [labels[i:i + 100] for i in range(0, len(labels), 100)]
    asyncio.run(produce(settings, topics.feedback, [msgspec.json.encode(c) for c in chunks]))

    records = asyncio.run(consume(settings, topics.windows, lambda r: all_labelled(r, 8),
                                  timeout_s=90, settle_s=2))
    done = latest(records)
    assert all_labelled(records, 8), {
        k: (w["count"], (w["performance"] or {}).get("labelled")) for k, w in done.items()}
    assert_accuracy(done, truth, 150)
    assert second.metric("mlpulse_labels_total", {"outcome": "joined"}) == 1200.0
    assert second.metric("mlpulse_labels_total", {"outcome": "unmatched"}) in (None, 0.0)
