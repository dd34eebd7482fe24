"""LLM calls per request: tokens and cost distributions in window summaries, rules,
Prometheus, and the checkpoint."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mlpulse.aggregates import PredictionAggregate
from mlpulse.events import PredictionEvent, PredictionWindow
from mlpulse.status import StatusCollector
from mlpulse.testing import LocalPipeline

KEYS = dict(model="chat", model_version="v1", window_start="", window_end="", late_events=0)


def calls(n: int, seed: int = 0, start: int = 0) -> list[PredictionEvent]:
    rng = np.random.default_rng(seed)
    return [PredictionEvent(event_id=str(start + i), timestamp=1.0, model="chat",
                            tokens_in=int(rng.integers(100, 2000)),
                            tokens_out=int(rng.integers(10, 500)),
                            cost_usd=float(rng.gamma(2.0, 0.002))) for i in range(n)]


def test_a_window_reports_tokens_and_cost_per_request_not_only_their_sums():
    events = [*calls(2000), PredictionEvent(event_id="x", timestamp=1.0, model="chat")]
    aggregate = PredictionAggregate()
    aggregate.add_batch(events)
    llm = aggregate.result(**KEYS).llm
    assert llm is not None and llm.requests == 2000   # the plain prediction is no call
    costs = np.array([e.cost_usd for e in events[:-1]])
    assert llm.cost_usd is not None
    assert llm.cost_usd.mean == pytest.approx(costs.mean())
    assert llm.cost_usd.p50 == pytest.approx(np.quantile(costs, 0.5), rel=0.03)
    assert llm.cost_usd.p95 == pytest.approx(np.quantile(costs, 0.95), rel=0.03)
    assert llm.cost_usd.max == pytest.approx(costs.max(), rel=0.01)
    assert llm.cost_usd_per_1k_requests == pytest.approx(1000 * costs.mean())
    tokens = np.array([e.tokens_out for e in events[:-1]])
    assert llm.tokens_out is not None
    assert llm.tokens_out.p95 == pytest.approx(np.quantile(tokens, 0.95), rel=0.03)
    assert aggregate.result(**KEYS).tokens_out == tokens.sum()


def test_each_event_that_reported_any_of_tokens_or_cost_is_one_request():
    """Events reporting different fields (only tokens in, only a cost, both) are one
    request each, however they are batched."""
    events = [PredictionEvent(event_id="1", timestamp=1.0, model="chat", tokens_in=10),
              PredictionEvent(event_id="2", timestamp=1.0, model="chat", cost_usd=0.1),
              PredictionEvent(event_id="3", timestamp=1.0, model="chat", tokens_out=5,
                              cost_usd=0.2),
              PredictionEvent(event_id="4", timestamp=1.0, model="chat")]
    at_once, one_by_one = PredictionAggregate(), PredictionAggregate()
    at_once.add_batch(events)
    for event in events:
        one_by_one.add_batch([event])
    assert at_once.result(**KEYS).llm.requests == 3   # type: ignore[union-attr]
    assert one_by_one.result(**KEYS).llm == at_once.result(**KEYS).llm


def test_windows_without_llm_fields_have_no_llm_summary():
    aggregate = PredictionAggregate()
    aggregate.add_batch([PredictionEvent(event_id="1", timestamp=1.0, model="m",
                                         latency_ms=3.0)])
    assert aggregate.result(**KEYS).llm is None


def test_the_distributions_survive_a_checkpoint_and_merge_across_batches():
    whole, parts = PredictionAggregate(), PredictionAggregate()
    whole.add_batch(calls(500) + calls(300, seed=1, start=500))
    parts.add_batch(calls(500))
    restored = PredictionAggregate().restore(
        msgspec.msgpack.decode(msgspec.msgpack.encode(parts.state())))
    restored.add_batch(calls(300, seed=1, start=500))
    assert restored.result(**KEYS).llm == whole.result(**KEYS).llm


def test_a_rule_on_the_cost_per_request_and_the_prometheus_gauges():
    rules = [{"name": "costly_calls", "expr": "llm.cost_usd.p95 > 0.02", "for": 1}]
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, rules=rules)
    for w, scale in enumerate((0.002, 0.002, 0.02, 0.002)):   # window 2: 10× the cost
        rng = np.random.default_rng(w)
        pipe.send_predictions([{"event_id": f"{w}-{i}", "timestamp": 10.0 * w + i * 0.01,
                                "model": "chat", "tokens_out": 50,
                                "cost_usd": float(rng.gamma(2.0, scale))} for i in range(300)])
    pipe.advance(100)
    costly = [(a.status, a.window_start) for a in pipe.alerts if a.rule == "costly_calls"]
    assert costly == [("firing", "1970-01-01T00:00:20Z"), ("resolved", "1970-01-01T00:00:30Z")]
    windows = [w for w in pipe.windows if isinstance(w, PredictionWindow)]
    assert all(w.llm is not None and w.llm.requests == 300 for w in windows)

    registry = CollectorRegistry()
    registry.register(StatusCollector(pipe.status, lambda: pipe.summarizer.guard.folded))
    labels = {"model": "chat", "model_version": windows[-1].model_version}
    latest = windows[-1].llm
    assert latest is not None and latest.cost_usd is not None
    assert registry.get_sample_value("mlpulse_model_llm_per_request", {
        **labels, "quantity": "cost_usd", "statistic": "95"}) == latest.cost_usd.p95
    assert registry.get_sample_value("mlpulse_model_llm_per_request", {
        **labels, "quantity": "tokens_out", "statistic": "50"}) == pytest.approx(50, rel=0.01)
    assert registry.get_sample_value("mlpulse_model_llm_per_request", {
        **labels, "quantity": "cost_usd_per_1k_requests", "statistic": "value"}) == (
        latest.cost_usd_per_1k_requests)
