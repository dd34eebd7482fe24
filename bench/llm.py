"""``python -m bench.llm``: what LLM calls per request cost the aggregation, on vs off.

The same ``--batches`` (100) batches of 500 prediction events (10 numeric features,
latency, a prediction) are folded into a window's aggregate twice, in alternation,
``--repeat`` (7) times: with ``tokens_in``, ``tokens_out`` and ``cost_usd`` on every event
(LLM calls: their sums, and per request three quantile sketches) and without them. The
best run of each; writes ``bench/results/llm.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from mlpulse.aggregates import PredictionAggregate
from mlpulse.events import PredictionEvent

from .common import write_results


def batches(count: int, llm: bool, seed: int = 1) -> list[list[PredictionEvent]]:
    rng = random.Random(seed)

    def event(i: int) -> PredictionEvent:
        calls: dict[str, Any] = dict(
            tokens_in=rng.randint(10, 2000), tokens_out=rng.randint(5, 500),
            cost_usd=rng.random() * 0.01) if llm else {}
        return PredictionEvent(event_id=str(i), timestamp=1.0, model="m", prediction="a",
                               latency_ms=rng.random() * 50,
                               features={f"f{j}": rng.random() for j in range(10)}, **calls)

    return [[event(b * 500 + i) for i in range(500)] for b in range(count)]


def fold(data: list[list[PredictionEvent]]) -> float:
    aggregate = PredictionAggregate()
    started = time.perf_counter()
    for batch in data:
        aggregate.add_batch(batch)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    cases = {"off": batches(args.batches, llm=False), "on": batches(args.batches, llm=True)}
    runs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, data in cases.items():
            runs[name].append(fold(data))
    events = 500 * args.batches
    ns = {name: round(min(seconds) / events * 1e9) for name, seconds in runs.items()}
    report = {"events": events, "ns_per_event_best": ns,
              "extra_ns_per_llm_event": ns["on"] - ns["off"],
              "on_over_off": round(ns["on"] / ns["off"], 3)}
    for name, value in ns.items():
        print(f"LLM fields {name}: {value} ns per event to aggregate (best of {args.repeat})")
    print(f"per-request sketches and sums: +{ns['on'] - ns['off']} ns per LLM event "
          f"({report['on_over_off']}x)")
    print(f"(results in {write_results('llm', report)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
