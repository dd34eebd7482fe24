"""The status view and its Prometheus collector report what the windows and detectors said."""

from __future__ import annotations

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlpulse.events import PerformanceSummary, PredictionWindow
from mlpulse.sdk.simulator import Injection, Simulator
from mlpulse.status import StatusCollector
from mlpulse.testing import LocalPipeline

T0 = 1_700_000_000.0
RULES = [{"name": "slow", "expr": "latency_ms.p99 > 300", "severity": "critical"},
         {"detector": "*"}]


def run() -> LocalPipeline:
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, rules=RULES,
                         detectors={"reference": {"windows": 2, "min_events": 100},
                                    "drift": {"min_events": 50}})
    sim = Simulator(n_models=2, seed=4, injections=[
        Injection("latency", "model-0", T0 + 40, magnitude=20.0),
        Injection("drift", "model-1", T0 + 40, feature="amount", magnitude=2.0)])
    for w in range(6):
        pipe.send_predictions(list(sim.events(T0 + 10 * w, 10, rate_per_s=60)))
    pipe.advance(100)
    return pipe


def test_collector_exposes_the_latest_window_scores_and_firing_alerts():
    pipe = run()
    registry = CollectorRegistry()
    registry.register(StatusCollector(pipe.status, lambda: pipe.summarizer.guard.folded))
    latest = {}
    for w in pipe.windows:
        if isinstance(w, PredictionWindow):
            latest[w.model] = w

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model_version": "v1", **labels})

    w0 = latest["model-0"]
    assert sample("mlpulse_model_window_events", model="model-0") == w0.count
    assert w0.latency_ms is not None
    assert sample("mlpulse_model_latency_seconds", model="model-0",
                  percentile="99") == pytest.approx(w0.latency_ms.p99 / 1000)
    assert sample("mlpulse_model_throughput_events_per_second",
                  model="model-0") == pytest.approx(w0.count / 10)
    assert sample("mlpulse_model_drift_score", model="model-1", signal="amount",
                  signal_kind="feature", statistic="psi") > 0.5
    assert sample("mlpulse_model_drift_score", model="model-0", signal="amount",
                  signal_kind="feature", statistic="psi") < 0.1
    assert registry.get_sample_value("mlpulse_alerts_firing",
                                     {"rule": "slow", "severity": "critical"}) == 1.0
    assert registry.get_sample_value("mlpulse_series_folded_total", {"kind": "model"}) == 0
    assert b"mlpulse_model_anomaly_score" in generate_latest(registry)


def test_status_json_has_history_drift_and_open_alerts():
    pipe = run()
    doc = pipe.status.to_json()
    models = {m["model"]: m for m in doc["models"]}
    assert len(models["model-0"]["history"]) == 6
    assert models["model-0"]["history"][-1]["p99_ms"] > 300
    assert any(d["signal"] == "amount" and d["drifted"] for d in models["model-1"]["drift"])
    assert {a["rule"] for a in doc["alerts"]} >= {"slow", "feature_drift"}
    pipe.status.keep_only(set())
    assert pipe.status.to_json() == {"models": [], "slices": [], "services": [], "alerts": []}


def test_a_revision_of_an_older_window_updates_its_point_and_keeps_its_drift_score():
    pipe = run()
    status = pipe.status
    series = status.models[("model-1", "v1")]
    first, newest = series.history[-2], series.history[-1]
    assert first[-1] is not None   # a drift score, which a revision must keep
    window = next(w for w in pipe.windows if isinstance(w, PredictionWindow)
                  and w.model == "model-1" and w.window_start == first[0])
    revised = msgspec.structs.replace(
        window, revision=1,
        performance=PerformanceSummary(labelled=3, label_coverage=0.1, accuracy=0.5))
    status.on_window(0, revised)
    points = status.to_json()["models"][1]["history"]
    assert points[-2]["accuracy"] == 0.5 and points[-2]["window_start"] == first[0]
    assert points[-2]["drift_psi_max"] == first[-1]
    assert points[-1]["drift_psi_max"] is not None and series.history[-1] == newest
    # the latest window stays the newest one, not the revised older one
    assert status.to_json()["models"][1]["latest"]["window_start"] == newest[0]
    assert status.models[("model-1", "v1")].performance["accuracy"] == 0.5


def test_slices_have_their_own_rows_and_metric_families():
    """A slice's latest window and largest drift, on the page and as ``mlpulse_slice_*``
    (the model-level families keep only the model versions: no event counted twice)."""
    from prometheus_client import CollectorRegistry

    from mlpulse.status import StatusCollector

    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, segment_keys="region",
                         revision_interval_seconds=0)
    pipe.send_predictions([{"event_id": str(i), "timestamp": 1000.0 + i / 100, "model": "m",
                            "latency_ms": 20.0, "status": "error" if i % 4 == 0 else "ok",
                            "prediction": "yes", "segment": {"region": "eu" if i % 2 else "us"}}
                           for i in range(400)])
    pipe.advance(60)
    pipe.send_feedback([{"event_id": str(i), "timestamp": 1100.0, "model": "m",
                         "label": "yes" if i % 2 else "no"} for i in range(400)])
    pipe.advance(1)
    rows = {r["segment"]: r for r in pipe.status.to_json()["slices"]}
    assert set(rows) == {"region=eu", "region=us"}
    assert (rows["region=us"]["count"], rows["region=us"]["error_rate"]) == (200, 0.5)
    assert (rows["region=eu"]["performance"]["accuracy"],
            rows["region=us"]["performance"]["accuracy"]) == (1.0, 0.0)
    registry = CollectorRegistry()
    registry.register(StatusCollector(pipe.status, lambda: {}))
    value = registry.get_sample_value
    assert value("mlpulse_slice_error_ratio", {"model": "m", "model_version": "unknown",
                                               "segment": "region=eu"}) == 0.0
    assert value("mlpulse_model_window_events", {"model": "m",
                                                 "model_version": "unknown"}) == 400
    assert value("mlpulse_slice_performance", {"model": "m", "model_version": "unknown",
                                               "segment": "region=us",
                                               "metric": "accuracy"}) == 0.0
    pipe.status.keep_only(set())
    assert pipe.status.to_json()["slices"] == []
