"""A batch's fields as columns, the numbers among them, and one feature's statistics in a
window: what :mod:`mlpulse.aggregates` folds a batch with.

>>> stats = FeatureStats()
>>> column = [1.0, None, "a", 2.0]
>>> stats.add(numbers(column), ["a"], column.count(None), max_keys=10)
>>> summary = stats.summary(top_values=5)
>>> summary.count, summary.null_count, summary.mean, summary.top
(4, 1, 1.5, {'a': 1})
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .events import FeatureSummary
from .sketches import BoundedCounter, NumericStats, stable

__all__ = ["FLOAT", "FLOAT_OR_NONE", "MISSING", "NO_VALUES", "STR", "FeatureStats", "columns",
           "floats", "ints", "numbers"]

MISSING = object()
"""A row's value of a feature it does not have (:func:`columns`)."""
FLOAT = {float}
FLOAT_OR_NONE = {float, type(None)}
STR = {str}
NO_VALUES = np.zeros(0)


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


def columns(rows: list[dict[str, object]]) -> list[tuple[str, list[object]]]:
    """Each feature of ``rows`` with its column (``MISSING`` where a row lacks it).

    >>> [(name, column) for name, column in columns([{"a": 1.0}, {"a": 2.0}])]
    [('a', [1.0, 2.0])]
    >>> sorted((name, len(column)) for name, column in columns([{"a": 1.0}, {"b": 2.0}]))
    [('a', 2), ('b', 2)]
    """
    if rows and len(set(map(len, rows))) == 1:
        # the usual batch: every row has the first row's features (rows of one length that
        # all hold those names hold nothing else)
        try:
            return [(name, list(map(operator.itemgetter(name), rows))) for name in rows[0]]
        except KeyError:
            pass
    return [(name, [row.get(name, MISSING) for row in rows]) for name in set().union(*rows)]


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
