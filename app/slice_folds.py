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
from typing import TYPE_CHECKING, Any

import numpy as np

from .columns import MISSING, NO_VALUES, Batch, Coded, numbers, pick
from .sketches import BoundedCounter, NumericStats, QuantileSketch

if TYPE_CHECKING:
    from .aggregates import PredictionAggregate

__all__ = ["MAX_CELLS", "Cells", "fold_parts"]


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
    events = batch.events
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
    coded = batch.codes()
    prediction_counts = coded.taken(rows).counts(group, k) if coded is not None else None
    predictions = pick(batch.predictions, row_list) if (
        prediction_counts is None or float in kinds) else []
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
            part.error_types.add_many([
                e.error_type or "unknown" for e in pick(events, [
                    row_list[i] for i in (np.flatnonzero(failed[start:end]) + start).tolist()])
                if e.status == "error"])
        own = predictions[start:end]
        values = numbers(own, kinds) if float in kinds else NO_VALUES
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
        if prediction_counts is not None:
            part.predictions.add_counts(prediction_counts[j])
        else:
            part.predictions.add_values(own, kinds)
        if cache is not None:
            part.cache_known += known[j]
            part.cache_hits += hits[j]
        missing = part.trace_sample - len(part.trace_ids)
        if missing > 0:
            part.trace_ids.extend(itertools.islice(
                filter(None, map(traces.__getitem__, itertools.islice(row_list, start, end))),
                missing))
    for feature, column, kinds, array in batch.features:   # after the outputs: as each part would
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


MAX_CELLS = 256
"""Combinations of slices (cells) a sliced window counts apart before it rolls them up onto
its slices; a batch holding more (a flood of values in several keys) folds each key's
slices on their own (:func:`fold_parts`)."""


PENDING_EVENTS = 16384
"""Events whose rows a sliced window keeps (as arrays: ~200 bytes an event) before it counts
them by cell: counting costs ~60 numpy calls whatever the rows."""


class Cells:
    """A sliced window's slices, counted by *cell* as batches come and rolled up onto the
    slices when the window's result or state is asked (:meth:`roll_up`).

    A cell is a combination of slices (2 keys of 5 values make at most 36, with the events
    lacking a key). Each event is counted once, in its cell, while its batch is in the CPU
    cache: one ``bincount`` per field gives every cell's sketch buckets, moments, category
    counts and detector bins, added to the cells' running sums. No event is kept: a window
    holds its cells' sums, and rolling them up is one product per field with the slices ×
    cells membership matrix. Detector bins are counted on the union of the slices' edges,
    which refines each slice's, then summed onto its own. A slice then holds what folding
    its events alone gives it: counts exactly, sums and moments up to rounding (its cells'
    partial sums added), categories up to which values a full counter keeps, features up to
    which names a slice keeps past ``max_features``.

    What cannot be summed by cell goes to each slice as the batch comes: the values of a
    profile that samples or watches events in order, error types, trace ids, predictions
    that cannot be coded and features not all numbers or all strings.
    """

    def __init__(self) -> None:
        self.parts: list[PredictionAggregate] = []
        self.number: dict[str, int] = {}
        """Each slice's index in ``parts``."""
        self._clear()

    def _clear(self) -> None:
        self.codes: list[int] = []
        """Each cell's code: its slice of each set of keys (index + 1; 0: none), by radix."""
        self._index: dict[int, int] = {}
        self._radix = len(self.parts) + 1
        self._counts: dict[str, np.ndarray] = {}
        self._sketches: dict[str, _Sketch] = {}
        self._moments: dict[str, _Moments] = {}
        self._categories: dict[str, _Categories] = {}
        self._bins: dict[str, _Bins] = {}
        self._features: dict[str, bool] = {}
        """The features counted by cell (True: numbers, False: strings), in order."""
        self._pending: dict[tuple[str, Any], list[tuple[np.ndarray | None, Any]]] = {}
        """Per field, the rows of the batches since the last :meth:`_drain`: compact
        arrays, counted by cell in one pass per field (the events themselves are not
        kept)."""
        self._pending_events = 0

    def add(self, window: PredictionAggregate, batch: Batch, sliced: Any) -> None:
        """Count ``batch`` (its rows' slices: ``sliced``, a :class:`~mlpulse.slicing.Sliced`)
        into the cells of ``window``'s slices."""
        parts_of: list[list[int]] = []
        new = False
        for names, _, _ in sliced.groups:
            indices = []
            for name in names:
                number = self.number.get(name)
                if number is None:
                    new = True
                    part = window.slices.get(name)
                    if part is None:
                        assert window.new_slice is not None
                        part = window.slices[name] = window.new_slice(name)
                    number = self.number[name] = len(self.parts)
                    self.parts.append(part)
                indices.append(number)
            parts_of.append(indices)
        if new:   # the cells' radix and bins are those of the slices they knew
            self.roll_up()
        n = batch.n
        radix = self._radix
        if radix ** len(parts_of) >= 2**62:
            return self._apart(batch, sliced, parts_of)
        code = np.zeros(n, dtype=np.int64)
        scale = 1
        for indices, (_, rows, sizes) in zip(parts_of, sliced.groups, strict=True):
            ids = np.zeros(n, dtype=np.int64)
            ids[rows] = np.repeat(np.array(indices, dtype=np.int64) + 1, sizes)
            code += ids * scale
            scale *= radix
        found, inverse = np.unique(code, return_inverse=True)
        if found.size > MAX_CELLS:
            return self._apart(batch, sliced, parts_of)
        index = self._index
        if len(self.codes) + found.size > MAX_CELLS and any(
                c not in index for c in found.tolist()):
            self.roll_up()
            index = self._index
        before = len(index)
        mine = [index.setdefault(c, len(index)) for c in found.tolist()]
        self.codes += [c for c, i in zip(found.tolist(), mine, strict=True) if i >= before]
        self._count(batch, np.array(mine, dtype=np.int64)[inverse], parts_of, sliced)
        self._pending_events += n
        if self._pending_events >= PENDING_EVENTS:
            self._drain()

    def _apart(self, batch: Batch, sliced: Any, parts_of: list[list[int]]) -> None:
        """Fold each set of keys' slices on their own (too many cells)."""
        for indices, (_, rows, sizes) in zip(parts_of, sliced.groups, strict=True):
            fold_parts([self.parts[i] for i in indices], batch, rows, sizes)

    def _count(self, batch: Batch, cell: np.ndarray,
               parts_of: list[list[int]], sliced: Any) -> None:
        c = len(self.codes)
        n = batch.n
        own = [(number, rows[end - size:end])
               for indices, (_, rows, sizes) in zip(parts_of, sliced.groups, strict=True)
               for number, end, size in zip(indices, np.cumsum(sizes).tolist(), sizes.tolist(),
                                            strict=True)]
        parts = self.parts
        self._add("count", cell)
        failed = batch.failed()
        if failed is not None:
            self._add("failed", cell[failed])
            events = batch.events
            for number, rows in own:   # error types: few, by each slice as they come
                mine = rows[failed[rows]]
                if mine.size:
                    parts[number].error_types.add_many([
                        e.error_type or "unknown" for e in pick(events, mine.tolist())])
        latency_present = ~np.isnan(batch.latency)
        self._sketch("latency", cell, batch.latency, latency_present)
        confidence_present = ~np.isnan(batch.confidence)
        self._sketch("confidence", cell, batch.confidence, confidence_present)
        self._add("low", cell[batch.confidence < 0.5])
        llm = batch.llm()
        if llm is not None:
            present = [~np.isnan(a) for a in llm]
            self._add("requests", cell[present[0] | present[1] | present[2]])
            for name, values, where in zip(("tokens_in", "tokens_out", "cost"), llm, present,
                                           strict=True):
                self._sketch(name, cell, values, where)
        profiles = [p.profile for p in parts]
        kinds = batch.prediction_kinds
        numeric = batch.prediction_numbers() if float in kinds else None
        numeric_present = None
        if numeric is not None:
            numeric_present = ~np.isnan(numeric)
            self._moment("o:prediction", cell, numeric, numeric_present)
        coded = batch.codes()
        if coded is not None:
            self._category(None, cell, coded)
        else:
            for number, rows in own:   # booleans among numbers: by each slice
                parts[number].predictions.add_values(pick(batch.predictions, rows.tolist()),
                                                     kinds)
        at = (cell, c, own)
        self._bin(at, profiles, "o:latency_ms", batch.latency, present=latency_present)
        self._bin(at, profiles, "o:confidence", batch.confidence, present=confidence_present)
        self._bin(at, profiles, "o:error",
                  failed.astype(np.float64) if failed is not None else np.zeros(n), present=None)
        if numeric is not None:
            self._bin(at, profiles, "o:prediction", numeric, present=numeric_present)
        features = self._features
        for feature, column, kinds_of, array in batch.features:
            if array is not None:   # all floats: every row has it
                if features.setdefault(feature, True):
                    self._moment("f:" + feature, cell, array, None)
                    self._bin(at, profiles, "f:" + feature, array, present=None)
                    continue
            else:
                found = batch.codes(feature)
                if found is not None and not features.setdefault(feature, False):
                    self._category(feature, cell, found)
                    continue
            for number, rows in own:   # nulls, mixed: by each slice
                mine = pick(column, rows.tolist()) if rows.size else []
                if mine and mine.count(MISSING) < len(mine):
                    parts[number].add_feature(feature, mine, kinds_of, None)
        cache = batch.cache_flags()
        if cache is not None:
            self._add("known", cell[cache[0] > 0])
            self._add("hits", cell[cache[1] > 0])
        traces = batch.trace_ids
        for number, rows in own:
            part = parts[number]
            missing = part.trace_sample - len(part.trace_ids)
            if missing > 0:
                part.trace_ids.extend(itertools.islice(
                    filter(None, map(traces.__getitem__, rows.tolist())), missing))

    def _later(self, kind: str, name: Any, cell: np.ndarray | None, values: Any) -> None:
        """Keep a batch's rows of a field (their cells and values) to count with the next
        ones (:meth:`_drain`)."""
        self._pending.setdefault((kind, name), []).append((cell, values))

    def _add(self, name: str, cell: np.ndarray) -> None:
        self._later("count", name, cell, None)

    def _sketch(self, name: str, cell: np.ndarray, values: np.ndarray,
                present: np.ndarray) -> None:
        self._later("sketch", name, cell[present], values[present])

    def _moment(self, name: str, cell: np.ndarray, values: np.ndarray,
                present: np.ndarray | None) -> None:
        if present is not None:
            values, cell = values[present], cell[present]
        if values.size:
            self._later("moment", name, cell, values)

    def _category(self, feature: str | None, cell: np.ndarray, coded: Coded) -> None:
        key = "" if feature is None else feature
        categories = self._categories.get(key)
        if categories is None:
            categories = self._categories[key] = _Categories()
        self._later("category", key, cell, categories.number(coded))

    def _bin(self, at: tuple[np.ndarray, int, list[tuple[int, np.ndarray]]],
             profiles: list[Any], signal: str, values: np.ndarray, *,
             present: np.ndarray | None) -> None:
        """Count ``signal``'s values (where ``present``) by cell on the union of the binned
        slices' edges; hand a profile that samples or watches events its own (``at``: each
        row's cell, the cells, each slice's rows)."""
        cell, _, own = at
        bins = self._bins.get(signal)
        if bins is None:
            binned = [j for j, p in enumerate(profiles) if p is not None and not (
                p.changes is not None or p.sample_size) and signal in p.edges]
            bins = self._bins[signal] = _Bins(
                binned, [profiles[j].edges[signal] for j in binned])
            bins.handed = [j for j, p in enumerate(profiles) if p is not None and (
                p.changes is not None or p.sample_size)]
        if bins.handed:
            handed = set(bins.handed)
            for number, rows in own:
                if number in handed:
                    mine = values[rows]
                    self._later("hand", (number, signal), None,
                                mine[present[rows]] if present is not None else mine)
        if bins.parts:
            if present is not None:
                values, cell = values[present], cell[present]
            if values.size:
                self._later("bins", signal, cell, values)

    def _drain(self) -> None:
        """Count the rows kept so far by cell (in one pass per field)."""
        c = len(self.codes)
        for (kind, name), kept in self._pending.items():
            cell = np.concatenate([k[0] for k in kept]) if kind != "hand" else None
            values = None if kind == "count" else np.concatenate([k[1] for k in kept])
            if kind == "count":
                assert cell is not None
                self._counts[name] = _grown(self._counts.get(name), c) + np.bincount(
                    cell, minlength=c)
            elif kind == "hand":   # in order, as the batches came
                number, signal = name
                self.parts[number].profile.add(signal, values)  # type: ignore[union-attr]
            else:
                assert cell is not None and values is not None
                if kind == "sketch":
                    self._sketches.setdefault(name, _Sketch()).add(cell, c, values)
                elif kind == "moment":
                    self._moments.setdefault(name, _Moments()).add(cell, c, values)
                elif kind == "category":
                    self._categories[name].add(cell, c, values)
                else:
                    self._bins[name].add(cell, c, values)
        self._pending.clear()
        self._pending_events = 0

    def roll_up(self) -> None:
        """Add every cell's sums to the slices it is in; start the cells afresh."""
        self._drain()
        c = len(self.codes)
        if not c:
            self._clear()
            return
        parts = self.parts
        member = np.zeros((len(parts), c))
        codes = np.array(self.codes, dtype=np.int64)
        radix = self._radix
        scale = 1
        while scale <= codes.max():
            which = codes // scale % radix
            cells = np.flatnonzero(which)
            member[which[cells] - 1, cells] = 1.0
            scale *= radix
        sums = self._counts
        count = _rolled(member, sums["count"], c)
        rolled = {name: _rolled(member, values, c) for name, values in sums.items()}
        zeros = [0] * len(parts)
        failed, low = rolled.get("failed", zeros), rolled.get("low", zeros)
        known, hits = rolled.get("known"), rolled.get("hits")
        for j, part in enumerate(parts):
            if count[j]:
                part.count += count[j]
                part.error_count += failed[j]
                part.low_confidence += low[j]
                if known is not None and hits is not None:
                    part.cache_known += known[j]
                    part.cache_hits += hits[j]
        sketches = self._sketches
        for name, field in (("latency", "latency"), ("confidence", "confidence"),
                            ("tokens_in", "llm_tokens_in"), ("tokens_out", "llm_tokens_out"),
                            ("cost", "llm_cost")):
            sketch = sketches.get(name)
            if sketch is not None:
                totals = sketch.roll_up(member, [getattr(p, field) for p in parts])
                if name == "tokens_in":
                    for part, total in zip(parts, totals, strict=True):
                        part.tokens_in += round(total)
                elif name == "tokens_out":
                    for part, total in zip(parts, totals, strict=True):
                        part.tokens_out += round(total)
                elif name == "cost":
                    for part, total in zip(parts, totals, strict=True):
                        part.cost_usd += total
        if "requests" in rolled:
            for part, requests in zip(parts, rolled["requests"], strict=True):
                part.llm_requests += requests
        moments = self._moments.get("o:prediction")
        if moments is not None:
            moments.roll_up(member, [p.prediction_values for p in parts])
        categories = self._categories.get("")
        if categories is not None:
            for part, found in zip(parts, categories.roll_up(member), strict=True):
                if found:
                    part.predictions.add_counts(found)
        profiles = [p.profile for p in parts]
        for signal in ("o:latency_ms", "o:confidence", "o:error", "o:prediction"):
            bins = self._bins.get(signal)
            if bins is not None:
                bins.roll_up(member, profiles, signal)
        for feature, is_numeric in self._features.items():
            if not is_numeric:
                categories = self._categories.get(feature)
                if categories is not None:
                    for part, found, n in zip(parts, categories.roll_up(member),
                                              categories.rows(member), strict=True):
                        _add_categories(part, feature, n, found)
                continue
            moments = self._moments.get("f:" + feature)
            if moments is None:
                continue
            n_of = moments.rows(member)
            named = [part.feature(feature, n) if n else (feature, None)
                     for part, n in zip(parts, n_of, strict=True)]
            stats = []
            for (_, s), n in zip(named, n_of, strict=True):
                if s is not None:
                    if s.numeric is None:
                        s.numeric = NumericStats()
                    s.count += n
                stats.append(s.numeric if s is not None else None)
            moments.roll_up(member, stats)
            bins = self._bins.get("f:" + feature)
            if bins is not None:   # (a feature counted under another name: not binned)
                bins.roll_up(member, [p if name == feature else None for p, (name, _) in
                                      zip(profiles, named, strict=True)], "f:" + feature)
        self._clear()


def _grown(array: np.ndarray | None, rows: int) -> np.ndarray:
    """``array`` (None: none) with at least ``rows`` rows, the new ones zeros."""
    if array is None:
        return np.zeros(rows, dtype=np.int64)
    if array.shape[0] >= rows:
        return array
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[:array.shape[0]] = array
    return out


def _rolled(member: np.ndarray, per_cell: np.ndarray, c: int) -> list[int]:
    """Per slice, the sum of its cells' counts."""
    return np.rint(member @ _grown(per_cell, c).astype(np.float64)).astype(np.int64).tolist()


class _Sketch:
    """Per cell, a quantile sketch's buckets and totals (see :class:`Cells`)."""

    def __init__(self) -> None:
        self.count = self.nonzero = np.zeros(0, dtype=np.int64)
        self.total = self.low = self.high = np.zeros(0)
        self.base = 0
        self.grid: np.ndarray | None = None

    def add(self, cell: np.ndarray, c: int, values: np.ndarray) -> None:
        if not values.size:
            return
        positive = values > QuantileSketch._mapping.min_possible
        self.count = _grown(self.count, c) + np.bincount(cell, minlength=c)
        self.nonzero = _grown(self.nonzero, c) + np.bincount(cell[positive], minlength=c)
        self.total = _grown(self.total.astype(np.float64), c) + np.bincount(
            cell, weights=values, minlength=c)
        low, high = np.full(c, np.inf), np.full(c, -np.inf)
        np.minimum.at(low, cell, values)
        np.maximum.at(high, cell, values)
        self.low = np.minimum(_filled(self.low, c, np.inf), low)
        self.high = np.maximum(_filled(self.high, c, -np.inf), high)
        if positive.any():
            base, grid = QuantileSketch.bucket_grid(cell[positive], c, values[positive])
            if self.grid is None:
                self.base, self.grid = base, grid
                return
            lo = min(self.base, base)
            hi = max(self.base + self.grid.shape[1], base + grid.shape[1])
            if (lo, hi) == (self.base, self.base + self.grid.shape[1]) and (
                    self.grid.shape[0] >= c):   # within the buckets so far: in place
                self.grid[:c, base - lo:base - lo + grid.shape[1]] += grid
                return
            out = np.zeros((max(c, self.grid.shape[0]), hi - lo), dtype=np.int64)
            out[:self.grid.shape[0], self.base - lo:self.base - lo + self.grid.shape[1]] = (
                self.grid)
            out[:c, base - lo:base - lo + grid.shape[1]] += grid
            self.base, self.grid = lo, out

    def roll_up(self, member: np.ndarray, sketches: list[QuantileSketch]) -> list[float]:
        """Add each slice's cells to its sketch; returns the sums of its values."""
        c = member.shape[1]
        if not self.count.size:
            return [0.0] * len(sketches)
        count = _rolled(member, self.count, c)
        nonzero = _rolled(member, self.nonzero, c)
        sums = (member @ _grown(self.total, c)).tolist()
        inside = member > 0
        lows = np.where(inside, _filled(self.low, c, np.inf), np.inf).min(axis=1).tolist()
        highs = np.where(inside, _filled(self.high, c, -np.inf), -np.inf).max(axis=1).tolist()
        grid = None if self.grid is None else np.rint(
            member @ _grown(self.grid, c).astype(np.float64)).astype(np.int64)
        for j, sketch in enumerate(sketches):
            if count[j]:
                sketch.add_bucketed(
                    self.base, grid[j] if grid is not None and nonzero[j] else None,
                    values=count[j], zeros=count[j] - nonzero[j], total=sums[j],
                    low=lows[j], high=highs[j])
        return sums


def _filled(array: np.ndarray, rows: int, fill: float) -> np.ndarray:
    """``array`` with at least ``rows`` entries, the new ones ``fill``."""
    if array.size >= rows:
        return array
    return np.concatenate([array, np.full(rows - array.size, fill)])


class _Moments:
    """Per cell, the count, mean, squared deviations, least and greatest of a field's
    values (merged batch by batch as :class:`~mlpulse.sketches.NumericStats` merges)."""

    def __init__(self) -> None:
        self.n = self.mean = self.m2 = self.low = self.high = np.zeros(0)

    def add(self, cell: np.ndarray, c: int, values: np.ndarray) -> None:
        n_b = np.bincount(cell, minlength=c).astype(np.float64)
        mean_b = np.bincount(cell, weights=values, minlength=c) / np.maximum(n_b, 1)
        deviations = values - mean_b[cell]
        m2_b = np.bincount(cell, weights=deviations * deviations, minlength=c)
        low, high = np.full(c, np.inf), np.full(c, -np.inf)
        np.minimum.at(low, cell, values)
        np.maximum.at(high, cell, values)
        n, mean, m2 = _grown(self.n, c), _grown(self.mean, c), _grown(self.m2, c)
        total = n + n_b
        delta = mean_b - mean
        self.mean = mean + delta * n_b / np.maximum(total, 1)
        self.m2 = m2 + m2_b + delta * delta * n * n_b / np.maximum(total, 1)
        self.n = total
        self.low = np.minimum(_filled(self.low, c, np.inf), low)
        self.high = np.maximum(_filled(self.high, c, -np.inf), high)

    def rows(self, member: np.ndarray) -> list[int]:
        """Per slice, its values."""
        return _rolled(member, self.n, member.shape[1])

    def roll_up(self, member: np.ndarray, stats: list[NumericStats | None]) -> None:
        """Merge each slice's cells into its moments."""
        c = member.shape[1]
        n_cell, mean_cell = _grown(self.n, c), _grown(self.mean, c)
        n = member @ n_cell
        mean = (member @ (n_cell * mean_cell)) / np.maximum(n, 1)
        spread = (mean_cell[None, :] - mean[:, None]) ** 2 * member
        m2 = member @ _grown(self.m2, c) + spread @ n_cell
        inside = member > 0
        lows = np.where(inside, _filled(self.low, c, np.inf), np.inf).min(axis=1).tolist()
        highs = np.where(inside, _filled(self.high, c, -np.inf), -np.inf).max(axis=1).tolist()
        counts = np.rint(n).astype(np.int64).tolist()
        for j, (s, count) in enumerate(zip(stats, counts, strict=True)):
            if s is not None and count:
                s._merge(count, float(mean[j]), float(m2[j]), lows[j], highs[j])


class _Categories:
    """Per cell, a column's values counted by key (in the order they first came)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.table = np.zeros((0, 0), dtype=np.int64)

    def number(self, coded: Coded) -> np.ndarray:
        """Each row's value numbered as this column's keys."""
        index = self.index
        at = np.array([index.setdefault(key, len(index)) for key in coded.keys],
                      dtype=np.int64)
        if len(index) > len(self.keys):
            self.keys = list(index)
        return at[coded.codes]

    def add(self, cell: np.ndarray, c: int, numbers: np.ndarray) -> None:
        """Count rows (``numbers``: their values', :meth:`number`) by cell."""
        m = len(self.keys)
        per_cell = np.bincount(cell * m + numbers, minlength=c * m).reshape(c, m)
        table = self.table
        if table.shape != (max(c, table.shape[0]), m):
            grown = np.zeros((max(c, table.shape[0]), m), dtype=np.int64)
            grown[:table.shape[0], :table.shape[1]] = table
            table = grown
        table[:c] += per_cell
        self.table = table

    def rows(self, member: np.ndarray) -> list[int]:
        """Per slice, its values."""
        return _rolled(member, self.table.sum(axis=1), member.shape[1])

    def roll_up(self, member: np.ndarray) -> list[dict[str, int]]:
        """Per slice, its values counted by key."""
        table = _grown(self.table, member.shape[1]).astype(np.float64)
        return Coded(self.keys, np.zeros(0, dtype=np.intp)).spelled(
            np.rint(member @ table).astype(np.int64))


class _Bins:
    """Per cell, a signal's values counted on the union of the edges of the slices that
    bin it (``parts``)."""

    def __init__(self, parts: list[int], edges: list[np.ndarray]) -> None:
        self.parts = parts
        self.handed: list[int] = []
        """The slices whose profiles sample or watch events: handed their values."""
        self.edges = edges
        self.union = np.unique(np.concatenate(edges)) if edges else np.zeros(0)
        self.table = np.zeros((0, self.union.size + 1), dtype=np.int64)

    def add(self, cell: np.ndarray, c: int, values: np.ndarray) -> None:
        width = self.union.size + 1
        per_cell = np.bincount(cell * width + np.searchsorted(self.union, values, "right"),
                               minlength=c * width).reshape(c, width)
        self.table = _grown(self.table, c)
        self.table[:c] += per_cell

    def roll_up(self, member: np.ndarray, profiles: list[Any], signal: str) -> None:
        """Add each binned slice's counts onto its own edges."""
        if not self.table.size:
            return
        table = member[self.parts] @ _grown(self.table, member.shape[1]).astype(np.float64)
        for row, j, own_edges in zip(table, self.parts, self.edges, strict=True):
            if profiles[j] is not None and row.any():
                onto = np.concatenate(([0], np.searchsorted(own_edges, self.union, "right")))
                profiles[j].add_binned(signal, np.rint(np.bincount(
                    onto, weights=row, minlength=own_edges.size + 1)).astype(np.int64))


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
    unreported = np.isnan(arrays[0]) & np.isnan(arrays[1]) & np.isnan(arrays[2])
    requests = (sizes - np.bincount(group, weights=unreported, minlength=k)).astype(
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
