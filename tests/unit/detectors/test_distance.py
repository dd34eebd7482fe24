"""Drift distances on shared bins agree with the textbook/raw-sample versions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mlpulse.detectors.distance import chi_square, js_distance, ks_binned, psi, quantile_edges


def binned(edges: np.ndarray, sample: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, sample, side="right"), minlength=edges.size + 1)


@pytest.mark.parametrize("shift", [0.0, 0.25, 0.5, 1.0])
def test_binned_ks_is_close_to_scipy_on_raw_samples(shift):
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(0, 1, 5000), rng.normal(shift, 1, 2000)
    edges = quantile_edges(ref, bins=50)
    stat, p = ks_binned(binned(edges, ref), binned(edges, cur))
    raw = stats.ks_2samp(ref, cur)
    assert stat <= raw.statistic + 1e-12          # binning can only hide differences
    assert stat == pytest.approx(raw.statistic, abs=0.03)
    assert (p < 0.05) == (raw.pvalue < 0.05)


def test_psi_and_js_grow_with_the_shift_and_are_zero_without_it():
    rng = np.random.default_rng(5)
    ref = rng.normal(0, 1, 20000)
    edges = quantile_edges(ref, bins=10)
    r = binned(edges, ref)
    psis, jss = [], []
    for shift in (0.0, 0.5, 1.0, 2.0):
        c = binned(edges, rng.normal(shift, 1, 20000))
        psis.append(psi(r, c))
        jss.append(js_distance(r, c))
    assert psis[0] < 0.01 and jss[0] < 0.02
    assert psis == sorted(psis) and jss == sorted(jss)
    assert psis[2] > 0.25                          # a 1 sigma shift is a "major" PSI shift
    assert 0 <= jss[-1] <= 1


def test_js_distance_is_symmetric_and_bounded():
    a, b = np.array([1, 0, 0]), np.array([0, 0, 1])
    assert js_distance(a, b) == pytest.approx(1.0)
    assert js_distance(a, b) == js_distance(b, a)


def test_chi_square_sees_a_category_mix_change():
    ref = np.array([500, 300, 200])
    assert chi_square(ref, np.array([250, 150, 100]))[1] > 0.5
    assert chi_square(ref, np.array([100, 100, 300]))[1] < 1e-6
    assert chi_square(np.array([5, 0]), np.array([3, 0])) == (0.0, 1.0)


def test_empty_counts_are_an_error():
    with pytest.raises(ValueError):
        psi(np.array([0, 0]), np.array([1, 1]))


def test_chi_square_matches_scipy():
    """The test of independence computed directly gives scipy's statistic and p-value."""
    rng = np.random.default_rng(21)
    for _ in range(200):
        k = int(rng.integers(2, 12))
        reference = rng.integers(0, 400, k).astype(float) * rng.uniform(0.1, 3.0)
        current = rng.integers(0, 400, k).astype(float)
        reference[rng.random(k) < 0.2] = 0.0
        table = np.vstack([reference, current])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2 or not table.sum(axis=1).all():
            assert chi_square(reference, current) == (0.0, 1.0)
            continue
        expected = stats.chi2_contingency(table, correction=False)
        statistic, p_value = chi_square(reference, current)
        assert statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-12)
        assert p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert chi_square(np.array([0, 0]), np.array([3, 4])) == (0.0, 1.0)
