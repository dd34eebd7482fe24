"""Test kit: the whole pipeline in memory, with a clock you advance.

:class:`LocalPipeline` runs the same :class:`~mlpulse.ingest.Ingest` and
:class:`~mlpulse.summarize.Summarizer` as a Faust worker, routing by key to
in-memory partitions, so window, codec and dead-letter behaviour can be tested
without a broker.

>>> pipe = LocalPipeline(window_seconds=10, lateness_seconds=0)
>>> pipe.send_predictions([{"event_id": "1", "timestamp": 3, "model": "m"}, {"oops": 1}])
>>> pipe.advance(100)
>>> [(w.model, w.count) for w in pipe.windows], [d.index for d in pipe.dead_letters]
([('m', 1)], [1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from .config import Settings
from .detect import Detect, MemoryStore
from .events import AlertEvent, DeadLetter, WindowSummary
from .ingest import Ingest
from .status import Status
from .store import partition_for
from .summarize import Closed, Summarizer

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
    """Ingest → repartition → windows → summaries → detectors → alerts, in memory.

    ``store`` keeps detector state; hand the same one to a new pipeline to play
    a worker restart.
    """

    def __init__(self, settings: Settings | None = None, clock: FakeClock | None = None,
                 partitions: int = 4, store: MemoryStore | None = None,
                 **overrides: Any) -> None:
        base = settings or Settings(max_future_skew_seconds=1e12)
        self.settings = base.replace(**overrides) if overrides else base
        self.clock = clock or FakeClock()
        self.partitions = partitions
        self.ingest = Ingest(self.settings)
        self.store = store if store is not None else MemoryStore()
        self.detect = Detect(self.settings, store=self.store)
        self.summarizer = Summarizer(self.settings, profiles=self.detect.new_profile)
        self.status = Status()
        self.detect.on_findings = self.status.on_findings
        self.windows: list[WindowSummary] = []
        self.alerts: list[AlertEvent] = []
        self.dead_letters: list[DeadLetter] = []
        self.late_events = 0
        self._offset = 0

    def _partition(self, key: str) -> int:
        return partition_for(key.encode(), self.partitions)

    def send(self, topic: str, value: bytes) -> None:
        """One message on input topic ``topic`` ("predictions", "logs" or "feedback")."""
        now = self.clock()
        handler = getattr(self.ingest, topic)
        routed = handler(value, topic=self.settings.topic(topic), partition=0,
                         offset=self._offset, now_s=now)
        self._offset += 1
        self.dead_letters.extend(routed.dead_letters)
        for key, events in routed.by_key.items():
            if topic == "feedback":
                self.summarizer.add_feedback(
                    self._partition(key), self.summarizer.decode_feedback(
                        self.ingest.encode_feedback(events)))
            elif topic == "predictions":
                payload = self.ingest.encode_predictions(events)
                self.late_events += self.summarizer.add_predictions(
                    self._partition(key), payload, now)
                model = self.summarizer.guard.known_model(key)
                self._alerts(self.detect.seen(self._partition(key), model, now))
            else:
                payload = self.ingest.encode_logs(events)
                self.late_events += self.summarizer.add_logs(self._partition(key), payload, now)
        self._closed(self.summarizer.close_due_windows(now, check_idle=False))

    def _closed(self, closed: list[Closed]) -> None:
        self.windows.extend(c.summary for c in closed)
        for c in closed:
            self.status.on_window(c.partition, c.summary)
        self._alerts(self.detect.on_closed(closed))

    def _alerts(self, alerts: list[AlertEvent]) -> None:
        self.alerts.extend(alerts)
        self.status.on_alerts(alerts)

    def send_predictions(self, events: Sequence[Any], envelope: bool = True) -> None:
        """Send events (dicts) as one envelope, or one message each."""
        if envelope:
            self.send("predictions", msgspec.json.encode(list(events)))
        else:
            for event in events:
                self.send("predictions", msgspec.json.encode(event))

    def send_logs(self, events: Sequence[Any]) -> None:
        self.send("logs", msgspec.json.encode(list(events)))

    def send_feedback(self, events: Sequence[Any]) -> None:
        self.send("feedback", msgspec.json.encode(list(events)))

    def advance(self, seconds: float) -> None:
        """Move the clock and run the idle-close timer."""
        self.clock.advance(seconds)
        self._closed(self.summarizer.close_due_windows(self.clock()))
        self._alerts(self.detect.check_no_data(self.clock()))
        revised = self.summarizer.revisions(self.clock())
        self.windows.extend(r.summary for r in revised)
        for r in revised:
            self.status.on_window(r.partition, r.summary)
        self._alerts(self.detect.on_revised(revised))
