"""Progress reports: how far the input partitions read here have come, told to the owners
of their events (the reader side of :mod:`mlpulse.progress`).

A worker reads input partitions and repartitions their events by model to the owners of
the models' windows. After each fetch (and on the clock) it tells every owner how far
each input partition it reads has come: the owner here directly when every event of
those partitions that goes to it has arrived, the others by a progress message on the
internal topic, after the events it covers (so a report never overtakes them). Then it
pauses the input partitions that run too far ahead of the slowest (FLIP-182), and the
label partitions that run ahead of the predictions (a label waits for its prediction).

>>> from mlpulse.config import Settings
>>> from mlpulse.repartition import HopFilter
>>> from mlpulse.streams import streams
>>> from mlpulse.summarize import Summarizer
>>> class Reading:
...     def reading(self, topic): return [0, 1]
...     def caught_up(self, topic, partition): return True
>>> settings = Settings(partitions=2, max_drift_seconds=60)
>>> predictions = streams(settings)[0]
>>> summarizer = Summarizer(settings)
>>> summarizer.sources("predictions", 2)   # windows wait for input partitions 0 and 1
>>> reporter = Reporter(settings, summarizer, HopFilter())
>>> reporter.read("predictions", 0, 1000.0, now_s=0)
>>> reporter.read("predictions", 1, 10.0, now_s=0)
>>> messages, paused = reporter.report(predictions, owned={0}, now_s=0, reader=Reading())
>>> [m.partition for m in messages], paused   # 0 is owned here (told directly); 0 runs ahead
([1], {0})
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from .config import Settings
from .outputs import Produce
from .progress import PROGRESS_HEADER, InputClocks, Report, encode_progress, too_far_ahead
from .repartition import HopFilter
from .streams import Stream
from .summarize import Summarizer

__all__ = ["PROGRESS_INTERVAL_S", "Reader", "Reporter"]

PROGRESS_INTERVAL_S = 0.1
"""Least wall-clock time between two progress messages of a worker to one internal
partition (unless an input partition changed state: behind, caught up, idle): what a
window's close may lag."""


class Reader(Protocol):
    """What is asked of the consumer of the input topics."""

    def reading(self, topic: str) -> list[int]:
        """The partitions of ``topic`` read now."""
        ...

    def caught_up(self, topic: str, partition: int) -> bool:
        """Whether everything the partition held at its last fetch has been handled."""
        ...


class Reporter:
    """The progress of the input partitions read here, and who heard of it."""

    def __init__(self, settings: Settings, summarizer: Summarizer, hops: HopFilter) -> None:
        self.partitions = settings.partitions
        self.max_drift_s = settings.max_drift_seconds
        self.label_lead_s = settings.window_seconds + settings.lateness_seconds
        """How far label partitions may run ahead of the slowest prediction partition."""
        self.summarizer = summarizer
        self.hops = hops
        self.clocks = InputClocks(settings.idle_partition_seconds)
        """Event-time progress of the input partitions this worker reads."""
        self.published: dict[tuple[int, str, int], int] = {}
        """(internal partition, input topic, input partition) → last sequence number
        repartitioned: events of it are on their way while the owner applied less."""
        self.sent: dict[tuple[str, int], tuple[float, dict[int, Any]]] = {}
        """(stream, internal partition) → when and what progress was last sent to it."""
        self.reports: dict[str, Report] = {}
        """Stream → the latest progress report of the input partitions read here."""

    def read(self, stream: str, index: int, newest_s: float, now_s: float) -> None:
        """Input partition ``index`` of ``stream`` was read up to event time ``newest_s``
        (its events are on their way: with the producer)."""
        self.clocks.read(stream, index, newest_s, now_s)

    def assigned(self, stream: str, indices: Iterable[int], now_s: float) -> None:
        self.clocks.assigned(stream, indices, now_s)

    def repartitioned(self, partition: int, topic: str, sources: Sequence[int],
                      seqs: Sequence[int]) -> None:
        """Events of these input partitions (sequence numbers) went to ``partition``."""
        for source, seq in dict(zip(sources, seqs, strict=True)).items():
            self.published[(partition, topic, source)] = seq

    def report(self, stream: Stream, owned: set[int], now_s: float, reader: Reader
               ) -> tuple[list[Produce], set[int] | None]:
        """Tell every owner of ``stream``'s windows how far the input partitions read here
        have come: the progress messages to send, and the input partitions to pause
        (None: none of ``stream`` is read)."""
        topic = stream.topic
        reading = reader.reading(topic)
        if not reading:
            return [], None
        report = self.clocks.report(stream.name, reading, now_s,
                                    lambda _, index: reader.caught_up(topic, index))
        self.reports[stream.name] = report
        messages: list[Produce] = []
        for partition in range(self.partitions):
            if partition in owned and self.direct(stream, partition, report) == len(report):
                continue
            last = self.sent.get((stream.name, partition))
            if last is not None:
                sent_at, sent = last
                if sent == report:
                    continue
                state_changed = any(sent.get(i, (0.0, state))[1] != state
                                    for i, (_, state) in report.items())
                if now_s - sent_at < PROGRESS_INTERVAL_S and not state_changed:
                    continue
            messages.append(Produce(stream.internal, b"", partition=partition,
                                    headers=[(PROGRESS_HEADER, encode_progress(report))]))
            self.sent[(stream.name, partition)] = (now_s, report)
        slowest = self.summarizer.watermarks.slowest_s(stream.name, owned, also=report)
        return messages, too_far_ahead({i: r[0] for i, r in report.items()}, slowest,
                                       self.max_drift_s)

    def direct(self, stream: Stream, partition: int, report: Report) -> int:
        """Apply to owned ``partition`` what ``report`` (of input partitions read here)
        says of those whose repartitioned events all reached it; how many they were."""
        topic = stream.topic
        direct = {i: r for i, r in report.items()
                  if self.published.get((partition, topic, i), -1)
                  <= self.hops.last(partition, topic, i)}
        if direct:
            self.summarizer.progress(partition, stream.name, direct)
        return len(direct)

    def caught_up_with(self, stream: Stream, partitions: Iterable[int]) -> None:
        """Events arrived at these owned ``partitions``: this worker's own latest report
        applies where the events it covers have all arrived now (the windows close
        without waiting for the next report)."""
        mine = self.reports.get(stream.name)
        if mine:
            for partition in partitions:
                self.direct(stream, partition, mine)

    def align_labels(self, predictions: Stream, feedback: Stream, owned: set[int],
                     now_s: float, reader: Reader) -> set[int] | None:
        """The label partitions to pause: those that run more than a window (and the
        lateness) ahead of the slowest prediction partition. A label waits for its
        prediction, so labels read ahead of their predictions would pile up (bounded, then
        lost as unmatched) while a backlog of both is read. None: no label is read."""
        reading = reader.reading(feedback.topic)
        if not reading:
            return None
        topic = predictions.topic
        report = self.clocks.report(predictions.name, reader.reading(topic), now_s,
                                    lambda _, index: reader.caught_up(topic, index))
        slowest = self.summarizer.watermarks.slowest_s(predictions.name, owned, also=report)
        labels = {i: self.clocks.newest_s(feedback.name, i) for i in reading}
        return too_far_ahead(labels, slowest, self.label_lead_s)

    def reset(self) -> None:
        """Input is read again after a rebalance: every owner hears again."""
        self.sent.clear()
        self.reports.clear()
