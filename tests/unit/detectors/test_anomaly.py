"""Anomaly detectors (window, latency, log error spikes): pinned, exact snapshots,
sampling-aware."""


from __future__ import annotations

import numpy as np

from mlpulse.aggregates import PredictionAggregate
from mlpulse.detectors.anomaly import (
    LatencyAnomaly,
    LogErrorSpike,
    WindowAnomaly,
    _column_medians,
)
from mlpulse.detectors.monitor import ModelMonitor
from mlpulse.timefmt import rfc3339
from tests.unit.detectors.streams import (
    WINDOW_S,
    config,
    events,
    firing,
    msgpack_round_trip,
    run_window,
    stationary_errors,
)


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


def test_medians_of_columns_with_gaps_are_numpys_of_their_values():
    rng = np.random.default_rng(3)
    for _ in range(200):
        rows = rng.normal(size=(int(rng.integers(1, 30)), 7))
        rows[rng.random(rows.shape) < 0.4] = np.nan
        medians, counts = _column_medians(rows)
        for column in range(7):
            values = rows[:, column][~np.isnan(rows[:, column])]
            assert counts[column] == values.size
            if values.size:
                assert medians[column] == np.median(values)
            else:
                assert np.isnan(medians[column])


def test_a_snapshot_of_an_earlier_version_restores():
    a = WindowAnomaly(warmup_windows=3, history_windows=4, use_hst=False)
    for i in range(5):
        a.observe({"error_rate": 0.01 * i, "latency_p99_ms": 100.0 + i})
    old = {**a.snapshot(), "history": a.history}   # a dict per window, as stored before
    del old["rows"], old["metrics"]
    assert WindowAnomaly.restore(old, use_hst=False).history == a.history


def test_small_windows_with_a_steady_error_rate_raise_no_anomaly():
    # 200 events a window at a steady 2% error rate: 7 errors after windows of 2 is noise
    assert sum(stationary_errors(seed) for seed in range(40)) == 0


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


def test_spreads_of_histories_stacked_are_each_one_s_alone():
    """The spreads of detectors' histories of different depths, stacked (padded with empty
    windows, gaps where a metric was not measured): each is the one computed alone."""
    from mlpulse.detectors.anomaly import _spread_arrays

    rng = np.random.default_rng(8)
    detectors = []
    for windows in [0, 2, *rng.integers(3, 30, 10).tolist()]:   # two still warming up
        a = WindowAnomaly(warmup_windows=3, history_windows=int(rng.integers(3, 20)),
                          use_hst=False)
        for _ in range(windows):
            a.observe({m: float(rng.normal()) for m in ("error_rate", "latency_p99_ms",
                                                        "confidence_mean")
                       if rng.random() < 0.8})
        detectors.append(a)
    ready = [a for a in detectors if a._stored >= a.warmup_windows]   # as observe_many
    assert 0 < len(ready) < len(detectors)
    medians, counts, mads = _spread_arrays(ready)
    for k, a in enumerate(ready):
        alone = _spread_arrays([a])
        assert np.array_equal(medians[k], alone[0][0], equal_nan=True)
        assert counts[k].tolist() == alone[1][0].tolist()
        assert np.array_equal(mads[k], alone[2][0], equal_nan=True)
