"""Which versions of a model to compare in a window, and what each compared side holds.

One :class:`Comparisons` per worker keeps, per owned partition and model:

* the versions' event counts over the last windows (the baseline is the version with the
  most events over the preceding ``history_windows``, unless one is pinned; a tie goes to
  the version that sorts first, numbers as numbers);
* the :class:`~mlpulse.detectors.comparison.Side` of each version's recently closed
  windows: versions whose windows close together (the usual case: one watermark closes
  every window of a partition) are compared at once; one that closes later is compared
  when it does;
* per window, the baseline chosen and each candidate's last comparison, for as long as
  labels and outcomes may revise the window (``horizon_s``): late labels compare again.

The statistics are in :mod:`mlpulse.detectors.comparison`; this module only pairs sides.

>>> from mlpulse.aggregates import PredictionAggregate
>>> from mlpulse.detectors.comparison import ComparisonSpec, Side, compare
>>> c = Comparisons(window_s=60, horizon_s=0)
>>> spec = ComparisonSpec()
>>> def side(version, n):
...     s = Side.of(version, PredictionAggregate()); s.count = n; return s
>>> c.closed(0, "m", 0.0, side("v1", 900))
>>> [(a.version, b.version) for a, b in c.pairs(0, "m", 0.0, "v1", spec)]   # alone
[]
>>> c.judged()
>>> c.closed(0, "m", 0.0, side("v2", 100))
>>> [(a.version, b.version) for a, b in c.pairs(0, "m", 0.0, "v2", spec)]
[('v2', 'v1')]
>>> c.compared(0, "m", 0.0, "v2", compare(*c.pairs(0, "m", 0.0, "v2", spec)[0], spec))
>>> c.pairs(0, "m", 0.0, "v1", spec)   # compared already
[]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .detectors.comparison import ComparisonSpec, Side
from .events import ComparisonSummary, OutcomeSummary, PerformanceSummary

__all__ = ["Comparisons"]

MAX_LABELLED_WINDOWS = 2000
"""Windows per model whose comparison late labels may revise (bounded whatever the
horizon)."""
SIDE_WINDOWS = 3
"""Windows a closed side waits, with its sketches, for the other versions' to close."""


@dataclass(slots=True)
class _Window:
    sides: dict[str, Side] = field(default_factory=dict)
    baseline: str | None = None
    compared: dict[str, ComparisonSummary] = field(default_factory=dict)
    """Each candidate's last comparison in this window."""
    closing: set[str] = field(default_factory=set)
    """Versions whose window closes in the batch being judged (each compares itself)."""


@dataclass(slots=True)
class _Model:
    counts: dict[float, dict[str, int]] = field(default_factory=dict)
    """Events per version per window start (the last windows: the baseline's history)."""
    windows: dict[float, _Window] = field(default_factory=dict)
    heavy: set[float] = field(default_factory=set)
    """Starts of the windows whose sides still hold their sketches."""


class Comparisons:
    """The pairing of versions in each window, for the partitions this worker owns."""

    def __init__(self, window_s: float, horizon_s: float) -> None:
        self.window_s = window_s
        self.horizon_s = horizon_s
        self._models: dict[tuple[int, str], _Model] = {}
        self._closing: list[_Window] = []

    def judged(self) -> None:
        """The batch of windows that closed together has been judged."""
        for window in self._closing:
            window.closing.clear()
        self._closing.clear()

    def closed(self, partition: int, model: str, start_s: float, side: Side,
               history_windows: int = 5) -> None:
        """A version's window closed with these statistics."""
        state = self._models.setdefault((partition, model), _Model())
        counts = state.counts.setdefault(start_s, {})
        counts[side.version] = counts.get(side.version, 0) + side.count
        for old in sorted(state.counts)[:-(history_windows + 2)]:
            del state.counts[old]
        window = state.windows.setdefault(start_s, _Window())
        window.sides[side.version] = side
        window.closing.add(side.version)
        self._closing.append(window)
        state.heavy.add(start_s)
        self._prune(state, max(state.heavy))

    def pairs(self, partition: int, model: str, start_s: float, version: str,
              spec: ComparisonSpec) -> list[tuple[Side, Side]]:
        """(candidate, baseline) sides to compare now that ``version``'s window at
        ``start_s`` closed: its own against the baseline, or, if it is the baseline, each
        candidate's that closed in an earlier batch and was not compared yet."""
        state = self._models.get((partition, model))
        window = state.windows.get(start_s) if state is not None else None
        if state is None or window is None or len(window.sides) < 2:
            return []
        baseline = window.baseline or self._baseline(state, start_s, spec)
        if baseline is None or baseline not in window.sides:
            return []
        window.baseline = baseline
        base = window.sides[baseline]
        candidates = [v for v in window.sides if v != baseline and v not in window.compared
                      and v not in window.closing] if version == baseline else (
            [version] if version not in window.compared else [])
        return [(window.sides[v], base) for v in candidates]

    def is_baseline(self, partition: int, model: str, start_s: float, version: str) -> bool:
        """Whether ``version`` is the baseline of that window (or alone in it so far)."""
        state = self._models.get((partition, model))
        window = state.windows.get(start_s) if state is not None else None
        return window is not None and (window.baseline == version or set(window.sides) == {
            version})

    def compared(self, partition: int, model: str, start_s: float, version: str,
                 summary: ComparisonSummary) -> None:
        """The candidate's comparison (kept for its late labels)."""
        state = self._models.get((partition, model))
        if state is not None and start_s in state.windows:
            state.windows[start_s].compared[version] = summary

    def revised(self, partition: int, model: str, start_s: float, version: str, *,
                performance: PerformanceSummary | None,
                outcomes: dict[str, OutcomeSummary]) -> list[tuple[Side, Side]]:
        """Late labels changed a version's window: its labelled statistics now, and the
        (candidate, baseline) sides whose labelled signals to compare again."""
        state = self._models.get((partition, model))
        window = state.windows.get(start_s) if state is not None else None
        if window is None or version not in window.sides:
            return []
        side = window.sides[version]
        side.performance, side.outcomes = performance, outcomes
        baseline = window.baseline
        if baseline is None or baseline not in window.sides:
            return []
        base = window.sides[baseline]
        if version == baseline:
            return [(other, base) for v, other in window.sides.items() if v != baseline]
        return [(side, base)]

    def last(self, partition: int, model: str, start_s: float, version: str
             ) -> ComparisonSummary | None:
        """The candidate's last comparison in that window."""
        state = self._models.get((partition, model))
        window = state.windows.get(start_s) if state is not None else None
        return window.compared.get(version) if window is not None else None

    def state(self, partition: int, model: str) -> dict[str, dict[str, int]]:
        """The model's version counts, as plain data (what a restart needs to choose the
        same baseline)."""
        state = self._models.get((partition, model))
        return {repr(start): counts for start, counts in state.counts.items()} if state else {}

    def restore(self, partition: int, model: str, data: dict[str, dict[str, int]]) -> None:
        """Counts of :meth:`state` (after a restart, before the model's first window)."""
        state = self._models.setdefault((partition, model), _Model())
        for start, counts in data.items():
            state.counts.setdefault(float(start), dict(counts))

    def known(self, partition: int, model: str) -> bool:
        return (partition, model) in self._models

    def keep_only(self, partitions: set[int]) -> None:
        for key in [k for k in self._models if k[0] not in partitions]:
            del self._models[key]

    def _baseline(self, state: _Model, start_s: float, spec: ComparisonSpec) -> str | None:
        if spec.baseline_version is not None:
            return spec.baseline_version
        present = state.windows[start_s].sides
        before = sorted(s for s in state.counts if s < start_s)[-spec.history_windows:]
        totals = {v: sum(state.counts[s].get(v, 0) for s in before) for v in present}
        # a tie (an even A/B split) goes to the older-looking version: 1.9 before 1.10
        return max(sorted(present, key=_natural),
                   key=lambda v: (totals[v], present[v].count))

    def _prune(self, state: _Model, newest_s: float) -> None:
        """Sides drop their sketches after ``SIDE_WINDOWS`` windows; windows are forgotten
        once no label can revise them."""
        light_before = newest_s - SIDE_WINDOWS * self.window_s
        for start in [s for s in state.heavy if s < light_before]:
            state.heavy.discard(start)
            window = state.windows.get(start)
            if window is not None:
                window.sides = {v: side.labelled_only() for v, side in window.sides.items()}
        keep_after = newest_s - max(self.horizon_s, SIDE_WINDOWS * self.window_s)
        if min(state.windows) < keep_after or len(state.windows) > MAX_LABELLED_WINDOWS:
            starts = sorted(state.windows)
            drop = max(len(starts) - MAX_LABELLED_WINDOWS, 0)
            for start in starts:
                if start < keep_after or drop > 0:
                    del state.windows[start]
                    drop -= 1


def _natural(version: str) -> list[tuple[int, int | str]]:
    """A version's sort key, its numbers compared as numbers.

    >>> sorted(["1.10", "1.9", "v2", "1.9-rc1"], key=_natural)
    ['1.9', '1.9-rc1', '1.10', 'v2']
    """
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", version) if part]
