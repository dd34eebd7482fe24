"""``python -m bench.comparison``: what version comparison costs, on vs off, through the
worker's engine.

The same stream (10 models, each with two versions taking 80 % and 20 % of its events, 10
numeric features and a class prediction, envelopes of 500) runs through
:class:`mlpulse.testing.LocalPipeline` (the worker's own engine, every detector on) with
``comparison.enabled`` false and true, alternating, ``--repeat`` (3) times, in two shapes:
1,000 and 6,000 events per model-window. Reports events/s (best run), on / off, and the time
one comparison (a candidate's window against its baseline's: 15 signals) adds. Writes
``bench/results/comparison.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

import msgspec

from mlpulse.config import Settings
from mlpulse.events import PredictionWindow
from mlpulse.testing import LocalPipeline

from .common import write_results

MODELS = 10
WINDOW_S = 10.0


def stream(per_window: int, windows: int, seed: int = 1) -> list[bytes]:
    """Envelopes of 500 events, ``per_window`` events per model-window."""
    rng = random.Random(seed)
    events = []
    for w in range(windows):
        for m in range(MODELS):
            for i in range(per_window):
                events.append({
                    "event_id": f"{w}-{m}-{i}", "model": f"model-{m}",
                    "model_version": "v2" if rng.random() < 0.2 else "v1",
                    "timestamp": 1_000_000.0 + w * WINDOW_S + i * WINDOW_S / per_window,
                    "latency_ms": rng.random() * 50, "prediction": rng.choice("ab"),
                    "confidence": rng.random(),
                    "features": {f"f{j}": rng.random() for j in range(10)}})
    events.sort(key=lambda e: e["timestamp"])
    return [msgspec.json.encode(events[i:i + 500]) for i in range(0, len(events), 500)]


def run(payloads: list[bytes], on: bool) -> tuple[float, int]:
    """Seconds to process the stream, and the comparisons made."""
    pipe = LocalPipeline(Settings(max_future_skew_seconds=1e12), window_seconds=WINDOW_S,
                         lateness_seconds=0, detectors={"comparison": {"enabled": on}})
    compared = 0
    started = time.perf_counter()
    for payload in payloads:
        pipe.send("predictions", payload)
        compared += sum(1 for w in pipe.windows
                        if isinstance(w, PredictionWindow) and w.comparison is not None)
        pipe.windows.clear()
        pipe.alerts.clear()
    return time.perf_counter() - started, compared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.comparison", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"shapes": {}}
    for per_window, windows in ((1000, 12), (6000, 4)):
        payloads = stream(per_window, windows)
        events = per_window * MODELS * windows
        best: dict[str, float] = {}
        comparisons = 0
        for _ in range(args.repeat):
            for name in ("off", "on"):
                seconds, compared = run(payloads, name == "on")
                best[name] = min(best.get(name, seconds), seconds)
                comparisons = max(comparisons, compared)
        rates = {name: round(events / seconds) for name, seconds in best.items()}
        per_comparison_ms = (best["on"] - best["off"]) * 1000 / max(comparisons, 1)
        shape = {"events": events, "events_per_s": rates, "comparisons": comparisons,
                 "on_over_off": round(rates["on"] / rates["off"], 3),
                 "ms_per_comparison": round(per_comparison_ms, 2)}
        report["shapes"][f"{per_window}_per_model_window"] = shape
        print(f"{per_window:>5} events per model-window: off {rates['off']:,} events/s, "
              f"on {rates['on']:,} ({shape['on_over_off']}x); {comparisons} comparisons, "
              f"{per_comparison_ms:.2f} ms each")
    print(f"(results in {write_results('comparison', report)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
