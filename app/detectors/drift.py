"""Window-versus-reference drift tests: of one signal, and of every signal of the windows
closing together at once (:class:`DriftTests`, :func:`run_drift_tests`).

A signal drifts when the change is both *significant* and *large*:

* significant: two-sample KS (numbers, on the reference's quantile bins) or
  chi-square (categories) with ``p < p_value / tests`` (Bonferroni over the ``tests``
  signals of the model judged in the same window); the p-value is computed with
  both sample sizes capped at ``max_test_events``, so a 100k-event window does
  not turn a harmless wiggle into p = 1e-30 (the well-known large-sample trap); the KS
  p-value is exact where it decides (the effect below is large enough) and the asymptotic
  Kolmogorov one elsewhere (the exact one costs up to milliseconds per signal and window);
* large: PSI beyond what sampling noise alone gives (``(bins - 1) / n_eff``, the mean
  of PSI between two samples of one distribution) ≥ ``psi`` (0.1 "moderate shift" in
  credit-risk practice; ``psi_critical``, default 0.25 "major", makes the alert
  critical), or, when ``js`` is set, Jensen-Shannon distance ≥ ``js`` (Evidently's
  0.1 for large data) instead.

Windows with fewer than ``min_events`` values are not tested (too little evidence).

>>> from mlpulse.detectors.reference import NumericRef
>>> edges = np.array([-9.0, -1.0, 0.0, 1.0, 9.0])
>>> ref = NumericRef(edges=edges, counts=np.array([0, 160, 340, 340, 160, 0]),
...                  mean=0.0, std=1.0, min=-9.0, max=9.0)
>>> numeric_drift(ref, np.array([0, 160, 340, 340, 160, 0]), DriftThresholds()).drifted
False
>>> result = numeric_drift(ref, np.array([0, 20, 160, 340, 480, 0]), DriftThresholds())
>>> result.drifted, result.severity, round(result.psi, 2), result.p_value < 1e-6
(True, 'critical', 0.78, True)
>>> result.top_bins[0]["bin"]
'[1, 9)'
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import numpy as np
from scipy import special, stats

from .distance import EPSILON
from .reference import CategoricalRef, NumericRef, Reference

EXACT_NEAR = 2.0
EXACT_ALWAYS_BELOW_EVENTS = 50
"""The asymptotic KS p-value is at most 1.46 times the exact one from 50 effective events
on (where the exact one is 1e-4 to 0.01; 1.06 from 1,000): above ``EXACT_NEAR`` times the
level it cannot decide, and the exact one is not computed."""

__all__ = ["DriftResult", "DriftTests", "DriftThresholds", "categorical_drift",
           "categorical_drift_many", "numeric_drift", "numeric_drift_many", "run_drift_tests"]

OTHER_VALUE = "__other__"
"""The count of values a counter did not keep (``__other__``)."""


class DriftThresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a signal counts as drifted (configurable per model and per feature)."""

    p_value: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.01
    psi: Annotated[float, msgspec.Meta(ge=0)] = 0.1
    psi_critical: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    js: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    min_events: Annotated[int, msgspec.Meta(ge=1)] = 100
    max_test_events: Annotated[int, msgspec.Meta(ge=10)] = 1000


@dataclass
class DriftResult:
    """The outcome of one test, with the evidence an alert carries."""

    drifted: bool
    severity: str
    method: str
    statistic: float
    p_value: float
    psi: float
    js: float
    psi_noise: float
    effect: float
    effect_threshold: float
    n_current: int
    n_reference: int
    top_bins: list[dict[str, Any]] = field(default_factory=list)

    def evidence(self) -> dict[str, Any]:
        """As a dict (a shallow copy: ``dataclasses.asdict`` deep-copies recursively, ~0.1 ms
        a finding, and every window of every series makes a finding per signal)."""
        out = dict(self.__dict__)
        out["top_bins"] = [dict(b) for b in self.top_bins]
        return out


def numeric_drift(
    ref: NumericRef, counts: np.ndarray, t: DriftThresholds, tests: int = 1,
) -> DriftResult | None:
    """Test a window's counts on ``ref.edges`` (``B + 2`` bins) against the reference."""
    return numeric_drift_many([ref], [counts], [t], tests)[0]


def numeric_drift_many(
    refs: Sequence[NumericRef], counts: Sequence[np.ndarray],
    thresholds: Sequence[DriftThresholds], tests: int | Sequence[int] = 1, *,
    quiet: Sequence[bool] | None = None, psi: list[float | None] | None = None,
) -> list[DriftResult | None]:
    """:func:`numeric_drift` of every numeric signal of a window at once: one numpy pass
    over a signals × bins array rather than a dozen small ones per signal (~0.1 ms each,
    and every window of every series and slice tests each signal). Rows are padded with
    empty bins, which change none of the statistics. ``tests``: the number of tests of
    each row's window (Bonferroni), one for all rows or one per row (rows of several
    windows: the slices of a model version closing together).

    ``quiet``: per row, whether only a verdict that may be drifted is wanted (a series
    with no alert to resolve): a row whose effect is below its threshold then gets None,
    as an untested one. ``psi``: filled in with each tested row's PSI (None: untested).
    """
    if not refs:
        return []
    family = [tests] * len(refs) if isinstance(tests, int) else list(tests)
    current, reference = _fold_rows(counts), _fold_rows([ref.counts for ref in refs])
    n, m, judged, n_safe, m_safe = _sizes(reference, current, thresholds)
    out: list[DriftResult | None] = [None] * len(refs)
    if not judged.any():
        return out
    p, q = reference / m_safe[:, None], current / n_safe[:, None]
    gap = np.max(np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1)), axis=1)
    max_test = np.array([t.max_test_events for t in thresholds], dtype=np.float64)
    nc, mc = np.minimum(n, max_test), np.minimum(m, max_test)
    n_eff = np.maximum(1, np.round(nc * mc / np.maximum(nc + mc, 1)))
    # the exact KS distribution (scipy's kstwo: 0.1-5 ms a call) only where the p-value
    # may decide: the effect is large enough and the asymptotic Kolmogorov one (~1 µs;
    # never below the exact one, close to it unless both are tiny) is near the level or
    # under it; elsewhere the asymptotic one is reported
    p_values = special.kolmogorov(gap * np.sqrt(n_eff))
    rows = _Rows(p, q, n, m, np.count_nonzero((reference + current) > 0, axis=1))

    def top_bins(row: int) -> list[dict[str, Any]]:
        size = counts[row].size - 2
        return _top_bins(reference[row, :size], current[row, :size],
                         _bin_names(refs[row].edges))

    p_value_of, gap_of, n_eff_of = p_values.tolist(), gap.tolist(), n_eff.tolist()
    for row in np.flatnonzero(judged).tolist():
        t, tests = thresholds[row], family[row]
        effect, threshold = rows.effect(row, t)
        if psi is not None:
            psi[row] = rows.psi[row]
        if quiet is not None and quiet[row] and effect < threshold:
            continue   # cannot have drifted (too small), and no one asks for its evidence
        p_value = p_value_of[row]
        if effect >= threshold and (n_eff_of[row] < EXACT_ALWAYS_BELOW_EVENTS
                                    or p_value < EXACT_NEAR * t.p_value / max(1, tests)):
            p_value = float(stats.kstwo.sf(gap_of[row], int(n_eff_of[row])))
        out[row] = rows.result(row, t, tests, method="ks", statistic=gap_of[row],
                               p_value=p_value, top_bins=functools.partial(top_bins, row))
    return out


class _Rows:
    """What the drift tests of several rows share: each row's PSI and JS distance (of its
    reference's shares ``p`` and its window's ``q``), PSI's sampling noise for its sizes
    (``n`` window, ``m`` reference) and ``bins`` non-empty bins, and its verdict."""

    def __init__(self, p: np.ndarray, q: np.ndarray, n: np.ndarray, m: np.ndarray,
                 bins: np.ndarray) -> None:
        psi = _psi_rows(p, q)
        noise = (bins - 1) * (n + m) / (np.maximum(n, 1) * np.maximum(m, 1))
        # as lists: a row's numbers read one by one (a numpy scalar each costs ~10x more)
        self.n, self.m = n.astype(np.int64).tolist(), m.astype(np.int64).tolist()
        self.psi, self.js, self.noise = psi.tolist(), _js_rows(p, q).tolist(), noise.tolist()
        self.psi_excess = np.maximum(0.0, psi - noise).tolist()

    def effect(self, row: int, t: DriftThresholds) -> tuple[float, float]:
        """The effect a row is judged by, and its threshold: JS distance where ``t.js``
        is set, else PSI beyond its noise."""
        return ((self.js[row], t.js) if t.js is not None else (self.psi_excess[row], t.psi))

    def result(self, row: int, t: DriftThresholds, tests: int, *, method: str,
               statistic: float, p_value: float,
               top_bins: Callable[[], list[dict[str, Any]]]) -> DriftResult:
        """The row's verdict: significant (``p_value`` under ``t.p_value`` over the
        ``tests`` of its window) and large (its effect at its threshold); the bins that
        moved most where the effect is large (``top_bins``)."""
        effect, threshold = self.effect(row, t)
        drifted = p_value < t.p_value / max(1, tests) and effect >= threshold
        return DriftResult(
            drifted=drifted,
            severity=("critical" if drifted and self.psi_excess[row] >= t.psi_critical
                      else "warning"),
            method=method, statistic=statistic, p_value=p_value,
            psi=self.psi[row], js=self.js[row],
            psi_noise=self.noise[row], effect=effect, effect_threshold=threshold,
            n_current=self.n[row], n_reference=self.m[row],
            top_bins=top_bins() if effect >= threshold else [])


def _sizes(reference: np.ndarray, current: np.ndarray,
           thresholds: Sequence[DriftThresholds]) -> tuple[np.ndarray, ...]:
    """Each row's window and reference sizes, whether it is judged (``min_events`` in the
    window, a reference), and the sizes to divide by (1 where not judged)."""
    n, m = current.sum(axis=1), reference.sum(axis=1)
    judged = (n >= np.array([t.min_events for t in thresholds])) & (m > 0)
    return n, m, judged, np.where(judged, n, 1.0), np.where(judged, m, 1.0)


def _psi_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """:func:`~mlpulse.detectors.distance.psi` of each row's shares."""
    p, q = np.clip(p, EPSILON, None), np.clip(q, EPSILON, None)
    return np.sum((q - p) * np.log(q / p), axis=1)


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """:func:`~mlpulse.detectors.distance.js_distance` of each row's shares."""
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (np.where(p > 0, p * np.log2(p / mid), 0.0).sum(axis=1)
              + np.where(q > 0, q * np.log2(q / mid), 0.0).sum(axis=1))
    return np.sqrt(np.maximum(kl / 2, 0.0))


def _bin_names(edges: np.ndarray) -> list[str]:
    return [f"[{_fmt(lo)}, {_fmt(hi)})" for lo, hi in itertools.pairwise(edges)]


def categorical_drift(
    ref: CategoricalRef, counts: dict[str, int], t: DriftThresholds, tests: int = 1,
) -> DriftResult | None:
    """Chi-square / PSI / JS of a window's value counts against the reference's."""
    return categorical_drift_many([ref], [counts], [t], tests)[0]


def categorical_drift_many(
    refs: Sequence[CategoricalRef], counts: Sequence[dict[str, int]],
    thresholds: Sequence[DriftThresholds], tests: int | Sequence[int] = 1, *,
    quiet: Sequence[bool] | None = None, psi: list[float | None] | None = None,
) -> list[DriftResult | None]:
    """:func:`categorical_drift` of several signals (of one window or of several closing
    together) at once: one numpy pass over a signals × values array, each row's values
    those of its reference and window (``__other__`` last), padded with values absent
    from both, which change none of the statistics. ``tests``, ``quiet`` and ``psi``: as
    for :func:`numeric_drift_many`.

    >>> ref = CategoricalRef(counts={"a": 500, "b": 500})
    >>> [r.drifted for r in categorical_drift_many(
    ...     [ref, ref], [{"a": 100, "b": 100}, {"a": 190, "b": 10}], [DriftThresholds()] * 2)]
    [False, True]
    """
    if not refs:
        return []
    family = [tests] * len(refs) if isinstance(tests, int) else list(tests)
    names = [sorted(set(ref.counts) | {k for k in window if k != OTHER_VALUE})
             for ref, window in zip(refs, counts, strict=True)]
    width = max(len(values) for values in names) + 1
    reference = np.zeros((len(refs), width))
    current = np.zeros((len(refs), width))
    for row, (ref, window, values) in enumerate(zip(refs, counts, names, strict=True)):
        size = len(values)
        reference[row, :size] = [ref.counts.get(v, 0) for v in values]
        current[row, :size] = [window.get(v, 0) for v in values]
        reference[row, -1], current[row, -1] = ref.other, window.get(OTHER_VALUE, 0)
    n, m, judged, n_safe, m_safe = _sizes(reference, current, thresholds)
    out: list[DriftResult | None] = [None] * len(refs)
    if not judged.any():
        return out
    # chi-square of each row's 2 × values table (values seen in neither dropped), sizes
    # capped at ``max_test_events`` as distance.chi_square is handed them
    max_test = np.array([t.max_test_events for t in thresholds], dtype=np.float64)
    r = reference * np.minimum(1.0, max_test / m_safe)[:, None]
    c = current * np.minimum(1.0, max_test / n_safe)[:, None]
    columns = r + c
    seen = columns > 0
    bins = np.count_nonzero(seen, axis=1)
    total_r, total_c = r.sum(axis=1), c.sum(axis=1)
    total = np.maximum(total_r + total_c, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_r = np.outer(total_r / total, 1.0) * columns
        expected_c = np.outer(total_c / total, 1.0) * columns
        terms = np.where(seen, (r - expected_r) ** 2 / expected_r
                         + (c - expected_c) ** 2 / expected_c, 0.0)
    statistics = np.where(bins >= 2, terms.sum(axis=1), 0.0)
    p_values = np.where(bins >= 2, special.chdtrc(np.maximum(bins - 1, 1), statistics), 1.0)
    rows = _Rows(reference / m_safe[:, None], current / n_safe[:, None], n, m, bins)

    def top_bins(row: int) -> list[dict[str, Any]]:
        keep = seen[row]
        labels = [v for v, k in zip([*names[row], *([""] * (width - 1 - len(names[row]))),
                                     OTHER_VALUE], keep.tolist(), strict=True) if k]
        return _top_bins(reference[row, keep], current[row, keep], labels)

    statistic_of, p_value_of = statistics.tolist(), p_values.tolist()
    for row in np.flatnonzero(judged).tolist():
        if psi is not None:
            psi[row] = rows.psi[row]
        if quiet is not None and quiet[row]:
            effect, threshold = rows.effect(row, thresholds[row])
            if effect < threshold:
                continue
        out[row] = rows.result(row, thresholds[row], family[row], method="chi2",
                               statistic=statistic_of[row], p_value=p_value_of[row],
                               top_bins=functools.partial(top_bins, row))
    return out


@dataclass(slots=True)
class DriftTests:
    """One window's drift tests (``ModelMonitor.drift_tests`` of
    :mod:`mlpulse.detectors.monitor`): the bins and signals of its numeric ones, the counts
    of its categorical ones and, once run (:func:`run_drift_tests`), their results."""

    bins: dict[str, np.ndarray]
    signals: list[str]
    refs: list[Any]
    thresholds: list[Any]
    categorical: dict[str, dict[str, int]]
    reference: Reference
    categorical_thresholds: list[Any] = field(default_factory=list)
    quiet: bool = False
    """Only the verdicts that may be drifted are wanted (its series has no alert to
    resolve): the others are None (``psi_max`` still counts them)."""
    results: list[DriftResult | None] | None = None
    categorical_results: list[DriftResult | None] | None = None
    psi_max: float | None = None
    """The largest PSI of its tested signals (None: none tested), once run."""

    @property
    def tests(self) -> int:
        """The window's family of tests (Bonferroni)."""
        return len(self.signals) + len(self.categorical)


def run_drift_tests(drifts: list[DriftTests]) -> None:
    """Run the drift tests of several windows (each with its own Bonferroni family) in one
    numpy pass for the numeric ones and one for the categorical ones, filling in their
    ``results`` and ``categorical_results``."""
    refs = [ref for d in drifts for ref in d.refs]
    counts = [d.bins[s] for d in drifts for s in d.signals]
    thresholds = [t for d in drifts for t in d.thresholds]
    tests = [d.tests for d in drifts for _ in d.signals]
    psi: list[float | None] = [None] * len(refs)
    results = numeric_drift_many(refs, counts, thresholds, tests,
                                 quiet=[d.quiet for d in drifts for _ in d.signals], psi=psi)
    categorical_psi: list[float | None] = [None] * sum(len(d.categorical) for d in drifts)
    categorical = categorical_drift_many(
        [d.reference.categorical[s] for d in drifts for s in d.categorical],
        [values for d in drifts for values in d.categorical.values()],
        [t for d in drifts for t in d.categorical_thresholds],
        [d.tests for d in drifts for _ in d.categorical],
        quiet=[d.quiet for d in drifts for _ in d.categorical], psi=categorical_psi)
    start = start_categorical = 0
    for d in drifts:
        end, end_categorical = start + len(d.signals), start_categorical + len(d.categorical)
        d.results = results[start:end]
        d.categorical_results = categorical[start_categorical:end_categorical]
        tested = [v for v in (*psi[start:end], *categorical_psi[start_categorical:
                                                                end_categorical])
                  if v is not None]
        d.psi_max = max(tested) if tested else None
        start, start_categorical = end, end_categorical


def _top_bins(reference: np.ndarray, current: np.ndarray, labels: list[str],
              k: int = 3) -> list[dict[str, Any]]:
    p = np.clip(reference / reference.sum(), EPSILON, None)
    q = np.clip(current / current.sum(), EPSILON, None)
    contribution = (q - p) * np.log(q / p)
    order = np.argsort(-contribution)[:k]
    return [{"bin": labels[i], "reference_share": round(float(reference[i] / reference.sum()), 4),
             "current_share": round(float(current[i] / current.sum()), 4)}
            for i in order.tolist() if contribution[i] > 0]


def _fold_rows(counts: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of ``B + 2`` bins → a rows × ``max B`` array of ``B`` bins each (out-of-range
    values join the outermost bins), padded with empty bins. All rows in one ``bincount``:
    a window's signals may have fewer bins than others, and rows are signals × slices.

    >>> _fold_rows([np.array([1, 2, 3, 4]), np.array([0, 5, 6, 0])]).tolist()
    [[3.0, 7.0], [5.0, 6.0]]
    >>> _fold_rows([np.array([1, 2, 3, 4]), np.array([1, 1, 1]), np.array([0, 1, 1, 0])]
    ...            ).tolist()
    [[3.0, 7.0], [3.0, 0.0], [1.0, 1.0]]
    """
    sizes = np.fromiter(map(len, counts), dtype=np.intp, count=len(counts))
    width = int(sizes.max()) - 2
    ends = np.cumsum(sizes)
    # each count's bin: its position in its row less one, within [0, B - 1]
    position = np.arange(int(ends[-1])) - np.repeat(ends - sizes, sizes)
    column = np.minimum(np.maximum(position - 1, 0), np.repeat(sizes - 3, sizes))
    return np.bincount(np.repeat(np.arange(len(counts)) * width, sizes) + column,
                       weights=np.concatenate(counts), minlength=len(counts) * width
                       ).reshape(len(counts), width)


def _fmt(value: float) -> str:
    return f"{value:.4g}"
