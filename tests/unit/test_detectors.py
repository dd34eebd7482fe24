"""Detector contract (river-style) and detection indices pinned on seeded streams.

Every detector: its snapshot survives a msgpack round trip and the restored copy
judges the continuation like the original; it does not mutate its input; features
may appear and disappear; its state stays bounded however long the stream.
"""

from __future__ import annotations

import copy
import json

import msgspec
import numpy as np
import pytest

from mlpulse.aggregates import PredictionAggregate
from mlpulse.config import Settings
from mlpulse.detect import load_reference_file
from mlpulse.detectors.adwin import BLOCK, ChangeDetectors
from mlpulse.detectors.anomaly import LatencyAnomaly, LogErrorSpike, WindowAnomaly
from mlpulse.detectors.drift import DriftThresholds, numeric_drift
from mlpulse.detectors.monitor import ModelMonitor
from mlpulse.detectors.profile import Reservoir, WindowProfile, bin_counts
from mlpulse.detectors.reference import Contribution, build_reference
from mlpulse.detectors.settings import DetectorSettings
from mlpulse.errors import ConfigError
from mlpulse.events import PredictionEvent
from mlpulse.timefmt import rfc3339

WINDOW_S = 60.0


def config(**overrides):
    return DetectorSettings.from_mapping(
        {"reference": {"windows": 3, "min_events": 300}, **overrides}).for_model("m")


def events(rng, n, start_s, shift=0.0, *, features=("x", "z"), country=None):
    out = []
    for i in range(n):
        f: dict = {name: float(rng.normal(shift if name == "x" else 0.0, 1.0))
                   for name in features}
        if country is not None:
            f["country"] = country(rng)
        out.append(PredictionEvent(
            event_id=str(i), timestamp=start_s + i * WINDOW_S / n, model="m",
            latency_ms=float(rng.lognormal(3, 0.3)), confidence=float(rng.beta(8, 2)),
            prediction=float(rng.random() < 0.3), status="error" if rng.random() < 0.01 else "ok",
            features=f))
    return out


def run_window(monitor, batch, index):
    start = index * WINDOW_S
    profile = monitor.new_profile()
    aggregate = PredictionAggregate(profile=profile)
    aggregate.add_batch(batch)
    summary = aggregate.result(model="m", model_version="v1", window_start=rfc3339(start),
                               window_end=rfc3339(start + WINDOW_S), late_events=0)
    return monitor.on_window(aggregate, profile, start, start + WINDOW_S, summary)


def firing(findings):
    return sorted({(f.rule, f.labels.get("feature", f.labels.get("signal", "")))
                   for f in findings if f.firing})


def msgpack_round_trip(data):
    return msgspec.msgpack.decode(msgspec.msgpack.encode(data))


# ------------------------------------------------------------------ pinned detections


def test_monitor_pinned_on_a_seeded_one_sigma_shift():
    rng = np.random.default_rng(42)
    monitor = ModelMonitor("m", "v1", config(), WINDOW_S)
    fired = {}
    for w in range(10):
        fired[w] = firing(run_window(monitor, events(rng, 500, w * WINDOW_S,
                                                     shift=1.0 if w >= 6 else 0.0), w))
    assert all(fired[w] == [] for w in range(6)), fired
    assert ("feature_drift", "x") in fired[6] and ("adwin_change", "x") in fired[6]
    assert all(name == "x" for _, name in fired[6])          # z, outputs: quiet


@pytest.mark.parametrize(("shift", "caught"), [(0.25, False), (0.5, True), (2.0, True)])
def test_monitor_catches_half_sigma_shifts_in_the_first_window(shift, caught):
    rng = np.random.default_rng(3)
    monitor = ModelMonitor("m", "v1", config(adwin={"enabled": False}), WINDOW_S)
    for w in range(4):
        run_window(monitor, events(rng, 1000, w * WINDOW_S), w)
    found = firing(run_window(monitor, events(rng, 1000, 4 * WINDOW_S, shift=shift), 4))
    assert (("feature_drift", "x") in found) is caught


def test_change_detectors_pinned_detection_batch():
    rng = np.random.default_rng(5)
    changes = ChangeDetectors()
    stream = np.concatenate([rng.normal(0, 1, 3000), rng.normal(0.5, 1, 3000)])
    detected = []
    for i in range(0, stream.size, 100):
        changes.update("s", stream[i:i + 100])
        if changes.take_detections():
            detected.append(i // 100)
    assert detected[0] == 31          # change at batch 30: caught within 200 events
    assert min(detected) >= 30        # nothing before the change


def test_change_detectors_see_the_same_stream_whatever_its_batches():
    """Values short of a block wait for the next batch: one value at a time, uneven
    batches and one batch give ADWIN the same block sums."""
    rng = np.random.default_rng(15)
    stream = np.concatenate([rng.normal(0, 1, 3001), rng.normal(0.6, 1, 2003)])
    cuts = np.sort(rng.choice(np.arange(1, stream.size), 300, replace=False))
    ways = {"one batch": [stream], "uneven": np.split(stream, cuts),
            "one by one": [stream[i:i + 1] for i in range(stream.size)]}
    seen = {}
    for way, batches in ways.items():
        changes = ChangeDetectors()
        detections = 0
        for batch in batches:
            changes.update("s", batch)
            detections += changes.take_detections().get("s", 0)
        seen[way] = (detections, changes.width("s"), changes.mean("s"))
    assert seen["one batch"] == seen["uneven"] == seen["one by one"]
    assert seen["one batch"][0] >= 1 and seen["one batch"][1] % BLOCK == 0


def test_block_sums_keep_adwin_sensitive_on_small_rates():
    """ADWIN's cut bound has a term that does not scale with the values: fed block *means*
    it would lose sensitivity on 0/1 signals such as the error rate; block sums keep it.
    Error rate 1% -> 3%: caught; 1% throughout: no alarm (seeded)."""
    caught, alarms = 0, 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        steady, changes = ChangeDetectors(), ChangeDetectors()
        steady.update("o:error", (rng.random(20_000) < 0.01).astype(float))
        alarms += steady.take_detections().get("o:error", 0)
        changes.update("o:error", (rng.random(5_000) < 0.01).astype(float))
        changes.take_detections()
        changes.update("o:error", (rng.random(5_000) < 0.03).astype(float))
        caught += bool(changes.take_detections())
    assert (caught, alarms) == (10, 0)


def test_log_error_spike_pinned():
    spike = LogErrorSpike(warmup_windows=3)
    rng = np.random.default_rng(1)
    results = [spike.observe(500, int(rng.binomial(500, 0.02 if w < 8 else 0.12)))
               for w in range(10)]
    assert [r is not None and r.firing for r in results] == [False] * 8 + [True] * 2


def test_window_anomaly_pinned_on_a_latency_spike():
    rng = np.random.default_rng(2)
    anomaly = WindowAnomaly(warmup_windows=5)
    verdicts = []
    for w in range(20):
        p99 = float(rng.normal(100, 5)) * (4 if w in (12, 13) else 1)
        found = anomaly.observe({"latency_p99_ms": p99, "error_rate": 0.01,
                                 "throughput_per_s": float(rng.normal(50, 2))})
        verdicts.append(found is not None and found.firing)
    assert [w for w, fired in enumerate(verdicts) if fired] == [12, 13]


# ------------------------------------------------------------------ contract


def test_monitor_snapshot_round_trip_judges_the_continuation_alike():
    rng = np.random.default_rng(9)
    cfg = config(adwin={"enabled": False})
    original = ModelMonitor("m", "v1", cfg, WINDOW_S)
    for w in range(5):
        run_window(original, events(rng, 400, w * WINDOW_S), w)
    restored = ModelMonitor.restore(msgpack_round_trip(original.snapshot()), cfg, WINDOW_S)
    for w in range(5, 9):
        batch = events(rng, 400, w * WINDOW_S, shift=1.0 if w >= 7 else 0.0)
        a, b = run_window(original, batch, w), run_window(restored, copy.deepcopy(batch), w)
        assert [(f.rule, f.labels, f.firing, f.value) for f in a] == [
            (f.rule, f.labels, f.firing, f.value) for f in b]


def test_adwin_restore_keeps_the_level():
    rng = np.random.default_rng(4)
    changes = ChangeDetectors()
    changes.update("s", rng.normal(10, 2, 5000))
    restored = ChangeDetectors.restore(msgpack_round_trip(changes.snapshot()))
    assert restored.mean("s") == pytest.approx(changes.mean("s"))
    restored.update("s", rng.normal(14, 2, 1000))    # a 2σ jump is still seen after restore
    assert restored.take_detections() == {"s": 1}
    # values short of a block survive a restore
    changes.update("s", np.full(BLOCK - 1, 10.0))
    restored = ChangeDetectors.restore(msgpack_round_trip(changes.snapshot()))
    width = restored.width("s")
    restored.update("s", np.array([10.0]))
    assert restored.width("s") == width + BLOCK


def test_window_anomaly_and_log_spike_snapshots_are_exact():
    rng = np.random.default_rng(6)
    anomaly, spike = WindowAnomaly(warmup_windows=3, hst_window=4), LogErrorSpike(2)
    vectors = [{"error_rate": float(rng.uniform(0, 0.02)), "latency_p99_ms": float(v)}
               for v in rng.normal(100, 5, 30)]
    for v in vectors[:13]:
        anomaly.observe(v)
        spike.observe(100, 2)
    a2 = WindowAnomaly.restore(msgpack_round_trip(anomaly.snapshot()))
    s2 = LogErrorSpike.restore(msgpack_round_trip(spike.snapshot()))
    for v in vectors[13:]:
        f1, f2 = anomaly.observe(v), a2.observe(dict(v))
        assert (f1.firing, f1.evidence["hst_score"]) == (f2.firing, f2.evidence["hst_score"])
        assert spike.observe(100, 9).firing == s2.observe(100, 9).firing


def test_detectors_do_not_mutate_their_input():
    rng = np.random.default_rng(8)
    values = rng.normal(0, 1, 1000)
    kept = values.copy()
    ChangeDetectors().update("s", values)
    WindowProfile(edges={"s": np.array([-1.0, 0.0, 1.0])}, sample_size=10).add("s", values)
    assert np.array_equal(values, kept)
    vector = {"error_rate": 0.5}
    anomaly = WindowAnomaly(warmup_windows=1)
    anomaly.observe(dict(vector))
    anomaly.observe(vector)
    assert vector == {"error_rate": 0.5}
    batch = events(rng, 300, 0.0)
    before = [msgspec.json.encode(e) for e in batch]
    monitor = ModelMonitor("m", "v1", config(reference={"windows": 1, "min_events": 1}),
                           WINDOW_S)
    run_window(monitor, batch, 0)
    run_window(monitor, batch, 1)
    assert [msgspec.json.encode(e) for e in batch] == before


def test_features_appearing_and_disappearing():
    rng = np.random.default_rng(10)
    monitor = ModelMonitor("m", "v1", config(adwin={"enabled": False}), WINDOW_S)
    for w in range(3):
        run_window(monitor, events(rng, 400, w * WINDOW_S, features=("x", "z")), w)
    found = firing(run_window(monitor, events(rng, 400, 3 * WINDOW_S, features=("x", "y")), 3))
    assert ("feature_missing", "z") in found and ("feature_new", "y") in found
    assert not any(name == "x" for _, name in found)
    back = firing(run_window(monitor, events(rng, 400, 4 * WINDOW_S, features=("x", "z")), 4))
    assert back == []


def test_state_stays_bounded_on_long_streams():
    rng = np.random.default_rng(11)
    monitor = ModelMonitor("m", "v1", config(), WINDOW_S)
    sizes = []
    for w in range(75):
        run_window(monitor, events(rng, 300, w * WINDOW_S), w)
        sizes.append(len(msgspec.msgpack.encode(monitor.snapshot())))
    # the anomaly history fills up over its 50 windows, then nothing grows
    assert sizes[-1] < 1.05 * sizes[60] and sizes[-1] < 64_000
    reservoir = Reservoir(100, rng)
    for _ in range(50):
        reservoir.add(rng.normal(0, 1, 1000))
    assert reservoir.values.size == 100 and reservoir.seen == 50_000
    changes = ChangeDetectors(max_signals=2)
    for name in "abc":
        changes.update(name, np.zeros(10))
    assert set(changes.snapshot()["windows"]) == {"a", "b"}


def test_reservoir_is_uniform():
    rng = np.random.default_rng(12)
    reservoir = Reservoir(2000, rng)
    for i in range(20):
        reservoir.add(np.full(5000, float(i)))
    shares = np.bincount(reservoir.values.astype(int), minlength=20) / 2000
    assert shares.max() - shares.min() < 0.05


# ------------------------------------------------------------------ tests and references


def test_large_windows_are_judged_by_effect_size_not_p_value():
    rng = np.random.default_rng(13)
    reference = rng.normal(0, 1, 2000)
    c = Contribution(0, 60, 2000, 0, samples={"f:x": (reference, 2000)})
    ref = build_reference([c]).numeric["f:x"]
    t = DriftThresholds()
    tiny_shift = bin_counts(ref.edges, rng.normal(0.03, 1, 200_000))
    assert not numeric_drift(ref, tiny_shift, t).drifted
    real_shift = bin_counts(ref.edges, rng.normal(0.5, 1, 200_000))
    assert numeric_drift(ref, real_shift, t).drifted
    assert numeric_drift(ref, bin_counts(ref.edges, rng.normal(3, 1, 50)), t) is None


def test_ks_p_value_is_exact_where_it_decides():
    """The exact KS distribution where the effect is large enough for the p-value to
    decide the verdict; the asymptotic one (never below it here) elsewhere."""
    from scipy import stats

    rng = np.random.default_rng(15)
    c = Contribution(0, 60, 2000, 0, samples={"f:x": (rng.normal(0, 1, 2000), 2000)})
    ref = build_reference([c]).numeric["f:x"]
    t = DriftThresholds()
    for shift, large in ((0.6, True), (0.02, False)):
        result = numeric_drift(ref, bin_counts(ref.edges, rng.normal(shift, 1, 5000)), t)
        assert result is not None and (result.effect >= t.psi) is large
        exact = float(stats.kstwo.sf(result.statistic, 500))   # n_eff of two capped 1000s
        if large:
            assert result.p_value == exact and result.drifted
        else:
            assert exact <= result.p_value <= exact * 1.1 + 1e-12


def test_range_reference_uses_only_its_time_span():
    rng = np.random.default_rng(14)
    cfg = config(reference={"mode": "range", "start": 2 * WINDOW_S, "end": 4 * WINDOW_S},
                 adwin={"enabled": False})
    monitor = ModelMonitor("m", "v1", cfg, WINDOW_S)
    for w in range(5):
        run_window(monitor, events(rng, 400, w * WINDOW_S, shift=3.0 if w < 2 else 0.0), w)
    assert monitor.reference is not None and monitor.reference.windows == 2
    assert abs(monitor.reference.numeric["f:x"].mean) < 0.2


def test_rolling_reference_follows_the_stream():
    rng = np.random.default_rng(15)
    cfg = config(reference={"mode": "rolling", "windows": 2, "lag_windows": 1, "min_events": 1},
                 adwin={"enabled": False})
    monitor = ModelMonitor("m", "v1", cfg, WINDOW_S)
    fired = [firing(run_window(monitor, events(rng, 400, w * WINDOW_S,
                                               shift=2.0 if w >= 4 else 0.0), w))
             for w in range(9)]
    assert ("feature_drift", "x") in fired[4]
    assert fired[8] == []                       # the new level became the reference
    assert monitor.reference is not None and monitor.reference.numeric["f:x"].mean > 1.5


def test_file_reference(tmp_path):
    rng = np.random.default_rng(16)
    path = tmp_path / "ref.ndjson"
    path.write_bytes(b"\n".join(msgspec.json.encode(e) for e in events(rng, 1000, 0.0)))
    cfg = config(reference={"mode": "file", "path": str(path)}, adwin={"enabled": False})
    ref = load_reference_file(path, "m", cfg, Settings())
    monitor = ModelMonitor("m", "v1", cfg, WINDOW_S, reference=ref)
    assert firing(run_window(monitor, events(rng, 400, 0.0, shift=1.0), 0)) == [
        ("feature_drift", "x")]
    as_array = tmp_path / "ref.json"
    as_array.write_text(json.dumps([json.loads(line) for line in path.read_text().splitlines()]))
    assert load_reference_file(as_array, "m", cfg, Settings()).events == 1000


def test_category_mix_change_and_unseen_values():
    rng = np.random.default_rng(17)
    monitor = ModelMonitor("m", "v1", config(adwin={"enabled": False}), WINDOW_S)
    usual = ["US", "DE", "FR", "GB"]
    for w in range(3):
        run_window(monitor, events(rng, 400, w * WINDOW_S,
                                   country=lambda r: usual[int(r.integers(4))]), w)
    skewed = firing(run_window(monitor, events(
        rng, 400, 3 * WINDOW_S, country=lambda r: "US" if r.random() < 0.7 else "DE"), 3))
    assert ("feature_drift", "country") in skewed
    unseen = firing(run_window(monitor, events(
        rng, 400, 4 * WINDOW_S, country=lambda r: "XX" if r.random() < 0.2 else "US"), 4))
    assert ("unseen_category", "country") in unseen


def test_detector_settings_reject_mistakes_with_the_field():
    with pytest.raises(ConfigError, match=r"\$\.reference\.mode"):
        DetectorSettings.from_mapping({"reference": {"mode": "sometimes"}})
    with pytest.raises(ConfigError, match=r"detectors.models.fraud.*unknown field `psy`"):
        DetectorSettings.from_mapping({"models": {"fraud": {"drift": {"psy": 1}}}})
    with pytest.raises(ConfigError, match="needs `path`"):
        DetectorSettings.from_mapping({"reference": {"mode": "file"}})


def test_latency_anomaly_pinned_and_snapshot_exact():
    rng = np.random.default_rng(18)
    detector = LatencyAnomaly(sample_every=2)
    verdicts = []
    for w in range(16):
        factor = 3.0 if w in (12, 13) else 1.0
        detector.update(factor * rng.lognormal(3, 0.4, 200))
        found = detector.on_window()
        verdicts.append(None if found is None else found.firing)
        if w == 9:
            copy_ = LatencyAnomaly.restore(msgpack_round_trip(detector.snapshot()))
            twin = rng.lognormal(3, 0.4, 200)
            a, b = detector, copy_
            a.update(twin)
            b.update(twin.copy())
            assert a.snapshot() == b.snapshot()
    assert verdicts[:6] == [None] * 6                  # warming up
    assert [w for w, v in enumerate(verdicts) if v] == [12, 13]


def test_a_missing_reference_file_does_not_stop_the_worker(tmp_path):
    from mlpulse.detect import Detect

    settings = Settings(detectors={"reference": {"mode": "file",
                                                 "path": str(tmp_path / "gone.json")}})
    detect = Detect(settings)
    profile = detect.new_profile(0, ("m", "v1"))
    assert profile is not None and profile.edges == {}


def test_window_anomaly_remembers_the_last_windows_in_order_across_a_restore():
    a = WindowAnomaly(warmup_windows=3, history_windows=4)
    for i in range(7):
        a.observe({"error_rate": 0.01 * i, "latency_p99_ms": 100.0 + i, "unknown": 1.0})
    assert [h["latency_p99_ms"] for h in a.history] == [103.0, 104.0, 105.0, 106.0]
    assert all("unknown" not in h for h in a.history)
    restored = WindowAnomaly.restore(a.snapshot())
    assert restored.history == a.history
    restored.observe({"error_rate": 0.07, "latency_p99_ms": 107.0})
    assert [h["latency_p99_ms"] for h in restored.history] == [104.0, 105.0, 106.0, 107.0]


def test_an_adwin_change_belongs_to_the_window_whose_events_revealed_it():
    # a backlog: the next window's events reach ADWIN before the window before it closes
    rng = np.random.default_rng(5)
    monitor = ModelMonitor("m", "v1", config(), WINDOW_S)
    for index in range(3):
        run_window(monitor, events(rng, 500, index * WINDOW_S), index)
    quiet, shifted = monitor.new_profile(), monitor.new_profile()
    before, after = PredictionAggregate(profile=quiet), PredictionAggregate(profile=shifted)
    before.add_batch(events(rng, 500, 3 * WINDOW_S))
    after.add_batch(events(rng, 500, 4 * WINDOW_S, shift=1.0))
    assert ("adwin_change", "x") not in firing(
        monitor.on_window(before, quiet, 3 * WINDOW_S, 4 * WINDOW_S))
    assert ("adwin_change", "x") in firing(
        monitor.on_window(after, shifted, 4 * WINDOW_S, 5 * WINDOW_S))


def _stationary_errors(seed, windows=30, n=200, p=0.02):
    rng = np.random.default_rng(seed)
    anomaly = WindowAnomaly(warmup_windows=10, use_hst=False)
    fired = 0
    for _ in range(windows):
        errors = int(rng.binomial(n, p))
        finding = anomaly.observe({"error_rate": errors / n, "throughput_per_s": n / 60},
                                  {"error_rate": n, "throughput_per_s": 60})
        fired += bool(finding is not None and finding.firing)
    return fired


def test_small_windows_with_a_steady_error_rate_raise_no_anomaly():
    # 200 events a window at a steady 2% error rate: 7 errors after windows of 2 is noise
    assert sum(_stationary_errors(seed) for seed in range(40)) == 0


def test_a_real_error_spike_in_small_windows_still_fires():
    rng = np.random.default_rng(1)
    anomaly = WindowAnomaly(warmup_windows=10, use_hst=False)
    for _ in range(15):
        anomaly.observe({"error_rate": rng.binomial(200, 0.02) / 200}, {"error_rate": 200})
    finding = anomaly.observe({"error_rate": 30 / 200}, {"error_rate": 200})
    assert finding is not None and finding.firing


def test_the_last_window_of_a_stream_raises_no_throughput_anomaly():
    rng = np.random.default_rng(2)
    monitor = ModelMonitor("m", "v1", config(), WINDOW_S)
    for index in range(14):
        run_window(monitor, events(rng, 600, index * WINDOW_S), index)

    def last_window(complete):
        m = ModelMonitor.restore(msgpack_round_trip(monitor.snapshot()), config(), WINDOW_S)
        start = 14 * WINDOW_S
        profile = m.new_profile()
        aggregate = PredictionAggregate(profile=profile)
        aggregate.add_batch(events(rng, 60, start))   # the stream stopped 6 s in
        summary = aggregate.result(model="m", model_version="v1", window_start=rfc3339(start),
                                   window_end=rfc3339(start + WINDOW_S), late_events=0)
        return firing(m.on_window(aggregate, profile, start, start + WINDOW_S, summary,
                                  complete=complete))

    assert ("window_anomaly", "") in last_window(complete=True)   # a drop mid-stream fires
    assert ("window_anomaly", "") not in last_window(complete=False)
