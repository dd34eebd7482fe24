"""Slicing: which events of a batch are in which slices."""

from __future__ import annotations

import numpy as np

from mlpulse.columns import Batch
from mlpulse.events import PredictionEvent


def test_the_router_puts_each_row_in_the_slices_of_its_values_keys_missing_or_not():
    """Rows lacking a key (or any segment) are in no slice of it; a cross product needs
    both; names in the order of their first rows, rows in batch order; each row's code
    spells its slices."""
    from mlpulse.guard import CardinalityGuard
    from mlpulse.slicing import SliceNames, SliceRouter, slice_name

    slices = [("region",), ("tier",), ("region", "tier")]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        segments = []
        for _ in range(int(rng.integers(1, 200))):
            segment = {}
            if rng.random() < 0.8:
                segment["region"] = str(rng.choice(["eu", "us", "apac"]))
            if rng.random() < (1.0 if seed % 2 else 0.7):   # odd seeds: every row has a tier
                segment["tier"] = str(rng.choice(["gold", "free"]))
            segments.append(segment)
        if seed % 2:
            for segment in segments:
                segment.setdefault("region", "eu")
        events = [PredictionEvent(event_id=str(i), timestamp=1, model="m", segment=s)
                  for i, s in enumerate(segments)]
        router = SliceRouter("m", slices, CardinalityGuard(), SliceNames(), lambda: 0.0)
        sliced = router(Batch.of(events))
        expected = []
        for keys in slices:
            rows: dict[str, list[int]] = {}
            for i, segment in enumerate(segments):
                if all(key in segment for key in keys):
                    rows.setdefault(slice_name(keys, [segment[k] for k in keys]), []).append(i)
            if rows:
                expected.append((list(rows), [i for r in rows.values() for i in r],
                                 [len(r) for r in rows.values()]))
        assert [(names, r.tolist(), s.tolist()) for names, r, s in sliced.groups] == expected
        for i, code in enumerate(sliced.codes.tolist()):
            assert set(sliced.names(code)) == {
                slice_name(keys, [segments[i][k] for k in keys]) for keys in slices
                if all(key in segments[i] for key in keys)}, seed
