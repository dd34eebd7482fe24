"""Test kit: the whole pipeline in memory, with a clock you advance.

:class:`LocalPipeline` runs the same :class:`~app.ingest.Ingest` and
:class:`~app.summarize.Summarizer` as a Faust worker, routing by key to
in-memory partitions, so window, codec and dead-letter behaviour can be tested
without a broker.

>>> pipe = LocalPipeline(window_seconds=10, lateness_seconds=0)
>>> pipe.send_predictions([{"event_id": "1", "timestamp": 3, "model": "m"}, {"oops": 1}])
>>> pipe.advance(100)
>>> [(w.model, w.count) for w in pipe.windows], [d.index for d in pipe.dead_letters]
([('m', 1)], [1])
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import msgspec

from app.config import Settings
from app.events import DeadLetter, WindowSummary
from app.ingest import Ingest
from app.summarize import Summarizer

__all__ = ["FakeClock", "LocalPipeline"]


class FakeClock:
    """Wall clock for tests: starts at ``now_s`` and moves only when told."""

    def __init__(self, now_s: float = 1_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class LocalPipeline:
    """Ingest → repartition → windows → summaries, in memory."""

    def __init__(self, settings: Settings | None = None, clock: FakeClock | None = None,
                 partitions: int = 4, **overrides: Any) -> None:
        base = settings or Settings(max_future_skew_seconds=1e12)
        self.settings = base.replace(**overrides) if overrides else base
        self.clock = clock or FakeClock()
        self.partitions = partitions
        self.ingest = Ingest(self.settings)
        self.summarizer = Summarizer(self.settings)
        self.windows: list[WindowSummary] = []
        self.dead_letters: list[DeadLetter] = []
        self.late_events = 0
        self._offset = 0

    def _partition(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.partitions

    def send(self, topic: str, value: bytes) -> None:
        """One message on input topic ``topic`` ("predictions", "logs" or "feedback")."""
        now = self.clock()
        handler = getattr(self.ingest, topic)
        routed = handler(value, topic=self.settings.topic(topic), partition=0,
                         offset=self._offset, now_s=now)
        self._offset += 1
        self.dead_letters.extend(routed.dead_letters)
        for key, events in routed.by_key.items():
            if topic == "predictions":
                payload = self.ingest.encode_predictions(events)
                self.late_events += self.summarizer.add_predictions(
                    self._partition(key), payload, now)
            else:
                payload = self.ingest.encode_logs(events)
                self.late_events += self.summarizer.add_logs(self._partition(key), payload, now)
        self.windows.extend(self.summarizer.close_due(now, check_idle=False))

    def send_predictions(self, events: Sequence[Any], envelope: bool = True) -> None:
        """Send events (dicts) as one envelope, or one message each."""
        if envelope:
            self.send("predictions", msgspec.json.encode(list(events)))
        else:
            for event in events:
                self.send("predictions", msgspec.json.encode(event))

    def send_logs(self, events: Sequence[Any]) -> None:
        self.send("logs", msgspec.json.encode(list(events)))

    def advance(self, seconds: float) -> None:
        """Move the clock and run the idle-close timer."""
        self.clock.advance(seconds)
        self.windows.extend(self.summarizer.close_due(self.clock()))
