"""``python -m bench.folds``: what folding a sliced window costs, alone and beside others that
fold at the same time (``PredictionAggregate.flush_together``: at a close, a checkpoint's
snapshot and the bound on waiting events, :func:`mlpulse.summarize.fold_in_rounds`).

Windows of 1,000 events of the benchmark's simulator (``--events``: 6,000 for the other
shape; two batches each), sliced by two keys
of 5 values each, every slice with reference bins of its own (10 bins a signal, at the
quantiles of its values, moved a little slice by slice, as each slice's reference puts
them); the window's own profile samples its values, as while a reference builds. For 1, 2,
4 and 8 windows at once: wall ms a window of ``flush_together``, and of each window's
``flush`` alone, in turn round by round (the first of a pair is the slower on this
machine, so each goes first every other round); the best of ``--rounds``. Writes
``bench/results/folds.json``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from typing import Any

import msgspec
import numpy as np

from mlpulse.aggregates import PredictionAggregate
from mlpulse.detectors.profile import WindowProfile
from mlpulse.events import PredictionEvent
from mlpulse.guard import CardinalityGuard
from mlpulse.slicing import SliceNames, SliceRouter

from .common import write_results
from .workload import add_segments, generate

EVENTS = 1_000
KEYS = ("region", "tier")


def _events(n: int) -> list[PredictionEvent]:
    raw = generate(n, n_models=1, rate_per_s=1000)
    add_segments(raw, KEYS)
    return [msgspec.convert(event, PredictionEvent) for event in raw]


def _edges(events: list[PredictionEvent], seed: int) -> dict[str, np.ndarray]:
    """Bins of every signal at the quantiles of its values, moved by ``seed``."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[float]] = {
        "o:latency_ms": [e.latency_ms or 0.0 for e in events],
        "o:confidence": [e.confidence or 0.0 for e in events],
        "o:error": [float(e.status != "ok") for e in events],
    }
    for event in events:
        for name, value in (event.features or {}).items():
            if isinstance(value, float):
                columns.setdefault("f:" + name, []).append(value)
    out = {}
    for signal, values in columns.items():
        quantiles = np.quantile(values, np.linspace(0, 1, 11)) * rng.uniform(0.97, 1.03)
        out[signal] = np.unique(quantiles)
    return out


class _Windows:
    """Sliced windows as a worker makes them, their slices' bins remembered by slice."""

    def __init__(self, events: list[PredictionEvent]) -> None:
        self.events = events
        self.slice_edges: dict[tuple[int, str], dict[str, np.ndarray]] = {}
        self.window_edges = [_edges(events[:2000], seed) for seed in range(10)]

    def window(self, model: int) -> PredictionAggregate:
        def new_slice(name: str) -> PredictionAggregate:
            edges = self.slice_edges.get((model, name))
            if edges is None:
                edges = self.slice_edges[(model, name)] = _edges(
                    self.events[:2000], 1000 + 31 * model + len(self.slice_edges))
            return PredictionAggregate(profile=WindowProfile(edges=edges))
        return PredictionAggregate(
            profile=WindowProfile(edges=self.window_edges[model], sample_size=500,
                                  rng=np.random.default_rng(model)),
            min_batch=10**9, new_slice=new_slice,
            slicer=SliceRouter("m", [(key,) for key in KEYS], CardinalityGuard(),
                               SliceNames(), lambda: 0.0))

    def filled(self, k: int, round_: int, events: int = EVENTS) -> list[PredictionAggregate]:
        windows = [self.window(i % 10) for i in range(k)]
        for i, window in enumerate(windows):
            start = (round_ * 8 + i) * events % (len(self.events) - events)
            window.add_batch(self.events[start:start + events // 2])
            window.add_batch(self.events[start + events // 2:start + events])
        return windows


def measure(k: int, rounds: int, windows: _Windows, events: int = EVENTS) -> dict[str, float]:
    """Best wall ms a window of folding ``k`` windows together and each alone."""
    best = {"together": float("inf"), "alone": float("inf")}
    for round_ in range(rounds):
        for mode in (("together", "alone") if round_ % 2 else ("alone", "together")):
            filled = windows.filled(k, round_, events)
            gc.collect()
            started = time.perf_counter()
            if mode == "together":
                PredictionAggregate.flush_together(filled)
            else:
                for window in filled:
                    window.flush()
            best[mode] = min(best[mode], time.perf_counter() - started)
    return {mode: round(seconds * 1e3 / k, 3) for mode, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.folds", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--events", type=int, default=EVENTS, help="events a window")
    args = parser.parse_args(argv)
    windows = _Windows(_events(max(40_000, 9 * args.events)))
    for window in windows.filled(10, 0, args.events):   # every slice's bins made first
        window.flush()
    out: dict[str, Any] = {}
    for k in (1, 2, 4, 8):
        out[str(k)] = ms = measure(k, args.rounds, windows, args.events)
        print(f"{k} window(s): together {ms['together']:.2f} ms a window, "
              f"alone {ms['alone']:.2f} ms", flush=True)
    report = {"events_per_window": args.events, "slices": "2 keys x 5 values",
              "rounds": args.rounds, "ms_per_window": out}
    name = "folds" if args.events == EVENTS else f"folds-{args.events}"
    print(f"(results in {write_results(name, report)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
