"""``python -m bench.slices``: what slices cost, on vs off, through the worker's engine.

The same stream (10 models, 10 numeric features, a segment ``{"region": 5 values, "tier":
5 values}`` on every event, envelopes of 500) runs through
:class:`mlpulse.testing.LocalPipeline` (the worker's own engine, in memory) without slices
and with ``MLPULSE_SEGMENT_KEYS=region,tier`` (2 keys × 5 values: each event in its model
version's window and in two slices), alternating, ``--repeat`` (3) times, in two shapes:
1,000 and 6,000 events per model-window. Reports events/s (best run), on / off, and the
memory a slice window holds (tracemalloc of the open windows). Writes
``bench/results/slices.json``.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from typing import Any

import msgspec

from mlpulse.config import Settings
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
                    "event_id": f"{w}-{m}-{i}", "model": f"model-{m}", "model_version": "v1",
                    "timestamp": 1_000_000.0 + w * WINDOW_S + i * WINDOW_S / per_window,
                    "latency_ms": rng.random() * 50, "prediction": rng.choice("ab"),
                    "features": {f"f{j}": rng.random() for j in range(10)},
                    "segment": {"region": f"r{rng.randrange(5)}", "tier": f"t{rng.randrange(5)}"}})
    events.sort(key=lambda e: e["timestamp"])
    return [msgspec.json.encode(events[i:i + 500]) for i in range(0, len(events), 500)]


def run(payloads: list[bytes], keys: str) -> tuple[float, int]:
    pipe = LocalPipeline(Settings(max_future_skew_seconds=1e12), window_seconds=WINDOW_S,
                         lateness_seconds=0, segment_keys=keys)
    started = time.perf_counter()
    for payload in payloads:
        pipe.send("predictions", payload)
        pipe.windows.clear()
        pipe.alerts.clear()
    return time.perf_counter() - started, len(pipe.windows)


def window_bytes(payload_sets: list[bytes], keys: str) -> tuple[int, int]:
    """Bytes the open windows hold after the first window's events, and how many."""
    gc.collect()
    tracemalloc.start()
    pipe = LocalPipeline(Settings(max_future_skew_seconds=1e12), window_seconds=WINDOW_S,
                         lateness_seconds=0, segment_keys=keys)
    before = tracemalloc.get_traced_memory()[0]
    for payload in payload_sets:
        pipe.send("predictions", payload)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, pipe.summarizer.open_windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slices", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"shapes": {}}
    for per_window, windows in ((1000, 12), (6000, 4)):
        payloads = stream(per_window, windows)
        events = per_window * MODELS * windows
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            for name, keys in (("off", ""), ("on", "region,tier")):
                seconds, _ = run(payloads, keys)
                best[name] = min(best.get(name, seconds), seconds)
        rates = {name: round(events / seconds) for name, seconds in best.items()}
        shape = {"events": events, "events_per_s": rates,
                 "on_over_off": round(rates["on"] / rates["off"], 3)}
        report["shapes"][f"{per_window}_per_model_window"] = shape
        print(f"{per_window:>5} events per model-window: off {rates['off']:,} events/s, "
              f"on {rates['on']:,} ({shape['on_over_off']}x)")
    first = stream(1000, 1)
    off_bytes, off_windows = window_bytes(first, "")
    on_bytes, on_windows = window_bytes(first, "region,tier")
    per_slice = round((on_bytes - off_bytes) / max(on_windows - off_windows, 1))
    report["memory"] = {"open_windows_off": off_windows, "open_windows_on": on_windows,
                        "bytes_off": off_bytes, "bytes_on": on_bytes,
                        "bytes_per_slice_window": per_slice}
    print(f"memory: {off_windows} model windows {off_bytes / 1e6:.1f} MB; with slices "
          f"{on_windows} windows {on_bytes / 1e6:.1f} MB: {per_slice / 1e3:.0f} kB per slice "
          "window (1,000 events, 10 features)")
    print(f"(results in {write_results('slices', report)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
