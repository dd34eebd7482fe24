"""Slices and version comparison through the real broker, one worker, three models:

* ``loans``: a drift confined to its 15 % ``region=eu`` slice, and a flood of ``customer``
  values folded into ``__other__``;
* ``fraud``: a canary 2.0 with worse latency and errors beside its baseline 1.0 and an
  identical 3.0;
* ``shop``: version 2.0 converts at half the rate of 1.0, its outcomes sent late, as
  feedback; they score its region slices too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import numpy as np
import pytest

from mlpulse.config import Settings
from mlpulse.timefmt import rfc3339

from .conftest import consume, produce

T0 = 1_700_000_000.0   # a multiple of the 2 s test window
WINDOW_S = 2.0
DETECTORS = {"reference": {"windows": 2, "min_events": 200},
             "drift": {"min_events": 100},
             "no_data_windows": 1000}   # the stream's end must not hold the alerts back


def stamp(w: int, i: int, n: int) -> float:
    return T0 + WINDOW_S * w + i * WINDOW_S / n


def loans(rng: np.random.Generator, windows: int = 6, n: int = 1500) -> list[dict[str, Any]]:
    out = []
    for w in range(windows):
        regions = rng.choice(["eu", "us", "apac"], size=n, p=[0.15, 0.5, 0.35])
        for i, region in enumerate(regions):
            shift = 1.0 if region == "eu" and w >= 4 else 0.0
            out.append({"event_id": f"l{w}-{i}", "timestamp": stamp(w, i, n), "model": "loans",
                        "model_version": "1.0", "latency_ms": 20.0,
                        "trace_id": f"{w:016x}{i:016x}",
                        "features": {"x": float(rng.normal(shift))},
                        "segment": {"region": str(region), "customer": f"c{i % 50}"},
                        **llm_fields(i)})
    return out


def llm_fields(i: int) -> dict[str, Any]:
    """What an LLM call reports, as services differ: tokens, a cost, both or nothing."""
    fields: dict[str, Any] = {}
    if i % 2 == 0:
        fields["tokens_in"] = 100 + i % 7
    if i % 3 == 0:
        fields["cost_usd"] = 0.001 * (1 + i % 5)
    return fields


def fraud(rng: np.random.Generator, windows: int = 4, n: int = 2000) -> list[dict[str, Any]]:
    out = []
    for w in range(windows):
        versions = rng.choice(["1.0", "2.0", "3.0"], size=n, p=[0.7, 0.15, 0.15])
        for i, version in enumerate(versions):
            canary = version == "2.0"
            error = rng.random() < (0.08 if canary else 0.01)
            out.append({"event_id": f"f{w}-{i}", "timestamp": stamp(w, i, n), "model": "fraud",
                        "model_version": str(version),
                        "latency_ms": float(rng.lognormal(3, 0.3)) * (1.6 if canary else 1.0),
                        "status": "error" if error else "ok",
                        "prediction": "fraud" if rng.random() < 0.1 else "ok",
                        "features": {"amount": float(rng.lognormal(4, 1))}})
    return out


def shop(rng: np.random.Generator, windows: int = 4, n: int = 1000
         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    events, feedback = [], []
    for w in range(windows):
        for i in range(n):
            version = "1.0" if i % 2 else "2.0"
            event_id = f"s{w}-{i}"
            events.append({"event_id": event_id, "timestamp": stamp(w, i, n), "model": "shop",
                           "model_version": version, "latency_ms": 30.0,
                           "prediction": "offer",
                           "segment": {"region": "eu" if i % 3 == 0 else "us"}})
            converted = rng.random() < (0.2 if version == "1.0" else 0.1)
            feedback.append({"event_id": event_id, "timestamp": stamp(w, i, n) + 600,
                             "model": "shop", "outcomes": {"converted": bool(converted)}})
    return events, feedback


def envelopes(events: list[dict[str, Any]]) -> list[bytes]:
    return [msgspec.json.encode(events[i:i + 200]) for i in range(0, len(events), 200)]


def interleaved(*streams: list[dict[str, Any]]) -> list[bytes]:
    """Envelopes of 200 events of each stream, in the order of their first events' times,
    as services batching in real time send them. (One stream's envelopes all sent before
    another's would carry events seconds older than what their input partitions already
    carried: late wherever a fetch of the worker ends between the two.)"""
    chunks = [stream[i:i + 200] for stream in streams for i in range(0, len(stream), 200)]
    return [msgspec.json.encode(c) for c in sorted(chunks, key=lambda c: c[0]["timestamp"])]


def firing(alerts: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["kind"] == kind and a["status"] == "firing"]


def test_slices_and_versions_are_judged_apart(settings: Settings, start_worker, topics):
    settings = settings.replace(detectors=DETECTORS)
    worker = start_worker(detectors=DETECTORS, segment_keys="region,customer",
                          max_segment_values=4)
    worker.wait_assigned()
    rng = np.random.default_rng(21)
    shop_events, shop_feedback = shop(rng)
    loan_events = loans(rng)
    asyncio.run(produce(settings, topics.predictions,
                        interleaved(loan_events, fraud(rng), shop_events)))
    asyncio.run(consume(settings, topics.windows,   # every model's windows closed
                        lambda r: {w["model"] for w in r if w.get("window_start")
                                   == "2023-11-14T22:13:26Z" and not w.get("segment")}
                        >= {"fraud", "shop"}, timeout_s=90))
    asyncio.run(produce(settings, topics.feedback, envelopes(shop_feedback)))

    alerts = asyncio.run(consume(settings, topics.alerts,
                                 lambda r: any(a["labels"].get("model") == "shop"
                                               for a in firing(r, "comparison")),
                                 timeout_s=90, settle_s=3))
    assert worker.metric("mlpulse_late_events_total", {"kind": "predictions"}) is None
    # a drift in the 15 % eu slice: alerted for that slice, within 2 windows, alone
    drift = firing(alerts, "drift")
    assert {(a["labels"]["model"], a["labels"].get("segment"), a["labels"].get("feature"))
            for a in drift if a["rule"] == "feature_drift"} == {("loans", "region=eu", "x")}
    assert min(a["window_start"] for a in drift) <= "2023-11-14T22:13:30Z"   # T0 + 5 windows
    shift = next(a for a in drift if a["rule"] == "feature_drift")
    assert shift["evidence"]["p_value"] < 0.01 and shift["evidence"]["psi"] >= 0.1
    assert shift["evidence"]["top_bins"] and shift["trace_ids"]
    assert worker.metric("mlpulse_alerts_total", {"rule": "feature_drift",
                                                  "status": "firing"}) == 1.0
    # the canary: worse latency and errors than 1.0 within 2 windows; 3.0 as 1.0
    compared = firing(alerts, "comparison")
    canary = [a for a in compared if a["labels"]["model"] == "fraud"]
    assert {a["labels"]["model_version"] for a in canary} == {"2.0"}
    assert {"error_rate", "latency_ms.p50"} <= {a["labels"]["signal"] for a in canary}
    assert all(a["labels"]["baseline_version"] == "1.0" for a in canary)
    assert min(a["window_start"] for a in canary) <= "2023-11-14T22:13:22Z"   # T0 + 1 window
    # the late outcomes: 2.0 converts at half 1.0's rate
    outcome = [a for a in compared if a["labels"]["model"] == "shop"]
    assert {(a["rule"], a["labels"]["model_version"], a["labels"]["signal"])
            for a in outcome} == {("comparison_outcomes", "2.0", "outcomes.converted")}
    assert outcome[0]["evidence"]["candidate"] < outcome[0]["evidence"]["baseline"]

    # the flood of customers: 4 values and __other__, every event counted
    windows = asyncio.run(consume(settings, topics.windows, lambda r: True, timeout_s=10))
    customers: dict[str, int] = {}
    whole: dict[str, int] = {}
    for w in windows:
        if w["model"] != "loans" or w.get("revision"):
            continue
        if "customer" in w.get("segment", {}):
            customers[w["window_start"]] = customers.get(w["window_start"], 0) + w["count"]
            assert w["segment"]["customer"] in {"c0", "c1", "c2", "c3", "__other__"}
        elif not w.get("segment"):
            whole[w["window_start"]] = w["count"]
    assert customers == whole and sum(whole.values()) == 6 * 1500
    # LLM calls per slice: each event that reported tokens or a cost is one request
    by_slice: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in loan_events:
        start = rfc3339(e["timestamp"] // WINDOW_S * WINDOW_S)
        for region in ("", e["segment"]["region"]):   # the model version's, its region's
            by_slice.setdefault((start, region), []).append(e)
    checked = 0
    for w in windows:
        if w["model"] != "loans" or w.get("revision") or "customer" in w.get("segment", {}):
            continue
        mine = by_slice[(w["window_start"], w.get("segment", {}).get("region", ""))]
        assert w["count"] == len(mine)
        reported = [e for e in mine if "tokens_in" in e or "cost_usd" in e]
        assert w["llm"]["requests"] == len(reported)
        assert w["tokens_in"] == sum(e.get("tokens_in", 0) for e in mine)
        costs = [e["cost_usd"] for e in mine if "cost_usd" in e]
        assert w["llm"]["cost_usd_per_1k_requests"] == pytest.approx(
            1000 * sum(costs) / len(costs))
        checked += 1
    assert checked == 6 * 4   # each window: the model's and its 3 regions'
    assert worker.metric("mlpulse_series_folded_total", {"kind": "segment"}) > 0
    # the candidate's summary carries its comparison
    shop_revised = [w for w in windows if w["model"] == "shop" and w.get("comparison")
                    and "outcomes.converted" in w["comparison"]["signals"]]
    assert shop_revised and shop_revised[-1]["comparison"]["baseline_version"] == "1.0"
    # the late outcomes score the slices of their predictions: every one joined, once
    # (revisions come every few seconds: read until the last of each is complete)
    def latest_shop(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], Any]:
        latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        for w in records:
            if w.get("model") == "shop":
                key = (w["model_version"], w["window_start"],
                       w.get("segment", {}).get("region", ""))
                if w.get("revision", 0) >= latest.get(key, {}).get("revision", -1):
                    latest[key] = w
        return latest

    def joined(w: dict[str, Any]) -> int:
        return (w.get("outcomes") or {}).get("converted", {}).get("count", 0)

    def complete(records: list[dict[str, Any]]) -> bool:
        latest = latest_shop(records)
        return len(latest) == 2 * 4 * 3 and all(   # versions × windows × (whole, eu, us)
            joined(w) == w["count"] for w in latest.values())

    latest = latest_shop(asyncio.run(consume(settings, topics.windows, complete,
                                             timeout_s=30)))
    for (version, start, region), w in latest.items():
        if not region:
            assert joined(w) == joined(latest[(version, start, "eu")]) + joined(
                latest[(version, start, "us")])
    assert {w["outcomes"]["converted"]["rate"] for k, w in latest.items() if k[2]} != {0.0}
