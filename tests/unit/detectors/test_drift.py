"""Drift tests: effect size at large n, exact KS p-values where they decide, category mixes."""


from __future__ import annotations

import numpy as np

from mlpulse.detectors.drift import DriftThresholds, numeric_drift
from mlpulse.detectors.monitor import ModelMonitor
from mlpulse.detectors.profile import bin_counts
from mlpulse.detectors.reference import Contribution, NumericRef, build_reference
from tests.unit.detectors.streams import WINDOW_S, config, events, firing, run_window


def test_large_windows_are_judged_by_effect_size_not_p_value():
    rng = np.random.default_rng(13)
    reference = rng.normal(0, 1, 2000)
    c = Contribution(0, 60, 2000, 0, samples={"f:x": (reference, 2000)})
    ref = build_reference([c]).numeric["f:x"]
    t = DriftThresholds()
    tiny_shift = bin_counts(ref.edges, rng.normal(0.03, 1, 200_000))
    assert not numeric_drift(ref, tiny_shift, t).drifted
    real_shift = bin_counts(ref.edges, rng.normal(0.5, 1, 200_000))
    assert numeric_drift(ref, real_shift, t).drifted
    assert numeric_drift(ref, bin_counts(ref.edges, rng.normal(3, 1, 50)), t) is None


def test_ks_p_value_is_exact_where_it_decides():
    """The exact KS distribution where the effect is large enough for the p-value to
    decide the verdict; the asymptotic one (never below it here) elsewhere."""
    from scipy import stats

    rng = np.random.default_rng(15)
    c = Contribution(0, 60, 2000, 0, samples={"f:x": (rng.normal(0, 1, 2000), 2000)})
    ref = build_reference([c]).numeric["f:x"]
    t = DriftThresholds()
    for shift, large in ((0.6, True), (0.02, False)):
        result = numeric_drift(ref, bin_counts(ref.edges, rng.normal(shift, 1, 5000)), t)
        assert result is not None and (result.effect >= t.psi) is large
        exact = float(stats.kstwo.sf(result.statistic, 500))   # n_eff of two capped 1000s
        if large:
            assert result.p_value == exact and result.drifted
        else:
            assert exact <= result.p_value <= exact * 1.1 + 1e-12


def test_category_mix_change_and_unseen_values():
    rng = np.random.default_rng(17)
    monitor = ModelMonitor("m", "v1", config(adwin={"enabled": False}), WINDOW_S)
    usual = ["US", "DE", "FR", "GB"]
    for w in range(3):
        run_window(monitor, events(rng, 400, w * WINDOW_S,
                                   country=lambda r: usual[int(r.integers(4))]), w)
    skewed = firing(run_window(monitor, events(
        rng, 400, 3 * WINDOW_S, country=lambda r: "US" if r.random() < 0.7 else "DE"), 3))
    assert ("feature_drift", "country") in skewed
    unseen = firing(run_window(monitor, events(
        rng, 400, 4 * WINDOW_S, country=lambda r: "XX" if r.random() < 0.2 else "US"), 4))
    assert ("unseen_category", "country") in unseen


def test_signals_tested_together_get_what_each_gets_alone():
    """numeric_drift_many pads rows of fewer bins (a discrete feature's reference has fewer
    distinct edges): the padding changes no statistic."""
    from mlpulse.detectors.drift import numeric_drift_many

    rng = np.random.default_rng(4)

    def reference(values: np.ndarray) -> NumericRef:
        c = Contribution(0, 60, values.size, 0, samples={"f:x": (values, values.size)})
        return build_reference([c]).numeric["f:x"]

    wide = reference(rng.normal(0, 1, 2000))
    narrow = reference(rng.integers(0, 3, 2000).astype(float))
    assert narrow.edges.size < wide.edges.size
    windows = [bin_counts(wide.edges, rng.normal(0.8, 1, 800)),
               bin_counts(narrow.edges, rng.integers(0, 2, 800).astype(float))]
    t = DriftThresholds()
    together = numeric_drift_many([wide, narrow], windows, [t, t], tests=2)
    alone = [numeric_drift_many([ref], [w], [t], tests=2)[0]
             for ref, w in zip([wide, narrow], windows, strict=True)]
    assert [r.evidence() for r in together] == [r.evidence() for r in alone]
    assert all(r.drifted for r in together)


def test_category_tests_at_once_are_scipy_s_one_by_one():
    """categorical_drift_many (rows of several windows' signals, padded to the widest):
    the chi-square of each is scipy's (no continuity correction, sizes capped at
    max_test_events), PSI and JS those of distance.py on the row's own values, and a
    drifted row names the values that moved."""
    from scipy.stats import chi2_contingency

    from mlpulse.detectors.distance import js_distance, psi
    from mlpulse.detectors.drift import categorical_drift_many
    from mlpulse.detectors.reference import CategoricalRef

    rng = np.random.default_rng(5)
    refs, windows, thresholds = [], [], []
    for _ in range(40):
        values = [f"v{i}" for i in range(int(rng.integers(1, 8)))]
        shares = rng.dirichlet(np.ones(len(values)))
        ref_counts = {v: int(n) for v, n in zip(values, rng.multinomial(3000, shares),
                                                 strict=True) if n}
        other = int(rng.integers(0, 50)) if rng.random() < 0.3 else 0
        refs.append(CategoricalRef(counts=ref_counts, other=other))
        drift = rng.dirichlet(np.ones(len(values))) if rng.random() < 0.5 else shares
        size = int(rng.integers(20, 3000))
        window = {v: int(n) for v, n in zip(values, rng.multinomial(size, drift), strict=True)
                  if n}
        if rng.random() < 0.3:
            window["new"] = int(rng.integers(1, 100))
        windows.append(window)
        thresholds.append(DriftThresholds(min_events=int(rng.integers(1, 200))))
    results = categorical_drift_many(refs, windows, thresholds, tests=3)
    assert any(r is not None and r.drifted for r in results)
    assert any(r is not None and not r.drifted for r in results)
    for ref, window, t, result in zip(refs, windows, thresholds, results, strict=True):
        names = sorted(set(ref.counts) | set(window))
        reference = np.array([ref.counts.get(v, 0) for v in names] + [ref.other], float)
        current = np.array([window.get(v, 0) for v in names] + [0], float)
        n, m = current.sum(), reference.sum()
        if n < t.min_events:
            assert result is None
            continue
        assert result is not None
        seen = (reference + current) > 0
        reference, current = reference[seen], current[seen]
        if seen.sum() >= 2:
            table = np.vstack([reference * min(1, t.max_test_events / m),
                               current * min(1, t.max_test_events / n)])
            statistic, p_value, _, _ = chi2_contingency(table, correction=False)
            assert np.isclose(result.statistic, statistic, rtol=1e-9)
            assert np.isclose(result.p_value, p_value, rtol=1e-9, atol=1e-300)
        assert np.isclose(result.psi, psi(reference, current), rtol=1e-9)
        assert np.isclose(result.js, js_distance(reference, current), rtol=1e-9, atol=1e-12)
        assert result.drifted == (result.p_value < t.p_value / 3 and result.effect >= t.psi)
        assert bool(result.top_bins) == (result.effect >= result.effect_threshold)
        assert all(b["bin"] in (*names, "__other__") for b in result.top_bins)


def test_quiet_rows_get_a_verdict_only_where_their_effect_reaches_the_threshold():
    """A quiet row (its series has no alert to resolve) whose effect is too small to have
    drifted gets None, the others what they get when not quiet; every tested row's PSI is
    reported either way, numeric and categorical."""
    from mlpulse.detectors.drift import categorical_drift_many, numeric_drift_many
    from mlpulse.detectors.reference import CategoricalRef

    rng = np.random.default_rng(17)
    c = Contribution(0, 60, 2000, 0, samples={"f:x": (rng.normal(0, 1, 2000), 2000)})
    ref = build_reference([c]).numeric["f:x"]
    rows = [bin_counts(ref.edges, rng.normal(shift, 1, n))
            for shift, n in ((0.0, 2000), (0.8, 2000), (0.0, 20))]   # same, drifted, small
    t = [DriftThresholds()] * 3
    loud = numeric_drift_many([ref] * 3, rows, t)
    psi: list[float | None] = [None] * 3
    quiet = numeric_drift_many([ref] * 3, rows, t, quiet=[True] * 3, psi=psi)
    assert loud[0] is not None and not loud[0].drifted and quiet[0] is None
    assert loud[1] is not None and loud[1].drifted and quiet[1] == loud[1]
    assert loud[2] is None and quiet[2] is None   # too few events: not tested at all
    assert psi == [loud[0].psi, loud[1].psi, None]

    categories = CategoricalRef(counts={"a": 500, "b": 500})
    windows = [{"a": 100, "b": 100}, {"a": 190, "b": 10}]
    loud_c = categorical_drift_many([categories] * 2, windows, t[:2])
    psi_c: list[float | None] = [None] * 2
    quiet_c = categorical_drift_many([categories] * 2, windows, t[:2], quiet=[True, True],
                                     psi=psi_c)
    assert quiet_c[0] is None and quiet_c[1] == loud_c[1] and loud_c[1] is not None
    assert psi_c == [r.psi for r in loud_c if r is not None]
