"""The model monitor (river-style contract): pinned on seeded streams, snapshots judge alike,
input not mutated, features come and go, state stays bounded."""


from __future__ import annotations

import copy

import msgspec
import numpy as np
import pytest

from mlpulse.detectors.adwin import ChangeDetectors
from mlpulse.detectors.anomaly import WindowAnomaly
from mlpulse.detectors.monitor import ModelMonitor
from mlpulse.detectors.profile import Reservoir, WindowProfile
from tests.unit.detectors.streams import (
    WINDOW_S,
    config,
    events,
    firing,
    msgpack_round_trip,
    run_window,
)


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
