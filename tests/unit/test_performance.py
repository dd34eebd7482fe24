"""Window quality from labels: checked against metrics computed by hand with numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpulse.events import PerformanceSummary
from mlpulse.performance import Performance


def test_multiclass_macro_scores():
    rng = np.random.default_rng(0)
    truth = rng.choice(["cat", "dog", "eel"], 500)
    pred = np.where(rng.random(500) < 0.7, truth, rng.choice(["cat", "dog", "eel"], 500))
    perf = Performance()
    perf.add((str(p), str(t), 1.0) for p, t in zip(pred, truth, strict=True))
    result = perf.result(predictions=1000)
    precision, recall, f1 = [], [], []
    for c in ("cat", "dog", "eel"):
        tp = np.sum((pred == c) & (truth == c))
        p, r = tp / np.sum(pred == c), tp / np.sum(truth == c)
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r))
    assert result.accuracy == pytest.approx(np.mean(pred == truth))
    assert result.precision == pytest.approx(np.mean(precision))
    assert result.recall == pytest.approx(np.mean(recall))
    assert result.f1 == pytest.approx(np.mean(f1)) == pytest.approx(result.macro_f1)
    assert result.label_coverage == 0.5


def test_regression_errors_and_bounded_classes():
    perf = Performance()
    perf.add([(2.5, 3.0, 10.0), (4.0, 1.0, 20.0)])
    result = perf.result(predictions=2)
    assert result.mae == pytest.approx(1.75)
    assert result.rmse == pytest.approx(np.sqrt((0.25 + 9) / 2))
    assert result.accuracy is None and result.label_delay_max_seconds == 20.0
    many = Performance(max_classes=3)
    many.add((f"c{i}", f"c{i}", 0.0) for i in range(10))
    assert len(many.classes) == 3 and many.result(10).accuracy == 1.0


def test_no_labels_yet():
    assert Performance().result(predictions=7) == PerformanceSummary(
        labelled=0, label_coverage=0.0)


@pytest.mark.parametrize("pairs", [[(0.0, 0.0, 1.0)] * 3, [(False, False, 1.0)],
                                   [(0.0, 0.0, 1.0), (0.0, 0.0, 2.0)]])
def test_a_binary_window_without_its_positive_class_scores_zero_not_crash(pairs):
    """Only "0" (or false) predictions and labels: the positive class is absent. This
    raised KeyError in a worker's revision timer and crashed it (found by `make run`)."""
    performance = Performance()
    performance.add(pairs)
    result = performance.result(len(pairs))
    assert result.accuracy == 1.0
    assert (result.precision, result.recall, result.f1) == (0.0, 0.0, 0.0)


_VALUES = st.one_of(st.sampled_from([0.0, 1.0, True, False, "0", "1", "cat", "dog", None]),
                    st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.text(max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_VALUES, _VALUES, st.floats(0, 1e6)), max_size=40),
       st.integers(1, 5))
def test_any_labelled_pairs_give_a_summary_in_range(pairs, max_classes):
    """Whatever predictions and labels come (labels are input), a window's quality is a
    summary with scores in [0, 1], never an exception in the worker's timer."""
    performance = Performance(max_classes=max_classes)
    performance.add(pairs)
    result = performance.result(len(pairs) or 1)
    assert result.labelled == len(pairs)
    for name in ("accuracy", "precision", "recall", "f1", "macro_f1", "label_coverage"):
        value = getattr(result, name)
        assert value is None or 0.0 <= value <= 1.0, (name, value)
