"""Mergeable per-window statistics, fed one batch at a time with numpy.

No raw events are kept: each aggregate holds counts, moments, bounded counters
and DDSketch quantile sketches, and two aggregates of the same window merge.

>>> stats = NumericStats()
>>> stats.add_many(np.array([1.0, 2.0, 3.0]))
>>> stats.add_many(np.array([4.0]))
>>> stats.count, stats.mean, round(stats.std, 6), stats.min, stats.max
(4, 2.5, 1.118034, 1.0, 4.0)
"""

from __future__ import annotations

import itertools
import math
import operator
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
from ddsketch.mapping import LogarithmicMapping

from .events import (
    ERROR_LEVELS,
    LOG_LEVELS,
    ConfidenceSummary,
    FeatureSummary,
    LatencySummary,
    LogEvent,
    LogWindow,
    PredictionEvent,
    PredictionWindow,
)

__all__ = [
    "OTHER",
    "BoundedCounter",
    "FeatureStats",
    "LogAggregate",
    "NumericStats",
    "PredictionAggregate",
    "QuantileSketch",
    "value_key",
]

OTHER = "__other__"
RELATIVE_ACCURACY = 0.005
"""DDSketch accuracy: half of the 1% the contract promises, for margin."""
_MISSING = object()
TRACE_SAMPLE = 5
"""Trace ids kept per window as exemplars."""


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
            # LogarithmicMapping.key, vectorised: ceil(log2(v) * multiplier) + offset
            keys = (np.ceil(np.log2(positive) * mapping._multiplier)
                    + mapping._offset).astype(np.int64)
            self._add_keys(int(keys.min()), np.bincount(keys - keys.min()))
        self._zero_count += values.size - positive.size
        self._count += values.size
        self._sum += float(values.sum())
        self._min = min(self._min, float(values.min()))
        self._max = max(self._max, float(values.max()))

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
        if not 0 <= q <= 1 or self._count == 0:
            return float("nan")
        rank = q * (self._count - 1)
        if rank < self._zero_count:
            return 0.0
        cumulative = np.cumsum(self._counts)
        index = int(np.searchsorted(cumulative, rank - self._zero_count, side="right"))
        key = self._base + min(index, self._counts.size - 1)
        return float(self._mapping.value(key))

    @property
    def mean(self) -> float:
        return self._sum / self._count if self._count else float("nan")

    @property
    def max(self) -> float:
        return float(self._max)

    def state(self) -> list[Any]:
        """Plain data (msgpack-ready): the non-empty buckets as (key, count) (then an
        always-empty store of negatives: the layout of ddsketch's two stores) and the
        totals."""
        keys = np.flatnonzero(self._counts)
        buckets = [[int(k), int(c)] for k, c in zip((keys + self._base).tolist(),
                                                    self._counts[keys].tolist(), strict=True)]
        return [buckets, [], self._zero_count, self._count, self._sum, self._min, self._max]

    @classmethod
    def from_state(cls, state: list[Any]) -> QuantileSketch:
        out = cls()
        positive, _negative, zeros, out._count, out._sum, out._min, out._max = state
        out._zero_count = int(zeros)
        out._count = int(out._count)
        if positive:
            keys = np.array([int(k) for k, _ in positive], dtype=np.int64)
            counts = np.zeros(int(keys.max() - keys.min()) + 1, dtype=np.int64)
            np.add.at(counts, keys - keys.min(), [int(c) for _, c in positive])
            out._base, out._counts = int(keys.min()), counts
        return out


_NO_COUNTS = np.zeros(0, dtype=np.int64)


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
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        self._merge(n, mean, m2, float(values.min()), float(values.max()))

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


class FeatureStats:
    """One feature's statistics in one window."""

    __slots__ = ("categories", "count", "null_count", "numeric")

    def __init__(self) -> None:
        self.count = 0
        self.null_count = 0
        self.numeric: NumericStats | None = None
        self.categories: BoundedCounter | None = None

    def add(
        self, numbers: np.ndarray, categories: list[object], nulls: int, max_keys: int,
        category_kinds: set[type] | None = None,
    ) -> None:
        self.count += numbers.size + len(categories) + nulls
        self.null_count += nulls
        if numbers.size:
            if self.numeric is None:
                self.numeric = NumericStats()
            self.numeric.add_many(numbers)
        if categories:
            if self.categories is None:
                self.categories = BoundedCounter(max_keys)
            self.categories.add_values(categories, category_kinds)

    def merge(self, other: FeatureStats) -> None:
        self.count += other.count
        self.null_count += other.null_count
        if other.numeric is not None:
            if self.numeric is None:
                self.numeric = NumericStats()
            self.numeric.merge(other.numeric)
        if other.categories is not None:
            if self.categories is None:
                self.categories = BoundedCounter(other.categories.max_keys)
            self.categories.merge(other.categories)

    def state(self) -> list[Any]:
        return [self.count, self.null_count,
                None if self.numeric is None else self.numeric.state(),
                None if self.categories is None else self.categories.state()]

    @classmethod
    def from_state(cls, state: list[Any]) -> FeatureStats:
        out = cls()
        out.count, out.null_count, numeric, categories = state
        out.numeric = None if numeric is None else NumericStats.from_state(numeric)
        out.categories = None if categories is None else BoundedCounter.from_state(categories)
        return out

    def summary(self, top_values: int) -> FeatureSummary:
        out = FeatureSummary(count=self.count, null_count=self.null_count)
        if self.numeric is not None and self.numeric.count:
            out.mean = stable(self.numeric.mean)
            out.std = stable(self.numeric.std)
            out.min = self.numeric.min
            out.max = self.numeric.max
        if self.categories is not None:
            out.top = self.categories.top(top_values)
        return out


class Profile(Protocol):
    def add(self, signal: str, values: np.ndarray) -> None: ...


class Labels(Protocol):
    def remember(self, events: Sequence[PredictionEvent], predictions: list[object],
                 kinds: set[type], /) -> None: ...


class PredictionAggregate:
    """Everything a prediction window summary reports, kept incrementally.

    A ``profile`` (the detectors' view of the window) is handed each numeric
    signal as an array: ``f:<feature>``, ``o:latency_ms``, ``o:confidence``,
    ``o:prediction`` (numeric predictions) and ``o:error`` (1.0 per failed event).
    ``labels`` (the label join's index of the window) is handed every batch. Features
    beyond ``max_features`` names are folded into ``__other__`` (cardinality guard).
    """

    def __init__(self, max_categories: int = 1000, top_values: int = 50,
                 profile: Profile | None = None, labels: Labels | None = None,
                 max_features: int = 200) -> None:
        self.profile = profile
        self.labels = labels
        self.max_features = max_features
        self.folded_features = 0
        """Feature values counted under ``__other__`` (beyond ``max_features`` names)."""
        self.max_categories = max_categories
        self.top_values = top_values
        self.count = 0
        self.error_count = 0
        self.latency = QuantileSketch()
        self.confidence = QuantileSketch()
        self.low_confidence = 0
        self.predictions = BoundedCounter(max_categories)
        self.error_types = BoundedCounter(max_categories)
        self.features: dict[str, FeatureStats] = {}
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self.cache_hits = 0
        self.cache_known = 0
        self.trace_ids: list[str] = []

    def add_batch(self, events: Sequence[PredictionEvent]) -> None:
        """Fold a batch of events of this window into the aggregate.

        Each field is read once for the whole batch (``map`` over ``attrgetter``, in C)
        and folded by C-speed builtins and numpy: a Python-level pass per field and
        event cost more than the rest of the aggregation.
        """
        n = len(events)
        self.count += n
        statuses = list(map(_STATUS, events))
        errors = n - statuses.count("ok")
        if errors:
            self.error_count += errors
            self.error_types.add_many(
                [e.error_type or "unknown" for e in events if e.status == "error"])
        latency = _floats(list(map(_LATENCY, events)))
        self.latency.add_many(latency)
        confidence = _floats(list(map(_CONFIDENCE, events)))
        self.confidence.add_many(confidence)
        predictions = list(map(_PREDICTION, events))
        prediction_kinds = set(map(type, predictions))
        if self.labels is not None:
            self.labels.remember(events, predictions, prediction_kinds)
        profile = self.profile
        if profile is not None:
            profile.add("o:latency_ms", latency)
            profile.add("o:confidence", confidence)
            profile.add("o:error", np.fromiter(map("error".__eq__, statuses), dtype=np.float64,
                                               count=n) if errors else np.zeros(n))
            profile.add("o:prediction", _numbers(predictions, prediction_kinds))
        self.low_confidence += int((confidence < 0.5).sum())
        self.predictions.add_values(predictions, prediction_kinds)
        # None and 0 add nothing: filter(None, ...) drops both
        self.tokens_in += sum(filter(None, map(_TOKENS_IN, events)))
        self.tokens_out += sum(filter(None, map(_TOKENS_OUT, events)))
        self.cost_usd += math.fsum(filter(None, map(_COST, events)))
        cache = list(map(_CACHE_HIT, events))
        self.cache_known += n - cache.count(None)
        self.cache_hits += cache.count(True)
        missing = TRACE_SAMPLE - len(self.trace_ids)
        if missing > 0:
            self.trace_ids.extend(itertools.islice(filter(None, map(_TRACE_ID, events)), missing))
        self._add_features(events)

    def _add_features(self, events: Sequence[PredictionEvent]) -> None:
        # column by column: one C-speed pass per feature instead of a Python loop per value
        profile = self.profile
        for feature, column in _columns(list(map(_FEATURES, events))):
            kinds = set(map(type, column))
            category_kinds = None
            if kinds == _FLOAT:
                values = np.fromiter(column, dtype=np.float64, count=len(column))
                categories: list[object] = []
                nulls = 0
            elif kinds == _STR:
                values, categories, nulls, category_kinds = _NO_VALUES, column, 0, kinds
            elif kinds <= _FLOAT_OR_NONE:   # numbers with nulls: the rest are the nulls
                values, categories = _floats(column), []  # type: ignore[arg-type]
                nulls = len(column) - values.size
            else:
                values = _numbers(column, kinds)
                nulls = column.count(None)
                categories = [v for v in column
                              if v is not None and v is not _MISSING and type(v) is not float]
            name = feature
            stats = self.features.get(name)
            if stats is None:
                if len(self.features) >= self.max_features and name != OTHER:
                    self.folded_features += len(column) - column.count(_MISSING)
                    name = OTHER
                    stats = self.features.get(name)
                if stats is None:
                    stats = self.features[sys.intern(name)] = FeatureStats()
            stats.add(values, categories, nulls, self.max_categories, category_kinds)
            if profile is not None and values.size:
                profile.add("f:" + name, values)

    def merge(self, other: PredictionAggregate) -> None:
        """Add another aggregate of the same window (e.g. from another batch)."""
        self.count += other.count
        self.error_count += other.error_count
        self.latency.merge(other.latency)
        self.confidence.merge(other.confidence)
        self.low_confidence += other.low_confidence
        self.predictions.merge(other.predictions)
        self.error_types.merge(other.error_types)
        for name, stats in other.features.items():
            self.features.setdefault(name, FeatureStats()).merge(stats)
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.cost_usd += other.cost_usd
        self.cache_hits += other.cache_hits
        self.cache_known += other.cache_known
        self.trace_ids = (self.trace_ids + other.trace_ids)[:TRACE_SAMPLE]

    def state(self) -> dict[str, Any]:
        """This aggregate as plain data (msgpack-ready), without its ``profile`` and
        ``labels``: their owners keep their own state."""
        return {
            "count": self.count, "error_count": self.error_count,
            "latency": self.latency.state(), "confidence": self.confidence.state(),
            "low_confidence": self.low_confidence, "predictions": self.predictions.state(),
            "error_types": self.error_types.state(),
            "features": {name: f.state() for name, f in self.features.items()},
            "folded_features": self.folded_features, "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out, "cost_usd": self.cost_usd,
            "cache_hits": self.cache_hits, "cache_known": self.cache_known,
            "trace_ids": list(self.trace_ids),
        }

    def restore(self, state: dict[str, Any]) -> PredictionAggregate:
        """Take the counts of ``state`` (from :meth:`state`); keep this aggregate's
        settings, profile and labels. Returns self.

        >>> a = PredictionAggregate()
        >>> a.add_batch([PredictionEvent(event_id="1", timestamp=1, model="m", latency_ms=5.0,
        ...                              features={"x": 1.0, "c": "a"})])
        >>> b = PredictionAggregate().restore(a.state())
        >>> keys = dict(model="m", model_version="v1", window_start="", window_end="",
        ...             late_events=0)
        >>> b.result(**keys) == a.result(**keys)
        True
        """
        self.count, self.error_count = state["count"], state["error_count"]
        self.latency = QuantileSketch.from_state(state["latency"])
        self.confidence = QuantileSketch.from_state(state["confidence"])
        self.low_confidence = state["low_confidence"]
        self.predictions = BoundedCounter.from_state(state["predictions"])
        self.error_types = BoundedCounter.from_state(state["error_types"])
        self.features = {sys.intern(name): FeatureStats.from_state(f)
                         for name, f in state["features"].items()}
        self.folded_features = state["folded_features"]
        self.tokens_in, self.tokens_out = state["tokens_in"], state["tokens_out"]
        self.cost_usd = state["cost_usd"]
        self.cache_hits, self.cache_known = state["cache_hits"], state["cache_known"]
        self.trace_ids = list(state["trace_ids"])
        return self

    def result(
        self, *, model: str, model_version: str, window_start: str, window_end: str,
        late_events: int,
    ) -> PredictionWindow:
        latency = None
        if self.latency.count:
            latency = LatencySummary(
                p50=self.latency.quantile(0.5),
                p95=self.latency.quantile(0.95),
                p99=self.latency.quantile(0.99),
                mean=stable(self.latency.mean),
                max=self.latency.max,
            )
        confidence = None
        if self.confidence.count:
            confidence = ConfidenceSummary(
                mean=stable(self.confidence.mean),
                p05=self.confidence.quantile(0.05),
                low_rate=self.low_confidence / self.confidence.count,
            )
        return PredictionWindow(
            model=model,
            model_version=model_version,
            window_start=window_start,
            window_end=window_end,
            count=self.count,
            error_count=self.error_count,
            error_rate=self.error_count / self.count if self.count else 0.0,
            latency_ms=latency,
            confidence=confidence,
            predictions=self.predictions.top(self.top_values),
            features={
                name: stats.summary(self.top_values)
                for name, stats in sorted(self.features.items())
            },
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost_usd=stable(self.cost_usd),
            cache_hit_rate=self.cache_hits / self.cache_known if self.cache_known else None,
            late_events=late_events,
            error_types=self.error_types.top(self.top_values),
            trace_ids=list(self.trace_ids),
        )


class LogAggregate:
    """Counts of log records by level in one window of one service."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(LOG_LEVELS, 0)

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def add_batch(self, events: Sequence[LogEvent]) -> None:
        counts = self.counts
        for event in events:
            counts[event.level] += 1

    def merge(self, other: LogAggregate) -> None:
        for level, n in other.counts.items():
            self.counts[level] += n

    def state(self) -> dict[str, int]:
        return dict(self.counts)

    def restore(self, state: dict[str, int]) -> LogAggregate:
        self.counts = {**dict.fromkeys(LOG_LEVELS, 0), **state}
        return self

    def result(
        self, *, service: str, window_start: str, window_end: str, late_events: int
    ) -> LogWindow:
        count = self.count
        errors = sum(self.counts[level] for level in ERROR_LEVELS)
        return LogWindow(
            service=service,
            window_start=window_start,
            window_end=window_end,
            count=count,
            error_count=errors,
            error_rate=errors / count if count else 0.0,
            counts=dict(self.counts),
            late_events=late_events,
        )


_FLOAT = {float}
_FLOAT_OR_NONE = {float, type(None)}
_STR = {str}
_NUMBERS = {int, float}
_STATUS = operator.attrgetter("status")
_LATENCY = operator.attrgetter("latency_ms")
_CONFIDENCE = operator.attrgetter("confidence")
_PREDICTION = operator.attrgetter("prediction")
_TOKENS_IN = operator.attrgetter("tokens_in")
_TOKENS_OUT = operator.attrgetter("tokens_out")
_COST = operator.attrgetter("cost_usd")
_CACHE_HIT = operator.attrgetter("cache_hit")
_TRACE_ID = operator.attrgetter("trace_id")
_FEATURES = operator.attrgetter("features")


_NO_VALUES = np.zeros(0)


def _columns(rows: list[dict[str, object]]) -> list[tuple[str, list[object]]]:
    """Each feature of ``rows`` with its column (``_MISSING`` where a row lacks it).

    >>> [(name, column) for name, column in _columns([{"a": 1.0}, {"a": 2.0}])]
    [('a', [1.0, 2.0])]
    >>> sorted((name, len(column)) for name, column in _columns([{"a": 1.0}, {"b": 2.0}]))
    [('a', 2), ('b', 2)]
    """
    if rows and len(set(map(len, rows))) == 1:
        # the usual batch: every row has the first row's features (rows of one length that
        # all hold those names hold nothing else)
        try:
            return [(name, list(map(operator.itemgetter(name), rows))) for name in rows[0]]
        except KeyError:
            pass
    return [(name, [row.get(name, _MISSING) for row in rows]) for name in set().union(*rows)]


def _floats(values: list[float | None]) -> np.ndarray:
    """The numbers of an optional numeric field, Nones left out (events hold no NaN: the
    parser rejects non-finite numbers, so NaN here is a None).

    >>> _floats([1.0, None, 2]).tolist()
    [1.0, 2.0]
    """
    out = np.array(values, dtype=np.float64)   # None -> NaN
    return out if values.count(None) == 0 else out[~np.isnan(out)]


def _numbers(values: list[object], kinds: set[type] | None = None) -> np.ndarray:
    """The floats among JSON values (not bools, strings, None or missing), in order.

    >>> _numbers([1.0, True, "a", None, 2.5]).tolist()
    [1.0, 2.5]
    >>> _numbers([None, 1.0, None, 2.5]).tolist()
    [1.0, 2.5]
    """
    if kinds is None:
        kinds = set(map(type, values))
    if kinds == _FLOAT:
        return np.fromiter(values, dtype=np.float64, count=len(values))
    if kinds <= _FLOAT_OR_NONE:   # e.g. predictions with failed calls among them
        return _floats(values)  # type: ignore[arg-type]
    return np.fromiter((v for v in values if type(v) is float), dtype=np.float64)
