"""Slice folds: a window and its slices folded at once, each slice as its events alone."""

from __future__ import annotations

import math

import msgspec
import numpy as np

from mlpulse.aggregates import PredictionAggregate
from mlpulse.columns import Batch
from mlpulse.detectors.profile import WindowProfile
from mlpulse.events import PredictionEvent
from mlpulse.slice_folds import fold_parts


def random_events(rng: np.random.Generator, n: int) -> list[PredictionEvent]:
    """Events with every optional field sometimes missing, mixed predictions, and features
    of every kind (numbers, nulls, strings, booleans; not every event has each)."""
    kinds = [None, 1.0, "x", True, 2]
    out = []
    for i in range(n):
        features: dict[str, object] = {}
        for j in range(int(rng.integers(0, 5))):
            r = rng.random()
            features[f"f{j}"] = (float(rng.normal()) if r < 0.6 else None if r < 0.7
                                 else str(rng.choice(["a", "b"])) if r < 0.9 else r > 0.95)
        status = "error" if rng.random() < 0.2 else "ok"
        out.append(msgspec.convert({
            "event_id": str(i), "timestamp": 1.0, "model": "m", "features": features,
            "latency_ms": float(rng.lognormal(3, 1)) if rng.random() < 0.9 else None,
            "confidence": float(rng.random()) if rng.random() < 0.5 else None,
            "status": status, "prediction": kinds[int(rng.integers(0, 5))],
            "error_type": "boom" if status == "error" and rng.random() < 0.5 else None,
            "trace_id": f"{i:032x}" if rng.random() < 0.3 else None,
            "tokens_in": int(rng.integers(0, 50)) if rng.random() < 0.3 else None,
            "cost_usd": float(rng.random()) if rng.random() < 0.3 else None,
            "cache_hit": [None, True, False][int(rng.integers(0, 3))]}, PredictionEvent))
    return out


KEYS = {"model": "m", "model_version": "v", "window_start": "", "window_end": "",
        "late_events": 0}
SLICES = [("region",), ("tier",), ("region", "tier")]


def segmented(rng: np.random.Generator, n: int) -> list[PredictionEvent]:
    """:func:`random_events` with a region and a tier each (lacking each now and then); in
    every other stream, numeric features every event has (a batch's float arrays)."""
    events = random_events(rng, n)
    floats = int(rng.integers(0, 4)) if rng.random() < 0.5 else 0
    for e in events:
        e.segment = {k: str(rng.choice(values)) for k, values in
                     (("region", ["eu", "us", "apac"]), ("tier", ["gold", "free"]))
                     if rng.random() < 0.85}
        e.features = {**{f"g{j}": float(rng.normal(j, 1)) for j in range(floats)},
                      **(e.features or {})}
    return events


def slice_edges(seed: int) -> dict[str, np.ndarray]:
    """A slice's reference edges of every signal (each slice its own, by ``seed``)."""
    r = np.random.default_rng(seed)
    return {**{f"f:f{j}": np.sort(r.normal(0, 1, 4)) for j in range(5)},
            "o:latency_ms": np.sort(r.uniform(0, 100, 4)),
            "o:confidence": np.sort(r.uniform(0, 1, 4)),
            "o:error": np.array([0.5]), "o:prediction": np.linspace(0, 2, 3)}


def test_parts_folded_at_once_are_as_each_folded_alone():
    """fold_parts (a sliced window's slices of one key, in one pass) gives each part the
    summary and detector bins of folding its rows alone."""

    edges = {**{f"f:f{j}": np.linspace(-2, 2, 5) for j in range(5)},
             "o:latency_ms": np.linspace(0, 100, 5), "o:confidence": np.linspace(0, 1, 5),
             "o:error": np.array([0.5]), "o:prediction": np.linspace(0, 2, 3)}
    for seed in range(60):
        rng = np.random.default_rng(seed)
        events = random_events(rng, int(rng.integers(1, 300)))
        k = int(rng.integers(1, 5))
        sizes = np.bincount(rng.integers(0, k, len(events)), minlength=k)
        parts = [PredictionAggregate(profile=WindowProfile(edges=edges)) for _ in range(k)]
        rows = rng.permutation(len(events))   # each part's rows, scattered in the batch
        fold_parts(parts, Batch.of(events), rows, sizes)
        end = 0
        for part, size in zip(parts, sizes.tolist(), strict=True):
            alone = PredictionAggregate(profile=WindowProfile(edges=edges))
            if size:
                alone.add_batch([events[i] for i in rows[end:end + size].tolist()])
            end += size
            assert part.result(**KEYS) == alone.result(**KEYS), seed
            assert part.profile.state() == alone.profile.state(), seed


def close(a: object, b: object) -> bool:
    """Equal, floats up to rounding (a slice's sums and moments added from its cells)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_the_slices_of_every_key_folded_by_cells_are_as_each_folded_alone():
    """fold_slices (every row counted once in its combination of slices, rolled up onto
    each slice) gives each slice the summary of folding its rows alone (floats up to
    rounding), the same detector bins (exact: counted on the union of the slices' edges),
    and the same samples where a slice's profile samples; rows lacking a key are in none
    of its slices. So does the window itself, folded with them (``whole``); and so do
    features beyond a window's bound (``max_features``), folded into ``__other__``."""
    from mlpulse.guard import CardinalityGuard
    from mlpulse.slice_folds import fold_slices
    from mlpulse.slicing import SliceNames, SliceRouter

    for seed in range(40):
        rng = np.random.default_rng(seed)
        events = segmented(rng, int(rng.integers(1, 300)))
        sliced = SliceRouter("m", SLICES, CardinalityGuard(), SliceNames(), lambda: 0.0)(
            Batch.of(events))

        def profile(i: int) -> WindowProfile:   # every third slice still samples
            return WindowProfile(edges=slice_edges(i), sample_size=50 if i % 3 == 0 else 0,
                                 rng=np.random.default_rng(i))

        limit = int(rng.integers(1, 8)) if seed % 3 == 0 else 200
        parts_of, alone_of, number = [], [], 0
        for _, rows, sizes in sliced.groups:
            parts, alone = [], []
            end = 0
            for size in sizes.tolist():
                parts.append(PredictionAggregate(profile=profile(number), max_features=limit))
                one = PredictionAggregate(profile=profile(number), max_features=limit)
                one.add_batch([events[i] for i in rows[end:end + size].tolist()])
                alone.append(one)
                end += size
                number += 1
            parts_of.append(parts)
            alone_of.append(alone)
        whole = PredictionAggregate(profile=profile(number),   # the window itself: every row
                                    max_features=limit)
        whole_alone = PredictionAggregate(profile=profile(number), max_features=limit)
        whole_alone.add_batch(events)
        assert fold_slices(parts_of, Batch.of(events), sliced.groups, whole=whole)
        for parts, alone in zip([*parts_of, [whole]], [*alone_of, [whole_alone]], strict=True):
            for part, one in zip(parts, alone, strict=True):
                assert close(msgspec.to_builtins(part.result(**KEYS)),
                             msgspec.to_builtins(one.result(**KEYS))), seed
                assert part.profile.state() == one.profile.state(), seed
                assert {s: r.values.tolist() for s, r in part.profile.samples.items()} == {
                    s: r.values.tolist() for s, r in one.profile.samples.items()}, seed


def test_a_sliced_window_folds_each_slice_as_its_events_alone(monkeypatch):
    """Through add_batch, a sliced window gathers events (``min_batch``) and folds itself
    and its slices at once: each slice, and the window, gets the summary of folding its
    rows alone (floats up to rounding), the same detector bins and a sample of as many of
    the same values (which ones: the profile's draws, per fold); rows lacking a key are in
    none of its slices. Batches of several sizes and features, slices appearing in later
    batches, folds between batches (a checkpoint's state) and folds past MAX_CELLS (each
    key's slices apart) give the same."""
    from mlpulse import slice_folds
    from mlpulse.guard import CardinalityGuard
    from mlpulse.slicing import SliceNames, SliceRouter, slice_name


    def profile(name: str, kind: type[WindowProfile] = WindowProfile) -> WindowProfile:
        i = sum(map(ord, name))   # every third slice still samples
        return kind(edges=slice_edges(i), sample_size=50 if i % 3 == 0 else 0,
                    rng=np.random.default_rng(i))

    def names_of(event: PredictionEvent) -> list[str]:
        out = []
        for key_set in SLICES:
            values = [event.segment.get(k) for k in key_set]
            if None not in values:
                out.append(slice_name(key_set, values))
        return out

    for seed in range(40):
        rng = np.random.default_rng(seed)
        events = segmented(rng, int(rng.integers(1, 400)))
        window = PredictionAggregate(
            profile=WindowProfile(edges=slice_edges(0), sample_size=30),
            min_batch=int(rng.integers(1, 500)),
            slicer=SliceRouter("m", SLICES, CardinalityGuard(), SliceNames(), lambda: 0.0),
            new_slice=lambda name: PredictionAggregate(profile=profile(name)))
        cuts = sorted(rng.integers(0, len(events), int(rng.integers(0, 4))).tolist())
        batches = [events[start:end] for start, end in
                   zip([0, *cuts], [*cuts, len(events)], strict=True) if end > start]
        # folds of more cells than MAX_CELLS: each key's slices apart
        monkeypatch.setattr(slice_folds, "MAX_CELLS", 3 if seed % 4 == 3 else 512)
        for batch in batches:
            window.add_batch(batch)
            if rng.random() < 0.3:
                window.state()   # a checkpoint: what waits is folded meanwhile
        window.flush()
        whole = PredictionAggregate(profile=_Handed(edges=slice_edges(0), sample_size=30))
        alone = {name: PredictionAggregate(profile=profile(name, _Handed))
                 for name in window.slices}
        for batch in batches:   # alone, batch by batch (a sample depends on the batches)
            whole.add_batch(batch)
            for name, one in alone.items():
                own = [e for e in batch if name in names_of(e)]
                if own:
                    one.add_batch(own)
        pairs = [(window, whole), *((window.slices[name], one) for name, one in alone.items())]
        assert {name for e in events for name in names_of(e)} == set(window.slices), seed
        for part, one in pairs:
            assert close(msgspec.to_builtins(part.result(**KEYS)),
                         msgspec.to_builtins(one.result(**KEYS))), seed
            assert part.profile.state() == one.profile.state(), seed
            # a sample of as many of the same values (which ones: the profile's random
            # draws, in the order its signals come, which a slice's features may not)
            assert {s: (r.seen, r.values.size) for s, r in part.profile.samples.items()} == {
                s: (r.seen, r.values.size) for s, r in one.profile.samples.items()}, seed
            for signal, sample in part.profile.samples.items():
                assert set(sample.values.tolist()) <= set(_values(one, signal)), seed


class _Handed(WindowProfile):
    """A profile that keeps every value it is handed."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.handed: dict[str, list[float]] = {}

    def add(self, signal: str, values: np.ndarray) -> None:
        self.handed.setdefault(signal, []).extend(values.tolist())
        super().add(signal, values)


def _values(aggregate: PredictionAggregate, signal: str) -> list[float]:
    """Every value of ``signal`` an aggregate's profile was handed (its sample's source)."""
    assert isinstance(aggregate.profile, _Handed)
    return aggregate.profile.handed[signal]


def test_sliced_windows_closing_together_fold_at_once_as_each_alone(monkeypatch):
    """flush_together (the windows closing together folded in one pass, each in cells of
    its own) leaves each window and each of its slices as its own flush does: the same
    summary (floats up to rounding), detector bins and samples of as many of the same
    values. Windows may hold different slices; past MAX_CELLS for all of them at once,
    each folds alone."""
    from mlpulse import slice_folds
    from mlpulse.guard import CardinalityGuard
    from mlpulse.slicing import SliceNames, SliceRouter

    def window(seed: int, slices: list[tuple[str, ...]]) -> PredictionAggregate:
        def new_slice(name: str) -> PredictionAggregate:
            i = sum(map(ord, name)) + seed
            return PredictionAggregate(profile=_Handed(
                edges=slice_edges(i), sample_size=50 if i % 3 == 0 else 0,
                rng=np.random.default_rng(i)))
        return PredictionAggregate(
            profile=_Handed(edges=slice_edges(seed), sample_size=30,
                            rng=np.random.default_rng(seed)),
            min_batch=100_000, new_slice=new_slice,
            slicer=SliceRouter("m", slices, CardinalityGuard(), SliceNames(), lambda: 0.0))

    for seed in range(30):
        rng = np.random.default_rng(seed)
        monkeypatch.setattr(slice_folds, "MAX_CELLS", 20 if seed % 5 == 4 else 512)
        streams = [[segmented(rng, int(rng.integers(1, 200)))
                    for _ in range(int(rng.integers(1, 3)))]
                   for _ in range(int(rng.integers(2, 5)))]
        keys = [SLICES if k % 3 else [("region",)] for k in range(len(streams))]
        together = [window(k, keys[k]) for k in range(len(streams))]
        alone = [window(k, keys[k]) for k in range(len(streams))]
        for batches, one, other in zip(streams, together, alone, strict=True):
            for batch in batches:
                one.add_batch(batch)
                other.add_batch(batch)
        PredictionAggregate.flush_together(together)
        assert not any(w.waiting for w in together), seed
        for other in alone:
            other.flush()
        for one, other in zip(together, alone, strict=True):
            assert sorted(one.slices) == sorted(other.slices), seed
            for part, same in [(one, other), *((one.slices[s], other.slices[s])
                                               for s in other.slices)]:
                assert close(msgspec.to_builtins(part.result(**KEYS)),
                             msgspec.to_builtins(same.result(**KEYS))), seed
                assert part.profile.state() == same.profile.state(), seed
                # a sample of as many of the same values (which ones: the profile's draws,
                # in the order its signals come: the features' of all the windows at once)
                assert {s: (r.seen, r.values.size) for s, r in part.profile.samples.items()
                        } == {s: (r.seen, r.values.size)
                              for s, r in same.profile.samples.items()}, seed
                for signal, sample in part.profile.samples.items():
                    assert set(sample.values.tolist()) <= set(_values(same, signal)), seed
