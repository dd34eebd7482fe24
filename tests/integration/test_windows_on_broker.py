"""Events through the real broker and worker into exact window summaries."""

from __future__ import annotations

import collections
import math

import msgspec
import numpy as np
import pytest

from mlpulse.sdk.simulator import Injection, Simulator

from .conftest import consume, produce

T0 = 1_700_000_000.0  # a multiple of the 2 s test window


def scenario(models: int = 3, windows: int = 3, rate: float = 150.0) -> list[dict]:
    simulator = Simulator(n_models=models, seed=7,
                          injections=[Injection("errors", "model-1", 0, magnitude=0.2)])
    return list(simulator.events(start_s=T0, duration_s=2.0 * windows, rate_per_s=rate))


def expected(events: list[dict]) -> dict[tuple[str, float], dict]:
    groups: dict[tuple[str, float], list[dict]] = collections.defaultdict(list)
    for e in events:
        groups[(e["model"], math.floor(e["timestamp"] / 2) * 2)].append(e)
    return {key: {
        "count": len(group),
        "error_count": sum(e["status"] == "error" for e in group),
        "latency": np.array([e["latency_ms"] for e in group]),
        "amount": np.array([e["features"]["amount"] for e in group]),
        "country": collections.Counter(e["features"]["country"] for e in group),
        "tokens_in": np.array([e["tokens_in"] for e in group]),
        "tokens_out": np.array([e["tokens_out"] for e in group]),
        "cost_usd": np.array([e["cost_usd"] for e in group]),
    } for key, group in groups.items()}


def check_summary(summary: dict, truth: dict) -> None:
    assert summary["count"] == truth["count"]
    assert summary["error_count"] == truth["error_count"]
    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        lo = np.quantile(truth["latency"], q, method="lower")
        hi = np.quantile(truth["latency"], q, method="higher")
        got = summary["latency_ms"][name]
        assert lo * 0.99 <= got <= hi * 1.01, (name, got, lo, hi)
    assert summary["latency_ms"]["max"] == pytest.approx(truth["latency"].max())
    amount = summary["features"]["amount"]
    assert amount["count"] == truth["count"]
    assert amount["mean"] == pytest.approx(truth["amount"].mean())
    assert amount["std"] == pytest.approx(truth["amount"].std())
    assert amount["min"] == truth["amount"].min()
    assert amount["max"] == truth["amount"].max()
    assert summary["features"]["country"]["top"] == dict(truth["country"])
    check_llm(summary, truth)


def check_llm(summary: dict, truth: dict) -> None:
    """Tokens and cost per request: every simulated event is one LLM request."""
    llm = summary["llm"]
    assert llm["requests"] == truth["count"]
    for field in ("tokens_in", "tokens_out", "cost_usd"):
        values, got = truth[field], llm[field]
        assert got["mean"] == pytest.approx(values.mean()), field
        assert got["max"] == pytest.approx(values.max()), field
        for q, name in ((0.5, "p50"), (0.95, "p95")):
            lo = np.quantile(values, q, method="lower")
            hi = np.quantile(values, q, method="higher")
            assert lo * 0.99 <= got[name] <= hi * 1.01, (field, name, got[name], lo, hi)
    assert summary["tokens_in"] == truth["tokens_in"].sum()
    assert summary["tokens_out"] == truth["tokens_out"].sum()
    assert summary["cost_usd"] == pytest.approx(truth["cost_usd"].sum())
    assert llm["cost_usd_per_1k_requests"] == pytest.approx(1000 * truth["cost_usd"].mean())


def by_window(records: list[dict]) -> dict[tuple[str, float], dict]:
    out = {}
    for r in records:
        if r["kind"] != "predictions":
            continue
        key = (r["model"], msgspec.json.decode(
            f'"{r["window_start"]}"'.encode(), type=__import__("datetime").datetime).timestamp())
        assert key not in out, f"window emitted twice: {key}"
        out[key] = r
    return out


def keyed_messages(events: list[dict], envelope: bool) -> tuple[list[bytes], list[bytes | None]]:
    """Messages keyed by model as the SDK sends them: envelopes of one model, in time order."""
    if not envelope:
        return [msgspec.json.encode(e) for e in events], [e["model"].encode() for e in events]
    values, keys = [], []
    for model in sorted({e["model"] for e in events}):
        mine = [e for e in events if e["model"] == model]
        for i in range(0, len(mine), 40):
            values.append(msgspec.json.encode(mine[i:i + 40]))
            keys.append(model.encode())
    return values, keys


@pytest.mark.parametrize("envelope", [True, False], ids=["envelopes", "single-events"])
async def test_three_models_three_windows_exact(settings, topics, start_worker, envelope):
    events = scenario()
    truth = expected(events)
    assert len(truth) == 9
    # fetches of at most 4 KB: an envelope (~10 KB) larger than a whole fetch still comes
    worker = start_worker(ingest_fetch_bytes=4096)
    worker.wait_assigned()
    values, keys = keyed_messages(events, envelope)
    assert max(map(len, values)) > 4096 or not envelope
    await produce(settings, topics.predictions, values, keys)
    records = await consume(settings, topics.windows, lambda r: len(r) >= 9, settle_s=1.0)
    summaries = by_window(records)
    assert set(summaries) == set(truth)
    for key, summary in summaries.items():
        check_summary(summary, truth[key])
        assert summary["late_events"] == 0


async def test_unkeyed_mixed_envelopes_repartition_by_model(settings, topics, start_worker):
    """Envelopes mixing models, unkeyed, spread over all input partitions: still one exact
    summary per (model, window). Lateness covers the whole stream, so consumption order
    across input partitions cannot make events late."""
    events = scenario()
    truth = expected(events)
    worker = start_worker(lateness_seconds=6.0, internal_message_bytes=20_000)  # forces chunks
    worker.wait_assigned()
    values = [msgspec.json.encode(events[i:i + 50]) for i in range(0, len(events), 50)]
    await produce(settings, topics.predictions, values)
    records = await consume(settings, topics.windows, lambda r: len(r) >= 9, settle_s=1.0)
    summaries = by_window(records)
    assert set(summaries) == set(truth)
    for key, summary in summaries.items():
        check_summary(summary, truth[key])
