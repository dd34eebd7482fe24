"""A batch's fields as columns and the numbers among them: what :mod:`mlpulse.aggregates`
folds a batch with (a feature's statistics in a window: :mod:`mlpulse.feature_stats`).

>>> numbers([1.0, None, "a", 2.0]).tolist()
[1.0, 2.0]
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .sketches import value_key

__all__ = ["FLOAT", "FLOAT_OR_NONE", "MISSING", "NO_VALUES", "STR", "Batch", "Coded", "coded",
           "columns", "first_seen", "floats", "ints", "numbers", "pick"]

MISSING = object()
"""A row's value of a feature it does not have (:func:`columns`)."""
FLOAT = {float}
FLOAT_OR_NONE = {float, type(None)}
STR = {str}
_NUMBERS = {int, float}
NO_VALUES = np.zeros(0)
T = TypeVar("T")
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


_CACHE_FLAG = {None: 0, False: 1, True: 2}
"""``cache_hit`` as :meth:`Batch.cache_flags` codes it (anything else: known, a miss)."""


class Batch:
    """A batch of prediction events as columns, read once (``map`` over ``attrgetter``, in
    C): what :class:`~mlpulse.aggregates.PredictionAggregate` folds, and its slices from
    the same columns (:mod:`mlpulse.slice_folds`, which indexes its arrays by the rows of
    each slice).

    Optional numbers are arrays with NaN for None (events hold no NaN: the parser rejects
    non-finite numbers), row for row, so that rows can be taken from them.

    >>> from mlpulse.events import PredictionEvent
    >>> batch = Batch.of([PredictionEvent(event_id=str(i), timestamp=1, model="m",
    ...                                   latency_ms=float(i), features={"x": i / 2},
    ...                                   cache_hit=[None, True, False, None][i])
    ...                   for i in range(4)])
    >>> batch.latency[[1, 3]].tolist(), [(name, col) for name, col, _, _ in batch.features]
    ([1.0, 3.0], [('x', [0.0, 0.5, 1.0, 1.5])])
    >>> [flags.tolist() for flags in batch.cache_flags()]
    [[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    """

    __slots__ = ("_cache", "_codes", "_error_types", "_failed", "_llm", "_named", "_numbers",
                 "_predictions_coded", "cache", "confidence", "costs", "events", "features",
                 "latency", "n", "prediction_kinds", "predictions", "statuses", "tokens_in",
                 "tokens_out", "trace_ids")

    events: Sequence[Any]
    n: int
    statuses: list[str]
    latency: np.ndarray
    confidence: np.ndarray
    predictions: list[object]
    prediction_kinds: set[type]
    tokens_in: list[int | None]
    tokens_out: list[int | None]
    costs: list[float | None]
    cache: list[bool | None]
    trace_ids: list[str | None]
    features: list[tuple[str, list[object], set[type], np.ndarray | None]]
    """Per feature: its name, its column (``MISSING`` where a row lacks it), its values'
    types and, if they are all floats, the column as an array."""

    def __init__(self) -> None:
        self._failed: np.ndarray | bool | None = False   # False: not computed yet
        self._llm: tuple[np.ndarray, np.ndarray, np.ndarray] | bool | None = False
        self._cache: tuple[np.ndarray, np.ndarray] | bool | None = False
        self._codes: dict[str, Coded | None] = {}
        self._predictions_coded: Coded | None = None
        self._error_types: list[str | None] | bool | None = False
        self._numbers: np.ndarray | None = None
        self._named: dict[str, tuple[str, list[object], set[type], np.ndarray | None]] | None = (
            None)

    def failed(self) -> np.ndarray | None:
        """Per row, whether its call failed (status not ``ok``); None if none did.
        Computed once (the slices of every key use it)."""
        if self._failed is False:
            self._failed = None if self.statuses.count("ok") == self.n else np.fromiter(
                map("ok".__ne__, self.statuses), dtype=bool, count=self.n)
        return self._failed  # type: ignore[return-value]

    def llm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``tokens_in``, ``tokens_out`` and ``costs`` as arrays (NaN: None); None if no
        row has any. Computed once."""
        if self._llm is False:
            columns = (self.tokens_in, self.tokens_out, self.costs)
            self._llm = None if all(c.count(None) == self.n for c in columns) else tuple(
                np.array(c, dtype=np.float64) for c in columns)  # type: ignore[assignment]
        return self._llm  # type: ignore[return-value]

    def llm_requests(self) -> np.ndarray:
        """Which rows are LLM requests: those that reported tokens in, tokens out or a
        cost (any of them; :meth:`llm` must not be None).

        >>> from mlpulse.events import PredictionEvent
        >>> Batch.of([PredictionEvent(event_id=str(i), timestamp=1, model="m", **fields)
        ...           for i, fields in enumerate([{"tokens_in": 3}, {}, {"cost_usd": 0.1}])]
        ...          ).llm_requests().tolist()
        [True, False, True]
        """
        arrays = self.llm()
        assert arrays is not None
        return ~(np.isnan(arrays[0]) & np.isnan(arrays[1]) & np.isnan(arrays[2]))

    def prediction_codes(self) -> Coded:
        """The predictions as codes (:func:`coded`). Computed once: the slices of every key
        count categories from them."""
        out = self._predictions_coded
        if out is None:
            out = self._predictions_coded = coded(self.predictions, self.prediction_kinds)
        return out

    def codes(self, feature: str) -> Coded | None:
        """A string ``feature``'s values as codes (:func:`coded`); None where the feature is
        not all strings. Computed once, as :meth:`prediction_codes`."""
        if feature in self._codes:
            return self._codes[feature]
        if self._named is None:
            self._named = {f[0]: f for f in self.features}
        found = self._named.get(feature)
        out = coded(found[1], found[2]) if found is not None and found[2] == STR else None
        self._codes[feature] = out
        return out

    def prediction_numbers(self) -> np.ndarray:
        """Each row's prediction if it is a float (as :func:`numbers` counts them), else
        NaN. Computed once."""
        if self._numbers is None:
            predictions, kinds = self.predictions, self.prediction_kinds
            self._numbers = np.array(predictions, dtype=np.float64) if (   # None -> NaN
                kinds <= FLOAT_OR_NONE) else np.fromiter(
                (v if type(v) is float else math.nan for v in predictions),
                dtype=np.float64, count=self.n)
        return self._numbers

    def error_types(self) -> list[str | None] | None:
        """Per row, the error type of a failed call whose status is ``error`` (``unknown``
        if it gave none; None for the other rows); None if there is no such row. Computed
        once."""
        if self._error_types is False:
            out: list[str | None] | None = None
            failed = self.failed()
            if failed is not None:   # (a few rows: those that failed)
                events = self.events
                for row in np.flatnonzero(failed).tolist():
                    event = events[row]
                    if event.status == "error":
                        if out is None:
                            out = [None] * self.n
                        out[row] = event.error_type or "unknown"
            self._error_types = out
        return self._error_types  # type: ignore[return-value]

    def compact(self, groups: list[tuple[list[str], np.ndarray, np.ndarray]],
                trace_sample: int) -> None:
        """Keep only what folding the batch into a window and the slices of ``groups``
        reads, as arrays and codes (:meth:`concat` joins such batches), and let go of the
        events and of the Python values read from them: a sliced window holds its batches
        until it folds them, and rows held as objects made the decoder and every later step
        work in memory out of the CPU's caches. Trace ids are kept for the first
        ``trace_sample`` rows that have one, of the batch and of each slice's rows (what
        each one's sample may take)."""
        self.failed(), self.llm(), self.cache_flags(), self.error_types()
        self.prediction_codes()
        if float in self.prediction_kinds:
            self.prediction_numbers()
        features: list[tuple[str, list[object], set[type], np.ndarray | None]] = []
        for name, column, kinds, array in self.features:
            read = array is not None or (kinds == STR and self.codes(name) is not None)
            features.append((name, _DROPPED if read else column, kinds, array))
        self.features = features
        self._named = {f[0]: f for f in features}
        traces = self.trace_ids
        kept: list[str | None] = [None] * self.n
        _first_traces(traces, range(self.n), kept, trace_sample)
        for _, rows, sizes in groups:
            row_list, start = rows.tolist(), 0
            for size in sizes.tolist():
                _first_traces(traces, row_list[start:start + size], kept, trace_sample)
                start += size
        self.trace_ids = kept
        self.events, self.statuses, self.cache = (), _DROPPED, _DROPPED  # type: ignore[assignment]
        self.tokens_in = self.tokens_out = self.costs = _DROPPED  # type: ignore[assignment]
        self.predictions = _DROPPED

    @classmethod
    def concat(cls, batches: Sequence[Batch]) -> Batch:
        """Batches made :meth:`compact` as one, row after row (features in the order they
        first come, ``MISSING`` where a batch lacks one).

        >>> from mlpulse.events import PredictionEvent
        >>> def batch(*features):
        ...     out = Batch.of([PredictionEvent(event_id="e", timestamp=1, model="m",
        ...                                     prediction="a", features=f) for f in features])
        ...     out.compact([], 5)
        ...     return out
        >>> both = Batch.concat([batch({"x": 1.0, "y": "b"}), batch({"y": "c", "x": 2.0}),
        ...                      batch({"x": 3.0})])
        >>> [(name, array.tolist() if array is not None else
        ...   [None if v is MISSING else v for v in column]) for name, column, _, array
        ...  in both.features]
        [('x', [1.0, 2.0, 3.0]), ('y', ['b', 'c', None])]
        >>> both.prediction_codes().keys, both.prediction_codes().codes.tolist()
        (['a'], [0, 0, 0])
        """
        out = cls()
        n = [b.n for b in batches]
        out.events = ()
        out.n = sum(n)
        out.latency = np.concatenate([b.latency for b in batches])
        out.confidence = np.concatenate([b.confidence for b in batches])
        out.prediction_kinds = set().union(*(b.prediction_kinds for b in batches))
        failed = [b.failed() for b in batches]
        out._failed = None if all(f is None for f in failed) else np.concatenate([
            f if f is not None else np.zeros(size, dtype=bool)
            for f, size in zip(failed, n, strict=True)])
        llm = [b.llm() for b in batches]
        out._llm = None if all(a is None for a in llm) else tuple(  # type: ignore[assignment]
            np.concatenate([a[i] if a is not None else np.full(size, math.nan)
                            for a, size in zip(llm, n, strict=True)]) for i in range(3))
        cache = [b.cache_flags() for b in batches]
        out._cache = None if all(c is None for c in cache) else tuple(  # type: ignore[assignment]
            np.concatenate([c[i] if c is not None else np.zeros(size)
                            for c, size in zip(cache, n, strict=True)]) for i in range(2))
        errors = [b.error_types() for b in batches]
        out._error_types = None if all(e is None for e in errors) else list(
            itertools.chain.from_iterable(e if e is not None else itertools.repeat(None, size)
                                          for e, size in zip(errors, n, strict=True)))
        out._predictions_coded = Coded.concat([b.prediction_codes() for b in batches])
        if float in out.prediction_kinds:
            out._numbers = np.concatenate([b.prediction_numbers() if float in b.prediction_kinds
                                           else np.full(b.n, math.nan) for b in batches])
        out.trace_ids = list(itertools.chain.from_iterable(b.trace_ids for b in batches))
        named: dict[str, list[tuple[str, list[object], set[type], np.ndarray | None] | None]]
        named = {}
        for i, b in enumerate(batches):
            for feature in b.features:
                named.setdefault(feature[0], [None] * len(batches))[i] = feature
        features: list[tuple[str, list[object], set[type], np.ndarray | None]] = []
        for name, parts in named.items():
            kinds = set().union(*(p[2] if p is not None else {object} for p in parts))
            if kinds == FLOAT:
                features.append((name, _DROPPED, kinds, np.concatenate(
                    [p[3] for p in parts])))  # type: ignore[index]
            elif kinds == STR and all(b.codes(name) is not None for b in batches):
                out._codes[name] = Coded.concat([b.codes(name) for b in batches])  # type: ignore[misc]
                features.append((name, _DROPPED, kinds, None))
            else:   # (values of several kinds: as a list, each batch's spelled again)
                column: list[object] = []
                for p, b in zip(parts, batches, strict=True):
                    column.extend(itertools.repeat(MISSING, b.n) if p is None else
                                  p[3].tolist() if p[3] is not None else
                                  p[1] if p[1] is not _DROPPED else
                                  [b.codes(name).keys[c] for c in b.codes(name).codes.tolist()])  # type: ignore[union-attr]
                features.append((name, column, kinds, None))
        out.features = features
        out._named = {f[0]: f for f in features}
        out.statuses = out.cache = out.tokens_in = out.tokens_out = out.costs = _DROPPED  # type: ignore[assignment]
        out.predictions = _DROPPED
        return out

    @classmethod
    def of(cls, events: Sequence[Any]) -> Batch:
        out = cls()
        out.events = events
        out.n = len(events)
        out.statuses = list(map(_STATUS, events))
        out.latency = np.array(list(map(_LATENCY, events)), dtype=np.float64)
        out.confidence = np.array(list(map(_CONFIDENCE, events)), dtype=np.float64)
        out.predictions = list(map(_PREDICTION, events))
        out.prediction_kinds = set(map(type, out.predictions))
        out.tokens_in = list(map(_TOKENS_IN, events))
        out.tokens_out = list(map(_TOKENS_OUT, events))
        out.costs = list(map(_COST, events))
        out.cache = list(map(_CACHE_HIT, events))
        out.trace_ids = list(map(_TRACE_ID, events))
        features = []
        for name, column in columns(list(map(_FEATURES, events))):
            kinds = set(map(type, column))
            values = (np.fromiter(column, dtype=np.float64, count=len(column))
                      if kinds == FLOAT else None)
            features.append((name, column, kinds, values))
        out.features = features
        return out

    def cache_flags(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per row, 1.0 where ``cache_hit`` is known and where it is true; None if no row
        has it. Computed once (the slices of every key count them)."""
        if self._cache is False:
            cache = self.cache
            if cache.count(None) == self.n:
                self._cache = None
            else:   # one pass: 0 unknown, 1 a miss, 2 a hit
                flags = np.fromiter(map(_CACHE_FLAG.get, cache, itertools.repeat(1)),
                                    dtype=np.int8, count=self.n)
                self._cache = ((flags > 0).astype(np.float64),
                               (flags == 2).astype(np.float64))
        return self._cache  # type: ignore[return-value]


@dataclass(slots=True)
class Coded:
    """A column as codes (:func:`coded`)."""

    keys: list[str]
    """Each code's value as counters spell it (two codes may spell alike: "1" and 1)."""
    codes: np.ndarray
    """Each row's code."""

    @staticmethod
    def concat(codeds: Sequence[Coded]) -> Coded:
        """Columns of codes one after the other, their keys in the order they first come
        (values that spell alike: one key, as counters count them).

        >>> Coded.concat([coded(["a", "b"], {str}), coded(["c", "a"], {str})]).codes.tolist()
        [0, 1, 2, 0]
        """
        index: dict[str, int] = {}
        codes = [np.array([index.setdefault(key, len(index)) for key in c.keys],
                          dtype=np.intp)[c.codes] for c in codeds]
        return Coded(list(index), np.concatenate(codes))

    def taken(self, rows: np.ndarray) -> Coded:
        """The codes of ``rows``."""
        return Coded(self.keys, self.codes[rows])

    def counts(self, group: np.ndarray, k: int) -> list[dict[str, int]]:
        """Per group (0 .. k-1; ``group``: each row's), its values' counts, by key (in the
        order the values first appear in the column).

        >>> column = coded(["a", "b", "a", "c"], {str})
        >>> column.counts(np.array([0, 1, 1, 1]), 2)
        [{'a': 1}, {'a': 1, 'b': 1, 'c': 1}]
        """
        m = len(self.keys)
        return self.spelled(np.bincount(group * m + self.codes, minlength=k * m).reshape(k, m))

    def spelled(self, table: np.ndarray) -> list[dict[str, int]]:
        """Each row of a table of counts by code (groups × codes) as counts by key.

        >>> Coded(["a", "b", "a"], np.array([0, 1, 2])).spelled(np.array([[1, 0, 2], [0, 3, 0]]))
        [{'a': 3}, {'b': 3}]
        """
        keys, rows = self.keys, table.tolist()
        if len(set(keys)) == len(keys):   # the usual column: a row's dict in one pass
            return [{key: n for key, n in zip(keys, row, strict=True) if n} for row in rows]
        out = []
        for row in rows:   # codes that spell alike add up
            counts: dict[str, int] = {}
            for key, n in zip(keys, row, strict=True):
                if n:
                    counts[key] = counts.get(key, 0) + n
            out.append(counts)
        return out


def coded(values: list[object], kinds: set[type]) -> Coded:
    """``values`` as :class:`Coded`, in the order they first come (one C pass over the rows).
    Booleans among numbers are told apart by type (``True == 1``: they would share a code
    that counters keep apart), their keys spelled alike where counters spell them alike.

    >>> c = coded([1, 2, 1, None], {int, type(None)})
    >>> c.keys, c.codes.tolist()
    (['1', '2', 'null'], [0, 1, 0, 2])
    >>> c = coded([1, True, 1, 1.0], {int, bool, float})
    >>> c.keys, c.codes.tolist()
    (['1', 'true', '1'], [0, 1, 0, 2])
    """
    typed = bool in kinds and not kinds.isdisjoint(_NUMBERS)
    _, index, rows = first_seen(zip(map(type, values), values, strict=True) if typed
                                else values, len(values))
    spell = (lambda row: values[row]) if kinds == STR else (lambda row: value_key(values[row]))
    return Coded([spell(row) for row in rows], index)  # type: ignore[misc]


def first_seen(values: Iterable[Any], n: int) -> tuple[list[Any], np.ndarray, list[int]]:
    """The distinct of ``n`` hashable ``values`` in the order they first come, each value's
    index among them, and each one's first position (one C pass).

    >>> distinct, index, first = first_seen(["b", "a", "b"], 3)
    >>> distinct, index.tolist(), first
    (['b', 'a'], [0, 1, 0], [0, 1])
    """
    position: dict[Any, int] = {}
    first = np.fromiter(map(position.setdefault, values, itertools.count()), dtype=np.intp,
                        count=n)
    rows = list(position.values())
    dense = np.zeros(n, dtype=np.intp)
    dense[rows] = np.arange(len(rows))
    return list(position), dense[first], rows


def pick(values: Sequence[T], rows: list[int]) -> list[T]:
    """``values`` at ``rows`` (one C call).

    >>> pick("abcd", [0, 2]), pick("abcd", [3])
    (['a', 'c'], ['d'])
    """
    if len(rows) == 1:
        return [values[rows[0]]]
    return list(operator.itemgetter(*rows)(values))


def columns(rows: list[dict[str, object]]) -> list[tuple[str, list[object]]]:
    """Each feature of ``rows`` with its column (``MISSING`` where a row lacks it).

    >>> [(name, column) for name, column in columns([{"a": 1.0}, {"a": 2.0}])]
    [('a', [1.0, 2.0])]
    >>> [(name, len(column)) for name, column in columns([{"b": 1.0}, {"a": 2.0, "b": 3.0}])]
    [('b', 2), ('a', 2)]
    >>> columns([{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}])
    [('a', [1.0, 2.0]), ('b', ['x', 'y'])]
    >>> [(name, [v is MISSING for v in column]) for name, column in columns([{"a": 1}, {"b": 2}])]
    [('a', [False, True]), ('b', [True, False])]
    """
    if rows and len(set(map(len, rows))) == 1:
        # the usual batch: every row has the first row's features (rows of one length that
        # all hold those names hold nothing else), read in one pass over the rows, each
        # row's values at once: a sliced window reads rows decoded long before, out of the
        # CPU's caches, and a pass per feature came back to every row per feature
        names = list(rows[0])
        try:
            if len(names) < 2:
                return [(name, list(map(operator.itemgetter(name), rows))) for name in names]
            values = zip(*map(operator.itemgetter(*names), rows), strict=True)
            return list(zip(names, map(list, values), strict=True))
        except KeyError:
            pass
    # in the order the names first come (a set's order would change from run to run)
    return [(name, [row.get(name, MISSING) for row in rows])
            for name in dict.fromkeys(itertools.chain.from_iterable(rows))]


def ints(values: list[int | None], missing: int) -> np.ndarray:
    """The integers of an optional integer field (``missing`` of them None), Nones left out.

    >>> ints([3, None, 4], 1).tolist()
    [3, 4]
    """
    return np.array(values if not missing else [v for v in values if v is not None],
                    dtype=np.int64)


def floats(values: list[float | None]) -> np.ndarray:
    """The numbers of an optional numeric field, Nones left out (events hold no NaN: the
    parser rejects non-finite numbers, so NaN here is a None).

    >>> floats([1.0, None, 2]).tolist()
    [1.0, 2.0]
    """
    out = np.array(values, dtype=np.float64)   # None -> NaN
    return out if values.count(None) == 0 else out[~np.isnan(out)]


def numbers(values: list[object], kinds: set[type] | None = None) -> np.ndarray:
    """The floats among JSON values (not bools, strings, None or missing), in order.

    >>> numbers([1.0, True, "a", None, 2.5]).tolist()
    [1.0, 2.5]
    >>> numbers([None, 1.0, None, 2.5]).tolist()
    [1.0, 2.5]
    """
    if kinds is None:
        kinds = set(map(type, values))
    if kinds == FLOAT:
        return np.fromiter(values, dtype=np.float64, count=len(values))
    if kinds <= FLOAT_OR_NONE:   # e.g. predictions with failed calls among them
        return floats(values)  # type: ignore[arg-type]
    return np.fromiter((v for v in values if type(v) is float), dtype=np.float64)


_DROPPED: list[Any] = []
"""A column :meth:`Batch.compact` let go of (empty: nothing reads it)."""


def _first_traces(traces: list[str | None], rows: Sequence[int], kept: list[str | None],
                  k: int) -> None:
    """Copy into ``kept`` the first ``k`` of ``rows`` with a trace id."""
    found = 0
    for row in rows:
        trace = traces[row]
        if trace:
            kept[row] = trace
            found += 1
            if found == k:
                return
