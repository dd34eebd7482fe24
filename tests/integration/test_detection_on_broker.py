"""Detection through the real broker: detector state that survives a worker restart and
follows its partitions, and a latency spike that is one alert across a restart. (A drift
alerted for exactly its model, slice and feature, in time: test_slices_and_versions_on_broker.)"""

from __future__ import annotations

import asyncio

import msgspec

from mlpulse.config import Settings
from mlpulse.sdk.simulator import Injection, Simulator

from .conftest import consume, produce

T0 = 1_700_000_000.0   # a multiple of the 2 s test window
WINDOW_S = 2.0
DETECTORS = {"reference": {"windows": 2, "min_events": 200},
             "drift": {"min_events": 100}}


def traffic(start_s: float, windows: int, drift_from_s: float | None = None,
            seed: int = 11) -> list[bytes]:
    """Envelopes of 100 events: 3 models, 300 events per model and window."""
    injections = ([Injection("drift", "model-1", drift_from_s, feature="amount",
                             magnitude=1.0)] if drift_from_s is not None else [])
    simulator = Simulator(n_models=3, seed=seed, injections=injections)
    events = list(simulator.events(start_s=start_s, duration_s=WINDOW_S * windows,
                                   rate_per_s=450))
    return [msgspec.json.encode(events[i:i + 100]) for i in range(0, len(events), 100)]


def worker_with_references(settings: Settings, start_worker, topics):
    """A worker that has closed 3 clean windows of every model: their references exist."""
    first = start_worker("first", detectors=DETECTORS)
    first.wait_assigned()
    asyncio.run(produce(settings, topics.predictions, traffic(T0, 3)))
    asyncio.run(consume(settings, topics.windows,        # closed by the idle timer
                        lambda r: sum(w["kind"] == "predictions" for w in r) >= 9,
                        timeout_s=60))
    return first


def drift_alerts(records: list[dict]) -> list[dict]:
    return [a for a in records if a["kind"] == "drift" and a["status"] == "firing"]


def test_detector_state_survives_a_worker_restart(settings: Settings, start_worker, topics):
    settings = settings.replace(detectors=DETECTORS)
    first = worker_with_references(settings, start_worker, topics)
    first.stop()
    # a new worker, which never saw those windows, judges drifted traffic against them
    second = start_worker("second", detectors=DETECTORS)
    second.wait_assigned()
    asyncio.run(produce(settings, topics.predictions,
                        traffic(T0 + 3 * WINDOW_S, 3, drift_from_s=T0, seed=12)))
    alerts = asyncio.run(consume(settings, topics.alerts,
                                 lambda r: any(a["rule"] == "feature_drift"
                                               for a in drift_alerts(r)),
                                 timeout_s=90, settle_s=2))
    firing = drift_alerts(alerts)
    assert {(a["labels"]["model"], a["labels"].get("feature")) for a in firing} == {
        ("model-1", "amount")}, firing


def test_detector_state_follows_partitions_to_a_joining_worker(settings: Settings,
                                                               start_worker, topics):
    settings = settings.replace(detectors=DETECTORS)
    first = worker_with_references(settings, start_worker, topics)
    # a second worker joins: the group rebalances and some partitions move to it
    second = start_worker("second", detectors=DETECTORS)
    second.wait_assigned()
    first.wait_assigned(count=2)
    moved = second.assignments()[-1]
    assert "by-model" in moved, moved
    # every model drifts now: each must be judged against its reference, wherever it lives
    asyncio.run(produce(settings, topics.predictions, [
        msgspec.json.encode([{**e, "features": {**e["features"],
                                                "amount": e["features"]["amount"] * 3}}
                             for e in msgspec.json.decode(m)])
        for m in traffic(T0 + 3 * WINDOW_S, 3, seed=13)]))
    alerts = asyncio.run(consume(
        settings, topics.alerts,
        lambda r: {a["labels"]["model"] for a in r if a["rule"] == "feature_drift"}
        >= {"model-0", "model-1", "model-2"}, timeout_s=90, settle_s=3))
    drift = [(a["labels"]["model"], a["labels"]["feature"]) for a in alerts
             if a["rule"] == "feature_drift" and a["status"] == "firing"]
    assert sorted(drift) == [("model-0", "amount"), ("model-1", "amount"),
                             ("model-2", "amount")]   # each once, from its owner
    # the joining worker raised some of them, against references the first worker built
    # (models sit on partitions 0, 1 and 2: it owns at least one of them)
    assert (second.metric("mlpulse_alerts_total",
                          {"rule": "feature_drift", "status": "firing"}) or 0) >= 1


def latency_traffic(start_window: int, windows: int, spike: tuple[int, int]) -> list[bytes]:
    simulator = Simulator(n_models=2, seed=5, injections=[Injection(
        "latency", "model-0", T0 + spike[0] * WINDOW_S, (spike[1] - spike[0]) * WINDOW_S,
        magnitude=10.0)])
    events = list(simulator.events(start_s=T0 + start_window * WINDOW_S,
                                   duration_s=WINDOW_S * windows, rate_per_s=200))
    return [msgspec.json.encode(events[i:i + 100]) for i in range(0, len(events), 100)]


def test_a_three_window_latency_spike_is_one_alert_across_a_restart(settings: Settings,
                                                                    start_worker, topics):
    rules = [{"name": "slow", "expr": "latency_ms.p99 > 300", "severity": "critical"}]
    settings = settings.replace(rules=rules)
    first = start_worker("first", rules=rules)
    first.wait_assigned()
    # windows 0-4, the spike covers windows 3, 4 and 5: the first worker sees it start
    asyncio.run(produce(settings, topics.predictions, latency_traffic(0, 5, (3, 6))))
    asyncio.run(consume(settings, topics.alerts,
                        lambda r: any(a["rule"] == "slow" for a in r), timeout_s=60))
    asyncio.run(consume(settings, topics.windows,
                        lambda r: sum(w["kind"] == "predictions" for w in r) >= 10,
                        timeout_s=60))
    first.stop()
    second = start_worker("second", rules=rules)      # restarted mid-incident
    second.wait_assigned()
    asyncio.run(produce(settings, topics.predictions, latency_traffic(5, 4, (3, 6))))
    alerts = asyncio.run(consume(
        settings, topics.alerts,
        lambda r: any(a["rule"] == "slow" and a["status"] == "resolved" for a in r),
        timeout_s=90, settle_s=3))
    slow = [(a["status"], a["labels"]["model"], a["window_start"], a["alert_id"])
            for a in alerts if a["rule"] == "slow"]
    assert [s[:3] for s in slow] == [
        ("firing", "model-0", "2023-11-14T22:13:26Z"),
        ("resolved", "model-0", "2023-11-14T22:13:32Z")], slow
    assert slow[0][3] == slow[1][3]      # one incident, one id, across the restart
