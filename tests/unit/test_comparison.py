"""Version comparison through the engine: a candidate version against the baseline version
of its model in the same window (mlpulse.detectors.comparison, mlpulse.comparisons)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlpulse.aggregates import PredictionAggregate
from mlpulse.detectors.comparison import ComparisonSpec, Side, compare
from mlpulse.events import OutcomeSummary, PerformanceSummary, PredictionEvent, PredictionWindow
from mlpulse.testing import LocalPipeline

WINDOW_S = 10


def traffic(windows: int, versions: dict[str, float], *, per_window: int = 2500,
            canary: dict[str, Any] | None = None, from_window: int = 0,
            seed: int = 1) -> list[dict[str, Any]]:
    """Events of model m; ``versions``: each version's share of the traffic. ``canary``
    changes version "2.0" from ``from_window`` on: ``latency_factor``, ``error_rate``,
    ``x_shift`` (feature x), ``classes`` (prediction probabilities of a, b)."""
    rng = np.random.default_rng(seed)
    names, shares = list(versions), list(versions.values())
    out = []
    for w in range(windows):
        chosen = rng.choice(names, size=per_window, p=shares)
        for i, version in enumerate(chosen):
            bad = canary if canary and version == "2.0" and w >= from_window else {}
            error = rng.random() < bad.get("error_rate", 0.01)
            p_a = bad.get("classes", 0.7)
            out.append({
                "event_id": f"{w}-{i}", "timestamp": WINDOW_S * w + i * WINDOW_S / per_window,
                "model": "m", "model_version": str(version),
                "latency_ms": float(rng.lognormal(3, 0.3)) * bad.get("latency_factor", 1.0),
                "status": "error" if error else "ok",
                "prediction": "a" if rng.random() < p_a else "b",
                "confidence": float(rng.beta(8, 2)),
                "features": {"x": float(rng.normal(bad.get("x_shift", 0.0))),
                             "plan": str(rng.choice(["free", "pro"]))}})
    return out


def run(events: list[dict[str, Any]], **settings: Any) -> LocalPipeline:
    """The events through an engine; no no-data alert (it would hold the others back
    when the test's stream ends)."""
    settings["detectors"] = {"no_data_windows": 100, **settings.get("detectors", {})}
    pipe = LocalPipeline(window_seconds=WINDOW_S, lateness_seconds=0, **settings)
    for i in range(0, len(events), 500):
        pipe.send_predictions(events[i:i + 500])
    pipe.advance(100)
    return pipe


def comparison_alerts(pipe: LocalPipeline) -> list[tuple[str, str, str, str]]:
    return [(a.rule, a.status, a.labels["model_version"], a.labels["signal"])
            for a in pipe.alerts if a.kind == "comparison"]


def test_a_worse_canary_is_alerted_within_two_windows_and_an_identical_version_is_not():
    events = traffic(8, {"1.0": 0.8, "2.0": 0.1, "3.0": 0.1},
                     canary={"latency_factor": 1.6, "error_rate": 0.08}, from_window=4)
    pipe = run(events)
    fired = [a for a in pipe.alerts if a.kind == "comparison" and a.status == "firing"]
    by_signal = {a.labels["signal"]: a for a in fired}
    assert set(by_signal) == {"error_rate", "latency_ms.p50", "latency_ms.p99"}
    assert {a.labels["model_version"] for a in fired} == {"2.0"}   # 3.0 is as 1.0
    assert all(a.labels["baseline_version"] == "1.0" for a in fired)
    first = min(a.window_start for a in fired)
    assert first <= "1970-01-01T00:00:50Z"   # the canary went bad in the window at 40 s
    errors = by_signal["error_rate"]
    assert errors.rule == "comparison_error_rate" and errors.severity == "warning"
    assert errors.evidence["candidate"] > 0.05 > errors.evidence["baseline"]
    assert errors.evidence["p_value"] < 1e-4 and errors.evidence["test"] == "two_proportion"
    # the candidate's summary carries the comparison; the baseline's does not
    summaries = [w for w in pipe.windows if isinstance(w, PredictionWindow)]
    bad = [w for w in summaries if w.model_version == "2.0" and w.window_start == first]
    assert bad[0].comparison is not None and bad[0].comparison.baseline_version == "1.0"
    assert bad[0].comparison.signals["error_rate"].verdict == "worse"
    assert bad[0].comparison.signals["features.x"].verdict == "same"
    assert all(w.comparison is None for w in summaries if w.model_version == "1.0")
    shown = {m["model_version"]: m["latest"]["comparison"] for m in pipe.status.to_json()["models"]}
    assert shown["1.0"] is None and shown["2.0"]["baseline_version"] == "1.0"   # status page
    same = [w.comparison for w in summaries if w.model_version == "3.0"]
    assert all(c is not None and {s.verdict for s in c.signals.values()} == {"same"}
               for c in same)


def test_identical_versions_raise_no_comparison_alert_over_many_windows():
    events = traffic(40, {"1.0": 0.5, "2.0": 0.3, "3.0": 0.2}, per_window=1500, seed=7)
    pipe = run(events)
    compared = [w for w in pipe.windows if isinstance(w, PredictionWindow) and w.comparison]
    assert len(compared) >= 2 * 39   # two candidates, every window
    assert comparison_alerts(pipe) == []


def test_a_shifted_feature_and_prediction_mix_of_the_canary_are_different():
    events = traffic(6, {"1.0": 0.7, "2.0": 0.3}, canary={"x_shift": 0.5, "classes": 0.4},
                     from_window=3)
    got = {(rule, signal) for rule, status, _, signal in comparison_alerts(run(events))
           if status == "firing"}
    assert got == {("comparison_features", "features.x"),
                   ("comparison_predictions", "predictions")}


def test_the_baseline_is_the_version_with_most_events_before_or_the_pinned_one():
    # 2.0 takes most of the traffic from window 3: it stays the candidate while 1.0 had
    # more events over the preceding windows
    events = (traffic(3, {"1.0": 0.9, "2.0": 0.1})
              + [e | {"timestamp": e["timestamp"] + 3 * WINDOW_S, "event_id": "b" + e["event_id"]}
                 for e in traffic(2, {"1.0": 0.4, "2.0": 0.6}, seed=2)])
    summaries = [w for w in run(events).windows if isinstance(w, PredictionWindow)]
    assert {(w.window_start, w.comparison.baseline_version) for w in summaries
            if w.comparison} == {(f"1970-01-01T00:00:{s:02d}Z", "1.0") for s in (0, 10, 20, 30,
                                                                                  40)}
    pinned = run(events, detectors={"comparison": {"baseline_version": "2.0"}})
    assert {w.model_version for w in pinned.windows
            if isinstance(w, PredictionWindow) and w.comparison} == {"1.0"}


def test_the_baseline_is_the_same_after_a_restart():
    """The versions' counts move with the checkpoints (stored by the round a graceful
    stop writes): a restarted worker still compares 2.0, now most of the traffic, with
    1.0, which had more events before; without them it would take 2.0 as the baseline."""
    from mlpulse.store import MemoryStore

    before = traffic(3, {"1.0": 0.9, "2.0": 0.1})
    after = [e | {"timestamp": e["timestamp"] + 3 * WINDOW_S, "event_id": "b" + e["event_id"]}
             for e in traffic(2, {"1.0": 0.4, "2.0": 0.6}, seed=2)]

    def baselines(pipe: LocalPipeline) -> set[str]:
        return {w.comparison.baseline_version for w in pipe.windows
                if isinstance(w, PredictionWindow) and w.comparison
                and w.window_start >= "1970-01-01T00:00:30Z"}

    for stopped in (True, False):
        store = MemoryStore()
        first = LocalPipeline(window_seconds=WINDOW_S, lateness_seconds=0, store=store,
                              detectors={"no_data_windows": 100})
        for i in range(0, len(before), 500):
            first.send_predictions(before[i:i + 500])
        first.send_predictions(after[:1])   # closes window 2
        if stopped:
            first.stop()
        second = LocalPipeline(window_seconds=WINDOW_S, lateness_seconds=0, store=store,
                               clock=first.clock, detectors={"no_data_windows": 100})
        for i in range(0, len(after), 500):
            second.send_predictions(after[i:i + 500])
        second.advance(100)
        assert baselines(second) == ({"1.0"} if stopped else {"2.0"})


def test_a_candidate_that_closes_before_its_baseline_is_judged_when_the_baseline_closes():
    pipe = LocalPipeline(window_seconds=WINDOW_S, lateness_seconds=0,
                         detectors={"no_data_windows": 100})
    events = traffic(1, {"1.0": 0.5, "2.0": 0.5}, canary={"error_rate": 0.2})
    pipe.send_predictions([e for e in events if e["model_version"] == "2.0"])
    pipe.advance(30)   # the canary's window closes idle, its baseline has no window yet
    assert comparison_alerts(pipe) == []
    pipe.send_predictions([e for e in events if e["model_version"] == "1.0"])
    pipe.advance(30)
    assert ("comparison_error_rate", "firing", "2.0", "error_rate") in comparison_alerts(pipe)


def test_comparison_alerts_resolve_when_the_canary_recovers_or_takes_all_traffic():
    bad = traffic(4, {"1.0": 0.7, "2.0": 0.3}, canary={"error_rate": 0.1})
    good = [e | {"timestamp": e["timestamp"] + 4 * WINDOW_S, "event_id": "g" + e["event_id"]}
            for e in traffic(3, {"1.0": 0.7, "2.0": 0.3}, seed=4)]
    alerts = comparison_alerts(run(bad + good))
    assert ("comparison_error_rate", "firing", "2.0", "error_rate") in alerts
    assert ("comparison_error_rate", "resolved", "2.0", "error_rate") in alerts
    promoted = [e | {"timestamp": e["timestamp"] + 4 * WINDOW_S, "event_id": "p" + e["event_id"]}
                for e in traffic(2, {"2.0": 1.0}, seed=5)]
    alerts = comparison_alerts(run(bad + promoted))
    assert ("comparison_error_rate", "resolved", "2.0", "error_rate") in alerts


def test_late_labels_compare_accuracy_and_revise_the_candidates_comparison():
    events = traffic(2, {"1.0": 0.5, "2.0": 0.5}, seed=3)
    pipe = run(events, feedback_horizon_seconds=3600, revision_interval_seconds=0)
    rng = np.random.default_rng(0)
    labels = []
    for e in events:
        right = rng.random() < (0.9 if e["model_version"] == "1.0" else 0.7)
        truth = e["prediction"] if right else ("b" if e["prediction"] == "a" else "a")
        labels.append({"event_id": e["event_id"], "timestamp": 500.0, "label": truth,
                       "model": "m"})
    pipe.send_feedback(labels)
    pipe.advance(10)
    fired = [a for a in pipe.alerts if a.kind == "comparison" and a.status == "firing"]
    assert {(a.rule, a.labels["signal"]) for a in fired} == {
        ("comparison_performance", "performance.accuracy")}
    assert fired[0].evidence["candidate"] < 0.75 and fired[0].evidence["baseline"] > 0.85
    revised = [w for w in pipe.windows if isinstance(w, PredictionWindow) and w.revision
               and w.model_version == "2.0" and w.comparison is not None]
    signals = revised[-1].comparison.signals
    assert signals["performance.accuracy"].verdict == "worse"
    assert signals["error_rate"].verdict == "same"   # the close's signals are kept


def test_disabled_comparison_and_small_windows_compare_nothing():
    events = traffic(3, {"1.0": 0.9, "2.0": 0.1}, per_window=1500,
                     canary={"error_rate": 0.5})
    off = run(events, detectors={"comparison": {"enabled": False}})
    assert comparison_alerts(off) == [] and not any(
        isinstance(w, PredictionWindow) and w.comparison for w in off.windows)
    small = run(events, detectors={"comparison": {"min_events": 500}})   # 2.0 has ~150
    assert comparison_alerts(small) == []


def side(version: str, latency_ms: np.ndarray, *, outcomes: dict[str, OutcomeSummary] | None
         = None, performance: PerformanceSummary | None = None) -> Side:
    aggregate = PredictionAggregate()
    aggregate.add_batch([PredictionEvent(event_id=str(i), timestamp=0, model="m",
                                         latency_ms=float(v)) for i, v in enumerate(latency_ms)])
    out = Side.of(version, aggregate)
    out.outcomes, out.performance = outcomes or {}, performance
    return out


@pytest.mark.parametrize(("rate", "verdict"), [(0.05, "worse"), (0.095, "same"),
                                              (0.2, "better")])
def test_a_boolean_outcome_is_compared_by_its_rate(rate: float, verdict: str):
    latency = np.full(300, 10.0)
    mine = side("2.0", latency, outcomes={"converted": _rate(rate, 4000)})
    theirs = side("1.0", latency, outcomes={"converted": _rate(0.10, 4000)})
    got = compare(mine, theirs, ComparisonSpec()).signals["outcomes.converted"]
    assert got.verdict == verdict and got.test == "two_proportion"


def test_numbers_with_a_tiny_but_significant_difference_are_not_material():
    rng = np.random.default_rng(0)
    mine = side("2.0", rng.lognormal(3, 0.3, 200_000) * 1.03)
    theirs = side("1.0", rng.lognormal(3, 0.3, 200_000))
    p50 = compare(mine, theirs, ComparisonSpec()).signals["latency_ms.p50"]
    assert p50.p_value < 1e-10 and p50.verdict == "same"   # 3% slower: not material
    lower = compare(mine, theirs, ComparisonSpec(latency_ratio=1.02)).signals["latency_ms.p50"]
    assert lower.verdict == "worse"


def _rate(rate: float, n: int) -> OutcomeSummary:
    return OutcomeSummary(count=n, sum=rate * n, mean=rate,
                          std=float(np.sqrt(rate * (1 - rate))), rate=rate)
