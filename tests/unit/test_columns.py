"""Columns: a batch read once; batches held as arrays and codes, then joined."""

from __future__ import annotations

import math

import numpy as np

from mlpulse.columns import MISSING, Batch
from mlpulse.sketches import value_key

from .test_slice_folds import random_events


def _spelled(batch: Batch, feature: str | None = None) -> list[str] | None:
    """Each row's value of a coded column, as counters spell it."""
    coded = batch.prediction_codes() if feature is None else batch.codes(feature)
    return None if coded is None else [coded.keys[c] for c in coded.codes.tolist()]


def _nan_list(array: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in array.tolist()]


def test_batches_held_as_arrays_and_codes_join_as_one_batch_read_at_once():
    """What a sliced window's fold reads of batches made compact and joined is what it reads
    of one batch of all their events: the same rows' failures, error types, LLM numbers,
    cache flags, predictions (counted as counters spell them) and numbers, and features
    (arrays, codes, or columns with their kinds, missing where a batch lacks one); trace
    ids where each batch kept them (the first few of the batch and of each slice)."""
    for seed in range(30):
        rng = np.random.default_rng(seed)
        events = random_events(rng, int(rng.integers(1, 300)))
        cuts = sorted(rng.integers(0, len(events), int(rng.integers(0, 4))).tolist())
        parts = [events[start:end] for start, end in
                 zip([0, *cuts], [*cuts, len(events)], strict=True) if end > start]
        whole = Batch.of(events)
        held = []
        for part in parts:
            batch = Batch.of(part)
            batch.compact([], trace_sample=2)
            assert batch.events == () and batch.predictions == [], seed
            held.append(batch)
        joined = Batch.concat(held) if len(held) > 1 else held[0]
        assert joined.n == whole.n, seed
        for a, b in ((joined.failed(), whole.failed()), (joined.latency, whole.latency)):
            assert (a is None) == (b is None), seed
            assert a is None or _nan_list(a) == _nan_list(b), seed
        assert joined.error_types() == whole.error_types(), seed
        for mine, theirs in ((joined.llm(), whole.llm()), (joined.cache_flags(),
                                                           whole.cache_flags())):
            assert (mine is None) == (theirs is None), seed
            if mine is not None:
                assert [_nan_list(a) for a in mine] == [_nan_list(a) for a in theirs], seed
        assert joined.prediction_kinds == whole.prediction_kinds, seed
        if float in whole.prediction_kinds:
            assert _nan_list(joined.prediction_numbers()) == _nan_list(
                whole.prediction_numbers()), seed
        assert _spelled(joined) == [value_key(v) for v in whole.predictions], seed
        assert [f[0] for f in joined.features] == [f[0] for f in whole.features], seed
        for (name, column, kinds, array), (_, whole_column, whole_kinds, whole_array) in zip(
                joined.features, whole.features, strict=True):
            assert kinds == whole_kinds, (seed, name)
            if whole_array is not None:
                assert array is not None and array.tolist() == whole_array.tolist(), seed
            elif _spelled(whole, name) is not None:
                assert _spelled(joined, name) == _spelled(whole, name), seed
            else:
                assert [v is MISSING for v in column] == [v is MISSING for v in whole_column]
                assert [v for v in column if v is not MISSING] == [
                    v for v in whole_column if v is not MISSING], (seed, name)
        # each batch kept its first 2 trace ids (no slices here)
        kept = [t for t in joined.trace_ids if t]
        expected = [t for part in parts for t in [e.trace_id for e in part if e.trace_id][:2]]
        assert kept == expected, seed
