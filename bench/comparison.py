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
import functools
import sys
from typing import Any

from mlpulse.config import Settings
from mlpulse.events import PredictionWindow
from mlpulse.testing import LocalPipeline

from .common import best_alternating, model_stream, timed_feed, write_results

MODELS = 10
WINDOW_S = 10.0


def stream(per_window: int, windows: int, seed: int = 1) -> list[bytes]:
    """Envelopes of 500 events, ``per_window`` events per model-window, 20 % of them of
    version v2, each with a confidence."""
    return model_stream(per_window, windows, models=MODELS, window_s=WINDOW_S, seed=seed,
                        extra=lambda rng: {"model_version": "v2" if rng.random() < 0.2
                                           else "v1", "confidence": rng.random()})


def run(payloads: list[bytes], on: bool, compared: list[int]) -> float:
    """Seconds the engine takes for the stream; the comparisons made go into ``compared``."""
    pipe = LocalPipeline(Settings(max_future_skew_seconds=1e12), window_seconds=WINDOW_S,
                         lateness_seconds=0, detectors={"comparison": {"enabled": on}})
    made = [0]

    def count(pipe: LocalPipeline) -> None:
        made[0] += sum(1 for w in pipe.windows
                       if isinstance(w, PredictionWindow) and w.comparison is not None)

    seconds = timed_feed(pipe, payloads, count)
    compared.append(made[0])
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.comparison", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"shapes": {}}
    for per_window, windows in ((1000, 12), (6000, 4)):
        payloads = stream(per_window, windows)
        events = per_window * MODELS * windows
        made: list[int] = []
        best = best_alternating(args.repeat, {
            "off": functools.partial(run, payloads, False, made),
            "on": functools.partial(run, payloads, True, made)})
        comparisons = max(made)
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
