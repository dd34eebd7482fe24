"""One feature's statistics in one window: its count, nulls, the moments of its numbers and
the counts of its other values (what a window summary reports of the feature).

>>> from mlpulse.columns import numbers
>>> stats = FeatureStats()
>>> column = [1.0, None, "a", 2.0]
>>> stats.add(numbers(column), ["a"], column.count(None), max_keys=10)
>>> summary = stats.summary(top_values=5)
>>> summary.count, summary.null_count, summary.mean, summary.top
(4, 1, 1.5, {'a': 1})
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .events import FeatureSummary
from .sketches import BoundedCounter, NumericStats, stable

__all__ = ["FeatureStats"]


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
