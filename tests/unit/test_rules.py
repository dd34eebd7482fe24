"""Rules: expressions, templates and matchers, detector rules, rates judged against their
sampling error, and the mistakes a config can make."""

from __future__ import annotations

import pytest

from mlpulse.config import Settings
from mlpulse.detectors.finding import Finding
from mlpulse.errors import ConfigError
from mlpulse.rules import Rules
from mlpulse.testing import FakeClock, LocalPipeline

LABELS = {"model": "fraud", "model_version": "v3"}


def test_expression_rules_templates_and_matchers():
    rules = Rules.from_mapping({"rules": [
        {"name": "costly", "expr": "cost_usd > 100", "match": {"model": "llm-*"},
         "labels": {"team": "genai"}, "summary": "{model} spent ${value:.0f}",
         "runbook_url": "https://runbooks/cost"},
        {"name": "cache", "expr": "cache_hit_rate < 0.5"},
    ]})
    llm = {"model": "llm-chat", "model_version": "v1"}
    (costly, cache) = rules.evaluate_metrics({"cost_usd": 140.0, "cache_hit_rate": 0.7}, llm)
    assert (costly.active, costly.summary) == (True, "llm-chat spent $140")
    assert costly.labels["team"] == "genai"
    assert not cache.active
    assert [c.rule for c in rules.evaluate_metrics({"cost_usd": 140.0}, LABELS)] == []
    # a metric a window does not have (no labels yet, say) gives no verdict
    assert rules.evaluate_metrics({"count": 3}, llm) == []


def test_detector_rules_pass_findings_through_with_their_own_words():
    rules = Rules.from_mapping({"rules": [{"detector": "kind:drift", "severity": "critical",
                                           "for": 2}]})
    finding = Finding("feature_drift", "drift", True, {"feature": "amount"}, "warning", 0.3,
                      0.1, "feature amount drifted")
    (c,) = rules.evaluate_findings([finding], LABELS)
    assert (c.rule, c.severity, c.for_windows, c.summary) == (
        "feature_drift", "critical", 2, "feature amount drifted")
    assert rules.evaluate_findings([Finding("no_data", "no_data", True)], LABELS) == []


@pytest.mark.parametrize(("config", "message"), [
    ({"rules": [{"name": "x"}]}, "exactly one of `expr` or `detector`"),
    ({"rules": [{"expr": "error_rate > 1"}]}, "needs a `name`"),
    ({"rules": [{"name": "x", "expr": "error_rate > 1", "for": 0}]}, r"\$\[0\]\.for"),
    ({"rules": [{"name": "x", "expr": "error_rate > 1", "match": {"team": "a"}}]},
     "`match` keys"),
    ({"inhibit": [{"source": ["no_data"]}]}, "missing required field `target`"),
])
def test_rule_mistakes_are_named(config, message):
    with pytest.raises(ConfigError, match=message):
        Rules.from_mapping(config)


def test_threshold_rule_end_to_end_in_memory():
    settings = Settings(window_seconds=10, lateness_seconds=0, max_future_skew_seconds=1e12,
                        rules=[{"name": "slow", "expr": "latency_ms.p99 > 100", "for": 2}])
    pipe = LocalPipeline(settings, clock=FakeClock(0))
    for w in range(8):
        latency = 500.0 if 2 <= w < 5 else 20.0
        pipe.clock.now_s = 10.0 * w + 10
        pipe.send_predictions([{"event_id": str(i), "timestamp": 10.0 * w + i * 0.1,
                                "model": "m", "latency_ms": latency} for i in range(50)])
    pipe.advance(100)
    slow = [(a.status, a.window_start) for a in pipe.alerts if a.rule == "slow"]
    assert slow == [("firing", "1970-01-01T00:00:30Z"), ("resolved", "1970-01-01T00:00:50Z")]


@pytest.mark.parametrize(("count", "errors", "active"), [
    (200, 7, False),      # 3.5% of 200: not shown above 5%
    (200, 20, True),      # 10% of 200
    (20_000, 1100, True),  # 5.5% of 20,000: the bound is within half a percent
    (20, 2, False),       # 10% of 20: two failures prove nothing
])
def test_a_rate_rule_judges_the_rate_against_its_sampling_error(count, errors, active):
    rules = Rules.from_mapping(None)   # the built-in high_error_rate: error_rate > 0.05
    conditions = rules.evaluate_metrics(
        {"count": count, "error_rate": errors / count}, {"model": "m", "model_version": "v"})
    (condition,) = [c for c in conditions if c.rule == "high_error_rate"]
    assert condition.active is active
    assert condition.value == errors / count
    assert condition.evidence["events"] == count


def test_a_rate_rule_with_confidence_zero_compares_the_rate_as_measured():
    rules = Rules.from_mapping({"rules": [
        {"name": "errors", "expr": "error_rate > 0.05", "confidence": 0}]})
    (condition,) = rules.evaluate_metrics({"count": 20, "error_rate": 0.1}, {"model": "m"})
    assert condition.active


def test_a_metric_that_is_not_a_rate_is_compared_as_is():
    rules = Rules.from_mapping({"rules": [{"name": "slow", "expr": "latency_ms.p99 > 500"}]})
    (condition,) = rules.evaluate_metrics({"count": 3, "latency_ms": {"p99": 501.0}}, {})
    assert condition.active and "events" not in condition.evidence


def test_the_screen_of_a_quiet_window_never_hides_a_condition():
    """``may_hold`` answers True wherever ``evaluate_metrics`` with ``active_only`` raises a
    condition, whatever the value (shares beyond [0, 1] too: a bound is computed on the
    share clamped), op, threshold and confidence."""
    import itertools

    from mlpulse.rules import _lookup

    labels = {"model": "m", "model_version": "v1"}
    values = [-0.5, 0.0, 0.01, 0.049, 0.05, 0.3, 0.999, 1.0, 1.5]
    held = hidden = 0
    for value, op, threshold, confidence, count in itertools.product(
            values, (">", ">=", "<", "<=", "==", "!="), (-0.2, 0.0, 0.05, 0.5, 1.0, 1.2),
            (0.0, 0.9), (0, 30, 5000)):
        metrics = {"error_rate": value, "count": count}
        rules = Rules.from_mapping({"rules": [{"name": "r", "expr": f"error_rate {op} {threshold}",
                                               "confidence": confidence}]})
        raised = rules.evaluate_metrics(metrics, labels, active_only=True)
        may = rules.may_hold(lambda path, m=metrics: _lookup(m, path), labels)
        held += bool(raised)
        hidden += bool(raised) and not may
    assert hidden == 0 and held > 100
