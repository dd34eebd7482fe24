"""Summarizer: windows of owned partitions, their checkpoint state and its restore."""

from __future__ import annotations

import numpy as np

from mlpulse.config import Settings
from mlpulse.detectors.profile import WindowProfile
from mlpulse.events import PredictionEvent
from mlpulse.summarize import Summarizer

EDGES = {"o:confidence": np.array([0.2, 0.5, 0.8]),
         "f:x": np.array([-1.0, 0.0, 1.0])}


def summarizer() -> Summarizer:
    return Summarizer(Settings(window_seconds=10, lateness_seconds=0),
                      profiles=lambda partition, key: WindowProfile(edges=dict(EDGES)))


def batch(start: int, n: int) -> list[PredictionEvent]:
    rng = np.random.default_rng(start)
    return [PredictionEvent(event_id=str(start + i), timestamp=float(i % 10), model="m",
                            latency_ms=float(rng.gamma(2, 8)), confidence=float(rng.random()),
                            features={"x": float(rng.normal())}) for i in range(n)]


def test_a_restored_window_judges_drift_on_all_of_its_events():
    """The detectors' bin counts of an open window are in its partition's checkpoint:
    after a restore the window holds the counts of the events before it and after."""
    straight, first = summarizer(), summarizer()
    for s in (straight, first):
        s.add_prediction_events(1, batch(0, 300), now_wall_s=0)
    second = summarizer()
    second.restore_partition(1, first.partition_state(1))
    for s in (straight, second):
        s.add_prediction_events(1, batch(300, 200), now_wall_s=1)
    want, got = (s.close_due(now_wall_s=1000)[0] for s in (straight, second))
    assert got.summary.count == 500
    for signal, edges in EDGES.items():
        expected = want.aggregate.profile.counts(signal, edges)
        assert expected.sum() == 500
        assert got.aggregate.profile.counts(signal, edges).tolist() == expected.tolist()


def test_counts_of_other_bins_are_not_restored():
    """The reference changed between the checkpoint and the restore: the old counts would
    be read on the new bins, so the restored window starts its counts afresh."""
    first = summarizer()
    first.add_prediction_events(0, batch(0, 100), now_wall_s=0)
    other = Summarizer(Settings(window_seconds=10, lateness_seconds=0),
                       profiles=lambda p, k: WindowProfile(edges={"f:x": np.array([0.0, 5.0])}))
    other.restore_partition(0, first.partition_state(0))
    closed = other.close_due(now_wall_s=1000)[0]
    assert closed.summary.count == 100
    assert closed.aggregate.profile.counts("f:x", closed.aggregate.profile.edges["f:x"]) is None


def test_windows_fold_together_in_rounds_of_one_window_per_key(monkeypatch):
    """fold_in_rounds folds what waits in many windows in few passes, each pass the oldest
    window of each key not yet folded: a key's windows fold in order, one a pass; windows
    with nothing waiting are left out."""
    from mlpulse import summarize
    from mlpulse.aggregates import PredictionAggregate

    passes: list[list[PredictionAggregate]] = []
    monkeypatch.setattr(PredictionAggregate, "flush_together",
                        staticmethod(lambda aggregates: passes.append(list(aggregates))))
    a0, a1, a2, b0, c0 = (PredictionAggregate(min_batch=100) for _ in range(5))
    for window in (a0, a1, a2, b0):
        window.add_batch(batch(0, 3))
    summarize.fold_in_rounds([("a", 20.0, a2), ("b", 0.0, b0), ("a", 0.0, a0),
                              ("c", 0.0, c0), ("a", 10.0, a1)])
    assert [set(map(id, p)) for p in passes] == [{id(a0), id(b0)}, {id(a1)}, {id(a2)}]
    passes.clear()   # many keys at once: passes of at most WINDOWS_PER_FOLD windows
    many = [PredictionAggregate(min_batch=100) for _ in range(2 * summarize.WINDOWS_PER_FOLD + 1)]
    for window in many:
        window.add_batch(batch(0, 3))
    summarize.fold_in_rounds([(k, 0.0, window) for k, window in enumerate(many)])
    assert [len(p) for p in passes] == [summarize.WINDOWS_PER_FOLD] * 2 + [1]
    passes.clear()   # and of at most EVENTS_PER_FOLD events, a window above it alone
    monkeypatch.setattr(summarize, "EVENTS_PER_FOLD", 7)
    sizes = [3, 3, 2, 8, 1, 6]
    many = [PredictionAggregate(min_batch=100) for _ in sizes]
    for window, size in zip(many, sizes, strict=True):
        window.add_batch(batch(0, size))
    summarize.fold_in_rounds([(k, 0.0, window) for k, window in enumerate(many)])
    assert [[w.waiting for w in p] for p in passes] == [[3, 3], [2], [8], [1, 6]]
