"""``bench.stages``: the steps of a worker's engine, each timed on its own."""

from __future__ import annotations

import itertools

from bench.stages import STEPS, Steps, install
from mlpulse.engine import Engine
from mlpulse.events import PredictionEvent
from mlpulse.testing import LocalPipeline


def test_a_step_counts_its_own_time_not_that_of_the_steps_it_calls() -> None:
    ticks = itertools.count()
    steps = Steps(clock=lambda: float(next(ticks)))   # each reading one second later

    def outer() -> int:
        next(ticks)   # a second of its own, before the inner step
        return inner() + 1

    def inner() -> int:
        next(ticks)
        next(ticks)   # two seconds of its own
        return 1

    outer, inner = steps.wrap("outer", outer), steps.wrap("inner", inner)
    assert outer() == 2
    # outer: read at 0 and 6, of which inner took 2 .. 5 (3 s with its own readings)
    assert steps.seconds == {"inner": 3.0, "outer": 3.0}
    assert steps.calls == {"inner": 1, "outer": 1}


def test_the_steps_of_an_engine_are_timed_and_put_back() -> None:
    original = Engine.__dict__["_decode"]
    steps = install()
    try:
        pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, segment_keys="region")
        pipe.send_predictions([PredictionEvent(
            event_id=str(i), timestamp=1_000.0 + i, model="m", latency_ms=1.0,
            segment={"region": "eu" if i % 2 else "us"}) for i in range(40)])
        pipe.advance(60)
    finally:
        steps.restore()
    assert Engine.__dict__["_decode"] is original
    report = steps.report()
    assert {"decode", "fold", "close", "summaries", "judge", "ingest"} <= set(
        report["steps_seconds"])
    assert set(report["steps_seconds"]) <= set(STEPS)
    assert report["calls"]["fold"] >= 1 and report["cpu_seconds"] >= 0
    assert len(pipe.windows) == 4 * 3   # 4 windows of 10 s, each with its two slices


def test_a_static_step_stays_static() -> None:
    from mlpulse.aggregates import PredictionAggregate

    steps = install()
    try:
        aggregate = PredictionAggregate()
        aggregate.add_batch([PredictionEvent(event_id="1", timestamp=1.0, model="m",
                                             latency_ms=2.0)])
        summary = aggregate.result(model="m", model_version="v", window_start="",
                                   window_end="", late_events=0)   # self.results(...)
    finally:
        steps.restore()
    assert summary.count == 1 and steps.calls["summaries"] == 1
    assert isinstance(PredictionAggregate.__dict__["results"], staticmethod)
