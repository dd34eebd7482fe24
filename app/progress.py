"""Event-time progress of the input partitions: when a window may close, who runs ahead.

Kafka hands a worker its input partitions at different speeds (a backlog, a restart, a
rebalance). If a model's windows closed on the newest event time seen, events of the same
model in a partition read more slowly would turn late although nothing was late in the
data. mlpulse follows Flink and Kafka Streams instead: event time moves on per *input
partition*, and a window closes once every input partition that can carry its events has
moved past the window's end plus the allowed lateness.

* :class:`InputClocks` (reader side): per input partition this worker reads, the newest
  event time read from it and its state: ``BEHIND`` (there is more to read: a backlog),
  ``CAUGHT_UP``, or ``IDLE``: caught up and without a new message for ``idle_s`` of wall
  clock. An idle partition stops holding time back (Flink's ``withIdleness``); its next
  events are judged by the time the others reached, which is what their lateness in the
  data is. A window closes on the wall clock (its model went quiet) only while no input
  partition is behind: with a backlog, its events may still wait unread.
* :class:`Watermarks` (owner side): per internal partition (the owner of a set of models),
  the last progress reported for every input partition of each stream. The *aligned
  watermark* of a stream is the minimum newest event time over the input partitions that
  are not idle, minus the lateness: no window of that stream ends after it while some
  input partition may still carry its events. Readers report progress in order with the
  events they repartition (a header on the internal topic), so the owner never learns of
  progress before the events it covers.
* Alignment (Flink's FLIP-182): a reader pauses the input partitions whose event time
  runs more than ``max_drift_s`` ahead of the slowest (:func:`too_far_ahead`), so open
  windows stay bounded while a backlog is read.

>>> w = Watermarks(lateness_s=2)
>>> w.sources("predictions", 2)
>>> w.watermark_s(0, "predictions")   # nothing heard of either input partition yet
-inf
>>> w.update(0, "predictions", {0: (100.0, CAUGHT_UP)})
True
>>> w.watermark_s(0, "predictions")   # partition 1 holds time back
-inf
>>> w.update(0, "predictions", {1: (60.0, BEHIND)})
True
>>> w.watermark_s(0, "predictions"), w.caught_up(0, "predictions")
(58.0, False)
>>> w.update(0, "predictions", {1: (50.0, IDLE)})   # caught up and silent: idle
True
>>> w.watermark_s(0, "predictions"), w.caught_up(0, "predictions")
(98.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .repartition import header

__all__ = ["BEHIND", "CAUGHT_UP", "IDLE", "PROGRESS_HEADER", "InputClocks", "Report",
           "Watermarks", "decode_progress",
           "encode_progress", "progress_of", "too_far_ahead"]

PROGRESS_HEADER = "mlpulse-progress"
"""Header of an internal message: the progress of the reader's input partitions, as of
after every event it repartitioned before (and in) this message."""

BEHIND, CAUGHT_UP, IDLE = 0, 1, 2
"""States of an input partition: more to read; read to its end; read to its end and silent
for the idle time."""

Report = Mapping[int, tuple[float, int]]
"""Input partition index → (newest event time read from it, state)."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[tuple[int, float, int]])


def encode_progress(report: Report) -> bytes:
    """Header value of a report.

    >>> decode_progress(encode_progress({3: (12.5, BEHIND), 0: (-math.inf, IDLE)}))
    {0: (-inf, 2), 3: (12.5, 0)}
    """
    return _encoder.encode(sorted((i, t, state) for i, (t, state) in report.items()))


def decode_progress(value: bytes) -> dict[int, tuple[float, int]]:
    return {i: (t, state) for i, t, state in _decoder.decode(value)}


def progress_of(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None
                ) -> dict[int, tuple[float, int]] | None:
    """The report in a message's headers (a mapping or (key, value) pairs), if any.

    >>> progress_of([("x", b""), (PROGRESS_HEADER, encode_progress({1: (5.0, BEHIND)}))])
    {1: (5.0, 0)}
    >>> progress_of(None) is None
    True
    """
    value = header(headers, PROGRESS_HEADER)
    return decode_progress(value) if value else None


class InputClocks:
    """Reader side: newest event time and last message (wall clock) per input partition.

    >>> c = InputClocks(idle_s=5)
    >>> c.assigned("predictions", [0, 1], now_wall_s=100)
    >>> c.read("predictions", 0, newest_s=42.0, now_wall_s=100)
    >>> c.report("predictions", [0, 1], now_wall_s=101, caught_up=lambda s, i: True)
    {0: (42.0, 1), 1: (-inf, 1)}
    >>> c.report("predictions", [0, 1], now_wall_s=106, caught_up=lambda s, i: True)
    {0: (42.0, 2), 1: (-inf, 2)}
    >>> c.report("predictions", [0], now_wall_s=106, caught_up=lambda s, i: False)
    {0: (42.0, 0)}
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._newest_s: dict[tuple[str, int], float] = {}
        self._last_wall_s: dict[tuple[str, int], float] = {}

    def read(self, stream: str, index: int, newest_s: float, now_wall_s: float) -> None:
        """Messages of input partition ``index`` of ``stream`` were read (and their events
        routed); ``newest_s``: their newest event time (-inf if none was valid)."""
        key = (stream, index)
        if newest_s > self._newest_s.get(key, -math.inf):
            self._newest_s[key] = newest_s
        self._last_wall_s[key] = now_wall_s

    def assigned(self, stream: str, indices: Iterable[int], now_wall_s: float) -> None:
        """This worker reads these input partitions from now on: each has its full idle
        time before it counts as idle (whatever its reader before did)."""
        for index in indices:
            self._last_wall_s[(stream, index)] = now_wall_s

    def newest_s(self, stream: str, index: int) -> float:
        return self._newest_s.get((stream, index), -math.inf)

    def report(self, stream: str, indices: Iterable[int], now_wall_s: float,
               caught_up: Any) -> dict[int, tuple[float, int]]:
        """Progress of these input partitions; ``caught_up(stream, index)`` says whether
        the reader has read everything the partition holds."""
        out = {}
        for index in indices:
            key = (stream, index)
            if not caught_up(stream, index):
                state = BEHIND
            elif now_wall_s - self._last_wall_s.get(key, now_wall_s) >= self.idle_s:
                state = IDLE
            else:
                state = CAUGHT_UP
            out[index] = (self._newest_s.get(key, -math.inf), state)
        return out


class Watermarks:
    """Owner side: per internal partition, the progress of every input partition."""

    def __init__(self, lateness_s: float) -> None:
        self.lateness_s = lateness_s
        self._counts: dict[str, int] = {}
        self._progress: dict[int, dict[str, dict[int, tuple[float, int]]]] = {}

    def sources(self, stream: str, count: int) -> None:
        """``stream``'s input topic has ``count`` partitions (each can carry any model).
        Until this is said of a stream, its windows are not aligned (per key only)."""
        self._counts[stream] = count

    def aligned(self, stream: str) -> bool:
        return stream in self._counts

    def update(self, partition: int, stream: str, report: Report) -> bool:
        """Take a reader's report (progress only moves forward); whether anything changed.
        """
        known = self._progress.setdefault(partition, {}).setdefault(stream, {})
        changed = False
        for index, (newest_s, state) in report.items():
            old = known.get(index)
            if old is None:
                known[index] = (newest_s, state)
                changed = True
                continue
            new = (max(old[0], newest_s), state)
            if new != old:
                known[index] = new
                changed = True
        return changed

    def watermark_s(self, partition: int, stream: str) -> float:
        """The aligned watermark: no input partition that is not idle is further back than
        this plus the lateness (``inf``: every input partition is idle, or the stream is not
        aligned; ``-inf``: one has not reported yet)."""
        count = self._counts.get(stream)
        if count is None:
            return math.inf
        return _slowest(self._progress.get(partition, {}).get(stream, {}), count) \
            - self.lateness_s

    def caught_up(self, partition: int, stream: str) -> bool:
        """Whether no input partition of ``stream`` is behind (as far as ``partition``
        knows): only then may a quiet model's window close on the wall clock."""
        count = self._counts.get(stream)
        if count is None:
            return True
        known = self._progress.get(partition, {}).get(stream, {})
        return all(known.get(index, (0.0, BEHIND))[1] != BEHIND for index in range(count))

    def slowest_s(self, stream: str, partitions: Iterable[int], also: Report | None = None
                  ) -> float:
        """The newest event time of the slowest input partition that is not idle, as the
        given internal partitions know them (each knows every input partition's) and as
        ``also`` (the reader's own report) says.

        >>> w = Watermarks(lateness_s=0)
        >>> w.sources("logs", 2)
        >>> w.update(0, "logs", {0: (10.0, BEHIND), 1: (7.0, BEHIND)})
        True
        >>> w.slowest_s("logs", [0]), w.slowest_s("logs", [0], also={1: (30.0, BEHIND)})
        (7.0, 10.0)
        """
        count = self._counts.get(stream)
        if count is None:
            return math.inf
        best: dict[int, tuple[float, int]] = dict(also or {})
        for partition in partitions:
            for index, (newest_s, state) in self._progress.get(partition, {}).get(
                    stream, {}).items():
                old = best.get(index)
                if old is None or newest_s > old[0]:
                    best[index] = (newest_s, state)
        return _slowest(best, count)

    def state(self, partition: int) -> dict[str, list[tuple[int, float, int]]]:
        """What a checkpoint of ``partition`` holds (plain data)."""
        return {stream: sorted((i, t, state) for i, (t, state) in known.items())
                for stream, known in self._progress.get(partition, {}).items()}

    def restore(self, partition: int, state: Mapping[str, Any]) -> None:
        self._progress[partition] = {
            stream: {int(i): (float(t), int(s)) for i, t, s in entries}
            for stream, entries in state.items()}

    def keep_only(self, partitions: Iterable[int]) -> None:
        keep = set(partitions)
        for partition in set(self._progress) - keep:
            del self._progress[partition]


def _slowest(known: Mapping[int, tuple[float, int]], count: int) -> float:
    """The newest event time of the slowest of input partitions 0..count-1 that is not idle
    (-inf: one has not reported; inf: all are idle)."""
    slowest = math.inf
    for index in range(count):
        entry = known.get(index)
        if entry is None:
            return -math.inf
        if entry[1] != IDLE and entry[0] < slowest:
            slowest = entry[0]
    return slowest


def too_far_ahead(newest_s: Mapping[int, float], slowest_s: float, max_drift_s: float
                  ) -> set[int]:
    """The input partitions to pause: their event time is more than ``max_drift_s`` ahead
    of the slowest one's. While one has not been read yet (``slowest_s`` is -inf), every
    one read already waits for it; when all are idle (``inf``) none waits.

    >>> sorted(too_far_ahead({0: 100.0, 1: 500.0, 2: 390.0}, slowest_s=100.0,
    ...                      max_drift_s=300))
    [1]
    >>> too_far_ahead({0: 100.0, 1: -math.inf}, slowest_s=-math.inf, max_drift_s=300)
    {0}
    """
    if slowest_s == math.inf:
        return set()
    return {index for index, t in newest_s.items() if t > slowest_s + max_drift_s}
