"""ADWIN change detection: pinned detections, batching does not matter, restore, attribution."""


from __future__ import annotations

import numpy as np
import pytest

from mlpulse.aggregates import PredictionAggregate
from mlpulse.detectors.adwin import BLOCK, ChangeDetectors
from mlpulse.detectors.monitor import ModelMonitor
from tests.unit.detectors.streams import (
    WINDOW_S,
    config,
    events,
    firing,
    msgpack_round_trip,
    run_window,
)


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
