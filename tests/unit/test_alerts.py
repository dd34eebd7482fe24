"""The alert lifecycle: pending, firing, keep-firing, resolved, inhibition."""

from __future__ import annotations

import pytest

from mlpulse.alerts import Lifecycle, fingerprint
from mlpulse.rules import Condition, Rules

LABELS = {"model": "fraud", "model_version": "v3"}


def run(life: Lifecycle, actives: list[bool], for_windows: int = 1, keep: int = 0,
        rule: str = "r") -> list[tuple[int, str]]:
    out = []
    for i, active in enumerate(actives):
        c = Condition(rule, active, dict(LABELS), for_windows=for_windows, keep_firing_for=keep)
        out.extend((i, e.status) for e in life.apply([c], 60.0 * i, 60.0 * (i + 1)))
    return out


@pytest.mark.parametrize(("actives", "for_windows", "keep", "expected"), [
    ([True, False], 1, 0, [(0, "firing"), (1, "resolved")]),
    ([True, False, True, True], 2, 0, [(3, "firing")]),            # pending reset by a gap
    ([True] * 6, 1, 0, [(0, "firing")]),                           # a flood is one alert
    ([True, False, True, False, False], 1, 1, [(0, "firing"), (4, "resolved")]),  # no flapping
    ([False, False], 1, 0, []),
])
def test_lifecycle(actives, for_windows, keep, expected):
    assert run(Lifecycle(), actives, for_windows, keep) == expected


def test_resolved_alert_carries_the_incident_id_and_times():
    life = Lifecycle()
    fired = life.apply([Condition("r", True, dict(LABELS))], 120.0, 180.0)[0]
    resolved = life.apply([Condition("r", False, dict(LABELS))], 300.0, 360.0)[0]
    assert fired.alert_id == resolved.alert_id == f"{fingerprint('r', LABELS)}-120"
    assert (fired.starts_at, fired.ends_at) == ("1970-01-01T00:02:00Z", None)
    assert (resolved.starts_at, resolved.ends_at) == ("1970-01-01T00:02:00Z",
                                                      "1970-01-01T00:05:00Z")


def test_lifecycle_state_round_trips():
    life = Lifecycle()
    run(life, [True, True], for_windows=3)
    again = Lifecycle(life.snapshot())
    c = Condition("r", True, dict(LABELS), for_windows=3)
    assert [e.status for e in again.apply([c], 180.0, 240.0)] == ["firing"]


def test_inhibition_holds_targets_while_the_source_fires():
    rules = Rules.from_mapping(None)
    life = Lifecycle()

    def window(i, schema, drift):
        conditions = [Condition("type_change", schema, {**LABELS, "feature": "amount"}),
                      Condition("feature_drift", drift, {**LABELS, "feature": "amount"})]
        return [(e.rule, e.status) for e in life.apply(conditions, 60.0 * i, 60.0 * i + 60,
                                                       rules=rules)]

    assert window(0, True, True) == [("type_change", "firing")]    # drift held back
    assert window(1, True, True) == []
    assert window(2, False, True) == [("type_change", "resolved"), ("feature_drift", "firing")]
    assert window(3, False, False) == [("feature_drift", "resolved")]
    assert window(4, True, False) == [("type_change", "firing")]
    assert window(5, False, False) == [("type_change", "resolved")]   # never published drift
    other = Lifecycle()      # another key's source: the model's no-data alert
    drift = Condition("feature_drift", True, {**LABELS, "feature": "amount"})
    assert other.apply([drift], 0.0, 60.0, rules=rules,
                       also_firing=[("no_data", {"model": "fraud"})]) == []
