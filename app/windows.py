"""Event-time tumbling windows with a watermark, allowed lateness and idle close.

Pure logic, no Kafka: the pipeline keeps one :class:`TumblingWindows` per
partition it owns and feeds it batches of events with the wall-clock time.

* Windows are aligned to multiples of ``size_s`` since the epoch.
* A window closes once two watermarks have passed its end:

  - the *aligned* watermark (:meth:`TumblingWindows.align`, from
    :class:`mlpulse.progress.Watermarks`): every input partition that is not idle has moved
    past the window's end plus ``lateness_s``, so none can still carry its events,
    however unevenly the partitions are read (a backlog, a restart, a rebalance);
  - the key's own watermark (key: model and version, or service): the newest event time
    seen for that key minus ``lateness_s``. Keys sharing input partitions never make each
    other's events late (a producer whose clock lags the others' loses nothing).

  Not told of input partitions (``align`` never called), windows close on their key's
  watermark alone.
* A window that got no event for ``size_s + lateness_s`` seconds of wall clock closes
  once the aligned watermark passed it and no input partition is behind (idle close), so
  a quiet model's last window still comes out, but never while a backlog that may hold
  its events is still being read.
* An event whose window already closed (or is past both watermarks) is *late*: not
  aggregated, but counted and reported in the next summary of its key.

>>> class Count:
...     def __init__(self, key): self.n = 0
...     def add_batch(self, events): self.n += len(events)
>>> class Ev:
...     def __init__(self, t): self.timestamp = t
>>> w = TumblingWindows(size_s=10, lateness_s=2, new_aggregate=Count)
>>> w.add(("m",), [Ev(1), Ev(5), Ev(12)], now_wall_s=0)
0
>>> w.close_due(now_wall_s=0)   # watermark 10: [0, 10) closes
[ClosedWindow(key=('m',), start_s=0, end_s=10, count=2, late_events=0)]
>>> w.add(("m",), [Ev(3)], now_wall_s=1)   # its window is closed: late
1
>>> w.close_due(now_wall_s=100)   # idle close carries the late count
[ClosedWindow(key=('m',), start_s=10, end_s=20, count=1, late_events=1)]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["ClosedWindow", "TumblingWindows"]


class Timed(Protocol):
    @property
    def timestamp(self) -> Any:
        """Event time, Unix epoch seconds (as decoded events hold it)."""


_TIMESTAMP = operator.attrgetter("timestamp")


class Aggregate(Protocol):
    def add_batch(self, events: Any, /) -> None: ...


A = TypeVar("A", bound=Aggregate)
Key = tuple[str, ...]


class ClosedWindow(Generic[A]):
    """A window that will receive no more events."""

    __slots__ = ("aggregate", "end_s", "idle", "key", "late_events", "start_s")

    def __init__(self, key: Key, start_s: float, end_s: float, aggregate: A, late_events: int,
                 *, idle: bool = False):
        self.key = key
        self.start_s = start_s
        self.end_s = end_s
        self.aggregate = aggregate
        self.late_events = late_events
        self.idle = idle
        """Closed on the wall clock (its key's events stopped), not by its key's watermark:
        the window may hold fewer events than its span would (the end of a stream)."""

    def __repr__(self) -> str:
        count = getattr(self.aggregate, "count", getattr(self.aggregate, "n", "?"))
        return (
            f"ClosedWindow(key={self.key!r}, start_s={self.start_s:g}, end_s={self.end_s:g}, "
            f"count={count}, late_events={self.late_events})"
        )


class _Open(Generic[A]):
    __slots__ = ("aggregate", "last_update_wall_s")

    def __init__(self, aggregate: A, now_wall_s: float) -> None:
        self.aggregate = aggregate
        self.last_update_wall_s = now_wall_s


class TumblingWindows(Generic[A]):
    """Open windows of one partition, per key and window start.

    ``new_aggregate(key)`` makes the aggregate of a window as it opens.
    """

    def __init__(
        self, size_s: float, lateness_s: float, new_aggregate: Callable[[Key], A]
    ) -> None:
        if size_s <= 0:
            raise ValueError("size_s must be > 0")
        self.size_s = size_s
        self.lateness_s = lateness_s
        self.idle_s = size_s + lateness_s
        self.new_aggregate = new_aggregate
        self._open: dict[Key, dict[float, _Open[A]]] = {}
        self._max_event_time_s: dict[Key, float] = {}
        self._closed_through: dict[Key, float] = {}
        self._pending_late: dict[Key, int] = {}
        self._advanced: set[Key] = set()
        self._aligned_moved = False
        self.aligned_s = math.inf
        """The aligned watermark (see the module docs); ``inf``: not aligned."""
        self.caught_up = True
        """Whether no input partition is behind (a backlog): idle windows may close."""
        self.late_total = 0

    def watermark_s(self, key: Key) -> float:
        """Newest event time of ``key`` minus the allowed lateness."""
        return self._max_event_time_s.get(key, -math.inf) - self.lateness_s

    def align(self, watermark_s: float, caught_up: bool = True) -> None:
        """Set the aligned watermark (it only moves forward once set) and whether every
        input partition is caught up.

        >>> class Count:
        ...     def __init__(self, key): self.n = 0
        ...     def add_batch(self, events): self.n += len(events)
        >>> class Ev:
        ...     def __init__(self, t): self.timestamp = t
        >>> w = TumblingWindows(size_s=10, lateness_s=0, new_aggregate=Count)
        >>> w.align(-math.inf)   # an input partition has not been read yet
        >>> w.add(("m",), [Ev(1), Ev(25)], now_wall_s=0)
        0
        >>> w.close_due(now_wall_s=1000)   # [0, 10) waits, even idle
        []
        >>> w.add(("m",), [Ev(2)], now_wall_s=1000)   # not late: it was on its way
        0
        >>> w.align(12)
        >>> w.close_due(now_wall_s=1000, check_idle=False)
        [ClosedWindow(key=('m',), start_s=0, end_s=10, count=2, late_events=0)]
        >>> w.align(40, caught_up=False)   # [20, 30) is idle, but a backlog may hold more
        >>> w.close_due(now_wall_s=2000)
        []
        >>> w.align(40)
        >>> w.close_due(now_wall_s=2000)
        [ClosedWindow(key=('m',), start_s=20, end_s=30, count=1, late_events=0)]
        """
        if caught_up != self.caught_up:
            self.caught_up = caught_up
            self._aligned_moved = True
        if watermark_s > self.aligned_s or self.aligned_s == math.inf:
            if watermark_s != self.aligned_s:
                self._aligned_moved = True
            self.aligned_s = watermark_s

    @property
    def open_windows(self) -> int:
        return sum(len(windows) for windows in self._open.values())

    def opened(self) -> list[tuple[Key, float, A]]:
        """Every open window: (key, start, aggregate)."""
        return [(key, start_s, window.aggregate) for key, windows in self._open.items()
                for start_s, window in windows.items()]

    def window_start(self, event_time_s: float) -> float:
        start = math.floor(event_time_s / self.size_s) * self.size_s
        return int(start) if float(start).is_integer() else start

    def add(self, key: Key, events: Sequence[Timed], now_wall_s: float) -> int:
        """Aggregate ``events`` of one key; return how many were late."""
        if not events:
            return 0
        size = self.size_s
        closed_through = max(min(self.watermark_s(key), self.aligned_s),
                             self._closed_through.get(key, -math.inf))
        groups: dict[float, list[Timed]] = {}
        late = 0
        times = list(map(_TIMESTAMP, events))
        newest = max(times)
        first = self.window_start(min(times))
        if first == self.window_start(newest):
            # the usual batch: one window for all (vectorised aggregation needs no split)
            if first + size <= closed_through:
                late = len(events)
            else:
                groups[first] = list(events)
            events, times = (), []
        for event, time_s in zip(events, times, strict=True):
            start = self.window_start(time_s)
            if start + size <= closed_through:
                late += 1
                continue
            group = groups.get(start)
            if group is None:
                groups[start] = [event]
            else:
                group.append(event)
        if groups:
            windows = self._open.setdefault(key, {})
            for start, group in groups.items():
                window = windows.get(start)
                if window is None:
                    window = windows[start] = _Open(self.new_aggregate(key), now_wall_s)
                window.aggregate.add_batch(group)
                window.last_update_wall_s = now_wall_s
        if late:
            self._pending_late[key] = self._pending_late.get(key, 0) + late
            self.late_total += late
        if newest > self._max_event_time_s.get(key, -math.inf):
            self._max_event_time_s[key] = newest
            self._advanced.add(key)
        return late

    def touch(self, now_wall_s: float) -> None:
        """Count every open window as updated at ``now_wall_s`` (input resumes after a
        pause, e.g. a rebalance: the idle close gives each its full time again).

        >>> class Ev:
        ...     def __init__(self, t): self.timestamp = t
        >>> class Events(list):
        ...     add_batch = list.extend
        >>> w = TumblingWindows(size_s=10, lateness_s=0, new_aggregate=lambda key: Events())
        >>> w.add(("m",), [Ev(1)], now_wall_s=0) or w.touch(now_wall_s=30)
        >>> w.close_due(now_wall_s=35), len(w.close_due(now_wall_s=40))
        ([], 1)
        """
        for windows in self._open.values():
            for window in windows.values():
                window.last_update_wall_s = max(window.last_update_wall_s, now_wall_s)

    def state(self, aggregate_state: Callable[[A], Any]) -> list[list[Any]]:
        """Every key's open windows (aggregates through ``aggregate_state``), newest event
        time, closed-through time and pending late count, as plain data (msgpack-ready):
        what a checkpoint of these windows holds.

        >>> class Count:
        ...     def __init__(self, n=0): self.n = n
        ...     def add_batch(self, events): self.n += len(events)
        >>> class Ev:
        ...     def __init__(self, t): self.timestamp = t
        >>> w = TumblingWindows(size_s=10, lateness_s=0, new_aggregate=lambda key: Count())
        >>> w.add(("m",), [Ev(1), Ev(12), Ev(15)], now_wall_s=0)
        0
        >>> saved = w.state(lambda a: a.n)
        >>> saved
        [[['m'], [[0, 1, 0], [10, 2, 0]], 15, -inf, 0]]
        >>> r = TumblingWindows(size_s=10, lateness_s=0, new_aggregate=lambda key: Count())
        >>> r.restore(saved, lambda key, n: Count(n))
        >>> r.add(("m",), [Ev(2)], now_wall_s=1), w.add(("m",), [Ev(2)], now_wall_s=1)
        (1, 1)
        >>> closed = r.close_due(now_wall_s=100)
        >>> closed   # doctest: +NORMALIZE_WHITESPACE
        [ClosedWindow(key=('m',), start_s=0, end_s=10, count=1, late_events=1),
         ClosedWindow(key=('m',), start_s=10, end_s=20, count=2, late_events=0)]
        >>> repr(closed) == repr(w.close_due(now_wall_s=100))   # as if never stopped
        True
        """
        keys = (set(self._open) | set(self._max_event_time_s) | set(self._closed_through)
                | set(self._pending_late))
        return [[list(key),
                 [[start, aggregate_state(w.aggregate), w.last_update_wall_s]
                  for start, w in self._open.get(key, {}).items()],
                 self._max_event_time_s.get(key, -math.inf),
                 self._closed_through.get(key, -math.inf),
                 self._pending_late.get(key, 0)]
                for key in sorted(keys)]

    def restore(self, state: list[list[Any]], restore_aggregate: Callable[[Key, Any], A],
                now_wall_s: float = -math.inf) -> None:
        """Add the keys of ``state`` (from :meth:`state`); ``restore_aggregate(key, data)``
        rebuilds an aggregate. A window restored at ``now_wall_s`` counts as updated then:
        its events may still wait in the backlog, so the idle close gives it its full time
        again."""
        for key_list, windows, newest_s, closed_through_s, late in state:
            key = tuple(key_list)
            if windows:
                opened = self._open.setdefault(key, {})
                for start, data, updated_s in windows:
                    opened[start] = _Open(restore_aggregate(key, data),
                                          max(updated_s, now_wall_s))
            if newest_s > -math.inf:
                self._max_event_time_s[key] = newest_s
                self._advanced.add(key)
            if closed_through_s > -math.inf:
                self._closed_through[key] = closed_through_s
            if late:
                self._pending_late[key] = late

    def close_due(self, now_wall_s: float, check_idle: bool = True) -> list[ClosedWindow[A]]:
        """Close and return windows past their watermark or idle too long, oldest first.

        ``check_idle=False`` looks only at keys whose watermark moved since the last call
        (all keys if the aligned watermark moved).
        """
        if check_idle or self._aligned_moved:
            keys = list(self._open)
        else:
            keys = [k for k in self._advanced if k in self._open]
        self._advanced.clear()
        self._aligned_moved = False
        aligned = self.aligned_s
        check_idle = check_idle and self.caught_up
        closed: list[ClosedWindow[A]] = []
        for key in keys:
            windows = self._open[key]
            watermark = self.watermark_s(key)
            newest_due = -math.inf
            for start, window in windows.items():
                end = start + self.size_s
                if start > newest_due and end <= aligned and (
                    end <= watermark
                    or (check_idle and now_wall_s - window.last_update_wall_s >= self.idle_s)
                ):
                    newest_due = start
            if newest_due == -math.inf:
                continue
            # closing a window closes the older ones of its key too: emission stays in order
            for start in sorted(s for s in windows if s <= newest_due):
                window = windows.pop(start)
                end = start + self.size_s
                self._closed_through[key] = max(end, self._closed_through.get(key, -math.inf))
                late = self._pending_late.pop(key, 0)
                closed.append(ClosedWindow(key, start, end, window.aggregate, late,
                                           idle=end > watermark))
            if not windows:
                del self._open[key]
        closed.sort(key=lambda c: (c.start_s, c.key))
        return closed
