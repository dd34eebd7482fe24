"""Tumbling windows: alignment, per-key watermark, lateness, idle close, order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mlpulse.windows import TumblingWindows


@dataclass
class Ev:
    timestamp: float


class Count:
    def __init__(self, key: tuple[str, ...] = ()) -> None:
        self.n = 0

    def add_batch(self, events) -> None:
        self.n += len(events)


def windows(size: float = 10, lateness: float = 2) -> TumblingWindows[Count]:
    return TumblingWindows(size_s=size, lateness_s=lateness, new_aggregate=Count)


def closed(w, now: float = 0.0, idle: bool = True):
    return [(c.key[0], c.start_s, c.end_s, c.aggregate.n, c.late_events)
            for c in w.close_due(now, check_idle=idle)]


@pytest.mark.parametrize(("t", "start"), [(0, 0), (9.999, 0), (10, 10), (1e9 + 5, 1e9), (-1, -10)])
def test_windows_align_to_multiples_of_the_size_since_the_epoch(t, start):
    assert windows().window_start(t) == start


def test_fractional_window_sizes():
    w = windows(size=0.5)
    assert w.window_start(1.26) == 1.0
    assert w.window_start(1.75) == 1.5


def test_window_closes_when_its_keys_watermark_reaches_its_end():
    w = windows()
    w.add(("a",), [Ev(1), Ev(11)], 0)
    assert closed(w, idle=False) == []          # watermark 9 < 10
    w.add(("a",), [Ev(12)], 0)
    assert closed(w, idle=False) == [("a", 0, 10, 1, 0)]


def test_keys_have_independent_watermarks():
    w = windows()
    w.add(("a",), [Ev(1)], 0)
    w.add(("b",), [Ev(100)], 0)
    assert closed(w, idle=False) == []          # b's progress does not close a's window
    assert w.add(("a",), [Ev(2)], 0) == 0       # and does not make a's events late


def test_late_event_is_counted_in_the_next_summary_of_its_key():
    w = windows()
    w.add(("a",), [Ev(1), Ev(15)], 0)
    w.add(("a",), [Ev(13)], 0)
    assert closed(w, idle=False) == [("a", 0, 10, 1, 0)]
    assert w.add(("a",), [Ev(5), Ev(9)], 0) == 2   # their window is closed
    assert w.late_total == 2
    w.add(("a",), [Ev(30)], 0)
    assert closed(w, idle=False) == [("a", 10, 20, 2, 2)]


def test_event_within_lateness_is_not_late():
    w = windows(lateness=5)
    w.add(("a",), [Ev(1), Ev(13)], 0)             # watermark 8
    assert w.add(("a",), [Ev(9)], 0) == 0
    w.add(("a",), [Ev(15)], 0)
    assert closed(w, idle=False) == [("a", 0, 10, 2, 0)]


def test_idle_window_closes_after_size_plus_lateness_of_wall_clock():
    w = windows(size=10, lateness=2)
    w.add(("a",), [Ev(1)], now_wall_s=100)
    assert closed(w, now=111.9) == []
    assert closed(w, now=112) == [("a", 0, 10, 1, 0)]
    assert w.add(("a",), [Ev(3)], 113) == 1        # after an idle close the window is late


def test_updates_postpone_idle_close():
    w = windows(size=10, lateness=2)
    w.add(("a",), [Ev(1)], now_wall_s=100)
    w.add(("a",), [Ev(2)], now_wall_s=110)
    assert closed(w, now=115) == []
    assert closed(w, now=122) == [("a", 0, 10, 2, 0)]


def test_closing_a_window_closes_older_ones_of_the_key_and_order_is_by_start():
    w = windows(size=10, lateness=100)
    w.add(("b",), [Ev(25)], now_wall_s=0)
    w.add(("a",), [Ev(5), Ev(15)], now_wall_s=0)
    w.add(("a",), [Ev(6)], now_wall_s=200)          # a's first window was updated lately
    # [10, 20) of a is idle; [0, 10) is not, but closes with it so a's summaries stay in order
    assert closed(w, now=111) == [("a", 0, 10, 2, 0), ("a", 10, 20, 1, 0), ("b", 20, 30, 1, 0)]


def test_cheap_check_only_looks_at_keys_that_advanced():
    w = windows()
    w.add(("a",), [Ev(1)], 0)
    assert closed(w, now=1e9, idle=False) == []     # idle close needs the timer call
    assert closed(w, now=1e9) == [("a", 0, 10, 1, 0)]


def test_windows_restored_from_their_state_close_exactly_as_if_never_stopped():
    """TumblingWindows.state() with PredictionAggregate states, through msgpack, then more
    events (on time, late and for a new window): the same summaries as without the stop."""
    import msgspec

    from mlpulse.aggregates import PredictionAggregate
    from mlpulse.events import PredictionEvent

    def event(i: int, t: float) -> PredictionEvent:
        return PredictionEvent(event_id=str(i), timestamp=t, model="m", latency_ms=float(i),
                               features={"x": float(i % 7), "c": "abc"[i % 3]})

    def windows() -> TumblingWindows:
        return TumblingWindows(size_s=10, lateness_s=2, new_aggregate=lambda key:
                               PredictionAggregate())

    straight = windows()
    for key in (("m", "v1"), ("m", "v2")):
        straight.add(key, [event(i, 1.0 + i * 0.5) for i in range(30)], now_wall_s=0)
    data = msgspec.msgpack.encode(straight.state(lambda a: a.state()))
    restored = windows()
    restored.restore(msgspec.msgpack.decode(data),
                     lambda key, state: PredictionAggregate().restore(state))
    more = [event(100 + i, t) for i, t in enumerate((3.0, 14.0, 15.5, 27.0, 29.0))]
    results = []
    for w in (straight, restored):
        w.add(("m", "v1"), more, now_wall_s=5)
        closed = w.close_due(now_wall_s=5) + w.close_due(now_wall_s=1000)
        results.append([(c.key, c.start_s, c.late_events,
                         c.aggregate.result(model="m", model_version=c.key[1], window_start="",
                                            window_end="", late_events=c.late_events))
                        for c in closed])
    assert results[0] == results[1] and len(results[0]) == 5   # v1: 3 windows, v2: 2


def test_a_restored_window_gets_its_full_idle_time_from_the_restore():
    """A new owner restores a checkpoint seconds after it was taken (the old owner died and
    the group waited for it): the window's events still wait in the backlog, so the idle
    close must not close it at once (its events would all be late)."""
    def count(key: tuple[str, ...], n: int) -> Count:
        c = Count(key)
        c.n = n
        return c

    w = windows()
    w.add(("a",), [Ev(1)], now_wall_s=0)
    saved = w.state(lambda a: a.n)
    late = windows()
    late.restore(saved, count)   # without the restore time: idle already
    assert closed(late, now=30) == [("a", 0, 10, 1, 0)]
    restored = windows()
    restored.restore(saved, count, now_wall_s=30)
    assert closed(restored, now=30) == []
    restored.add(("a",), [Ev(2)], now_wall_s=31)   # from the backlog: on time
    assert closed(restored, now=31 + 12) == [("a", 0, 10, 2, 0)]   # idle: size + lateness
