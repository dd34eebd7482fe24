"""``python -m bench.slices``: what slices cost, on vs off, through the worker's engine.

The same stream (10 models, 10 numeric features, a segment ``{"region": 5 values, "tier":
5 values}`` on every event, envelopes of 500) runs through
:class:`mlpulse.testing.LocalPipeline` (the worker's own engine, in memory) without slices
and with ``MLPULSE_SEGMENT_KEYS=region,tier`` (2 keys × 5 values: each event in its model
version's window and in two slices), alternating, ``--repeat`` (3) times, in two shapes:
1,000 and 6,000 events per model-window. Reports events/s (best run), on / off, and the
memory a slice window holds (tracemalloc of the open windows, their events folded: a sliced
window gathers up to 16,384 before it folds them). Writes
``bench/results/slices.json``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import tracemalloc
from typing import Any

from mlpulse.config import Settings
from mlpulse.testing import LocalPipeline

from .common import best_alternating, model_stream, timed_feed, write_results

MODELS = 10
WINDOW_S = 10.0


def stream(per_window: int, windows: int, seed: int = 1) -> list[bytes]:
    """Envelopes of 500 events, ``per_window`` events per model-window, each with a region
    and a tier of 5 values."""
    return model_stream(per_window, windows, models=MODELS, window_s=WINDOW_S, seed=seed,
                        extra=lambda rng: {"segment": {"region": f"r{rng.randrange(5)}",
                                                       "tier": f"t{rng.randrange(5)}"}})


def run(payloads: list[bytes], keys: str) -> float:
    """Seconds the engine takes for the stream, sliced by ``keys``."""
    return timed_feed(LocalPipeline(Settings(max_future_skew_seconds=1e12),
                                    window_seconds=WINDOW_S, lateness_seconds=0,
                                    segment_keys=keys), payloads)


def window_bytes(payload_sets: list[bytes], keys: str) -> tuple[int, int]:
    """Bytes the open windows hold after the first window's events, and how many."""
    gc.collect()
    tracemalloc.start()
    pipe = LocalPipeline(Settings(max_future_skew_seconds=1e12), window_seconds=WINDOW_S,
                         lateness_seconds=0, segment_keys=keys)
    before = tracemalloc.get_traced_memory()[0]
    for payload in payload_sets:
        pipe.send("predictions", payload)
    pipe.summarizer.waiting.flush_all()   # the windows as they hold their events: folded
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
        best = best_alternating(args.repeat, {"off": functools.partial(run, payloads, ""),
                                              "on": functools.partial(run, payloads,
                                                                      "region,tier")})
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
