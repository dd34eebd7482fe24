"""General mergeable sketches of numbers and values, fed one batch at a time with numpy.

No raw values are kept: counts, moments, bounded counters and DDSketch quantile sketches;
two sketches of the same window merge. The domain aggregates of
:mod:`mlpulse.aggregates` are built from them.

>>> stats = NumericStats()
>>> stats.add_many(np.array([1.0, 2.0, 3.0]))
>>> stats.add_many(np.array([4.0]))
>>> stats.count, stats.mean, round(stats.std, 6), stats.min, stats.max
(4, 2.5, 1.118034, 1.0, 4.0)
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ddsketch.mapping import LogarithmicMapping

__all__ = ["OTHER", "RELATIVE_ACCURACY", "BoundedCounter", "NumericStats", "QuantileSketch",
           "stable", "value_key"]

OTHER = "__other__"
"""The value that stands for every value a bounded counter folded."""
RELATIVE_ACCURACY = 0.005
"""DDSketch accuracy: half of the 1% the contract promises, for margin."""
_STR = {str}
_NUMBERS = {int, float}


def stable(value: float) -> float:
    """``value`` to 12 significant digits: sums and means that depend on how the events
    were split into batches (a window rebuilt from a checkpoint and a replay) come out the
    same, and telemetry loses nothing by it.

    >>> stable(0.4946075000000001) == stable(0.49460750000000003) == 0.4946075
    True
    """
    return float(f"{value:.12g}") if math.isfinite(value) else value



class QuantileSketch:
    """DDSketch (relative-error quantiles): ddsketch's logarithmic mapping, bucket counts in
    one numpy array (the library's store keeps a Python list of float objects: ~10 KB per
    latency sketch, twice per open window of every series) filled a batch at a time.

    >>> sketch = QuantileSketch()
    >>> sketch.add_many(np.arange(1.0, 101.0))
    >>> abs(sketch.quantile(0.5) - 50) / 50 < 0.01
    True
    """

    __slots__ = ("_base", "_count", "_counts", "_max", "_min", "_sum", "_zero_count")
    _mapping = LogarithmicMapping(RELATIVE_ACCURACY)

    def __init__(self) -> None:
        self._base = 0
        """Key of ``_counts[0]``."""
        self._counts = _NO_COUNTS
        self._zero_count = 0
        """Values too small for a bucket (zeros)."""
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def count(self) -> float:
        return float(self._count)

    def add_many(self, values: np.ndarray) -> None:
        """Add non-negative values (smaller ones count as zeros)."""
        if values.size == 0:
            return
        mapping = self._mapping
        positive = values[values > mapping.min_possible]
        if positive.size:
            keys = self.keys_of(positive)
            self._add_keys(int(keys.min()), np.bincount(keys - keys.min()))
        self._zero_count += values.size - positive.size
        self._count += values.size
        self._sum += float(values.sum())
        self._min = min(self._min, float(values.min()))
        self._max = max(self._max, float(values.max()))

    @classmethod
    def keys_of(cls, positive: np.ndarray) -> np.ndarray:
        """The bucket key of each value (above the mapping's least): ``LogarithmicMapping.key``
        vectorised, ``ceil(log2(v) * multiplier) + offset``.

        >>> mapping = QuantileSketch._mapping
        >>> values = np.array([0.5, 1.0, 20.0, 1e6])
        >>> QuantileSketch.keys_of(values).tolist() == [mapping.key(v) for v in values]
        True
        """
        mapping = cls._mapping
        return (np.ceil(np.log2(positive) * mapping._multiplier)
                + mapping._offset).astype(np.int64)

    @classmethod
    def add_parts(cls, sketches: list[QuantileSketch], values: np.ndarray,
                  sizes: np.ndarray) -> None:
        """Add ``values`` to ``sketches``: the first ``sizes[0]`` to the first, and so on
        (each a slice's; one numpy pass for all of them, then a few scalar updates each).

        >>> one, two, alone = QuantileSketch(), QuantileSketch(), QuantileSketch()
        >>> QuantileSketch.add_parts([one, two], np.array([0.0, 5.0, 1.0, 2.0, 3.0]),
        ...                          np.array([2, 3]))
        >>> alone.add_many(np.array([1.0, 2.0, 3.0]))
        >>> two.state() == alone.state(), one.state()[2:4]
        (True, [1, 2])
        """
        if values.size == 0:
            return
        k = len(sketches)
        group = np.repeat(np.arange(k), sizes)
        mapping = cls._mapping
        positive = values > mapping.min_possible
        nonzero = np.bincount(group[positive], minlength=k).tolist()
        sums = np.bincount(group, weights=values, minlength=k).tolist()
        filled = np.flatnonzero(sizes)
        starts = (np.cumsum(sizes) - sizes)[filled]
        lows = np.minimum.reduceat(values, starts).tolist()
        highs = np.maximum.reduceat(values, starts).tolist()
        grid, base = None, 0
        if positive.any():
            base, grid = cls.bucket_grid(group[positive], k, values[positive])
        counts = sizes.tolist()
        for i, j in enumerate(filled.tolist()):
            sketches[j].add_bucketed(
                base, grid[j] if grid is not None and nonzero[j] else None, values=counts[j],
                zeros=counts[j] - nonzero[j], total=sums[j], low=lows[i], high=highs[i])

    def add_bucketed(self, base: int, counts: np.ndarray | None, *, values: int, zeros: int,
                     total: float, low: float, high: float) -> None:
        """Add ``values`` values counted already: ``counts`` per bucket from key ``base``
        (None: none positive), ``zeros`` of them zeros, summing to ``total``, from ``low``
        to ``high``."""
        if counts is not None:
            self._add_keys(base, counts)
        self._zero_count += zeros
        self._count += values
        self._sum += total
        self._min = min(self._min, low)
        self._max = max(self._max, high)

    @classmethod
    def bucket_grid(cls, group: np.ndarray, groups: int, positive: np.ndarray
                    ) -> tuple[int, np.ndarray]:
        """The bucket counts of ``positive`` values (above the mapping's least) per group
        (``group``: each value's, of ``groups``): ``(base, groups × keys from base)``.

        >>> base, grid = QuantileSketch.bucket_grid(np.array([0, 1, 1]), 2,
        ...                                         np.array([1.0, 1.0, 100.0]))
        >>> grid.sum(axis=1).tolist(), int(grid[1, 0])
        ([1, 2], 1)
        """
        keys = cls.keys_of(positive)
        base = int(keys.min())
        width = int(keys.max()) - base + 1
        return base, np.bincount(group * width + (keys - base),
                                 minlength=groups * width).reshape(groups, width)

    def _add_keys(self, base: int, counts: np.ndarray) -> None:
        """Add ``counts[i]`` values to the bucket of key ``base + i``."""
        if not self._counts.size:
            self._base, self._counts = base, counts.astype(np.int64)
            return
        lo = min(self._base, base)
        hi = max(self._base + self._counts.size, base + counts.size)
        if lo < self._base or hi > self._base + self._counts.size:
            grown = np.zeros(hi - lo, dtype=np.int64)
            grown[self._base - lo: self._base - lo + self._counts.size] = self._counts
            self._base, self._counts = lo, grown
        self._counts[base - self._base: base - self._base + counts.size] += counts

    def merge(self, other: QuantileSketch) -> None:
        if other._counts.size:
            self._add_keys(other._base, other._counts)
        self._zero_count += other._zero_count
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def quantile(self, q: float) -> float:
        """DDSketch's ``get_quantile_value``: the bucket holding rank ``q * (count - 1)``."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """:meth:`quantile` of each of ``qs``, the cumulative counts summed once
        (:meth:`quantiles_of` this sketch alone).

        >>> sketch = QuantileSketch()
        >>> sketch.add_many(np.arange(0.0, 100.0))
        >>> sketch.quantiles([0.0, 0.5, 0.99]) == [sketch.quantile(q) for q in (0.0, 0.5, 0.99)]
        True
        """
        return self.quantiles_of([(self, list(qs))])[0]

    @staticmethod
    def quantiles_of(asked: list[tuple[QuantileSketch, Sequence[float]]]) -> list[list[float]]:
        """:meth:`quantiles` of each sketch asked, at its own ``qs`` (a window's and its
        slices' sketches): their buckets' counts end to end, summed once, and every rank
        found in one search (each rank moved past the sketches before its own: integers,
        exact).

        >>> rng = np.random.default_rng(1)
        >>> sketches = [QuantileSketch() for _ in range(4)]
        >>> for i, sketch in enumerate(sketches[1:]):
        ...     sketch.add_many(rng.lognormal(i, 1, 50 * (i + 1)))
        >>> sketches[3].add_many(np.zeros(400))   # mostly zeros
        >>> qs = [(0.05, 0.5, 0.99), (0.5,), (0.5, 0.95), (0.05, 0.99)]
        >>> found = QuantileSketch.quantiles_of(list(zip(sketches, qs)))
        >>> found[1:] == [s.quantiles(q) for s, q in zip(sketches[1:], qs[1:])], found[0]
        (True, [nan, nan, nan])
        """
        n = len(asked)
        lengths = [len(qs) for _, qs in asked]
        q = np.fromiter(itertools.chain.from_iterable(qs for _, qs in asked), dtype=np.float64,
                        count=sum(lengths))
        count = np.fromiter([s._count for s, _ in asked], dtype=np.int64, count=n)
        zeros = np.fromiter([s._zero_count for s, _ in asked], dtype=np.int64, count=n)
        size = np.fromiter([s._counts.size for s, _ in asked], dtype=np.int64, count=n)
        which = np.repeat(np.arange(n), lengths)
        valid = (q >= 0) & (q <= 1)
        out = np.where(valid & (count[which] > 0), 0.0, np.nan)   # (0.0: a zero's rank)
        held = (count > 0) & (size > 0)
        position = q * (count[which] - 1)
        wanted = np.flatnonzero(valid & held[which] & (position >= zeros[which]))
        if wanted.size:
            # each sketch's buckets after those of the sketches before it that hold any
            positive, sizes = np.where(held, count - zeros, 0), np.where(held, size, 0)
            before, first = np.cumsum(positive) - positive, np.cumsum(sizes) - sizes
            of = which[wanted]
            # searchsorted(cumsum, rank, "right") counts the sums <= rank: an integer sum
            # is <= rank where it is <= floor(rank)
            rank = before[of] + np.floor(position[wanted] - zeros[of]).astype(np.int64)
            cumulative = np.cumsum(np.concatenate(
                [s._counts for (s, _), h in zip(asked, held.tolist(), strict=True) if h]))
            index = np.searchsorted(cumulative, rank, side="right")
            base = np.fromiter([s._base for s, _ in asked], dtype=np.int64, count=n)
            out[wanted] = [_value(key) for key in (
                base[of] + np.minimum(index - first[of], size[of] - 1)).tolist()]
        values = out.tolist()
        return [values[end - length:end]
                for end, length in zip(itertools.accumulate(lengths), lengths, strict=True)]

    def count_above(self, value: float) -> int:
        """How many values lie in buckets above the one ``value`` falls in.

        >>> sketch = QuantileSketch()
        >>> sketch.add_many(np.arange(0.0, 100.0))
        >>> sketch.count_above(89.5)   # 91 to 99: 90 shares 89.5's bucket
        9
        """
        if value < self._mapping.min_possible:
            return self._count - self._zero_count
        key = self._mapping.key(value)
        first = max(key + 1 - self._base, 0)
        return int(self._counts[first:].sum())

    @staticmethod
    def shared_counts(one: QuantileSketch, two: QuantileSketch, bins: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The counts of two sketches on at most ``bins`` shared bins: their buckets
        (they share the mapping) grouped at the pooled quantiles, zeros in the first.

        >>> a, b = QuantileSketch(), QuantileSketch()
        >>> a.add_many(np.linspace(1, 10, 100)); b.add_many(np.linspace(5, 50, 100))
        >>> counts_a, counts_b = QuantileSketch.shared_counts(a, b, 4)
        >>> counts_a.tolist(), counts_b.tolist()
        ([49.0, 41.0, 10.0, 0.0], [1.0, 9.0, 40.0, 50.0])
        """
        lo = min(s._base for s in (one, two) if s._counts.size) if (
            one._counts.size or two._counts.size) else 0
        hi = max((s._base + s._counts.size for s in (one, two) if s._counts.size), default=0)
        grid = np.zeros((2, max(hi - lo, 0) + 1), dtype=np.float64)
        for row, sketch in enumerate((one, two)):
            grid[row, 0] = sketch._zero_count
            start = sketch._base - lo + 1
            grid[row, start:start + sketch._counts.size] = sketch._counts
        cumulative = np.cumsum(grid.sum(axis=0))
        if not cumulative.size or cumulative[-1] == 0:
            return grid[0, :1], grid[1, :1]
        cuts = np.searchsorted(cumulative, cumulative[-1] * np.arange(1, bins) / bins,
                               side="left") + 1
        starts = np.unique(np.concatenate([[0], cuts[cuts < grid.shape[1]]]))
        grouped = np.add.reduceat(grid, starts, axis=1)
        return grouped[0], grouped[1]

    @property
    def mean(self) -> float:
        return self._sum / self._count if self._count else float("nan")

    @property
    def max(self) -> float:
        return float(self._max)

    def state(self) -> list[Any]:
        """Plain data (msgpack-ready): the key of the first bucket and the dense bucket
        counts (small integers: a byte each in msgpack, and one C call to list; pairs of
        the non-empty buckets took a Python loop per bucket, most of a checkpoint's time),
        an always-empty store of negatives (the layout of ddsketch's two stores), and the
        totals.

        >>> sketch = QuantileSketch()
        >>> sketch.add_many(np.array([0.0, 1.0, 1.0, 5.0]))
        >>> QuantileSketch.from_state(sketch.state()).state() == sketch.state()
        True
        """
        counts = self._counts
        if counts.size:   # trimmed to the non-empty range (a merge may have grown it)
            nonzero = np.flatnonzero(counts)
            first, last = (int(nonzero[0]), int(nonzero[-1])) if nonzero.size else (0, -1)
            return [self._base + first, counts[first:last + 1].tolist(), self._zero_count,
                    self._count, self._sum, self._min, self._max]
        return [0, [], self._zero_count, self._count, self._sum, self._min, self._max]

    @classmethod
    def from_state(cls, state: list[Any]) -> QuantileSketch:
        """A sketch from :meth:`state` (or from the (key, count) pairs earlier versions
        stored).

        >>> old = [[[10, 2], [12, 1]], [], 0, 3, 30.0, 9.9, 10.5]
        >>> QuantileSketch.from_state(old).state()[:2]
        [10, [2, 0, 1]]
        """
        out = cls()
        first, buckets, zeros, out._count, out._sum, out._min, out._max = state
        out._zero_count = int(zeros)
        out._count = int(out._count)
        if isinstance(first, list):   # pairs of (key, count)
            if first:
                keys = np.array([int(k) for k, _ in first], dtype=np.int64)
                counts = np.zeros(int(keys.max() - keys.min()) + 1, dtype=np.int64)
                np.add.at(counts, keys - keys.min(), [int(c) for _, c in first])
                out._base, out._counts = int(keys.min()), counts
        elif buckets:
            out._base, out._counts = int(first), np.array(buckets, dtype=np.int64)
        return out


_NO_COUNTS = np.zeros(0, dtype=np.int64)


@functools.lru_cache(maxsize=65536)
def _value(key: int) -> float:
    """The value a DDSketch bucket key stands for (``LogarithmicMapping.value``, remembered:
    a window's quantiles fall in the same few hundred buckets, window after window)."""
    return float(QuantileSketch._mapping.value(key))


class NumericStats:
    """Count, mean, variance (Chan et al. merge), min and max."""

    __slots__ = ("_m2", "count", "max", "mean", "min")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add_many(self, values: np.ndarray) -> None:
        n = int(values.size)
        if n == 0:
            return
        mean = float(values.sum()) / n   # what ndarray.mean computes, without its wrapper
        deviations = values - mean
        m2 = float(deviations @ deviations)
        self._merge(n, mean, m2, float(values.min()), float(values.max()))

    @staticmethod
    def add_parts(stats: list[NumericStats], values: np.ndarray, sizes: np.ndarray) -> None:
        """Add ``values`` to ``stats``: the first ``sizes[0]`` to the first, and so on (one
        numpy pass for all of them).

        >>> one, two, alone = NumericStats(), NumericStats(), NumericStats()
        >>> NumericStats.add_parts([one, two], np.array([9.0, 1.0, 2.0, 3.0]), np.array([1, 3]))
        >>> alone.add_many(np.array([1.0, 2.0, 3.0]))
        >>> two.state() == alone.state(), one.state()
        (True, [1, 9.0, 0.0, 9.0, 9.0])
        """
        if values.size == 0:
            return
        k = len(stats)
        group = np.repeat(np.arange(k), sizes)
        counts = np.maximum(sizes, 1)
        means = np.bincount(group, weights=values, minlength=k) / counts
        deviations = values - means[group]
        m2s = np.bincount(group, weights=deviations * deviations, minlength=k).tolist()
        filled = np.flatnonzero(sizes)
        starts = (np.cumsum(sizes) - sizes)[filled]
        lows = np.minimum.reduceat(values, starts).tolist()
        highs = np.maximum.reduceat(values, starts).tolist()
        n, mean = sizes.tolist(), means.tolist()
        for i, j in enumerate(filled.tolist()):
            stats[j]._merge(n[j], mean[j], m2s[j], lows[i], highs[i])

    def state(self) -> list[float]:
        return [self.count, self.mean, self._m2, self.min, self.max]

    @classmethod
    def from_state(cls, state: list[float]) -> NumericStats:
        out = cls()
        count, out.mean, out._m2, out.min, out.max = state
        out.count = int(count)
        return out

    def merge(self, other: NumericStats) -> None:
        if other.count:
            self._merge(other.count, other.mean, other._m2, other.min, other.max)

    def _merge(self, n: int, mean: float, m2: float, lo: float, hi: float) -> None:
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self._m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(self._m2 / self.count) if self.count else 0.0


class BoundedCounter:
    """Counts of at most ``max_keys`` distinct values; the rest are counted as ``__other__``.

    >>> c = BoundedCounter(max_keys=2)
    >>> c.add_many(["a", "b", "a", "c"])
    >>> c.top(1)
    {'a': 2, '__other__': 2}
    """

    __slots__ = ("counts", "max_keys", "other")

    def __init__(self, max_keys: int = 1000) -> None:
        self.counts: dict[str, int] = {}
        self.other = 0
        self.max_keys = max_keys

    def add_many(self, values: Iterable[str]) -> None:
        self.add_counts(Counter(values))

    def add_values(self, values: list[object], kinds: set[type] | None = None) -> None:
        """Count raw JSON values (spelled by :func:`value_key`): counted first, spelled once.
        ``kinds``: their types, if the caller has them already.

        >>> c = BoundedCounter()
        >>> c.add_values([1.0, True, "a", 1.0, None])
        >>> c.add_values(["a", "b"])
        >>> c.counts
        {'1': 2, 'true': 1, 'a': 2, 'null': 1, 'b': 1}
        """
        if kinds is None:
            kinds = set(map(type, values))
        if kinds == _STR:   # the usual class labels: each its own key
            self.add_counts(Counter(values))  # type: ignore[arg-type]
            return
        if bool in kinds and not kinds.isdisjoint(_NUMBERS):
            # (type, value) keeps True apart from 1.0, which hash alike
            counted: Iterable[tuple[object, int]] = (
                (v, n) for (_, v), n in Counter((v.__class__, v) for v in values).items())
        else:
            counted = Counter(values).items()
        counts: dict[str, int] = {}
        for value, n in counted:
            key = value_key(value)
            counts[key] = counts.get(key, 0) + n
        self.add_counts(counts)

    def add_counts(self, new: dict[str, int]) -> None:
        counts = self.counts
        for value, n in new.items():
            if value in counts:
                counts[value] += n
            elif len(counts) < self.max_keys:
                counts[sys.intern(value)] = n   # one string per value, not one per window
            else:
                self.other += n

    def merge(self, other: BoundedCounter) -> None:
        self.add_counts(other.counts)
        self.other += other.other

    def state(self) -> list[Any]:
        return [self.counts, self.other, self.max_keys]

    @classmethod
    def from_state(cls, state: list[Any]) -> BoundedCounter:
        counts, other, max_keys = state
        out = cls(max_keys)
        out.counts = {sys.intern(k): n for k, n in counts.items()}
        out.other = other
        return out

    def top(self, k: int) -> dict[str, int]:
        """The ``k`` most frequent values, then ``__other__`` for the rest (if any)."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        out = dict(ranked[:k])
        other = self.other + sum(n for _, n in ranked[k:])
        if other:
            out[OTHER] = out.get(OTHER, 0) + other
        return out


def value_key(value: object) -> str:
    """Text key of a categorical value: JSON spelling, integral floats without ``.0``.

    >>> [value_key(v) for v in (True, None, 3.0, 0.25, "x")]
    ['true', 'null', '3', '0.25', 'x']
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is float:
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return str(value)
