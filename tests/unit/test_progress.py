"""Event-time alignment (mlpulse.progress) and the windows that close on it (mlpulse.summarize)."""

from __future__ import annotations

import collections
import math
import random

import pytest

from mlpulse.config import Settings
from mlpulse.events import PredictionEvent
from mlpulse.progress import (
    BEHIND,
    CAUGHT_UP,
    IDLE,
    InputClocks,
    Watermarks,
    decode_progress,
    encode_progress,
    too_far_ahead,
)
from mlpulse.repartition import partition_for
from mlpulse.summarize import Summarizer

WINDOW_S = 5.0
T0 = 1_700_000_000.0


def unkeyed_stream(events: int = 8000, models: int = 10, inputs: int = 4, seed: int = 1,
                   rate_per_s: float = 1000.0) -> dict[int, list[PredictionEvent]]:
    """Events in time order, each written to a random input partition (an unkeyed producer)."""
    rng = random.Random(seed)
    out: dict[int, list[PredictionEvent]] = {i: [] for i in range(inputs)}
    for k in range(events):
        out[rng.randrange(inputs)].append(PredictionEvent(
            event_id=str(k), timestamp=T0 + k / rate_per_s, model=f"model-{k % models}"))
    return out


def truth(stream: dict[int, list[PredictionEvent]]) -> collections.Counter[tuple[str, float]]:
    return collections.Counter((e.model, math.floor(e.timestamp / WINDOW_S) * WINDOW_S)
                               for events in stream.values() for e in events)


def read_skewed(stream: dict[int, list[PredictionEvent]], *, aligned: bool, fetch: int = 500,
                order: str = "one-after-another", partitions: int = 4,
                ) -> tuple[collections.Counter[tuple[str, float]], int]:
    """Read the input partitions as a worker with a backlog does (one far ahead of the
    others), route each event to its model's partition and report progress after every
    fetch, as the pipeline does; the counts of the emitted windows and the late events."""
    s = Summarizer(Settings(window_seconds=WINDOW_S, lateness_seconds=1.0))
    if aligned:
        s.sources("predictions", len(stream))
    positions = dict.fromkeys(stream, 0)
    counts: collections.Counter[tuple[str, float]] = collections.Counter()
    late = 0
    rng = random.Random(3)
    now = 0.0
    clocks = InputClocks(idle_s=1.0)
    clocks.assigned("predictions", stream, now)

    def drain(check_idle: bool) -> None:
        for w in [c.summary for c in s.close_due(now, check_idle=check_idle)]:
            counts[(w.model, _start(w.window_start))] += w.count

    while any(positions[i] < len(stream[i]) for i in stream):
        live = [i for i in stream if positions[i] < len(stream[i])]
        index = live[0] if order == "one-after-another" else rng.choice(live)
        batch = stream[index][positions[index]:positions[index] + fetch]
        positions[index] += len(batch)
        by_model: dict[str, list[PredictionEvent]] = {}
        for e in batch:
            by_model.setdefault(e.model, []).append(e)
        for model, events in by_model.items():
            late += s.add_prediction_events(partition_for(model.encode(), partitions), events,
                                            now)
        clocks.read("predictions", index, max(e.timestamp for e in batch), now)
        report = clocks.report("predictions", stream, now,
                               caught_up=lambda _, i: positions[i] >= len(stream[i]))
        for partition in range(partitions):
            s.progress(partition, "predictions", report)
        drain(check_idle=False)
        now += 0.01
    now += 100.0   # everything read: the input partitions turn idle, the last windows close
    report = clocks.report("predictions", stream, now, caught_up=lambda _, i: True)
    for partition in range(partitions):
        s.progress(partition, "predictions", report)
    drain(check_idle=True)
    return counts, late


def _start(rfc3339: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("order", ["one-after-another", "random"])
def test_unkeyed_backlog_read_unevenly_gives_every_window_exact(order):
    stream = unkeyed_stream()
    counts, late = read_skewed(stream, aligned=True, order=order)
    assert late == 0
    assert counts == truth(stream)


def test_without_alignment_the_same_backlog_loses_events_to_lateness():
    # the defect the alignment fixes: a model's watermark moved with its fastest partition
    stream = unkeyed_stream()
    counts, late = read_skewed(stream, aligned=False)
    assert late > 1000
    assert counts != truth(stream)


def test_an_input_partition_not_heard_of_holds_every_window():
    w = Watermarks(lateness_s=0)
    w.sources("predictions", 3)
    w.update(0, "predictions", {0: (100.0, BEHIND), 1: (100.0, BEHIND)})
    assert w.watermark_s(0, "predictions") == -math.inf
    w.update(0, "predictions", {2: (90.0, BEHIND)})
    assert w.watermark_s(0, "predictions") == 90.0
    assert w.watermark_s(1, "predictions") == -math.inf   # partition 1 heard nothing


def test_progress_only_moves_forward_and_idle_partitions_release_time():
    w = Watermarks(lateness_s=1)
    w.sources("logs", 2)
    w.update(0, "logs", {0: (50.0, BEHIND), 1: (40.0, CAUGHT_UP)})
    assert not w.update(0, "logs", {0: (45.0, BEHIND)})   # older: nothing changes
    assert w.watermark_s(0, "logs") == 39.0
    assert not w.caught_up(0, "logs")
    w.update(0, "logs", {1: (40.0, IDLE)})
    assert w.watermark_s(0, "logs") == 49.0
    w.update(0, "logs", {0: (50.0, IDLE)})   # every partition idle: nothing holds back
    assert w.watermark_s(0, "logs") == math.inf
    assert w.caught_up(0, "logs")
    w.update(0, "logs", {1: (41.0, CAUGHT_UP)})   # busy again
    assert w.watermark_s(0, "logs") == 40.0


def test_a_window_waits_for_a_busy_partition_even_when_idle_on_the_wall_clock():
    s = Summarizer(Settings(window_seconds=10, lateness_seconds=0))
    s.sources("predictions", 2)
    s.add_prediction_events(0, [PredictionEvent(event_id="1", timestamp=1.0, model="m")], 0)
    s.progress(0, "predictions", {0: (30.0, CAUGHT_UP), 1: (5.0, BEHIND)})
    assert s.close_due(now_wall_s=1000) == []   # partition 1 is still being read
    s.progress(0, "predictions", {1: (5.0, IDLE)})
    assert [c.summary.count for c in s.close_due(now_wall_s=1000)] == [1]


def test_a_quiet_window_waits_while_a_backlog_is_read_even_past_the_aligned_watermark():
    # partition 0 holds model a's events after model b's later ones (one producer sent a
    # model at a time): a is not late, and its window must not close on the wall clock
    # while partition 0 is paused or behind
    s = Summarizer(Settings(window_seconds=10, lateness_seconds=1))
    s.sources("predictions", 1)
    s.add_prediction_events(0, [PredictionEvent(event_id="b", timestamp=50.0, model="b")], 0)
    s.add_prediction_events(0, [PredictionEvent(event_id="a1", timestamp=3.0, model="a")], 0)
    s.progress(0, "predictions", {0: (50.0, BEHIND)})
    assert s.close_due(now_wall_s=1000) == []   # a's window is idle, but a backlog is read
    s.add_prediction_events(0, [PredictionEvent(event_id="a2", timestamp=4.0, model="a")], 1000)
    s.progress(0, "predictions", {0: (50.0, CAUGHT_UP)})
    closed = [c.summary for c in s.close_due(now_wall_s=2000)]
    assert [(w.model, w.count, w.late_events) for w in closed] == [("a", 2, 0)]


def test_a_model_whose_clock_lags_keeps_its_events():
    # two models share the input partitions; one producer's clock is 30 s behind
    s = Summarizer(Settings(window_seconds=10, lateness_seconds=1))
    s.sources("predictions", 1)
    fast = [PredictionEvent(event_id=f"f{i}", timestamp=100.0 + i, model="a") for i in range(20)]
    slow = [PredictionEvent(event_id=f"s{i}", timestamp=70.0 + i, model="b") for i in range(20)]
    assert s.add_prediction_events(0, fast, 0) == 0
    s.progress(0, "predictions", {0: (119.0, CAUGHT_UP)})
    assert s.add_prediction_events(0, slow[:10], 0) == 0
    assert s.add_prediction_events(0, slow[10:], 0) == 0
    closed = [c.summary for c in s.close_due(0, check_idle=False)]
    windows = {(w.model, w.window_start): w.count for w in closed}
    assert windows[("b", "1970-01-01T00:01:10Z")] == 10


def test_progress_is_part_of_the_partition_checkpoint():
    one = Summarizer(Settings(window_seconds=10, lateness_seconds=0))
    one.sources("predictions", 2)
    one.add_prediction_events(1, [PredictionEvent(event_id="1", timestamp=3.0, model="m"),
                                  PredictionEvent(event_id="2", timestamp=12.0, model="m")], 0)
    one.progress(1, "predictions", {0: (25.0, CAUGHT_UP)})
    two = Summarizer(Settings(window_seconds=10, lateness_seconds=0))
    two.sources("predictions", 2)
    two.restore_partition(1, one.partition_state(1))
    assert two.watermarks.state(1) == one.watermarks.state(1)
    assert two.close_due(0, check_idle=False) == []
    two.progress(1, "predictions", {1: (11.0, CAUGHT_UP)})
    assert [c.summary.count for c in two.close_due(0, check_idle=False)] == [1]


def test_reports_round_trip_through_the_header():
    report = {0: (1.5, BEHIND), 7: (-math.inf, IDLE)}
    assert decode_progress(encode_progress(report)) == report


def test_a_partition_is_idle_only_when_caught_up_and_silent():
    clocks = InputClocks(idle_s=2)
    clocks.assigned("logs", [0], now_wall_s=0)
    assert clocks.report("logs", [0], 1, caught_up=lambda *_: True) == {
        0: (-math.inf, CAUGHT_UP)}
    assert clocks.report("logs", [0], 3, caught_up=lambda *_: False) == {0: (-math.inf, BEHIND)}
    assert clocks.report("logs", [0], 3, caught_up=lambda *_: True) == {0: (-math.inf, IDLE)}
    clocks.read("logs", 0, 10.0, now_wall_s=3)
    assert clocks.report("logs", [0], 4, caught_up=lambda *_: True) == {0: (10.0, CAUGHT_UP)}


def test_partitions_far_ahead_of_the_slowest_are_paused():
    assert too_far_ahead({0: 10.0, 1: 400.0, 2: 309.0}, 10.0, 300.0) == {1}
    assert too_far_ahead({0: 10.0, 1: 400.0}, math.inf, 300.0) == set()   # all idle
    # one not read yet: the others wait for it (it is not paused itself)
    assert too_far_ahead({0: 10.0, 1: -math.inf}, -math.inf, 300.0) == {0}
