"""Per-event change detection with river's ADWIN, one detector per signal.

:class:`ChangeDetectors` is the small adapter the rest of mlpulse uses: feed it
a batch of values per signal, read how many changes each signal showed since
the last :meth:`~ChangeDetectors.take_detections`, and its current mean. River's
ADWIN restarts from an empty window after a detection, so the mean afterwards
is the mean of the new regime.

State is bounded (ADWIN keeps O(log n) buckets per signal) and at most
``max_signals`` signals are watched. A snapshot keeps each signal's window as
(width, mean, variance); a restore rebuilds an ADWIN with that mean and
variance from ``restore_points`` values (a summarised window: later changes
are judged against it with less evidence than the original had).

>>> rng = np.random.default_rng(7)
>>> changes = ChangeDetectors(delta=0.002)
>>> changes.update("f:x", rng.normal(0, 1, 2000))
>>> changes.take_detections()
{}
>>> changes.update("f:x", rng.normal(1, 1, 2000))    # a 1σ shift
>>> changes.take_detections()
{'f:x': 1}
>>> round(changes.mean("f:x"), 1)
1.0
>>> restored = ChangeDetectors.restore(changes.snapshot())
>>> round(restored.mean("f:x"), 1)
1.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from river import drift

__all__ = ["ChangeDetectors"]


class ChangeDetectors:
    """ADWIN per signal (see module docs)."""

    def __init__(self, delta: float = 0.002, max_signals: int = 64,
                 restore_points: int = 64) -> None:
        self.delta = delta
        self.max_signals = max_signals
        self.restore_points = restore_points
        self._detectors: dict[str, drift.ADWIN] = {}
        self._detections: dict[str, int] = {}

    def update(self, signal: str, values: np.ndarray) -> None:
        detector = self._detectors.get(signal)
        if detector is None:
            if len(self._detectors) >= self.max_signals:
                return
            detector = self._detectors[signal] = drift.ADWIN(delta=self.delta)
        found = 0
        helper = getattr(detector, "_helper", None)
        if helper is None:   # not the river version we pin: the public API, 3x slower
            for value in values.tolist():
                detector.update(value)
                found += detector.drift_detected
        else:
            # river's ADWIN.update is `if drift_detected: reset; detected = helper.update(x)`;
            # calling its Rust helper directly does the same at a third of the cost
            if detector.drift_detected:
                detector._reset()
                helper = detector._helper
            # next(filter(None, map(...))) feeds values in C up to the first change (or
            # the end); after a change the rest go on to the fresh helper
            rest = iter(values.tolist())
            while next(filter(None, map(helper.update, rest)), False):
                found += 1
                detector._reset()
                helper = detector._helper
        if found:
            self._detections[signal] = self._detections.get(signal, 0) + found

    def take_detections(self) -> dict[str, int]:
        """Changes per signal since the last call."""
        out, self._detections = self._detections, {}
        return out

    def mean(self, signal: str) -> float | None:
        detector = self._detectors.get(signal)
        if detector is None or detector.width == 0:
            return None
        return float(detector.estimation)

    def width(self, signal: str) -> int:
        detector = self._detectors.get(signal)
        return 0 if detector is None else int(detector.width)

    def snapshot(self) -> dict[str, Any]:
        windows = {}
        for signal, d in self._detectors.items():
            width = int(d.width)
            windows[signal] = [width, float(d.estimation), float(d.variance) / width
                               if width else 0.0]
        return {"delta": self.delta, "max_signals": self.max_signals,
                "restore_points": self.restore_points, "windows": windows,
                "detections": dict(self._detections)}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> ChangeDetectors:
        out = cls(data["delta"], data["max_signals"], data["restore_points"])
        out._detections = dict(data["detections"])
        for signal, (width, mean, variance) in data["windows"].items():
            detector = out._detectors[signal] = drift.ADWIN(delta=out.delta)
            n = min(width, out.restore_points)
            if n:
                spread = math.sqrt(max(variance, 0.0))
                values = mean + spread * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
                if n % 2:   # odd count: keep the mean exact
                    values[-1] = mean
                for value in values.tolist():
                    detector.update(value)
        return out
