"""Detection of what shows only apart: a change in one slice, a version worse than another.

``python -m bench.detection_apart [--quick]`` (also run by ``python -m bench.detection``)
prints a table and writes ``bench/results/detection-apart.json``. Every stream goes through
the whole engine in process (:class:`~mlpulse.testing.LocalPipeline`: windows, slices,
detectors, comparisons, rules, alert lifecycle), and each is run twice on the same seeded
events: **before**, as mlpulse was without slices and version comparison (``segment_keys``
empty, ``comparison.enabled: false``), and **after**, with them.

One model, windows of 60 s and 2,000 events, 12 windows (30 for the stationary streams):
features ``x`` ~ N(0, 1), ``y`` ~ N(50, 10), ``plan`` (3 values), latency ~ LogNormal(ln 40
ms, 0.3), 1 % errors, prediction ``pos``/``neg`` (30 % ``pos``); every event has a
``region`` (eu 15 %, us 50 %, apac 35 %). Reference: the first 3 windows (the default mode).

* **Slice cases**: from window 6 on, ``x`` of the eu events shifts by 0.5σ or 1σ. Caught
  when, within 2 windows of the change, a firing alert names feature ``x`` (before: the
  model version's; after: the ``region=eu`` slice's).
* **Comparison cases**: version 2.0 takes 20 % of the traffic from window 6, different
  from its first event: latency ×1.3, errors 1 % → 3 %, ``x`` shifted by 0.5σ, 40 % ``pos``
  predictions, or conversions (outcomes sent as feedback after the stream) at 5 % instead
  of 1.0's 10 %. Caught when, within 2 windows of its first, a firing alert of version
  2.0 concerns the changed signal (before: any of its alerts; after: a ``comparison``
  alert on it). A canary that is bad from its start is its own reference: that is what
  ``before`` shows.
* **False alerts**: stationary streams (no change; with a 2.0 identical to 1.0 from
  window 6), firing transitions per 100 judged windows: of slices (``region=*``) for the
  slice case, of version 2.0's comparisons for the comparison case.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpulse.events import AlertEvent, PredictionWindow
from mlpulse.testing import LocalPipeline

__all__ = ["main", "run"]

RESULTS = Path(__file__).resolve().parent / "results" / "detection-apart.json"
T0 = 1_700_000_040.0   # a multiple of 60 s
WINDOW_S = 60.0
WINDOWS = 12
CHANGE = 6
PER_WINDOW = 2000
REGIONS = {"eu": 0.15, "us": 0.5, "apac": 0.35}
CANARY_SHARE = 0.2
SEED = 20_261_205


@dataclass(frozen=True)
class Case:
    name: str
    kind: str   # "slice" | "version"
    change: dict[str, float]
    signal: str | None
    """What a catching alert must concern (a feature name or a comparison signal)."""
    windows: int = WINDOWS


CASES = [
    Case("slice: eu x +0.5σ", "slice", {"shift": 0.5}, "x"),
    Case("slice: eu x +1σ", "slice", {"shift": 1.0}, "x"),
    Case("slice: stationary", "slice", {}, None, windows=30),
    Case("version: latency ×1.3", "version", {"latency": 1.3}, "latency_ms"),
    Case("version: errors 1% → 3%", "version", {"errors": 0.03}, "error_rate"),
    Case("version: x +0.5σ", "version", {"x": 0.5}, "x"),
    Case("version: 40% pos", "version", {"pos": 0.4}, "predictions"),
    Case("version: converts 5% (10%)", "version", {"converted": 0.05}, "outcomes.converted"),
    Case("version: stationary", "version", {}, None, windows=30),
]


def stream(case: Case, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The case's events and its feedback (outcomes), seeded."""
    rng = np.random.default_rng(seed)
    names, shares = list(REGIONS), list(REGIONS.values())
    events, feedback = [], []
    for w in range(case.windows):
        n = PER_WINDOW
        regions = rng.choice(names, size=n, p=shares)
        canary = (rng.random(n) < CANARY_SHARE) if case.kind == "version" and w >= CHANGE \
            else np.zeros(n, dtype=bool)
        x = rng.normal(size=n)
        y = rng.normal(50, 10, size=n)
        latency = rng.lognormal(np.log(40), 0.3, size=n)
        u_error, u_pos, u_conv = rng.random(n), rng.random(n), rng.random(n)
        plans = rng.choice(["free", "pro", "team"], size=n)
        for i in range(n):
            bad = case.change if canary[i] else {}
            shift = case.change.get("shift", 0.0) if (
                case.kind == "slice" and w >= CHANGE and regions[i] == "eu") else 0.0
            error = u_error[i] < bad.get("errors", 0.01)
            event_id = f"{w}-{i}"
            event: dict[str, Any] = {
                "event_id": event_id, "timestamp": T0 + WINDOW_S * (w + i / n),
                "model": "m", "model_version": "2.0" if canary[i] else "1.0",
                "latency_ms": float(latency[i]) * bad.get("latency", 1.0),
                "status": "error" if error else "ok",
                "features": {"x": float(x[i]) + shift + bad.get("x", 0.0), "y": float(y[i]),
                             "plan": str(plans[i])},
                "segment": {"region": str(regions[i])}}
            if not error:
                event["prediction"] = "pos" if u_pos[i] < bad.get("pos", 0.3) else "neg"
            events.append(event)
            if case.kind == "version":
                feedback.append({"event_id": event_id, "timestamp": T0 + case.windows * WINDOW_S,
                                 "model": "m", "outcomes": {
                                     "converted": bool(u_conv[i] < bad.get("converted", 0.1))}})
    return events, feedback


def run_stream(case: Case, seed: int, after: bool) -> LocalPipeline:
    events, feedback = stream(case, seed)
    detectors: dict[str, Any] = {"no_data_windows": 1000}
    if not after:
        detectors["comparison"] = {"enabled": False}
    pipe = LocalPipeline(window_seconds=WINDOW_S, lateness_seconds=0, detectors=detectors,
                         segment_keys="region" if after else "")
    for i in range(0, len(events), 1000):
        pipe.send_predictions(events[i:i + 1000])
    pipe.advance(WINDOW_S * 3)
    if feedback:
        for i in range(0, len(feedback), 1000):
            pipe.send_feedback(feedback[i:i + 1000])
        pipe.advance(60)
    return pipe


def _concerns(alert: AlertEvent, case: Case, after: bool) -> bool:
    labels = alert.labels
    if case.kind == "slice":
        if labels.get("feature") != case.signal:
            return False
        return labels.get("segment") == "region=eu" if after else "segment" not in labels
    if labels.get("model_version") != "2.0" or "segment" in labels:
        return False
    if not after:
        return True   # anything about the canary
    return alert.kind == "comparison" and _signal_is(labels.get("signal", ""), case)


def _signal_is(signal: str, case: Case) -> bool:
    assert case.signal is not None
    return (signal == case.signal or signal.startswith(case.signal + ".")
            or signal == f"features.{case.signal}")


def judge(case: Case, pipe: LocalPipeline, after: bool) -> dict[str, Any]:
    """Caught within 2 windows of the change, and the firing transitions counted as false
    (with the judged windows they are out of)."""
    firing = [a for a in pipe.alerts if a.status == "firing"]
    horizon = {_start(CHANGE), _start(CHANGE + 1)}
    windows = [w for w in pipe.windows if isinstance(w, PredictionWindow) and not w.revision]
    if case.signal is None:
        caught = False   # a stationary stream: nothing to catch
    elif case.kind == "version" and after:
        # the candidate's windows in the horizon say so (late outcomes revise them all at
        # once: the alert carries whichever window was judged last), and an alert fired
        verdicts = {s.verdict for w in pipe.windows if isinstance(w, PredictionWindow)
                    and w.model_version == "2.0" and w.window_start in horizon
                    and w.comparison is not None and not w.segment
                    for name, s in w.comparison.signals.items()
                    if _signal_is(name, case)}
        caught = bool(verdicts & {"worse", "different"}) and any(
            _concerns(a, case, after) for a in firing)
    else:
        caught = any(_concerns(a, case, after) and a.window_start in horizon for a in firing)
    if case.kind == "slice":
        judged = [w for w in windows if w.segment] if after else [
            w for w in windows if not w.segment]
        false = [a for a in firing if ("segment" in a.labels) == after]
    else:
        judged = [w for w in windows if w.model_version == "2.0" and not w.segment]
        false = [a for a in firing if a.labels.get("model_version") == "2.0"
                 and (a.kind == "comparison" or not after) and "segment" not in a.labels]
    return {"caught": caught, "false_alerts": len(false), "windows": len(judged)}


def _start(w: int) -> str:
    from mlpulse.timefmt import rfc3339
    return rfc3339(T0 + WINDOW_S * w)


def run(streams: int, log: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    out = []
    for case in CASES:
        row: dict[str, Any] = {"case": case.name, "kind": case.kind, "streams": streams}
        for after in (False, True):
            results = [judge(case, run_stream(case, SEED + s, after), after)
                       for s in range(streams)]
            windows = sum(r["windows"] for r in results)
            false = sum(r["false_alerts"] for r in results)
            row["after" if after else "before"] = {
                "caught_within_2_windows": (sum(r["caught"] for r in results) / streams
                                            if case.signal else None),
                "false_alerts": false if case.signal is None else None,
                "judged_windows": windows,
                "false_alerts_per_100_windows": (100 * false / windows if windows else None)
                if case.signal is None else None,
            }
        log(f"{case.name}: {row['before']} -> {row['after']}")
        out.append(row)
    return out


def render(rows: list[dict[str, Any]]) -> str:
    def cell(side: dict[str, Any]) -> str:
        if side["caught_within_2_windows"] is not None:
            return f"{side['caught_within_2_windows']:.0%} caught ≤2w"
        rate = side["false_alerts_per_100_windows"]
        return (f"{side['false_alerts']} false / {side['judged_windows']} windows"
                + (f" ({rate:.2f} per 100)" if rate is not None else ""))
    lines = ["| case | before (no slices, no comparison) | after |", "|---|---|---|"]
    lines += [f"| {r['case']} | {cell(r['before'])} | {cell(r['after'])} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.detection_apart")
    parser.add_argument("--quick", action="store_true", help="3 streams per case, not 10")
    parser.add_argument("--streams", type=int, default=None)
    args = parser.parse_args(argv)
    streams = args.streams or (3 if args.quick else 10)
    started = time.perf_counter()
    rows = run(streams, log=print)
    table = render(rows)
    print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"streams": streams, "seed": SEED, "rows": rows,
                                   "seconds": round(time.perf_counter() - started, 1)},
                                  indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
