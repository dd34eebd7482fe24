"""The per-window aggregates of the domain: predictions and logs of one key in one window.

Built from the general sketches of :mod:`mlpulse.sketches`; no raw events are kept, and two
aggregates of the same window merge.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .columns import (
    FLOAT_OR_NONE,
    MISSING,
    NO_VALUES,
    STR,
    Batch,
    FeatureStats,
    floats,
    ints,
    numbers,
    pick,
)
from .events import (
    ERROR_LEVELS,
    LOG_LEVELS,
    ConfidenceSummary,
    Distribution,
    LatencySummary,
    LLMSummary,
    LogEvent,
    LogWindow,
    PredictionEvent,
    PredictionWindow,
)
from .sketches import OTHER, BoundedCounter, NumericStats, QuantileSketch, stable

__all__ = ["FeatureStats", "LogAggregate", "PredictionAggregate", "Sliced", "Slicer",
           "Waiting", "fold_parts"]

TRACE_SAMPLE = 5
"""Trace ids kept per window as exemplars."""


class Profile(Protocol):
    def add(self, signal: str, values: np.ndarray) -> None: ...

    def state(self) -> Any: ...

    def restore(self, state: Any) -> None: ...


class Labels(Protocol):
    def remember(self, events: Sequence[PredictionEvent], predictions: list[object],
                 kinds: set[type], sliced: Sliced | None = None, /) -> None: ...


@dataclass(slots=True)
class Sliced:
    """The slices of a batch's events, per set of keys: the names of its slices with
    events, the rows of their events (the first slice's, then the next's, ...) and how many
    each has; and per row a code of the slices it is in (``names`` spells a code)."""

    groups: list[tuple[list[str], np.ndarray, np.ndarray]]
    codes: np.ndarray
    names: Callable[[int], tuple[str, ...]]


class Waiting:
    """Events waiting to be folded in any aggregate (``min_batch``), and which hold them:
    a worker bounds them all (:meth:`flush_all` when over its bound).

    >>> waiting = Waiting()
    >>> a = PredictionAggregate(min_batch=10, waiting_events=waiting)
    >>> a.add_batch([PredictionEvent(event_id="1", timestamp=1, model="m")])
    >>> waiting.events, waiting.flush_all(), waiting.events, a.count
    (1, None, 0, 1)
    """

    def __init__(self) -> None:
        self.events = 0
        self._held: dict[PredictionAggregate, int] = {}

    def add(self, aggregate: PredictionAggregate, n: int) -> None:
        self.events += n
        self._held[aggregate] = self._held.get(aggregate, 0) + n

    def remove(self, aggregate: PredictionAggregate) -> None:
        self.events -= self._held.pop(aggregate, 0)

    def flush_all(self) -> None:
        """Fold every aggregate's waiting events."""
        for aggregate in list(self._held):
            aggregate.flush()


Slicer = Callable[[Batch], Sliced]
"""A batch → its :class:`Sliced`."""


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
                 max_features: int = 200, *, min_batch: int = 0,
                 slicer: Slicer | None = None,
                 new_slice: Callable[[str], PredictionAggregate] | None = None,
                 waiting_events: Waiting | None = None) -> None:
        self.waiting_events = waiting_events
        """Where the events waiting here are counted (a worker's bound on them all)."""
        self.slicer = slicer
        self.new_slice = new_slice
        self.slices: dict[str, PredictionAggregate] = {}
        """The window's slices (``slicer``: which events are in which), folded from the
        same columns as the window; each a new aggregate from ``new_slice``."""
        self.min_batch = min_batch
        """Batches smaller than this wait (in ``_waiting``) to be folded with the next: a
        slice's share of a batch is a few events, and folding costs ~0.15 ms a batch
        whatever its size. Everything waiting is folded before a result or state."""
        self._waiting: list[PredictionEvent] = []
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
        self.prediction_values = NumericStats()
        """Count and moments of the numeric predictions (version comparison)."""
        self.error_types = BoundedCounter(max_categories)
        self.features: dict[str, FeatureStats] = {}
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self.llm_requests = 0
        """Events that reported tokens or a cost (LLM calls)."""
        self.llm_tokens_in = QuantileSketch()
        self.llm_tokens_out = QuantileSketch()
        self.llm_cost = QuantileSketch()
        self.cache_hits = 0
        self.cache_known = 0
        self.trace_ids: list[str] = []

    def add_batch(self, events: Sequence[PredictionEvent]) -> None:
        """Fold a batch of events of this window into the aggregate (or keep it waiting
        for more, under ``min_batch``).

        Each field is read once for the whole batch (:class:`~mlpulse.columns.Batch`) and
        folded by C-speed builtins and numpy: a Python-level pass per field and event cost
        more than the rest of the aggregation. A sliced window folds each of its slices
        from the same columns.
        """
        if self.min_batch:
            waiting = self.waiting_events
            self._waiting.extend(events)
            if len(self._waiting) < self.min_batch:
                if waiting is not None:
                    waiting.add(self, len(events))
                return
            events, self._waiting = self._waiting, []
            if waiting is not None:
                waiting.remove(self)
        self._fold(events)

    def flush(self) -> None:
        """Fold the events waiting (``min_batch``)."""
        if self._waiting:
            events, self._waiting = self._waiting, []
            if self.waiting_events is not None:
                self.waiting_events.remove(self)
            self._fold(events)

    @property
    def waiting(self) -> int:
        """Events waiting to be folded (``min_batch``)."""
        return len(self._waiting)

    def _fold(self, events: Sequence[PredictionEvent]) -> None:
        batch = Batch.of(events)
        if self.slicer is None:
            self._fold_batch(batch)
            return
        sliced = self.slicer(batch)
        self._fold_batch(batch, sliced)
        batch.failed(), batch.llm()   # once, for every set of keys' slices
        slices = self.slices
        for names, rows, sizes in sliced.groups:   # the slices of one set of keys
            parts = []
            for name in names:
                part = slices.get(name)
                if part is None:
                    assert self.new_slice is not None
                    part = slices[name] = self.new_slice(name)
                parts.append(part)
            fold_parts(parts, batch.take(rows), sizes)

    def _fold_batch(self, batch: Batch, sliced: Sliced | None = None) -> None:
        """Fold ``batch`` (its events' slices: ``sliced``, for the label index)."""
        events, n = batch.events, batch.n
        self.count += n
        statuses = batch.statuses
        errors = n - statuses.count("ok")
        if errors:
            self.error_count += errors
            self.error_types.add_many(
                [e.error_type or "unknown" for e in events if e.status == "error"])
        latency = _present(batch.latency)
        self.latency.add_many(latency)
        confidence = _present(batch.confidence)
        self.confidence.add_many(confidence)
        predictions, prediction_kinds = batch.predictions, batch.prediction_kinds
        if self.labels is not None:
            self.labels.remember(events, predictions, prediction_kinds, sliced)
        values = numbers(predictions, prediction_kinds) if float in prediction_kinds else (
            NO_VALUES)
        self.prediction_values.add_many(values)
        profile = self.profile
        if profile is not None:
            profile.add("o:latency_ms", latency)
            profile.add("o:confidence", confidence)
            profile.add("o:error", np.fromiter(map("error".__eq__, statuses), dtype=np.float64,
                                               count=n) if errors else np.zeros(n))
            profile.add("o:prediction", values)
        self.low_confidence += int((confidence < 0.5).sum())
        self.predictions.add_values(predictions, prediction_kinds)
        # None and 0 add nothing: filter(None, ...) drops both
        self._add_llm(batch, n)
        cache = batch.cache
        self.cache_known += n - cache.count(None)
        self.cache_hits += cache.count(True)
        missing = TRACE_SAMPLE - len(self.trace_ids)
        if missing > 0:
            self.trace_ids.extend(itertools.islice(filter(None, batch.trace_ids), missing))
        self._add_features(batch)

    def _add_llm(self, batch: Batch, n: int) -> None:
        """Tokens and cost: window sums, and per request the sketches of their values (a
        batch without any costs one pass per field)."""
        tokens_in, tokens_out, costs = batch.tokens_in, batch.tokens_out, batch.costs
        missing = (tokens_in.count(None), tokens_out.count(None), costs.count(None))
        if missing == (n, n, n):
            return
        self.llm_requests += n - min(missing)
        if missing[0] < n:
            values = ints(tokens_in, missing[0])
            self.tokens_in += int(values.sum())
            self.llm_tokens_in.add_many(values.astype(np.float64))
        if missing[1] < n:
            values = ints(tokens_out, missing[1])
            self.tokens_out += int(values.sum())
            self.llm_tokens_out.add_many(values.astype(np.float64))
        if missing[2] < n:
            self.cost_usd += math.fsum(filter(None, costs))
            self.llm_cost.add_many(floats(costs))

    def _add_features(self, batch: Batch) -> None:
        # column by column: one C-speed pass per feature instead of a Python loop per value
        for feature, column, kinds, array in batch.features:
            self._add_feature(feature, column, kinds, array)

    def _add_feature(self, feature: str, column: list[object], kinds: set[type],
                     array: np.ndarray | None) -> None:
        category_kinds = None
        if array is not None:   # all floats
            values = array
            categories: list[object] = []
            nulls = 0
        elif kinds == STR:
            values, categories, nulls, category_kinds = NO_VALUES, column, 0, kinds
        elif kinds <= FLOAT_OR_NONE:   # numbers with nulls: the rest are the nulls
            values, categories = floats(column), []  # type: ignore[arg-type]
            nulls = len(column) - values.size
        else:
            values = numbers(column, kinds)
            nulls = column.count(None)
            categories = [v for v in column
                          if v is not None and v is not MISSING and type(v) is not float]
        name, stats = self._feature(feature, len(column) - column.count(MISSING))
        stats.add(values, categories, nulls, self.max_categories, category_kinds)
        if self.profile is not None and values.size:
            self.profile.add("f:" + name, values)

    def _feature(self, name: str, values: int) -> tuple[str, FeatureStats]:
        """The statistics of feature ``name`` (those of ``__other__`` beyond
        ``max_features`` names, counting its ``values`` as folded)."""
        stats = self.features.get(name)
        if stats is None:
            if len(self.features) >= self.max_features and name != OTHER:
                self.folded_features += values
                name = OTHER
                stats = self.features.get(name)
            if stats is None:
                stats = self.features[sys.intern(name)] = FeatureStats()
        return name, stats

    def merge(self, other: PredictionAggregate) -> None:
        """Add another aggregate of the same window (e.g. from another batch)."""
        self.flush()
        other.flush()
        self.count += other.count
        self.error_count += other.error_count
        self.latency.merge(other.latency)
        self.confidence.merge(other.confidence)
        self.low_confidence += other.low_confidence
        self.predictions.merge(other.predictions)
        self.prediction_values.merge(other.prediction_values)
        self.error_types.merge(other.error_types)
        for name, stats in other.features.items():
            self.features.setdefault(name, FeatureStats()).merge(stats)
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.cost_usd += other.cost_usd
        self.llm_requests += other.llm_requests
        self.llm_tokens_in.merge(other.llm_tokens_in)
        self.llm_tokens_out.merge(other.llm_tokens_out)
        self.llm_cost.merge(other.llm_cost)
        self.cache_hits += other.cache_hits
        self.cache_known += other.cache_known
        self.trace_ids = (self.trace_ids + other.trace_ids)[:TRACE_SAMPLE]
        for name, part in other.slices.items():
            mine = self.slices.get(name)
            if mine is None:
                self.slices[name] = part
            else:
                mine.merge(part)

    def state(self) -> dict[str, Any]:
        """This aggregate as plain data (msgpack-ready), with what its ``profile`` keeps
        (the detectors' bin counts), without its ``labels`` (the label index keeps them)."""
        self.flush()
        return {
            "profile": self.profile.state() if self.profile is not None else None,
            "count": self.count, "error_count": self.error_count,
            "latency": self.latency.state(), "confidence": self.confidence.state(),
            "low_confidence": self.low_confidence, "predictions": self.predictions.state(),
            "prediction_values": self.prediction_values.state(),
            "error_types": self.error_types.state(),
            "features": {name: f.state() for name, f in self.features.items()},
            "folded_features": self.folded_features, "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out, "cost_usd": self.cost_usd,
            "cache_hits": self.cache_hits, "cache_known": self.cache_known,
            "trace_ids": list(self.trace_ids),
            "llm": [self.llm_requests, self.llm_tokens_in.state(),
                    self.llm_tokens_out.state(), self.llm_cost.state()],
            "slices": {name: part.state() for name, part in self.slices.items()},
        }

    def restore(self, state: dict[str, Any]) -> PredictionAggregate:
        """Take the counts of ``state`` (from :meth:`state`), and its profile's into this
        one's; keep this aggregate's settings and labels. Returns self.

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
        if state.get("prediction_values"):
            self.prediction_values = NumericStats.from_state(state["prediction_values"])
        self.error_types = BoundedCounter.from_state(state["error_types"])
        self.features = {sys.intern(name): FeatureStats.from_state(f)
                         for name, f in state["features"].items()}
        self.folded_features = state["folded_features"]
        self.tokens_in, self.tokens_out = state["tokens_in"], state["tokens_out"]
        self.cost_usd = state["cost_usd"]
        self.cache_hits, self.cache_known = state["cache_hits"], state["cache_known"]
        self.trace_ids = list(state["trace_ids"])
        if state.get("llm"):
            requests, tokens_in, tokens_out, cost = state["llm"]
            self.llm_requests = requests
            self.llm_tokens_in = QuantileSketch.from_state(tokens_in)
            self.llm_tokens_out = QuantileSketch.from_state(tokens_out)
            self.llm_cost = QuantileSketch.from_state(cost)
        if self.profile is not None and state.get("profile") is not None:
            self.profile.restore(state["profile"])
        if state.get("slices") and self.new_slice is not None:
            self.slices = {name: self.new_slice(name).restore(part)
                           for name, part in state["slices"].items()}
        return self

    def result(
        self, *, model: str, model_version: str, window_start: str, window_end: str,
        late_events: int,
    ) -> PredictionWindow:
        self.flush()
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
            llm=self._llm(),
        )

    def _llm(self) -> LLMSummary | None:
        if not self.llm_requests:
            return None
        cost = self.llm_cost
        return LLMSummary(
            requests=self.llm_requests, tokens_in=_distribution(self.llm_tokens_in),
            tokens_out=_distribution(self.llm_tokens_out), cost_usd=_distribution(cost),
            cost_usd_per_1k_requests=stable(1000 * self.cost_usd / cost.count)
            if cost.count else None)


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


def fold_parts(parts: list[PredictionAggregate], batch: Batch, sizes: np.ndarray) -> None:
    """Fold ``batch`` into ``parts``: its first ``sizes[0]`` rows into the first, the next
    ``sizes[1]`` into the second, ... (the slices of one set of keys of a sliced window).

    The same result as each part folding its rows (:meth:`PredictionAggregate.add_batch`),
    at a fraction of the cost: the sketches and moments of every part in one numpy pass per
    field, then a few scalar updates per part, where each fold made ~60 numpy calls of a few
    µs whatever its size.
    """
    k = len(parts)
    events = batch.events
    group = np.repeat(np.arange(k), sizes)
    ends = np.cumsum(sizes).tolist()
    counts = sizes.tolist()
    bounds = [(end - count, end) for end, count in zip(ends, counts, strict=True)]
    failed = batch.failed()
    errors = [0] * k
    if failed is not None:
        errors = np.bincount(group[failed], minlength=k).tolist()
    latency, latency_sizes = _present_parts(batch.latency, group, sizes, k)
    QuantileSketch.add_parts([p.latency for p in parts], latency, latency_sizes)
    confidence, confidence_sizes = _present_parts(batch.confidence, group, sizes, k)
    QuantileSketch.add_parts([p.confidence for p in parts], confidence, confidence_sizes)
    low = np.bincount(np.repeat(np.arange(k), confidence_sizes), weights=confidence < 0.5,
                      minlength=k).astype(np.int64).tolist()
    latency_ends = np.cumsum(latency_sizes).tolist()
    confidence_ends = np.cumsum(confidence_sizes).tolist()
    _add_llm_parts(parts, batch, group, sizes)
    for feature, column, kinds, array in batch.features:   # in order: as each part would
        if array is None:   # strings, nulls, mixed: part by part
            for part, (start, end) in zip(parts, bounds, strict=True):
                own = column[start:end]
                if own.count(MISSING) < len(own):   # (a part without it: none)
                    part._add_feature(feature, own, kinds, None)
            continue
        # all floats: the moments of every part in one pass, the bins part by part
        named = [part._feature(feature, end - start) if end > start else (feature, None)
                 for part, (start, end) in zip(parts, bounds, strict=True)]
        numeric = []
        for _, stats in named:
            if stats is not None and stats.numeric is None:
                stats.numeric = NumericStats()
            numeric.append(stats.numeric if stats is not None else NumericStats())
        NumericStats.add_parts(numeric, array, sizes)  # type: ignore[arg-type]
        for part, (name, stats), (start, end) in zip(parts, named, bounds, strict=True):
            if stats is None:
                continue
            stats.count += end - start
            if part.profile is not None:
                part.profile.add("f:" + name, array[start:end])
    kinds = batch.prediction_kinds
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
                e.error_type or "unknown" for e in pick(events, (np.flatnonzero(
                    failed[start:end]) + start).tolist()) if e.status == "error"])
        predictions = batch.predictions[start:end]
        values = numbers(predictions, kinds) if float in kinds else NO_VALUES
        part.prediction_values.add_many(values)
        profile = part.profile
        if profile is not None:
            profile.add("o:latency_ms",
                        latency[latency_ends[j] - latency_sizes[j]:latency_ends[j]])
            profile.add("o:confidence",
                        confidence[confidence_ends[j] - confidence_sizes[j]:confidence_ends[j]])
            profile.add("o:error", np.fromiter(map("error".__eq__, batch.statuses[start:end]),
                                               dtype=np.float64, count=count)
                        if errors[j] else np.zeros(count))
            profile.add("o:prediction", values)
        part.low_confidence += low[j]
        part.predictions.add_values(predictions, kinds)
        cache = batch.cache[start:end]
        part.cache_known += count - cache.count(None)
        part.cache_hits += cache.count(True)
        missing = TRACE_SAMPLE - len(part.trace_ids)
        if missing > 0:
            part.trace_ids.extend(itertools.islice(filter(None, batch.trace_ids[start:end]),
                                                   missing))


def _present_parts(column: np.ndarray, group: np.ndarray, sizes: np.ndarray, k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """An optional field's numbers (NaN: None) and how many of them each part has."""
    absent = np.isnan(column)
    if not absent.any():
        return column, sizes
    present = ~absent
    return column[present], np.bincount(group[present], minlength=k)


def _add_llm_parts(parts: list[PredictionAggregate], batch: Batch, group: np.ndarray,
                   sizes: np.ndarray) -> None:
    """:meth:`PredictionAggregate._add_llm` of every part at once."""
    k = len(parts)
    arrays = batch.llm()   # None -> NaN
    if arrays is None:
        return
    missing = np.array([np.bincount(group, weights=np.isnan(a), minlength=k) for a in arrays])
    requests = (sizes - missing.min(axis=0)).astype(np.int64).tolist()
    sketches = ([p.llm_tokens_in for p in parts], [p.llm_tokens_out for p in parts],
                [p.llm_cost for p in parts])
    sums = []
    for array, field_sketches in zip(arrays, sketches, strict=True):
        values, value_sizes = _present_parts(array, group, sizes, k)
        QuantileSketch.add_parts(field_sketches, values, value_sizes)
        sums.append(np.bincount(np.repeat(np.arange(k), value_sizes), weights=values,
                                minlength=k).tolist())
    ends = np.cumsum(sizes).tolist()
    for j, part in enumerate(parts):
        part.llm_requests += requests[j]
        part.tokens_in += round(sums[0][j])
        part.tokens_out += round(sums[1][j])
        if sums[2][j]:   # exact, as a part's own fold sums it
            part.cost_usd += math.fsum(filter(None, batch.costs[ends[j] - int(sizes[j]):ends[j]]))


def _present(values: np.ndarray) -> np.ndarray:
    """The numbers of an optional field's column (:class:`~mlpulse.columns.Batch`: NaN for
    None), Nones left out."""
    absent = np.isnan(values)
    return values[~absent] if absent.any() else values




def _distribution(sketch: QuantileSketch) -> Distribution | None:
    """Mean, p50, p95 and max of a sketch's values (None: no value)."""
    if not sketch.count:
        return None
    return Distribution(mean=stable(sketch.mean), p50=sketch.quantile(0.5),
                        p95=sketch.quantile(0.95), max=sketch.max)


