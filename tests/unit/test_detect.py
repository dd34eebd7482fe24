"""Stage 3 in memory: findings become one firing and one resolved alert, across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec

from mlpulse.config import Settings
from mlpulse.sdk.simulator import Injection, Simulator
from mlpulse.store import MemoryStore
from mlpulse.testing import FakeClock, LocalPipeline

T0 = 1_700_000_000.0
WINDOW_S = 10.0
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "alert.schema.json")
                    .read_text())
DETECTORS = {"reference": {"windows": 2, "min_events": 100}}


def pipeline(store: MemoryStore | None = None, clock: FakeClock | None = None) -> LocalPipeline:
    settings = Settings(window_seconds=WINDOW_S, lateness_seconds=0,
                        max_future_skew_seconds=1e12, detectors=DETECTORS)
    return LocalPipeline(settings, clock=clock or FakeClock(T0), store=store)


def feed(pipe: LocalPipeline, sim: Simulator, start_window: int, windows: int) -> None:
    for w in range(start_window, start_window + windows):
        start = T0 + w * WINDOW_S
        pipe.clock.now_s = start + WINDOW_S
        pipe.send_predictions(list(sim.events(start, WINDOW_S, rate_per_s=240)))


def simulator(drift_windows: tuple[int, int]) -> Simulator:
    start, end = drift_windows
    return Simulator(n_models=3, seed=21, injections=[Injection(
        "drift", "model-2", T0 + start * WINDOW_S, (end - start) * WINDOW_S,
        feature="age", magnitude=1.5)])


def incidents(alerts) -> list[tuple[str, str, str, str]]:
    return [(a.status, a.rule, a.labels["model"], a.labels.get("feature", "")) for a in alerts]


def test_one_firing_and_one_resolved_alert_per_incident():
    pipe = pipeline()
    feed(pipe, simulator((4, 8)), 0, 12)
    pipe.advance(100)
    drift = [a for a in pipe.alerts if a.rule == "feature_drift"]
    assert incidents(drift) == [("firing", "feature_drift", "model-2", "age"),
                                ("resolved", "feature_drift", "model-2", "age")]
    fired, resolved = drift
    assert fired.alert_id == resolved.alert_id and fired.fingerprint == resolved.fingerprint
    assert fired.window_start == "2023-11-14T22:14:00Z"         # the first drifted window
    assert resolved.ends_at == "2023-11-14T22:14:40Z"           # the first clean one
    # both carry the reference's and the window's summaries (a clean finding of a series
    # with an alert to resolve is built whole)
    for alert in (fired, resolved):
        assert {"mean", "std"} <= set(alert.evidence["reference"]) & set(
            alert.evidence["current"])
    assert {a.labels["model"] for a in pipe.alerts if a.rule != "no_data"} == {"model-2"}
    for alert in pipe.alerts:
        jsonschema.validate(msgspec.json.decode(msgspec.json.encode(alert)), SCHEMA)


def test_a_restart_mid_incident_neither_repeats_nor_forgets_the_alert():
    store, clock = MemoryStore(), FakeClock(T0)
    sim = simulator((4, 8))
    first = pipeline(store, clock)
    feed(first, sim, 0, 6)                       # drift fires at window 4
    assert [a.status for a in first.alerts if a.rule == "feature_drift"] == ["firing"]
    first.stop()
    second = pipeline(store, clock)              # same state store: a restarted worker
    feed(second, sim, 6, 6)
    second.advance(100)
    drift = [a for a in second.alerts if a.rule == "feature_drift"]
    assert [a.status for a in drift] == ["resolved"]
    assert drift[0].alert_id == next(a for a in first.alerts if a.rule == "feature_drift").alert_id


def test_detectors_are_stored_each_checkpoint_and_a_reference_only_when_it_changes():
    class CountingStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.puts: dict[bytes, int] = {}

        def put(self, partition: int, key: bytes, value: bytes) -> None:
            self.puts[key] = self.puts.get(key, 0) + 1
            super().put(partition, key, value)

    store = CountingStore()
    pipe, sim = pipeline(store), Simulator(n_models=1, seed=3)
    for w in range(8):
        feed(pipe, sim, w, 1)
        if w in (1, 4, 7):
            pipe.checkpoint()
    # a window closes when the next one's events come: rounds after windows 0, 1-3 and 4-6
    assert store.puts[b"p|model-0|v1"] == 3
    # windows 0 and 1 build the reference (2 windows): window 0's contribution, then built
    assert store.puts[b"r|model-0|v1"] == 2
    pipe.checkpoint()   # nothing judged since the last round: nothing stored
    assert store.puts[b"p|model-0|v1"] == 3
    restored = pipeline(store)
    feed(restored, Simulator(n_models=1, seed=3), 8, 2)
    restored.checkpoint()
    assert store.puts[b"r|model-0|v1"] == 2          # the restored reference, not rebuilt
    assert store.puts[b"p|model-0|v1"] == 4


def test_after_a_crash_the_windows_since_the_last_checkpoint_are_judged_again_alike():
    """A worker checkpoints mid-incident, reads on (the drift alert fires) and is killed:
    the detectors are restored as of the checkpoint, the input since then is read again,
    and the alert fires again with the same id and evidence (at least once, like the
    window summaries), then resolves once."""
    sim, clock = simulator((4, 8)), FakeClock(T0)
    sent = [list(sim.events(T0 + w * WINDOW_S, WINDOW_S, rate_per_s=240)) for w in range(12)]

    def send(pipe: LocalPipeline, windows: range) -> None:
        for w in windows:
            pipe.clock.now_s = T0 + (w + 1) * WINDOW_S
            pipe.send_predictions(sent[w])

    straight = pipeline(clock=FakeClock(T0))
    send(straight, range(12))
    store = MemoryStore()
    first = pipeline(store, clock)
    send(first, range(4))
    first.checkpoint()                           # before the drift: nothing firing
    send(first, range(4, 7))                     # fires at window 4; killed after window 6
    fired = [a for a in first.alerts if a.rule == "feature_drift"]
    assert [a.status for a in fired] == ["firing"]
    second = pipeline(store, clock)
    second.restore(first.checkpoints)
    assert second._offsets[(second.engine.streams["predictions"].topic, 0)] == 4
    send(second, range(4, 12))                   # read again from the checkpoint's offsets
    drift = [a for a in second.alerts if a.rule == "feature_drift"]
    assert [a.status for a in drift] == ["firing", "resolved"]
    assert drift[0] == fired[0]                  # the same alert, raised again
    assert drift == [a for a in straight.alerts if a.rule == "feature_drift"]


def test_no_data_fires_for_a_silent_model_and_resolves_when_it_returns():
    pipe = pipeline()
    sim = Simulator(n_models=1, seed=3)
    feed(pipe, sim, 0, 3)
    pipe.advance(3 * WINDOW_S + 1)
    assert incidents(a for a in pipe.alerts if a.rule == "no_data") == [
        ("firing", "no_data", "model-0", "")]
    feed(pipe, sim, 10, 1)
    assert [a.status for a in pipe.alerts if a.rule == "no_data"] == ["firing", "resolved"]


def test_log_error_spike_per_service():
    pipe = pipeline()
    for w in range(6):
        start = T0 + w * WINDOW_S
        pipe.clock.now_s = start + WINDOW_S
        errors = 40 if w == 4 else 2
        pipe.send_logs([{"timestamp": start + i * 0.05, "service": "api",
                         "level": "ERROR" if i < errors else "INFO", "message": "m"}
                        for i in range(200)])
    pipe.advance(100)
    assert [(a.status, a.rule, a.labels) for a in pipe.alerts] == [
        ("firing", "log_error_spike", {"service": "api"}),
        ("resolved", "log_error_spike", {"service": "api"})]


def test_half_space_trees_are_bounded_per_worker():
    settings = Settings(window_seconds=WINDOW_S, lateness_seconds=0, max_future_skew_seconds=1e12,
                        detectors={**DETECTORS, "anomaly": {"hst_max_series": 2}})
    pipe = LocalPipeline(settings, clock=FakeClock(T0))
    feed(pipe, Simulator(n_models=5, seed=3), 0, 2)
    monitors = [state.monitor for models in pipe.detect._models.values()
                for state in models.values()]
    assert len(monitors) == 5
    assert sum(m.hst for m in monitors) == 2
    assert all((m.latency is None) == (not m.hst) for m in monitors)


def test_a_quiet_model_gets_a_reference_and_waiting_for_it_is_bounded():
    settings = Settings(window_seconds=WINDOW_S, lateness_seconds=0, max_future_skew_seconds=1e12,
                        detectors={"reference": {"windows": 3, "min_events": 300}})
    pipe = LocalPipeline(settings, clock=FakeClock(T0))
    sim = Simulator(n_models=1, seed=5)
    lengths = []
    for w in range(20):
        start = T0 + w * WINDOW_S
        pipe.clock.now_s = start + WINDOW_S
        pipe.send_predictions(list(sim.events(start, WINDOW_S, rate_per_s=2 if w < 14 else 6)))
        monitor = next(iter(next(iter(pipe.detect._models.values())).values())).monitor
        lengths.append(len(monitor.contributions))
    # 20 events a window: 300 are never in 3 windows, nor in the latest 12 (240); 60 a
    # window from window 14 on: the latest 12 reach 300 and the reference is built
    assert max(lengths) == 12
    assert monitor.reference is not None and not monitor.contributions


def test_a_rule_on_throughput_gives_no_verdict_on_a_window_closed_because_events_stopped():
    from mlpulse.events import PredictionWindow
    from mlpulse.summarize import Closed
    from mlpulse.window_values import window_metrics

    summary = PredictionWindow(
        model="m", model_version="v1", window_start="", window_end="", count=30,
        error_count=0, error_rate=0.0, latency_ms=None, confidence=None, predictions={},
        features={}, tokens_in=0, tokens_out=0, cost_usd=0.0, cache_hit_rate=None,
        late_events=0)
    whole = Closed(0, ("m", "v1"), 0.0, 60.0, None, summary)
    last = Closed(0, ("m", "v1"), 0.0, 60.0, None, summary, idle=True)
    assert window_metrics(whole)["throughput_per_s"] == 0.5
    assert "throughput_per_s" not in window_metrics(last)


def test_the_metrics_rules_read_are_those_of_the_whole_summary():
    """Rules read a window's metrics from the summary's fields their paths name (and a
    rate's trials): the same values as from the whole summary."""
    from mlpulse.rules import Rules, _lookup, _trials
    from mlpulse.summarize import Closed
    from mlpulse.window_values import window_metrics

    rules = Rules.from_mapping({"rules": [
        {"name": "slow", "expr": "latency_ms.p99 > 10"},
        {"name": "errors", "expr": "error_rate > 0.01", "confidence": 0.9},
        {"name": "busy", "expr": "throughput_per_s > 1"},
        {"name": "age", "expr": "features.age.mean > 40"}]})
    pipe = pipeline()
    feed(pipe, Simulator(n_models=1, seed=3), 0, 2)
    summary = pipe.windows[0]
    closed = Closed(0, ("model-0", "v1"), T0, T0 + WINDOW_S, None, summary)
    whole, read = window_metrics(closed), window_metrics(closed, fields=rules.fields)
    assert set(read) < set(whole) and read["trace_ids"] == whole["trace_ids"]
    for path in ("latency_ms.p99", "error_rate", "throughput_per_s", "features.age.mean"):
        assert _lookup(read, path) == _lookup(whole, path) is not None
        assert _trials(read, path) == _trials(whole, path)
    conditions = rules.evaluate_metrics(read, {"model": "model-0", "model_version": "v1"})
    assert conditions == rules.evaluate_metrics(whole, {"model": "model-0",
                                                        "model_version": "v1"})
    assert len(conditions) == 4


def test_a_window_no_rule_may_hold_on_has_no_active_condition():
    """The screen of a quiet window (``Rules.may_hold`` on ``window_value``) never hides a
    condition ``evaluate_metrics`` would raise, whatever the op, threshold, confidence,
    gating by labels, or path; and it lets windows far from every threshold through."""
    import functools
    import random

    from mlpulse.events import OutcomeSummary, PerformanceSummary
    from mlpulse.rules import Rules
    from mlpulse.summarize import Closed
    from mlpulse.window_values import window_metrics, window_value

    pipe = pipeline()
    feed(pipe, Simulator(n_models=1, seed=5), 0, 2)
    rng = random.Random(7)
    paths = ["latency_ms.p99", "latency_ms.mean", "error_rate", "throughput_per_s", "count",
             "features.age.mean", "features.age.null_rate", "confidence.low_rate",
             "performance.accuracy", "performance.label_coverage", "outcomes.converted.rate",
             "outcomes.revenue.mean", "cache_hit_rate", "predictions.fraud", "missing.path"]
    labels = {"model": "model-0", "model_version": "v1"}
    screened = checked = held = 0
    for trial in range(300):
        summary = msgspec.structs.replace(
            pipe.windows[trial % len(pipe.windows)],
            performance=PerformanceSummary(labelled=rng.choice([0, 5, 200]),
                                           label_coverage=rng.random(),
                                           accuracy=rng.random()),
            outcomes={"converted": OutcomeSummary(count=rng.choice([3, 80]), sum=4.0,
                                                  mean=0.05, std=0.2, rate=rng.random() / 5),
                      "revenue": OutcomeSummary(count=90, sum=900.0, mean=10.0, std=3.0)})
        closed = Closed(0, ("model-0", "v1"), T0, T0 + WINDOW_S, None, summary,
                        idle=rng.random() < 0.2)
        min_labels = rng.choice([0, 10, 50])
        whole = window_metrics(closed, min_labels)
        for path in paths:
            value = window_value(closed, path, min_labels)
            for op in (">", ">=", "<", "<=", "==", "!="):
                threshold = (value if value is not None else 1.0) * rng.choice(
                    [0.0, 0.5, 0.99, 1.0, 1.01, 2.0]) + rng.choice([0.0, 0.01])
                rules = Rules.from_mapping({"rules": [{
                    "name": "r", "expr": f"{path} {op} {threshold!r}",
                    "confidence": rng.choice([0.0, 0.9, 0.99])}]})
                raised = rules.evaluate_metrics(whole, labels, active_only=True)
                may = rules.may_hold(functools.partial(window_value, closed,
                                                       min_labels=min_labels), labels)
                assert may or not raised, (path, op, threshold)
                checked += 1
                screened += not may
                held += bool(raised)
    assert checked == 300 * len(paths) * 6
    assert screened > checked // 3 and held > checked // 5


def test_a_log_spike_firing_at_a_stop_resolves_once_after_it():
    """A log service's detector moves with the checkpoints like a model's: a restarted
    worker neither repeats the firing alert nor forgets to resolve it."""
    store, clock = MemoryStore(), FakeClock(T0)

    def send(pipe: LocalPipeline, windows: range) -> None:
        for w in windows:
            start = T0 + w * WINDOW_S
            pipe.clock.now_s = start + WINDOW_S
            errors = 40 if w in (4, 5) else 2
            pipe.send_logs([{"timestamp": start + i * 0.05, "service": "api",
                             "level": "ERROR" if i < errors else "INFO", "message": "m"}
                            for i in range(200)])

    first = pipeline(store, clock)
    send(first, range(6))            # window 4 fires (5 is still open: lost, not restored)
    first.stop()
    second = pipeline(store, clock)
    send(second, range(6, 8))        # window 6 is clean again
    second.advance(100)
    spikes = [a for a in first.alerts + second.alerts if a.rule == "log_error_spike"]
    assert [(a.status, a.window_start) for a in spikes] == [
        ("firing", "2023-11-14T22:14:00Z"), ("resolved", "2023-11-14T22:14:20Z")]
    assert spikes[0].alert_id == spikes[1].alert_id
