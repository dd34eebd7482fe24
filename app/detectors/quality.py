"""Data-quality checks of one window against the reference.

Per feature: null rate jump, values outside the reference range, categories the
reference never saw, a change of type (numbers become strings or back), a
feature gone missing or newly appearing. Each check returns a
:class:`~mlpulse.detectors.finding.Finding`, firing or clear; too little data, no finding.

>>> from mlpulse.aggregates import PredictionAggregate
>>> from mlpulse.detectors.reference import CategoricalRef, Reference
>>> ref = Reference(numeric={}, categorical={"f:c": CategoricalRef({"a": 90, "b": 10})},
...                 events=100, windows=1, error_rate=0.0, start_s=0, end_s=60)
>>> agg = PredictionAggregate()
>>> agg.add_batch([_ev({"c": "z"})] * 60 + [_ev({"c": "a"})] * 40)
>>> findings = check_quality(ref, agg, {}, QualityThresholds())
>>> [(f.rule, f.labels["feature"]) for f in findings if f.firing]
[('unseen_category', 'c')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import numpy as np

from ..aggregates import FeatureStats, PredictionAggregate
from .finding import Finding
from .reference import Reference

__all__ = ["QualityThresholds", "check_quality"]

Share = Annotated[float, msgspec.Meta(ge=0, le=1)]


class QualityThresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a data-quality check fires (shares are of the window's events or values)."""

    null_rate_increase: Share = 0.1
    out_of_range: Share = 0.05
    unseen_category: Share = 0.05
    type_change: Share = 0.05
    missing_presence_ratio: Share = 0.1
    new_feature_presence: Share = 0.05
    min_events: Annotated[int, msgspec.Meta(ge=1)] = 50


def check_quality(
    ref: Reference, aggregate: PredictionAggregate, bins: Mapping[str, np.ndarray],
    t: QualityThresholds, *, only_firing: bool = False,
) -> list[Finding]:
    """All data-quality findings of one window (``bins``: numeric counts on the ref edges);
    with ``only_firing``, those that fire (a series with no alert to resolve: the clear
    ones would change nothing, and a window makes one per feature and check).

    >>> from mlpulse.detectors.reference import CategoricalRef
    >>> ref = Reference(numeric={}, categorical={"f:c": CategoricalRef({"a": 90})},
    ...                 events=90, windows=1, error_rate=0.0, start_s=0, end_s=60)
    >>> agg = PredictionAggregate()
    >>> agg.add_batch([_ev({"c": "a"})] * 60)
    >>> len(check_quality(ref, agg, {}, QualityThresholds())), check_quality(
    ...     ref, agg, {}, QualityThresholds(), only_firing=True)
    (4, [])
    """
    events = aggregate.count
    if events < t.min_events:
        return []
    out: list[Finding] = []
    known, features = _features_of(ref)
    for signal, name, ref_presence, ref_null in features:
        stats = aggregate.features.get(name)
        labels = {"feature": name}
        presence = (stats.count if stats else 0) / events
        missing = presence <= t.missing_presence_ratio * ref_presence
        if ref_presence >= 0.5 and (missing or not only_firing):
            out.append(Finding(
                "feature_missing", "data_quality", missing, labels, "critical", presence,
                t.missing_presence_ratio * ref_presence,
                f"feature {name} is missing: present in {presence:.0%} of events "
                f"(reference {ref_presence:.0%})",
                {"presence": presence, "reference_presence": ref_presence}))
        if stats is None or stats.count == 0:
            continue
        null_rate = stats.null_count / stats.count
        nulls = null_rate - ref_null >= t.null_rate_increase
        if nulls or not only_firing:
            out.append(Finding(
                "null_rate", "data_quality", nulls, labels,
                "warning", null_rate, ref_null + t.null_rate_increase,
                f"feature {name} is null in {null_rate:.1%} of events "
                f"(reference {ref_null:.1%})",
                {"null_rate": null_rate, "reference_null_rate": ref_null}))
        out.extend(_type_and_range(name, signal, stats, ref, bins=bins, t=t,
                                   only_firing=only_firing))
    for name, stats in sorted(aggregate.features.items()):
        if "f:" + name in known:
            continue
        presence = stats.count / events
        if presence < t.new_feature_presence and only_firing:
            continue
        out.append(Finding(
            "feature_new", "data_quality", presence >= t.new_feature_presence,
            {"feature": name}, "info", presence, t.new_feature_presence,
            f"feature {name} is new: in {presence:.0%} of events, not in the reference",
            {"presence": presence}))
    return out


def _type_and_range(
    name: str, signal: str, stats: FeatureStats, ref: Reference, *,
    bins: Mapping[str, np.ndarray], t: QualityThresholds, only_firing: bool,
) -> list[Finding]:
    labels = {"feature": name}
    numbers = stats.numeric.count if stats.numeric is not None else 0
    categories = stats.categories
    strings = (sum(categories.counts.values()) + categories.other) if categories else 0
    values = numbers + strings
    if values == 0:
        return []
    out = []
    numeric_ref = ref.numeric.get(signal)
    if numeric_ref is not None:
        wrong = strings / values
        if wrong >= t.type_change or not only_firing:
            out.append(Finding(
                "type_change", "data_quality", wrong >= t.type_change, labels, "critical",
                wrong, t.type_change,
                f"feature {name} was numeric; {wrong:.0%} of its values are not",
                {"expected": "number", "other_share": wrong,
                 "examples": list(categories.top(3)) if categories else []}))
        binned = bins.get(signal)
        counts = binned.tolist() if binned is not None else []   # (a few ints: as a list)
        total = sum(counts)
        outside = (counts[0] + counts[-1]) / total if total else 0.0
        if total and (outside >= t.out_of_range or not only_firing):
            out.append(Finding(
                "out_of_range", "data_quality", outside >= t.out_of_range, labels, "warning",
                outside, t.out_of_range,
                f"feature {name}: {outside:.1%} of values outside the reference range "
                f"[{numeric_ref.min:.4g}, {numeric_ref.max:.4g}]",
                {"outside_share": outside, "below": int(counts[0]), "above": int(counts[-1]),
                 "reference_min": numeric_ref.min, "reference_max": numeric_ref.max,
                 "current_min": stats.numeric.min if stats.numeric else None,
                 "current_max": stats.numeric.max if stats.numeric else None}))
        return out
    categorical_ref = ref.categorical[signal]
    wrong = numbers / values
    if wrong >= t.type_change or not only_firing:
        out.append(Finding(
            "type_change", "data_quality", wrong >= t.type_change, labels, "critical", wrong,
            t.type_change,
            f"feature {name} was categorical; {wrong:.0%} of its values are numbers",
            {"expected": "category", "other_share": wrong}))
    if categories is not None and strings and not categorical_ref.other:
        unseen = {k: n for k, n in categories.counts.items() if k not in categorical_ref.counts}
        share = (sum(unseen.values()) + categories.other) / strings
        if share < t.unseen_category and only_firing:
            return out
        top = dict(sorted(unseen.items(), key=lambda kv: -kv[1])[:5])
        out.append(Finding(
            "unseen_category", "data_quality", share >= t.unseen_category, labels, "warning",
            share, t.unseen_category,
            f"feature {name}: {share:.1%} of values are categories the reference never saw",
            {"unseen_share": share, "unseen_examples": top}))
    return out


def _features_of(ref: Reference) -> tuple[frozenset[str], list[tuple[str, str, float, float]]]:
    """The signals of a reference, and per feature in order its signal, name, presence and
    null rate: remembered with the reference (every window of its series reads them)."""
    cached = ref.__dict__.get("_quality")
    if cached is None:
        known = frozenset(ref.numeric) | frozenset(ref.categorical)
        features = []
        for signal in sorted(known):
            if signal.startswith("f:"):
                part = ref.numeric.get(signal) or ref.categorical[signal]
                features.append((signal, signal[2:], part.presence, part.null_rate))
        cached = ref.__dict__["_quality"] = (known, features)
    return cached


def _ev(features: dict[str, Any]) -> Any:
    """A prediction event with ``features`` (for the examples)."""
    from ..events import PredictionEvent
    return PredictionEvent(event_id="e", timestamp=0.0, model="m", features=features)
