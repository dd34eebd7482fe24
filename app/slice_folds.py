"""How a sliced window folds a batch into itself and its slices (its slices' rows:
:mod:`mlpulse.slicing`).

:func:`fold_slices` counts each event once, in its *cell* (its combination of slices), and
rolls the cells up onto every slice and the window by one matrix product per field;
:func:`fold_parts` folds the slices of one set of keys at once, where a batch holds more
cells than :data:`MAX_CELLS`. Both give each slice what folding its events alone gives
(:meth:`~mlpulse.aggregates.PredictionAggregate.add_batch`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .columns import MISSING, NO_VALUES, Batch, Coded, pick
from .detectors.profile import binned as is_binned
from .sketches import BoundedCounter, NumericStats, QuantileSketch

if TYPE_CHECKING:
    from .aggregates import PredictionAggregate

__all__ = ["MAX_CELLS", "fold_parts", "fold_slices", "fold_windows"]


def fold_parts(parts: list[PredictionAggregate], batch: Batch, rows: np.ndarray,
               sizes: np.ndarray) -> None:
    """Fold the ``rows`` of ``batch`` into ``parts``: the first ``sizes[0]`` rows into the
    first, the next ``sizes[1]`` into the second, ... (the slices of one set of keys of a
    sliced window).

    The same result as each part folding its rows (:meth:`PredictionAggregate.add_batch`;
    up to which values a full counter of categories keeps), at a fraction of the cost: the
    batch's arrays indexed by ``rows`` once, the sketches and moments of every part in one
    numpy pass per field, then a few scalar updates per part, where each fold made ~60
    numpy calls of a few µs whatever its size. List columns are read per part only where
    a part needs them (categories, error types, trace ids).
    """
    k = len(parts)
    error_types = batch.error_types()
    group = np.repeat(np.arange(k), sizes)
    ends = np.cumsum(sizes).tolist()
    counts_of = sizes.tolist()
    bounds = [(end - count, end) for end, count in zip(ends, counts_of, strict=True)]
    row_list = rows.tolist()
    failed = batch.failed()
    errors = [0] * k
    if failed is not None:
        failed = failed[rows]
        errors = np.bincount(group[failed], minlength=k).tolist()
    latency, latency_sizes = _present_parts(batch.latency[rows], group, sizes, k)
    QuantileSketch.add_parts([p.latency for p in parts], latency, latency_sizes)
    confidence, confidence_sizes = _present_parts(batch.confidence[rows], group, sizes, k)
    QuantileSketch.add_parts([p.confidence for p in parts], confidence, confidence_sizes)
    low = np.bincount(np.repeat(np.arange(k), confidence_sizes), weights=confidence < 0.5,
                      minlength=k).astype(np.int64).tolist()
    latency_ends = np.cumsum(latency_sizes).tolist()
    confidence_ends = np.cumsum(confidence_sizes).tolist()
    _add_llm_parts(parts, batch, rows, group, sizes)
    kinds = batch.prediction_kinds
    prediction_counts = batch.prediction_codes().taken(rows).counts(group, k)
    numeric = batch.prediction_numbers()[rows] if float in kinds else None
    cache = batch.cache_flags()
    if cache is not None:
        known, hits = cache
        known = np.bincount(group, weights=known[rows], minlength=k).astype(np.int64).tolist()
        hits = np.bincount(group, weights=hits[rows], minlength=k).astype(np.int64).tolist()
    traces = batch.trace_ids
    for j, part in enumerate(parts):
        start, end = bounds[j]
        count = end - start
        if not count:
            continue
        part.count += count
        if errors[j]:
            assert failed is not None
            part.error_count += errors[j]
            if error_types is not None:
                part.error_types.add_many([t for t in pick(error_types, [
                    row_list[i] for i in (np.flatnonzero(failed[start:end]) + start).tolist()])
                    if t is not None])
        if numeric is not None:   # (as numbers() counts the part's predictions)
            values = numeric[start:end]
            values = values[~np.isnan(values)]
        else:
            values = NO_VALUES
        part.prediction_values.add_many(values)
        profile = part.profile
        if profile is not None:
            profile.add("o:latency_ms",
                        latency[latency_ends[j] - latency_sizes[j]:latency_ends[j]])
            profile.add("o:confidence",
                        confidence[confidence_ends[j] - confidence_sizes[j]:confidence_ends[j]])
            profile.add("o:error", failed[start:end].astype(np.float64)  # type: ignore[index]
                        if errors[j] else np.zeros(count))
            profile.add("o:prediction", values)
        part.low_confidence += low[j]
        part.predictions.add_counts(prediction_counts[j])
        if cache is not None:
            part.cache_known += known[j]
            part.cache_hits += hits[j]
        missing = part.trace_sample - len(part.trace_ids)
        if missing > 0:
            part.trace_ids.extend(itertools.islice(
                filter(None, map(traces.__getitem__, itertools.islice(row_list, start, end))),
                missing))
    for feature, column, kinds, array in batch.features:   # after the outputs, as a part would
        if array is None:
            coded = batch.codes(feature)
            if coded is not None:   # strings: every part's counts in one numpy pass
                for part, counts, count in zip(parts, coded.taken(rows).counts(group, k),
                                               counts_of, strict=True):
                    _add_categories(part, feature, count, counts)
                continue
            taken = pick(column, row_list)   # nulls, mixed: part by part
            for part, (start, end) in zip(parts, bounds, strict=True):
                own = taken[start:end]
                if own.count(MISSING) < len(own):   # (a part without it: none)
                    part.add_feature(feature, own, kinds, None)
            continue
        # all floats: the moments of every part in one pass, the bins part by part
        values = array[rows]
        named = [part.feature(feature, end - start) if end > start else (feature, None)
                 for part, (start, end) in zip(parts, bounds, strict=True)]
        numeric = []
        for _, stats in named:
            if stats is not None and stats.numeric is None:
                stats.numeric = NumericStats()
            numeric.append(stats.numeric if stats is not None else NumericStats())
        NumericStats.add_parts(numeric, values, sizes)  # type: ignore[arg-type]
        for part, (name, stats), (start, end) in zip(parts, named, bounds, strict=True):
            if stats is None:
                continue
            stats.count += end - start
            if part.profile is not None:
                part.profile.add("f:" + name, values[start:end])


MAX_CELLS = 512
"""Combinations of slices (cells) a batch may hold for :func:`fold_slices`; beyond it (a
flood of values in several keys) each key's slices fold on their own (:func:`fold_parts`)."""


def fold_slices(parts_of: list[list[PredictionAggregate]], batch: Batch,
                groups: list[tuple[list[str], np.ndarray, np.ndarray]],
                whole: PredictionAggregate | None = None) -> bool:
    """Fold ``batch`` into the slices of every set of keys at once: ``parts_of[s]`` are the
    slices of set ``s``, ``groups[s]`` its rows (:class:`~mlpulse.slicing.Sliced`); and into
    ``whole``, the sliced window itself (every row), but for its label index.

    Each row is counted once, in its *cell* (its combination of slices: 2 keys of 5 values
    make at most 25): one ``bincount`` per field gives every cell's sketch buckets, moments,
    category counts and detector bins, and one product with the slices × cells membership
    matrix every slice's, where folding each key's slices on their own read every row once
    per key. Detector bins are counted on the union of the slices' edges, which refines each
    slice's, then summed onto its own. Counts are exact; sums and moments are those of each
    slice alone up to rounding (its cells' partial sums added).

    Returns False, folding nothing, where the batch holds more than ``MAX_CELLS`` cells.
    """
    return fold_windows([(whole, parts_of, groups)], batch, [batch.n])


def fold_windows(windows: Sequence[tuple[PredictionAggregate | None,
                                         list[list[PredictionAggregate]],
                                         list[tuple[list[str], np.ndarray, np.ndarray]]]],
                 batch: Batch, sizes: list[int]) -> bool:
    """:func:`fold_slices` of several sliced windows at once (those that fold at the same
    time: :func:`mlpulse.summarize.fold_in_rounds`): the rows of window ``k`` are the next
    ``sizes[k]`` rows of ``batch``, and ``windows[k]`` its ``(whole, parts_of, groups)``,
    its groups' rows counted from its first row. Each window's cells are its own: one pass
    over every field for all of them, where each window's fold made ~150 numpy calls on
    small arrays whatever its events.

    Returns False, folding nothing, where the windows hold more than ``MAX_CELLS`` cells.
    """
    n = batch.n
    parts: list[PredictionAggregate] = []
    own_rows: list[np.ndarray] = []
    cells_of: list[np.ndarray] = []
    blocks: list[tuple[int, int, np.ndarray]] = []   # (first part, first cell, membership)
    c = start = 0
    for (whole, parts_of, groups), size in zip(windows, sizes, strict=True):
        code = np.zeros(size, dtype=np.int64)
        radix = 1
        for set_parts, (_, rows, set_sizes) in zip(parts_of, groups, strict=True):
            if radix * (len(set_parts) + 1) >= 2**62:
                return False
            ids = np.zeros(size, dtype=np.int64)
            ids[rows] = np.repeat(np.arange(1, len(set_parts) + 1), set_sizes)
            code += ids * radix
            radix *= len(set_parts) + 1
        cell_codes, cell = np.unique(code, return_inverse=True)
        window_cells = len(cell_codes)
        if c + window_cells > MAX_CELLS:
            return False
        first = 0 if whole is None else 1
        member = np.zeros((first + sum(map(len, parts_of)), window_cells))
        member[:first] = 1.0
        radix, offset = 1, first
        for set_parts in parts_of:
            which = cell_codes // radix % (len(set_parts) + 1)
            cells = np.flatnonzero(which)
            member[offset + which[cells] - 1, cells] = 1.0
            offset += len(set_parts)
            radix *= len(set_parts) + 1
        blocks.append((len(parts), c, member))
        if whole is not None:
            parts.append(whole)
            own_rows.append(np.arange(start, start + size))
        for set_parts, (_, rows, set_sizes) in zip(parts_of, groups, strict=True):
            parts.extend(set_parts)
            own_rows.extend(rows[end - rows_of:end] + start for end, rows_of in zip(
                np.cumsum(set_sizes).tolist(), set_sizes.tolist(), strict=True))
        cells_of.append(cell + c)
        c += window_cells
        start += size
    assert start == n
    cell = cells_of[0] if len(cells_of) == 1 else np.concatenate(cells_of)
    if len(blocks) == 1:
        member = blocks[0][2]
    else:   # each window's parts in its own cells only
        member = np.zeros((len(parts), c))
        for first_part, first_cell, block in blocks:
            member[first_part:first_part + block.shape[0],
                   first_cell:first_cell + block.shape[1]] = block
    roll = _Rollup(cell, c, member, blocks)
    counts = roll.counts(None).tolist()
    failed = batch.failed()
    errors = roll.counts(failed).tolist() if failed is not None else [0] * len(parts)
    latency_present = ~np.isnan(batch.latency)
    confidence_present = ~np.isnan(batch.confidence)
    sketched = [([p.latency for p in parts], batch.latency, latency_present),
                ([p.confidence for p in parts], batch.confidence, confidence_present)]
    llm = batch.llm()
    if llm is not None:
        sketched += [([p.llm_tokens_in for p in parts], llm[0], ~np.isnan(llm[0])),
                     ([p.llm_tokens_out for p in parts], llm[1], ~np.isnan(llm[1])),
                     ([p.llm_cost for p in parts], llm[2], ~np.isnan(llm[2]))]
    sums = roll.sketches(sketched)
    low = roll.counts(batch.confidence < 0.5).tolist()
    if llm is not None:
        requests = roll.counts(batch.llm_requests()).tolist()
        tokens_in, tokens_out, cost = sums[2:]
        for j, part in enumerate(parts):
            part.llm_requests += requests[j]
            part.tokens_in += round(tokens_in[j])
            part.tokens_out += round(tokens_out[j])
            part.cost_usd += cost[j]
    profiles = [p.profile for p in parts]   # each signal as a part's own fold adds it
    prediction_kinds = batch.prediction_kinds
    numeric = batch.prediction_numbers() if float in prediction_kinds else None
    moments: list[tuple[list[NumericStats | None], np.ndarray, np.ndarray | None]] = []
    if numeric is not None:
        numeric_present = ~np.isnan(numeric)
        moments.append(([p.prediction_values for p in parts], numeric, numeric_present))
    found_counts = roll.categories(batch.prediction_codes())
    roll.bins(profiles, ["o:latency_ms"] * len(parts), batch.latency, latency_present,
              own_rows)
    roll.bins(profiles, ["o:confidence"] * len(parts), batch.confidence, confidence_present,
              own_rows)
    roll.bins(profiles, ["o:error"] * len(parts),
              failed.astype(np.float64) if failed is not None else np.zeros(n), None, own_rows)
    if numeric is not None:
        roll.bins(profiles, ["o:prediction"] * len(parts), numeric, numeric_present, own_rows)
    for feature, column, kinds, array in batch.features:   # in order: as each part would
        if array is not None:   # all floats: every row has it
            named = [part.feature(feature, count) if count else (feature, None)
                     for part, count in zip(parts, counts, strict=True)]
            stats = [s for _, s in named]
            for s in stats:
                if s is not None and s.numeric is None:
                    s.numeric = NumericStats()
            moments.append(([s.numeric if s is not None else None for s in stats], array, None))
            for s, count in zip(stats, counts, strict=True):
                if s is not None:
                    s.count += count
            roll.bins(profiles, [("f:" + name) if s is not None else None
                                 for name, s in named], array, None, own_rows)
            continue
        coded = batch.codes(feature)
        if coded is not None:   # strings: every row has one
            for part, found, count in zip(parts, roll.categories(coded), counts, strict=True):
                _add_categories(part, feature, count, found)
            continue
        for part, rows in zip(parts, own_rows, strict=True):   # nulls, mixed: part by part
            own = pick(column, rows.tolist()) if rows.size else []
            if own and own.count(MISSING) < len(own):
                part.add_feature(feature, own, kinds, None)
    roll.add_bins(profiles)
    if moments:   # (in order: a feature beyond the bound shares __other__'s moments)
        roll.moments(moments)
    cache = batch.cache_flags()
    known = roll.counts(cache[0] > 0).tolist() if cache is not None else None
    hits = roll.counts(cache[1] > 0).tolist() if cache is not None else None
    error_types, traces = batch.error_types(), batch.trace_ids
    for j, part in enumerate(parts):
        count = counts[j]
        if not count:
            continue
        part.count += count
        part.low_confidence += low[j]
        if errors[j]:
            assert failed is not None
            part.error_count += errors[j]
            rows = own_rows[j]
            if error_types is not None:
                part.error_types.add_many([t for t in pick(error_types,
                                                           rows[failed[rows]].tolist())
                                           if t is not None])
        part.predictions.add_counts(found_counts[j])
        if known is not None and hits is not None:
            part.cache_known += known[j]
            part.cache_hits += hits[j]
        missing = part.trace_sample - len(part.trace_ids)
        if missing > 0:
            part.trace_ids.extend(itertools.islice(   # (lazily: the first few rows do)
                filter(None, map(traces.__getitem__, own_rows[j])), missing))
    return True


class _Rollup:
    """Per-cell sums of a batch's rows (``cell``: each row's), rolled up onto slices by the
    slices × cells ``member`` matrix (see :func:`fold_slices`)."""

    def __init__(self, cell: np.ndarray, cells: int, member: np.ndarray,
                 blocks: list[tuple[int, int, np.ndarray]] | None = None) -> None:
        self.cell = cell
        self.cells = cells
        self.member = member
        self.blocks = blocks if blocks is not None else [(0, 0, member)]
        """Each window's first slice, first cell and own membership matrix (its block of
        ``member``: a window's slices are in its own cells only)."""
        self._present_member: dict[int, np.ndarray] = {}
        self._binned: list[tuple[list[int], list[str], np.ndarray, np.ndarray,
                                 list[np.ndarray]]] = []
        """What :meth:`bins` left to :meth:`add_bins`: per signal, its slices that bin it,
        their signal names, its values and their cells, and each slice's edges."""
        self._watching: list[int] | None = None
        """The slices whose profiles sample or watch events (the window's own, a slice's
        while its reference builds), by position; the others bin (:attr:`_binning`)."""
        self._binning: list[int] = []

    def counts(self, where: np.ndarray | None) -> np.ndarray:
        """Per slice, its rows (where ``where``)."""
        cell = self.cell if where is None else self.cell[where]
        per_cell = np.bincount(cell, minlength=self.cells).astype(np.float64)
        return np.rint(self.member @ per_cell).astype(np.int64)

    def _stack(self, fields: list[tuple[np.ndarray, np.ndarray | None]]
               ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Several fields' values (where present; None: everywhere) end to end, each
        value's group (field ``f``'s cell ``c``: ``f * cells + c``), and each field's count."""
        taken = [(values, self.cell) if present is None else (values[present],
                                                              self.cell[present])
                 for values, present in fields]
        sizes = [values.size for values, _ in taken]
        group = (np.repeat(np.arange(len(fields)) * self.cells, sizes)
                 + np.concatenate([cell for _, cell in taken]))
        return np.concatenate([values for values, _ in taken]), group, sizes

    def _extremes(self, values: np.ndarray, group: np.ndarray, fields: int
                  ) -> tuple[list[list[float]], list[list[float]]]:
        """Per field and slice, the least and greatest of its values (±inf: none)."""
        cells = self.cells
        low = np.full(fields * cells, np.inf)
        high = np.full(fields * cells, -np.inf)
        np.minimum.at(low, group, values)
        np.maximum.at(high, group, values)
        inside = (self.member > 0)[None, :, :]
        return (np.where(inside, low.reshape(fields, 1, cells), np.inf).min(axis=2).tolist(),
                np.where(inside, high.reshape(fields, 1, cells), -np.inf).max(axis=2).tolist())

    def sketches(self, fields: list[tuple[list[QuantileSketch], np.ndarray, np.ndarray]]
                 ) -> list[list[float]]:
        """Add each slice's present values of each field to its sketch of the field
        (``fields``: each field's sketches, one per slice, its values and where they are
        present); returns per field the slices' sums. The fields' counts, extremes and
        bucket keys in one pass for all: cell ``c`` of field ``f`` is group
        ``f * cells + c``, and each field's buckets a block of its own width."""
        mapping = QuantileSketch._mapping
        cells, member = self.cells, self.member
        f = len(fields)
        values, group, sizes = self._stack([(values, present) for _, values, present in fields])
        field = np.repeat(np.arange(f), sizes)
        positive = values > mapping.min_possible
        count = np.rint(np.bincount(group, minlength=f * cells).reshape(f, cells).astype(
            np.float64) @ member.T).astype(np.int64).tolist()
        nonzero = np.rint(np.bincount(group[positive], minlength=f * cells).reshape(
            f, cells).astype(np.float64) @ member.T).astype(np.int64).tolist()
        per_cell_sums = np.bincount(group, weights=values, minlength=f * cells).reshape(
            f, cells)
        lows, highs = self._extremes(values, group, f)
        grids: list[tuple[int, np.ndarray] | None] = [None] * f
        if positive.any():
            keys = QuantileSketch.keys_of(values[positive])
            which = field[positive]
            base = np.full(f, np.iinfo(np.int64).max)
            top = np.full(f, np.iinfo(np.int64).min)
            np.minimum.at(base, which, keys)
            np.maximum.at(top, which, keys)
            width = np.where(top >= base, top - base + 1, 0)
            offset = np.concatenate(([0], np.cumsum(width * cells)))
            table = np.bincount(offset[which] + (group[positive] - which * cells) * width[which]
                                + keys - base[which], minlength=int(offset[-1]))
            for k, (w, start) in enumerate(zip(width.tolist(), offset.tolist(), strict=False)):
                if w:
                    grids[k] = (int(base[k]), self._rolled(
                        table[start:start + cells * w].reshape(cells, w)))
        out = []
        for k, (sketches, _, _) in enumerate(fields):
            if not sizes[k]:
                out.append([0.0] * len(sketches))
                continue
            sums = (member @ per_cell_sums[k]).tolist()   # (per field: its floats as alone)
            count_of, nonzero_of, grid = count[k], nonzero[k], grids[k]
            for j, sketch in enumerate(sketches):
                if count_of[j]:
                    sketch.add_bucketed(
                        grid[0] if grid is not None else 0,
                        grid[1][j] if grid is not None and nonzero_of[j] else None,
                        values=count_of[j], zeros=count_of[j] - nonzero_of[j], total=sums[j],
                        low=lows[k][j], high=highs[k][j])
            out.append(sums)
        return out

    def _rolled(self, per_cell: np.ndarray) -> np.ndarray:
        """Per-cell counts (cells × columns) rolled up onto the slices, as integers: window
        by window where several fold at once (each window's slices are in its own cells
        only, and the product of the whole membership matrix grows as their square)."""
        if len(self.blocks) == 1:
            return np.rint(self.member @ per_cell).astype(np.int64)
        out = np.empty((self.member.shape[0], per_cell.shape[1]), dtype=np.int64)
        for first_part, first_cell, member in self.blocks:
            out[first_part:first_part + member.shape[0]] = np.rint(
                member @ per_cell[first_cell:first_cell + member.shape[1]])
        return out

    def moments(self, fields: list[tuple[list[NumericStats | None], np.ndarray,
                                         np.ndarray | None]]) -> None:
        """Merge each slice's values of each field (where present) into its moments of the
        field (``fields``: each field's moments, one per slice or None, its values, and
        where they are present; None: everywhere), in order. Every field's per-cell
        counts, sums, squared deviations and extremes in one pass for all."""
        f, cells, member = len(fields), self.cells, self.member
        values, group, sizes = self._stack([(values, present) for _, values, present in fields])
        n_cells = np.bincount(group, minlength=f * cells).astype(np.float64)
        sum_cells = np.bincount(group, weights=values, minlength=f * cells)
        mean_cells = sum_cells / np.maximum(n_cells, 1)
        deviations = values - mean_cells[group]
        m2_cells = np.bincount(group, weights=deviations * deviations,
                               minlength=f * cells).reshape(f, cells)
        n_cells, sum_cells = n_cells.reshape(f, cells), sum_cells.reshape(f, cells)
        mean_cells = mean_cells.reshape(f, cells)
        lows, highs = self._extremes(values, group, f)
        # every field's slices at once (fields × slices): a slice's count, mean and squared
        # deviations are its cells' merged (Chan et al.: each cell's own, plus its count
        # times its mean's squared distance from the slice's)
        n = n_cells @ member.T
        mean = (sum_cells @ member.T) / np.maximum(n, 1)
        spread = ((mean_cells[:, None, :] - mean[:, :, None]) ** 2 * member
                  * n_cells[:, None, :]).sum(axis=2)
        m2 = m2_cells @ member.T + spread
        counts_of = np.rint(n).astype(np.int64).tolist()
        means_of, m2s_of = mean.tolist(), m2.tolist()
        for k, (stats, _, _) in enumerate(fields):
            if not sizes[k]:
                continue
            counts, mean_of, m2_of, low, high = (counts_of[k], means_of[k], m2s_of[k],
                                                 lows[k], highs[k])
            for j, (s, count) in enumerate(zip(stats, counts, strict=True)):
                if s is not None and count:
                    s._merge(count, mean_of[j], m2_of[j], low[j], high[j])

    def categories(self, coded: Coded) -> list[dict[str, int]]:
        """Per slice, its rows' values counted (by key)."""
        m = len(coded.keys)
        per_cell = np.bincount(self.cell * m + coded.codes, minlength=self.cells * m).reshape(
            self.cells, m).astype(np.float64)
        return coded.spelled(np.rint(self.member @ per_cell).astype(np.int64))

    def bins(self, profiles: list[Any], signals: list[str | None], values: np.ndarray,
             present: np.ndarray | None, own_rows: list[np.ndarray]) -> None:
        """Add each slice's ``values`` (where ``present``) to its profile's ``signal``: a
        profile that samples or watches events (the window's own; a slice's while its
        reference builds) is handed its values now, in order; the others' are counted by
        :meth:`add_bins`, every signal at once."""
        if self._watching is None:   # (the same profiles for every signal of the batch)
            self._watching = [j for j, p in enumerate(profiles) if p is not None and (
                p.changes is not None or p.sample_size)]
            self._binning = [j for j, p in enumerate(profiles) if p is not None
                             and j not in self._watching]
        for j in self._watching:
            signal = signals[j]
            if signal is not None:
                own = values[own_rows[j]]
                if present is not None:
                    own = own[present[own_rows[j]]]
                profiles[j].add(signal, own)
        binned, names = [], []
        for j in self._binning:   # (Profile.bins: binned and with edges)
            signal = signals[j]
            if signal is not None and is_binned(signal) and signal in profiles[j].edges:
                binned.append(j)
                names.append(signal)
        if not binned:
            return
        cell = self.cell
        if present is not None:
            values, cell = values[present], cell[present]
        if values.size:
            self._binned.append((binned, names, values, cell,
                                 [profiles[j].edges[s] for j, s in zip(binned, names,
                                                                       strict=True)]))

    def add_bins(self, profiles: list[Any]) -> None:
        """Count the values :meth:`bins` left to the profiles that bin them, window by
        window (:meth:`_add_bins`): a window's slices' edges are the same from one of its
        windows to the next, so their union is remembered, where the union of several
        windows' would be new at each pass and its tables as wide as all of theirs."""
        fields, self._binned = self._binned, []
        if not fields:
            return
        blocks = self.blocks
        if len(blocks) == 1:
            self._add_bins(profiles, fields, self.member, 0)
            return
        firsts = np.array([first_cell for _, first_cell, _ in blocks])
        # each field's rows, window by window (a window's rows come together, in its cells)
        bounds = [np.searchsorted(np.searchsorted(firsts, cell, "right"),
                                  np.arange(1, len(blocks) + 1), "right").tolist()
                  for _, _, _, cell, _ in fields]
        for b, (first_part, first_cell, member) in enumerate(blocks):
            end_part = first_part + member.shape[0]
            own = []
            for (binned, names, values, cell, edges), ends in zip(fields, bounds, strict=True):
                keep = [i for i, j in enumerate(binned) if first_part <= j < end_part]
                start, end = ends[b - 1] if b else 0, ends[b]
                if keep and end > start:
                    own.append(([binned[i] for i in keep], [names[i] for i in keep],
                                values[start:end], cell[start:end] - first_cell,
                                [edges[i] for i in keep]))
            if own:
                self._add_bins(profiles, own, member, first_part)

    @staticmethod
    def _add_bins(profiles: list[Any], fields: list[tuple[list[int], list[str], np.ndarray,
                                                         np.ndarray, list[np.ndarray]]],
                  member: np.ndarray, first: int) -> None:
        """Count one window's ``fields`` (as :meth:`bins` left them, their cells counted
        from the window's first; ``member``: its membership matrix, of its slices from
        ``first``): every signal's on the union of its slices' edges (which refines each
        slice's) in one ``bincount`` per cell, rolled up onto the slices by one product
        with the membership matrix, then summed onto each slice's own bins by another
        ``bincount`` per signal (:meth:`_Unions.of`); each profile takes all its signals'
        counts at once."""
        cells = member.shape[1]
        unions = [_UNIONS.of(edges) for *_, edges in fields]
        offsets = np.cumsum([0] + [union.size + 1 for union, _, _ in unions]).tolist()
        total = offsets[-1]
        index = np.concatenate([
            cell * total + (offset + np.searchsorted(union, values, "right"))
            for (_, _, values, cell, _), (union, _, _), offset in zip(fields, unions, offsets,
                                                                     strict=False)])
        per_cell = np.bincount(index, minlength=cells * total).reshape(
            cells, total).astype(np.float64)
        table = member @ per_cell   # the window's slices × every signal's union bins
        width = max(w for _, _, w in unions)
        own = np.zeros((member.shape[0], len(fields), width))
        signals_of: dict[int, tuple[list[int], list[str]]] = {}
        for i, ((binned, signals, *_), (union, onto, own_width), offset) in enumerate(
                zip(fields, unions, offsets, strict=False)):
            local = [j - first for j in binned]
            own[local, i, :own_width] = np.bincount(
                onto, weights=table[local, offset:offset + union.size + 1].ravel(),
                minlength=len(binned) * own_width).reshape(len(binned), own_width)
            for j, signal in zip(binned, signals, strict=True):
                rows, names = signals_of.setdefault(j, ([], []))
                rows.append(i)
                names.append(signal)
        counts_of = np.rint(own).astype(np.int64)
        for j, (rows, names) in signals_of.items():
            counts = counts_of[j - first, rows]
            if counts.any():
                profiles[j].add_binned(names, counts)


class _Unions:
    """The union of several slices' bin edges, and each union bin's bin in each slice's
    own (``onto``: slice ``k``'s bin ``b`` at ``k * width + b``, all slices summed in one
    ``bincount``), remembered by the edges' identity: a slice's edges are its reference's,
    the same array from window to window until the reference is rebuilt.

    >>> unions = _Unions()
    >>> a, b = np.array([0.0, 2.0]), np.array([1.0])
    >>> union, onto, width = unions.of([a, b])
    >>> union.tolist(), onto.tolist(), width, unions.of([a, b])[0] is union
    ([0.0, 1.0, 2.0], [0, 1, 1, 2, 3, 3, 4, 4], 3, True)
    """

    LIMIT = 4096
    """Sets of edges remembered (then forgotten all at once)."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, ...], tuple[list[np.ndarray], np.ndarray, np.ndarray,
                                                 int]] = {}

    def of(self, edges: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
        key = tuple(map(id, edges))   # (the arrays held below keep their ids theirs)
        known = self._known.get(key)
        if known is not None:
            return known[1], known[2], known[3]
        union = np.unique(np.concatenate(edges))
        width = 1 + max(e.size for e in edges)
        onto = np.concatenate([k * width + np.concatenate(([0], np.searchsorted(e, union,
                                                                                "right")))
                               for k, e in enumerate(edges)])
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known[key] = (list(edges), union, onto, width)
        return union, onto, width


_UNIONS = _Unions()


def _add_categories(part: PredictionAggregate, feature: str, values: int,
                    counts: dict[str, int]) -> None:
    """Add to a part's string ``feature`` its ``values`` values, counted (``counts``)."""
    if values:
        stats = part.feature(feature, values)[1]
        stats.count += values
        if stats.categories is None:
            stats.categories = BoundedCounter(part.max_categories)
        stats.categories.add_counts(counts)


def _present_parts(column: np.ndarray, group: np.ndarray, sizes: np.ndarray, k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """An optional field's numbers (NaN: None) and how many of them each part has."""
    absent = np.isnan(column)
    if not absent.any():
        return column, sizes
    present = ~absent
    return column[present], np.bincount(group[present], minlength=k)


def _add_llm_parts(parts: list[PredictionAggregate], batch: Batch, rows: np.ndarray,
                   group: np.ndarray, sizes: np.ndarray) -> None:
    """:meth:`PredictionAggregate._add_llm` of every part at once."""
    k = len(parts)
    arrays = batch.llm()   # None -> NaN
    if arrays is None:
        return
    arrays = tuple(a[rows] for a in arrays)
    requests = np.bincount(group, weights=batch.llm_requests()[rows], minlength=k).astype(
        np.int64).tolist()
    sketches = ([p.llm_tokens_in for p in parts], [p.llm_tokens_out for p in parts],
                [p.llm_cost for p in parts])
    sums = []
    for array, field_sketches in zip(arrays, sketches, strict=True):
        values, value_sizes = _present_parts(array, group, sizes, k)
        QuantileSketch.add_parts(field_sketches, values, value_sizes)
        sums.append(np.bincount(np.repeat(np.arange(k), value_sizes), weights=values,
                                minlength=k).tolist())
    ends = np.cumsum(sizes).tolist()
    costs = arrays[2]
    for j, part in enumerate(parts):
        part.llm_requests += requests[j]
        part.tokens_in += round(sums[0][j])
        part.tokens_out += round(sums[1][j])
        if sums[2][j]:   # exact, as a part's own fold sums it (NaN: None; 0 adds nothing)
            own = costs[ends[j] - int(sizes[j]):ends[j]]
            part.cost_usd += math.fsum(own[~np.isnan(own)].tolist())
