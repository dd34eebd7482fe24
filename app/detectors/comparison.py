"""Version comparison: a candidate version's window against its baseline's, same window.

When two or more versions of a model have events in one window, each **candidate** is
compared with the model's **baseline** version in that window (by default the version
with the most events over the preceding windows; ``comparison.baseline_version`` pins it).
Both sides saw the same traffic period, so a difference is the version's, not the day's:
a bad canary is caught even though it is its own reference from its first window.

Each signal gets a test suited to what the window keeps of it:

========================  ==========================  ==================================
signal                    test                        effect (material when beyond)
========================  ==========================  ==================================
``error_rate``            two-proportion z            rate difference (``error_rate_increase``)
``latency_ms.p50/.p99``   share above the baseline's  ratio of the quantiles
                          quantile, two-proportion    (``latency_ratio``)
``confidence``            chi-square on shared bins   PSI (``psi``)
``predictions``           chi-square (classes) or     largest change of a class's share
                          Welch's t (numbers)         (``share_change``), or Cohen's d
                                                      (``effect_size``)
``features.<name>``       Welch's t (numbers),        Cohen's d, or the largest change of
                          chi-square (categories)     a value's share
``performance.accuracy``  two-proportion z            accuracy drop (``accuracy_drop``)
``performance.mae``       Welch's t on the errors     Cohen's d
``outcomes.<name>``       two-proportion z (booleans) relative change (``outcome_change``),
                          Welch's t (numbers)         or Cohen's d
========================  ==========================  ==================================

A signal **differs** when its p-value is below ``p_value`` divided by the number of
signals compared in the window (Bonferroni: twenty features do not make twenty chances of
a false alarm) *and* its effect is material: at large counts a tiny difference is
significant but not worth an alert. Signals with a direction (errors, latency,
performance, outcomes) are ``worse`` or ``better``, and only ``worse`` alerts (an outcome
is better higher unless listed in ``lower_is_better``); distributions are ``different``.
Each side needs ``min_events`` events (``min_labels`` labels or outcomes for the labelled
signals) or the signal is not compared.

>>> from mlpulse.aggregates import PredictionAggregate
>>> from mlpulse.events import PredictionEvent
>>> def side(version, slow_ms, errors):
...     a = PredictionAggregate()
...     a.add_batch([PredictionEvent(event_id=str(i), timestamp=0, model="m",
...                                  latency_ms=float(10 + i % 20 + slow_ms),
...                                  status="error" if i < errors else "ok")
...                  for i in range(1000)])
...     return Side.of(version, a)
>>> spec = ComparisonSpec()
>>> result = compare(side("v2", 15, 60), side("v1", 0, 10), spec)
>>> {name: s.verdict for name, s in result.signals.items()}
{'error_rate': 'worse', 'latency_ms.p50': 'worse', 'latency_ms.p99': 'worse'}
>>> {name: s.verdict for name, s in compare(side("v2", 0, 10), side("v1", 0, 10),
...                                         spec).signals.items()}
{'error_rate': 'same', 'latency_ms.p50': 'same', 'latency_ms.p99': 'same'}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from scipy import special

from ..events import ComparisonSummary, OutcomeSummary, PerformanceSummary, SignalComparison
from ..feature_stats import FeatureStats
from ..sketches import OTHER, BoundedCounter, NumericStats, QuantileSketch
from .distance import chi_square, psi
from .finding import Finding

__all__ = ["ComparisonSpec", "Side", "compare", "compare_labelled", "findings"]

Probability = Annotated[float, msgspec.Meta(gt=0, lt=1)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]

SHARED_BINS = 10
"""Bins a sketched distribution (confidence) is compared on: the pooled deciles."""
MAX_CATEGORIES = 20
"""Categories compared one by one (the most frequent of both sides); the rest are one."""


class ComparisonSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``comparison:`` detector settings (defaults for every model; per model under
    ``models.<name>.comparison``)."""

    enabled: bool = True
    baseline_version: str | None = None
    """Pinned baseline; by default the version with the most events over the preceding
    ``history_windows`` windows."""
    history_windows: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    min_events: Annotated[int, msgspec.Meta(ge=1)] = 200
    min_labels: Annotated[int, msgspec.Meta(ge=1)] = 100
    p_value: Probability = 0.002
    """Family-wise per window and candidate (Bonferroni over its signals): about 0.2 false
    comparison alerts per 100 windows of identical versions."""
    error_rate_increase: NonNegative = 0.01
    latency_ratio: Annotated[float, msgspec.Meta(ge=1)] = 1.2
    psi: NonNegative = 0.1
    share_change: NonNegative = 0.05
    """A category's share (a class of the predictions, a value of a feature) must move by
    this much (5 points) for a categorical distribution to differ materially."""
    effect_size: NonNegative = 0.2
    accuracy_drop: NonNegative = 0.02
    outcome_change: NonNegative = 0.1
    lower_is_better: list[str] = []
    """Outcomes for which lower is better (e.g. ``churned``, ``refund_usd``)."""


@dataclass(slots=True)
class Side:
    """What a comparison needs of one version's closed window (the aggregate's sketches,
    shared, not copied: a closed window does not change)."""

    version: str
    count: int
    error_count: int
    latency: QuantileSketch
    confidence: QuantileSketch
    predictions: BoundedCounter
    prediction_values: NumericStats
    features: dict[str, FeatureStats]
    performance: PerformanceSummary | None = None
    outcomes: dict[str, OutcomeSummary] = field(default_factory=dict)

    @classmethod
    def of(cls, version: str, aggregate: Any) -> Side:
        """The side of a closed :class:`~mlpulse.aggregates.PredictionAggregate`."""
        return cls(version, aggregate.count, aggregate.error_count, aggregate.latency,
                   aggregate.confidence, aggregate.predictions, aggregate.prediction_values,
                   aggregate.features)

    def labelled_only(self) -> Side:
        """This side without its sketches: what late labels and outcomes compare."""
        return Side(self.version, self.count, self.error_count, QuantileSketch(),
                    QuantileSketch(), BoundedCounter(), NumericStats(), {}, self.performance,
                    self.outcomes)


Test = Literal["two_proportion", "quantile_exceedance", "chi_square", "welch_t"]
Verdict = Literal["worse", "better", "different", "same"]


@dataclass(slots=True)
class _Test:
    signal: str
    test: Test
    candidate: float | None
    baseline: float | None
    effect: float
    p_value: float
    material: bool
    direction: int = 0
    """+1: higher is worse, -1: lower is worse, 0: a distribution (any change)."""
    labels: dict[str, str] = field(default_factory=dict)


def compare(candidate: Side, baseline: Side, spec: ComparisonSpec) -> ComparisonSummary:
    """Every signal of ``candidate`` against ``baseline`` (see the module docs)."""
    tests: list[_Test] = []
    if min(candidate.count, baseline.count) >= spec.min_events:
        tests += _errors(candidate, baseline, spec)
        tests += _latency(candidate, baseline, spec)
        tests += _sketched("confidence", candidate.confidence, baseline.confidence, spec)
        tests += _categories("predictions", candidate.predictions, baseline.predictions, spec)
        tests += _numbers("predictions", candidate.prediction_values,
                          baseline.prediction_values, spec)
        for name in sorted(candidate.features.keys() & baseline.features.keys()):
            mine, theirs = candidate.features[name], baseline.features[name]
            if mine.numeric is not None and theirs.numeric is not None:
                tests += _numbers(f"features.{name}", mine.numeric, theirs.numeric, spec)
            if mine.categories is not None and theirs.categories is not None:
                tests += _categories(f"features.{name}", mine.categories, theirs.categories,
                                     spec)
    tests += _labelled(candidate, baseline, spec)
    return _summary(tests, baseline, spec)


def compare_labelled(candidate: Side, baseline: Side, spec: ComparisonSpec
                     ) -> ComparisonSummary:
    """Only the signals that late labels and outcomes change (performance, outcomes)."""
    return _summary(_labelled(candidate, baseline, spec), baseline, spec)


def findings(summary: ComparisonSummary, labels: dict[str, str]) -> list[Finding]:
    """The comparison's findings: one per signal compared, firing when it is worse (or,
    for a distribution, different)."""
    out = []
    for signal, s in summary.signals.items():
        family = signal.split(".", 1)[0]
        rule = "comparison_" + ("latency" if family == "latency_ms" else family)
        firing = s.verdict in ("worse", "different")
        extra = {"signal": signal}
        if family in ("features", "outcomes"):
            extra[family[:-1]] = signal.split(".", 1)[1]
        out.append(Finding(
            rule, "comparison", firing,
            {**labels, "baseline_version": summary.baseline_version, **extra},
            "warning", s.effect, None,
            f"{signal} of {labels.get('model_version')} is {s.verdict} than "
            f"{summary.baseline_version}'s: {_fmt(s.candidate)} vs {_fmt(s.baseline)} "
            f"({s.test}, p={s.p_value:.2g})" if firing else
            f"{signal} of {labels.get('model_version')} as {summary.baseline_version}'s",
            {"signal": signal, "test": s.test, "candidate": s.candidate,
             "baseline": s.baseline, "effect": s.effect, "p_value": s.p_value,
             "baseline_version": summary.baseline_version,
             "baseline_events": summary.baseline_count}))
    return out


# ---------------------------------------------------------------- the tests


def _errors(c: Side, b: Side, spec: ComparisonSpec) -> list[_Test]:
    rate_c, rate_b = c.error_count / c.count, b.error_count / b.count
    p = _two_proportions(c.error_count, c.count, b.error_count, b.count)
    return [_Test("error_rate", "two_proportion", rate_c, rate_b, rate_c - rate_b, p,
                  abs(rate_c - rate_b) >= spec.error_rate_increase, direction=1)]


def _latency(c: Side, b: Side, spec: ComparisonSpec) -> list[_Test]:
    if not (c.latency.count and b.latency.count):
        return []
    out = []
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        mine, theirs = c.latency.quantile(q), b.latency.quantile(q)
        # the share of each side above the baseline's quantile: Mood's median test (p50),
        # a tail-exceedance test (p99); on the sketches' buckets, which both share
        above_c, above_b = c.latency.count_above(theirs), b.latency.count_above(theirs)
        p = _two_proportions(above_c, c.latency.count, above_b, b.latency.count)
        ratio = mine / theirs if theirs > 0 else (math.inf if mine > 0 else 1.0)
        out.append(_Test(f"latency_ms.{name}", "quantile_exceedance", mine, theirs, ratio, p,
                         ratio >= spec.latency_ratio or ratio <= 1 / spec.latency_ratio,
                         direction=1))
    return out


def _sketched(signal: str, c: QuantileSketch, b: QuantileSketch, spec: ComparisonSpec
              ) -> list[_Test]:
    if min(c.count, b.count) < spec.min_events:
        return []
    counts_c, counts_b = QuantileSketch.shared_counts(c, b, SHARED_BINS)
    return [_distribution(signal, counts_c, counts_b, (c.mean, b.mean), spec)]


def _categories(signal: str, c: BoundedCounter, b: BoundedCounter, spec: ComparisonSpec
                ) -> list[_Test]:
    total_c, total_b = sum(c.counts.values()) + c.other, sum(b.counts.values()) + b.other
    if min(total_c, total_b) < spec.min_events:
        return []
    pooled = {k: c.counts.get(k, 0) + b.counts.get(k, 0) for k in c.counts.keys() | b.counts}
    kept = sorted(pooled, key=lambda k: (-pooled[k], k))[:MAX_CATEGORIES]
    counts_c = np.array([c.counts.get(k, 0) for k in kept] + [0], dtype=np.float64)
    counts_b = np.array([b.counts.get(k, 0) for k in kept] + [0], dtype=np.float64)
    counts_c[-1], counts_b[-1] = total_c - counts_c.sum(), total_b - counts_b.sum()
    if len(kept) < 2 and not (counts_c[-1] or counts_b[-1]):
        return []   # one class only: nothing to compare
    top = kept[0] if kept else OTHER
    _, p = chi_square(counts_b, counts_c)
    change = counts_c / total_c - counts_b / total_b   # each class's share, candidate - baseline
    largest = float(change[np.argmax(np.abs(change))])
    return [_Test(signal, "chi_square", c.counts.get(top, 0) / total_c,
                  b.counts.get(top, 0) / total_b, largest, p,
                  abs(largest) >= spec.share_change)]


def _distribution(signal: str, counts_c: np.ndarray, counts_b: np.ndarray,
                  values: tuple[float, float], spec: ComparisonSpec) -> _Test:
    """Chi-square and PSI on shared bins; ``values``: what the summary shows of each side
    (the means)."""
    _, p = chi_square(counts_b, counts_c)
    shift = psi(counts_b, counts_c)
    return _Test(signal, "chi_square", values[0], values[1], shift, p, shift >= spec.psi)


def _numbers(signal: str, c: NumericStats, b: NumericStats, spec: ComparisonSpec, *,
             min_count: int | None = None, direction: int = 0) -> list[_Test]:
    if min(c.count, b.count) < (min_count or spec.min_events):
        return []
    p, d = _welch((c.count, c.mean, c.std), (b.count, b.mean, b.std))
    return [_Test(signal, "welch_t", c.mean, b.mean, d, p, abs(d) >= spec.effect_size,
                  direction=direction)]


def _labelled(c: Side, b: Side, spec: ComparisonSpec) -> list[_Test]:
    out = []
    perf_c, perf_b = c.performance, b.performance
    if (perf_c is not None and perf_b is not None
            and min(perf_c.labelled, perf_b.labelled) >= spec.min_labels):
        if perf_c.accuracy is not None and perf_b.accuracy is not None:
            n_c, n_b = perf_c.labelled, perf_b.labelled
            p = _two_proportions(round(perf_c.accuracy * n_c), n_c,
                                 round(perf_b.accuracy * n_b), n_b)
            drop = perf_b.accuracy - perf_c.accuracy
            out.append(_Test("performance.accuracy", "two_proportion", perf_c.accuracy,
                             perf_b.accuracy, -drop, p, abs(drop) >= spec.accuracy_drop,
                             direction=-1))
        if perf_c.mae is not None and perf_b.mae is not None:
            out += _numbers("performance.mae", _errors_of(perf_c), _errors_of(perf_b), spec,
                            min_count=spec.min_labels, direction=1)
    for name in sorted(c.outcomes.keys() & b.outcomes.keys()):
        mine, theirs = c.outcomes[name], b.outcomes[name]
        if min(mine.count, theirs.count) < spec.min_labels:
            continue
        direction = 1 if name in spec.lower_is_better else -1
        if mine.rate is not None and theirs.rate is not None:
            p = _two_proportions(round(mine.sum), mine.count, round(theirs.sum), theirs.count)
            change = (mine.rate - theirs.rate) / theirs.rate if theirs.rate else (
                math.inf if mine.rate else 0.0)
            out.append(_Test(f"outcomes.{name}", "two_proportion", mine.rate, theirs.rate,
                             change, p, abs(change) >= spec.outcome_change,
                             direction=direction))
        else:
            p, d = _welch((mine.count, mine.mean, mine.std),
                          (theirs.count, theirs.mean, theirs.std))
            out.append(_Test(f"outcomes.{name}", "welch_t", mine.mean, theirs.mean, d, p,
                             abs(d) >= spec.effect_size, direction=direction))
    return out


def _summary(tests: list[_Test], baseline: Side, spec: ComparisonSpec) -> ComparisonSummary:
    alpha = spec.p_value / max(len(tests), 1)
    signals = {}
    for t in tests:
        verdict: Verdict = "same"
        if t.p_value < alpha and t.material:
            if t.direction == 0:
                verdict = "different"
            else:
                higher = (t.candidate or 0.0) > (t.baseline or 0.0)
                verdict = "worse" if higher == (t.direction > 0) else "better"
        signals[t.signal] = SignalComparison(
            test=t.test, candidate=_finite(t.candidate), baseline=_finite(t.baseline),
            effect=_finite(t.effect), p_value=t.p_value, verdict=verdict)
    return ComparisonSummary(baseline_version=baseline.version, baseline_count=baseline.count,
                             signals=signals)


def _two_proportions(x1: float, n1: float, x2: float, n2: float) -> float:
    """Two-sided p-value of the pooled two-proportion z-test.

    >>> round(_two_proportions(60, 1000, 10, 1000), 8) < 1e-6, _two_proportions(5, 100, 5, 100)
    (True, 1.0)
    """
    pooled = (x1 + x2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / spread
    return float(special.erfc(abs(z) / math.sqrt(2)))


def _welch(one: tuple[float, float, float], two: tuple[float, float, float]
           ) -> tuple[float, float]:
    """Two-sided p-value of Welch's t-test from (count, mean, population standard
    deviation) of each side, and Cohen's d (the difference in pooled standard deviations).

    >>> p, d = _welch((500, 1.0, 1.0), (500, 0.0, 1.0))
    >>> p < 1e-20, round(d, 3)
    (True, 0.999)
    """
    (n1, m1, s1), (n2, m2, s2) = one, two
    v1, v2 = s1 * s1 * n1 / max(n1 - 1, 1), s2 * s2 * n2 / max(n2 - 1, 1)
    se2 = v1 / n1 + v2 / n2
    pooled = math.sqrt((v1 + v2) / 2)
    d = (m1 - m2) / pooled if pooled > 0 else (0.0 if m1 == m2 else math.copysign(math.inf,
                                                                                    m1 - m2))
    if se2 == 0:
        return (1.0 if m1 == m2 else 0.0), d
    t = (m1 - m2) / math.sqrt(se2)
    df = se2 * se2 / ((v1 / n1) ** 2 / max(n1 - 1, 1) + (v2 / n2) ** 2 / max(n2 - 1, 1))
    return float(2 * special.stdtr(df, -abs(t))), d


def _errors_of(performance: PerformanceSummary) -> NumericStats:
    """The absolute errors of a window's numeric predictions as counts and moments."""
    out = NumericStats()
    mae, rmse = performance.mae or 0.0, performance.rmse or 0.0
    return NumericStats.from_state([performance.labelled, mae,
                                    max(rmse * rmse - mae * mae, 0.0) * performance.labelled,
                                    0.0, 0.0]) if performance.labelled else out


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
