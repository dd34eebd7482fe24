"""The per-window aggregates of the domain: predictions and logs of one key in one window.

Built from the general sketches of :mod:`mlpulse.sketches`; no raw events are kept, and two
aggregates of the same window merge.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .columns import (
    FLOAT_OR_NONE,
    MISSING,
    NO_VALUES,
    STR,
    Batch,
    floats,
    ints,
    numbers,
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
from .feature_stats import FeatureStats
from .sketches import OTHER, BoundedCounter, NumericStats, QuantileSketch, stable
from .slice_folds import fold_parts, fold_slices, fold_windows
from .slicing import Sliced, Slicer, Waiting

__all__ = ["FeatureStats", "LogAggregate", "PredictionAggregate"]

TRACE_SAMPLE = 5
"""Trace ids kept per window as exemplars."""


class Profile(Protocol):
    def add(self, signal: str, values: np.ndarray) -> None: ...

    def state(self) -> Any: ...

    def restore(self, state: Any) -> None: ...


class Labels(Protocol):
    def remember(self, events: Sequence[PredictionEvent], predictions: list[object],
                 kinds: set[type], sliced: Sliced | None = None, /) -> None: ...


class PredictionAggregate:
    """Everything a prediction window summary reports, kept incrementally.

    A ``profile`` (the detectors' view of the window) is handed each numeric
    signal as an array: ``f:<feature>``, ``o:latency_ms``, ``o:confidence``,
    ``o:prediction`` (numeric predictions) and ``o:error`` (1.0 per failed event).
    ``labels`` (the label join's index of the window) is handed every batch. Features
    beyond ``max_features`` names are folded into ``__other__`` (cardinality guard).
    """

    trace_sample = TRACE_SAMPLE

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
        """Batches smaller than this wait (in ``_held``) to be folded with the next: a
        slice's share of a batch is a few events, and folding costs ~0.15 ms a batch
        whatever its size. Everything waiting is folded before a result or state."""
        self._held: list[tuple[Batch, Sliced | None]] = []
        self._held_events = 0
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
        from the same columns. Under ``min_batch`` it reads a batch's columns and slices
        as the batch comes (and tells its label index of it), and holds them as arrays
        and codes, not the events (:meth:`~mlpulse.columns.Batch.compact`).
        """
        if not self.min_batch:
            self._fold(events)
            return
        self._gather(events)
        waiting = self.waiting_events
        if self._held_events < self.min_batch:
            if waiting is not None:
                waiting.add(self, len(events))
            return
        if waiting is not None:
            waiting.remove(self)
        self._fold()

    def flush(self) -> None:
        """Fold the events waiting (``min_batch``)."""
        if self._held:
            if self.waiting_events is not None:
                self.waiting_events.remove(self)
            self._fold()

    @staticmethod
    def flush_together(aggregates: Sequence[PredictionAggregate]) -> None:
        """Fold the events waiting in these windows (of different keys: those closing
        together), sliced ones in one pass for all (:func:`~mlpulse.slice_folds.fold_windows`):
        the same as each :meth:`flush`, at the fixed cost of one fold."""
        ready = [a for a in aggregates if a._held]
        if len(ready) < 2 or any(a.slicer is None for a in ready):
            for aggregate in ready:
                aggregate.flush()
            return
        held = []
        for aggregate in ready:
            if aggregate.waiting_events is not None:
                aggregate.waiting_events.remove(aggregate)
            held.append(aggregate._held)
            aggregate._held, aggregate._held_events = [], 0
        batch = Batch.concat([b for window in held for b, _ in window])
        windows = []
        for aggregate, window in zip(ready, held, strict=True):
            groups = _groups_of(window)
            windows.append((aggregate, aggregate._parts_of(groups), groups))
        if fold_windows(windows, batch, [sum(b.n for b, _ in window) for window in held]):
            return
        for aggregate, window in zip(ready, held, strict=True):   # (too many cells at once)
            aggregate._held = window
            aggregate._fold()

    @property
    def waiting(self) -> int:
        """Events waiting to be folded (``min_batch``)."""
        return self._held_events

    def _gather(self, events: Sequence[PredictionEvent]) -> None:
        """Hold a batch (``min_batch``): its columns and slices read, its label index told,
        then kept as arrays and codes, not as events."""
        batch = Batch.of(events)
        sliced = self.slicer(batch) if self.slicer is not None else None
        if self.labels is not None:
            self.labels.remember(events, batch.predictions, batch.prediction_kinds, sliced)
        batch.compact(sliced.groups if sliced is not None else [], self.trace_sample)
        self._held.append((batch, sliced))
        self._held_events += batch.n

    def _fold(self, events: Sequence[PredictionEvent] | None = None) -> None:
        """Fold ``events``, or (None) the batches held."""
        if events is None:
            held, self._held, self._held_events = self._held, [], 0
            batch = held[0][0] if len(held) == 1 else Batch.concat([b for b, _ in held])
            self._fold_sliced(batch, _groups_of(held))
            return
        batch = Batch.of(events)
        if self.slicer is None:
            self._fold_batch(batch)
            return
        sliced = self.slicer(batch)
        if self.labels is not None:
            self.labels.remember(events, batch.predictions, batch.prediction_kinds, sliced)
        self._fold_sliced(batch, sliced.groups)

    def _fold_sliced(self, batch: Batch,
                     groups: list[tuple[list[str], np.ndarray, np.ndarray]]) -> None:
        """Fold ``batch`` into the window and the slices of its rows (``groups``: see
        :class:`~mlpulse.slicing.Sliced`), its label index told already."""
        parts_of = self._parts_of(groups)
        # the window and its slices at once, each row counted in its combination of slices
        if fold_slices(parts_of, batch, groups, whole=self):
            return
        fold_slices([], batch, [], whole=self)   # (one cell: every row)
        for parts, (_, rows, sizes) in zip(parts_of, groups, strict=True):
            fold_parts(parts, batch, rows, sizes)

    def _parts_of(self, groups: list[tuple[list[str], np.ndarray, np.ndarray]]
                  ) -> list[list[PredictionAggregate]]:
        """The slices of each set of keys of ``groups`` (new ones made)."""
        slices = self.slices
        parts_of = []
        for names, _, _ in groups:
            parts = []
            for name in names:
                part = slices.get(name)
                if part is None:
                    assert self.new_slice is not None
                    part = slices[name] = self.new_slice(name)
                parts.append(part)
            parts_of.append(parts)
        return parts_of

    def _fold_batch(self, batch: Batch) -> None:
        """Fold ``batch`` and tell the label index of it."""
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
            self.labels.remember(events, predictions, prediction_kinds)
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
        if min(missing):   # each request counted once, whichever of the three it has
            self.llm_requests += int(batch.llm_requests().sum())
        else:
            self.llm_requests += n
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
            self.add_feature(feature, column, kinds, array)

    def add_feature(self, feature: str, column: list[object], kinds: set[type],
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
        name, stats = self.feature(feature, len(column) - column.count(MISSING))
        stats.add(values, categories, nulls, self.max_categories, category_kinds)
        if self.profile is not None and values.size:
            self.profile.add("f:" + name, values)

    def feature(self, name: str, values: int) -> tuple[str, FeatureStats]:
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
        """The window's summary."""
        return self.results([self], [late_events], model=model, model_version=model_version,
                            window_start=window_start, window_end=window_end)[0]

    @staticmethod
    def results(aggregates: list[PredictionAggregate], late_events: list[int], *,
                model: str, model_version: str, window_start: str, window_end: str,
                ) -> list[PredictionWindow]:
        """The summaries of aggregates of one window (a model version's and its slices'),
        their sketches' quantiles found at once."""
        for aggregate in aggregates:
            aggregate.flush()
        found = iter(QuantileSketch.quantiles_of(
            [(getattr(a, name), qs) for a in aggregates for name, qs in _QUANTILES.items()]))
        return [aggregate._summary({name: next(found) for name in _QUANTILES}, late,
                                   model=model, model_version=model_version,
                                   window_start=window_start, window_end=window_end)
                for aggregate, late in zip(aggregates, late_events, strict=True)]

    def _summary(self, quantiles: dict[str, list[float]], late_events: int, *, model: str,
                 model_version: str, window_start: str, window_end: str) -> PredictionWindow:
        """The summary, with the quantiles of its sketches (``_QUANTILES``)."""
        latency = None
        if self.latency.count:
            p50, p95, p99 = quantiles["latency"]
            latency = LatencySummary(
                p50=p50, p95=p95, p99=p99,
                mean=stable(self.latency.mean),
                max=self.latency.max,
            )
        confidence = None
        if self.confidence.count:
            confidence = ConfidenceSummary(
                mean=stable(self.confidence.mean),
                p05=quantiles["confidence"][0],
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
            llm=self._llm(quantiles),
        )

    def _llm(self, quantiles: dict[str, list[float]]) -> LLMSummary | None:
        if not self.llm_requests:
            return None
        cost = self.llm_cost
        return LLMSummary(
            requests=self.llm_requests,
            tokens_in=_distribution(self.llm_tokens_in, quantiles["llm_tokens_in"]),
            tokens_out=_distribution(self.llm_tokens_out, quantiles["llm_tokens_out"]),
            cost_usd=_distribution(cost, quantiles["llm_cost"]),
            cost_usd_per_1k_requests=stable(1000 * self.cost_usd / cost.count)
            if cost.count else None)


_QUANTILES = {"latency": (0.5, 0.95, 0.99), "confidence": (0.05,),
              "llm_tokens_in": (0.5, 0.95), "llm_tokens_out": (0.5, 0.95),
              "llm_cost": (0.5, 0.95)}
"""The quantiles a summary reports, per sketch of :class:`PredictionAggregate`."""


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


def _groups_of(held: list[tuple[Batch, Sliced | None]]
               ) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """The slices' rows of a window's held batches, counted as :meth:`Batch.concat` joins
    them (none where the window is not sliced)."""
    if held[0][1] is None:
        return []
    if len(held) == 1:
        return held[0][1].groups
    return Sliced.concat([s for _, s in held],  # type: ignore[misc]
                         [b.n for b, _ in held])


def _present(values: np.ndarray) -> np.ndarray:
    """The numbers of an optional field's column (:class:`~mlpulse.columns.Batch`: NaN for
    None), Nones left out."""
    absent = np.isnan(values)
    return values[~absent] if absent.any() else values




def _distribution(sketch: QuantileSketch, quantiles: list[float]) -> Distribution | None:
    """Mean, p50, p95 (``quantiles``) and max of a sketch's values (None: no value)."""
    if not sketch.count:
        return None
    p50, p95 = quantiles
    return Distribution(mean=stable(sketch.mean), p50=p50, p95=p95, max=sketch.max)


