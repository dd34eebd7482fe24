"""Reference profiles: what "normal" looks like for one model/version, in bounded state.

A :class:`Reference` holds, per numeric signal, quantile bin edges and the
reference's counts on them (plus mean, std, range, null rate and presence), and
per categorical signal the counts of its (at most ``max_categories``) values.
It never holds raw rows.

It is built from :class:`Contribution`\\ s — the plain-data digest of one closed
window (bounded samples and counters) — by :func:`build_reference`. Where the
contributions come from is the monitor's *reference mode*: the first windows of
a model version, a past time range, a rolling span, or events in a file.

>>> rng = np.random.default_rng(0)
>>> c = Contribution(start_s=0, end_s=60, events=1000, errors=10,
...                  samples={"f:x": (rng.normal(0, 1, 1000), 1000)})
>>> ref = build_reference([c], bins=4)
>>> ref.numeric["f:x"].edges.size, ref.numeric["f:x"].counts.tolist()
(5, [0, 250, 250, 250, 250, 0])
>>> ref.error_rate
0.01
>>> Reference.from_dict(ref.to_dict()).numeric["f:x"].counts.tolist()
[0, 250, 250, 250, 250, 0]
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..aggregates import PredictionAggregate
from .distance import sorted_quantiles
from .profile import WindowProfile

__all__ = [
    "CategoricalRef",
    "Contribution",
    "NumericRef",
    "Reference",
    "build_reference",
    "contribution",
]

_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(slots=True)
class NumericRef:
    """One numeric signal of the reference.

    ``edges`` are ``B + 1`` increasing values from the reference minimum to just
    above its maximum; with them a window's values fall in ``B + 2`` bins (below
    the range, the ``B`` quantile bins, above the range).
    """

    edges: np.ndarray
    counts: np.ndarray
    mean: float
    std: float
    min: float
    max: float
    null_rate: float = 0.0
    presence: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist(), "mean": self.mean,
                "std": self.std, "min": self.min, "max": self.max,
                "null_rate": self.null_rate, "presence": self.presence}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericRef:
        return cls(**{**data, "edges": np.asarray(data["edges"], dtype=np.float64),
                      "counts": np.asarray(data["counts"], dtype=np.int64)})

    def summary(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "null_rate": self.null_rate}


@dataclass(slots=True)
class CategoricalRef:
    """One categorical signal of the reference: value counts, the rest as ``other``."""

    counts: dict[str, int]
    other: int = 0
    null_rate: float = 0.0
    presence: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "other": self.other, "null_rate": self.null_rate,
                "presence": self.presence}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalRef:
        return cls(**data)

    def summary(self, top: int = 10) -> dict[str, Any]:
        total = sum(self.counts.values()) + self.other
        ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])[:top]
        return {"shares": {k: n / total for k, n in ranked} if total else {},
                "null_rate": self.null_rate}


@dataclass
class Reference:
    """The reference of one model/version."""

    numeric: dict[str, NumericRef]
    categorical: dict[str, CategoricalRef]
    events: int
    windows: int
    error_rate: float
    start_s: float
    end_s: float

    def edges(self) -> dict[str, np.ndarray]:
        """Bin edges per numeric signal: one dict, shared by every window's profile."""
        cached = self.__dict__.get("_edges")
        if cached is None:
            cached = self.__dict__["_edges"] = {
                signal: ref.edges for signal, ref in self.numeric.items()}
        return cached

    def rows(self) -> dict[str, int]:
        """Row of each numeric signal in a window profile's table (shared, like edges)."""
        cached = self.__dict__.get("_rows")
        if cached is None:
            cached = self.__dict__["_rows"] = {s: i for i, s in enumerate(self.edges())}
        return cached

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": {k: v.to_dict() for k, v in self.numeric.items()},
            "categorical": {k: v.to_dict() for k, v in self.categorical.items()},
            "events": self.events, "windows": self.windows, "error_rate": self.error_rate,
            "start_s": self.start_s, "end_s": self.end_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        return cls(
            numeric={k: NumericRef.from_dict(v) for k, v in data["numeric"].items()},
            categorical={k: CategoricalRef.from_dict(v) for k, v in data["categorical"].items()},
            events=data["events"], windows=data["windows"], error_rate=data["error_rate"],
            start_s=data["start_s"], end_s=data["end_s"],
        )


@dataclass
class Contribution:
    """What one closed window adds to a reference: bounded samples and counts.

    ``samples`` maps a numeric signal to (sample values, how many values it stands for);
    snapshots keep the samples as float32 (7 significant digits: plenty for bin edges;
    magnitudes beyond ±3.4e38 are saved as that bound);
    ``categories`` a categorical signal to its value counts; ``present`` and ``nulls``
    count the events that carried a signal and those that carried it as null.
    """

    start_s: float
    end_s: float
    events: int
    errors: int
    samples: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s, "end_s": self.end_s, "events": self.events,
            "errors": self.errors,
            # beyond float32's range (±3.4e38) a value is saved as that bound, not as inf
            "samples": {k: [np.clip(v, -_F32_MAX, _F32_MAX).astype(np.float32).tobytes(), n]
                        for k, (v, n) in self.samples.items()},
            "categories": self.categories, "present": self.present, "nulls": self.nulls,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Contribution:
        samples = {k: (np.frombuffer(v, dtype=np.float32).astype(np.float64), n)
                   for k, (v, n) in data["samples"].items()}
        return cls(**{**data, "samples": samples})


def contribution(
    aggregate: PredictionAggregate, profile: WindowProfile, start_s: float, end_s: float,
) -> Contribution:
    """The digest of one closed window for reference building."""
    out = Contribution(start_s=start_s, end_s=end_s, events=aggregate.count,
                       errors=aggregate.error_count)
    for signal, sample in profile.samples.items():
        out.samples[signal] = (sample.values.copy(), sample.seen)
    for name, stats in aggregate.features.items():
        signal = "f:" + name
        out.present[signal] = stats.count
        out.nulls[signal] = stats.null_count
        if stats.categories is not None:
            categories = dict(stats.categories.counts)
            if stats.categories.other:
                categories["__other__"] = stats.categories.other
            out.categories[signal] = categories
    if "o:prediction" not in profile.samples and aggregate.predictions.counts:
        predictions = {k: n for k, n in aggregate.predictions.counts.items() if k != "null"}
        if predictions:
            out.categories["o:prediction"] = predictions
    return out


def build_reference(
    contributions: Sequence[Contribution], bins: int = 10, sample_size: int = 2000,
    max_categories: int = 1000, seed: int = 0,
) -> Reference:
    """Pool window contributions into a reference (numeric: quantile bins of the pooled sample)."""
    if not contributions:
        raise ValueError("a reference needs at least one window")
    rng = np.random.default_rng(seed)
    events = sum(c.events for c in contributions)
    numeric: dict[str, NumericRef] = {}
    categorical: dict[str, CategoricalRef] = {}
    signals = {s for c in contributions for s in c.samples}
    for signal in sorted(signals):
        pooled = pool_samples([c.samples[signal] for c in contributions if signal in c.samples],
                              sample_size, rng)
        seen = sum(c.samples[signal][1] for c in contributions if signal in c.samples)
        categorical_values = sum(
            sum(c.categories.get(signal, {}).values()) for c in contributions)
        if pooled.size == 0 or categorical_values > seen:
            continue   # mostly categorical: handled below
        present = _total(contributions, "present", signal, default=seen)
        nulls = _total(contributions, "nulls", signal, default=0)
        ordered = np.sort(pooled)
        lo, hi = float(ordered[0]), float(ordered[-1])
        edges = np.unique(np.concatenate([[lo], sorted_quantiles(
            ordered, np.linspace(0, 1, bins + 1)[1:-1]), [np.nextafter(hi, np.inf)]]))
        # bin_counts(edges, pooled), from the sorted sample: the values below each edge
        binned = np.diff(np.searchsorted(ordered, edges, "left"), prepend=0, append=ordered.size)
        numeric[signal] = NumericRef(
            edges=edges, counts=binned, mean=float(pooled.mean()),
            std=float(pooled.std()), min=lo, max=hi,
            null_rate=nulls / present if present else 0.0,
            presence=present / events if events else 0.0,
        )
    for signal in sorted({s for c in contributions for s in c.categories}):
        if signal in numeric:
            continue
        counts: dict[str, int] = {}
        other = 0
        for c in contributions:
            for value, n in c.categories.get(signal, {}).items():
                if value in counts:
                    counts[value] += n
                elif value != "__other__" and len(counts) < max_categories:
                    counts[sys.intern(value)] = n
                else:
                    other += n
        total = sum(counts.values()) + other
        present = _total(contributions, "present", signal, default=total)
        nulls = _total(contributions, "nulls", signal, default=0)
        categorical[signal] = CategoricalRef(
            counts=counts, other=other, null_rate=nulls / present if present else 0.0,
            presence=present / events if events else 0.0,
        )
    return Reference(
        numeric=numeric, categorical=categorical, events=events, windows=len(contributions),
        error_rate=sum(c.errors for c in contributions) / events if events else 0.0,
        start_s=min(c.start_s for c in contributions), end_s=max(c.end_s for c in contributions),
    )


def pool_samples(
    samples: Iterable[tuple[np.ndarray, int]], size: int, rng: np.random.Generator,
) -> np.ndarray:
    """At most ``size`` values drawn from window samples in proportion to what each stands for.

    >>> rng = np.random.default_rng(0)
    >>> pooled = pool_samples([(np.zeros(100), 900), (np.ones(100), 100)], 100, rng)
    >>> pooled.size, int(pooled.sum())
    (100, 10)
    """
    parts = [(values, seen) for values, seen in samples if values.size]
    total = sum(seen for _, seen in parts)
    if not parts or total == 0:
        return np.empty(0)
    if sum(values.size for values, _ in parts) <= size and all(
            values.size == seen for values, seen in parts):
        return np.concatenate([values for values, _ in parts])
    out = []
    for values, seen in parts:
        take = min(values.size, max(1, round(size * seen / total)))
        out.append(values if take == values.size else rng.choice(values, take, replace=False))
    return np.concatenate(out)


def _total(contributions: Sequence[Contribution], name: str, signal: str, default: int) -> int:
    if all(signal not in getattr(c, name) for c in contributions):
        return default
    return sum(getattr(c, name).get(signal, 0) for c in contributions)
