"""Model quality and business outcomes of one window from delayed feedback: the pure part
of the feedback join.

A :class:`Performance` accumulates (prediction, label, delay) pairs of the
predictions of one window — whenever their labels arrive — and reports
accuracy, macro precision/recall/F1 (binary problems also report the positive
class's), MAE/RMSE for numeric predictions, label coverage (labelled share of
the window's predictions) and label delay. Classes are bounded
(``max_classes``; the rest count as ``__other__``). State is a few counters.

>>> p = Performance()
>>> p.add([(1.0, 1.0, 30.0), (1.0, 0.0, 60.0), (0.0, 0.0, 90.0), (0.0, 0.0, 5.0)])
>>> r = p.result(predictions=5)
>>> r.accuracy, r.precision, r.recall, round(r.f1, 3), r.label_coverage
(0.75, 0.5, 1.0, 0.667, 0.8)
>>> r.label_delay_mean_seconds
46.25
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .events import OutcomeSummary, PerformanceSummary
from .sketches import OTHER, stable, value_key

__all__ = ["Outcomes", "Performance"]

Pair = tuple[object, object, float]
"""(prediction, label, seconds from prediction to label)."""


class Performance:
    """Counters of one window's labelled predictions."""

    def __init__(self, max_classes: int = 100) -> None:
        self.max_classes = max_classes
        self.confusion: dict[tuple[str, str], int] = {}
        self.classes: set[str] = set()
        self.labelled = 0
        self.numeric = 0
        self.abs_error = 0.0
        self.sq_error = 0.0
        self.delay_sum_s = 0.0
        self.delay_max_s = 0.0

    def add(self, pairs: Iterable[Pair]) -> None:
        for prediction, label, delay_s in pairs:
            self.labelled += 1
            self.delay_sum_s += delay_s
            self.delay_max_s = max(self.delay_max_s, delay_s)
            if (type(prediction) is float and type(label) is float
                    and not _is_class(prediction, label)):
                self.numeric += 1
                error = prediction - label
                self.abs_error += abs(error)
                self.sq_error += error * error
                continue
            key = (self._class(value_key(prediction)), self._class(value_key(label)))
            self.confusion[key] = self.confusion.get(key, 0) + 1

    def _class(self, name: str) -> str:
        if name in self.classes:
            return name
        if len(self.classes) < self.max_classes:
            self.classes.add(name)
            return name
        return OTHER

    def state(self) -> list[Any]:
        """These counters as plain data (msgpack-ready).

        >>> p = Performance()
        >>> p.add([("cat", "cat", 1.0), (0.5, 0.25, 2.0)])
        >>> q = Performance.from_state(p.state())
        >>> q.result(predictions=2) == p.result(predictions=2)
        True
        """
        return [[[p, t, n] for (p, t), n in self.confusion.items()], sorted(self.classes),
                self.labelled, self.numeric, self.abs_error, self.sq_error, self.delay_sum_s,
                self.delay_max_s]

    @classmethod
    def from_state(cls, state: list[Any], max_classes: int = 100) -> Performance:
        out = cls(max_classes)
        confusion, classes, out.labelled, out.numeric, out.abs_error, out.sq_error, \
            out.delay_sum_s, out.delay_max_s = state
        out.confusion = {(p, t): n for p, t, n in confusion}
        out.classes = set(classes)
        return out

    def result(self, predictions: int) -> PerformanceSummary:
        """The window's quality, given how many predictions it had."""
        out: dict[str, Any] = {
            "labelled": self.labelled,
            "label_coverage": min(self.labelled / predictions, 1.0) if predictions else 0.0,
            "label_delay_mean_seconds": (self.delay_sum_s / self.labelled
                                         if self.labelled else None),
            "label_delay_max_seconds": self.delay_max_s if self.labelled else None,
        }
        if self.numeric:
            out["mae"] = self.abs_error / self.numeric
            out["rmse"] = math.sqrt(self.sq_error / self.numeric)
        total = sum(self.confusion.values())
        if total:
            classes = sorted({c for pair in self.confusion for c in pair})
            correct = sum(n for (p, t), n in self.confusion.items() if p == t)
            out["accuracy"] = correct / total
            per_class = {c: _prf(self.confusion, c) for c in classes}
            binary = _positive(classes)
            if binary is not None:   # the positive class may be absent (all "0"): zeros
                out["precision"], out["recall"], out["f1"] = _prf(self.confusion, binary)
            else:
                for i, name in enumerate(("precision", "recall", "f1")):
                    out[name] = sum(v[i] for v in per_class.values()) / len(per_class)
            out["macro_f1"] = sum(v[2] for v in per_class.values()) / len(per_class)
        return PerformanceSummary(**out)


def _is_class(prediction: float, label: float) -> bool:
    """0/1 predictions with 0/1 labels are a binary classifier, not a regression."""
    return prediction in (0.0, 1.0) and label in (0.0, 1.0)


def _positive(classes: list[str]) -> str | None:
    for negative, positive in (("0", "1"), ("false", "true")):
        if set(classes) <= {negative, positive}:
            return positive
    return None


def _prf(confusion: dict[tuple[str, str], int], c: str) -> tuple[float, float, float]:
    tp = confusion.get((c, c), 0)
    predicted = sum(n for (p, _), n in confusion.items() if p == c)
    actual = sum(n for (_, t), n in confusion.items() if t == c)
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class Outcomes:
    """Business outcomes of one window's predictions: per name, count, sum and sum of
    squares, and whether every value was a boolean (then its ``rate`` is reported). At most
    ``max_names`` names per window; values of others are counted in ``dropped``.

    >>> o = Outcomes()
    >>> o.add({"converted": True, "revenue_usd": 12.5})
    >>> o.add({"converted": False})
    >>> r = o.result()
    >>> r["converted"].rate, r["converted"].count, r["revenue_usd"].mean
    (0.5, 2, 12.5)
    >>> Outcomes.from_state(o.state()).result() == r
    True
    """

    __slots__ = ("dropped", "max_names", "sums")

    def __init__(self, max_names: int = 20) -> None:
        self.max_names = max_names
        self.sums: dict[str, list[Any]] = {}
        """name → [count, sum, sum of squares, all booleans]."""
        self.dropped = 0

    def add(self, outcomes: dict[str, float | bool]) -> None:
        sums = self.sums
        for name, value in outcomes.items():
            row = sums.get(name)
            if row is None:
                if len(sums) >= self.max_names:
                    self.dropped += 1
                    continue
                row = sums[name] = [0, 0.0, 0.0, True]
            number = float(value)
            row[0] += 1
            row[1] += number
            row[2] += number * number
            row[3] = row[3] and type(value) is bool

    def __bool__(self) -> bool:
        return bool(self.sums)

    def result(self) -> dict[str, OutcomeSummary]:
        out = {}
        for name, (count, total, squares, booleans) in sorted(self.sums.items()):
            mean = total / count
            std = math.sqrt(max(squares / count - mean * mean, 0.0))
            out[name] = OutcomeSummary(count=count, sum=stable(total), mean=stable(mean),
                                       std=stable(std), rate=stable(mean) if booleans else None)
        return out

    def state(self) -> list[Any]:
        return [self.sums, self.dropped]

    @classmethod
    def from_state(cls, state: list[Any] | None, max_names: int = 20) -> Outcomes:
        out = cls(max_names)
        if state:
            sums, out.dropped = state
            out.sums = {name: list(row) for name, row in sums.items()}
        return out
