"""Test kit: a worker's :class:`~mlpulse.engine.Engine` on in-memory topics, with a clock
you advance.

:class:`LocalPipeline` runs the very engine a Faust worker runs (ingest, repartition,
progress, windows, labels, detectors, alerts, checkpoints), one worker owning every
partition: input messages become records of in-memory input partitions, hop messages go
through in-memory internal topics and come back to :meth:`Engine.apply
<mlpulse.engine.Engine.apply>`, and what the engine produces is decoded from its bytes.
So window, codec, join, detection and dead-letter behaviour is tested on the worker's
own path without a broker.

>>> pipe = LocalPipeline(window_seconds=10, lateness_seconds=0)
>>> pipe.send_predictions([{"event_id": "1", "timestamp": 3, "model": "m"}, {"oops": 1}])
>>> pipe.advance(100)
>>> [(w.model, w.count) for w in pipe.windows], [d.index for d in pipe.dead_letters]
([('m', 1)], [1])
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .checkpoint import Checkpoint, next_slot, read_checkpoint
from .config import Settings
from .detect import Detect
from .engine import Engine, Outputs
from .events import AlertEvent, DeadLetter, WindowSummary
from .repartition import partition_for
from .status import Status
from .store import MemoryStore
from .summarize import Summarizer

__all__ = ["FakeClock", "LocalPipeline"]


class FakeClock:
    """Wall clock for tests: starts at ``now_s`` and moves only when told."""

    def __init__(self, now_s: float = 1_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass(slots=True)
class Record:
    """An input message as the consumer hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp: int = 0


@dataclass(slots=True)
class Message:
    """A message of an in-memory internal topic."""

    partition: int
    value: bytes
    headers: list[tuple[str, bytes]] | None


class _Reader:
    """Every input partition is read, and caught up once its records are handled."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def reading(self, topic: str) -> list[int]:
        return list(range(self.partitions))

    def caught_up(self, topic: str, partition: int) -> bool:
        return True


class LocalPipeline:
    """Ingest → repartition → windows → summaries → detectors → alerts, in memory.

    ``input_partitions``: partitions of each input topic (windows wait for the slowest).
    ``store`` keeps detector state; hand the same one to a new pipeline to play a worker
    restart.
    """

    def __init__(self, settings: Settings | None = None, clock: FakeClock | None = None,
                 partitions: int = 4, store: MemoryStore | None = None,
                 input_partitions: int = 1, **overrides: Any) -> None:
        base = settings or Settings(max_future_skew_seconds=1e12)
        base = base.replace(partitions=partitions)
        self.settings = base.replace(**overrides) if overrides else base
        self.clock = clock or FakeClock()
        self.partitions = partitions
        self.store = store if store is not None else MemoryStore()
        self.engine = Engine(self.settings, store=self.store, clock=self.clock)
        self.reader = _Reader(input_partitions)
        self.windows: list[WindowSummary] = []
        self.alerts: list[AlertEvent] = []
        self.dead_letters: list[DeadLetter] = []
        self.paused: dict[str, set[int]] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._internal: dict[str, list[Message]] = {}
        self.checkpoints: dict[int, dict[bytes, bytes]] = {}
        """The checkpoint topic: its records per partition (:meth:`checkpoint` writes)."""
        engine = self.engine
        engine.assign({name: set(range(partitions)) for name in engine.streams})
        for partition in engine.to_restore():
            engine.restore(partition, None, 0)
        engine.reads(dict.fromkeys(engine.by_topic, input_partitions))
        engine.resume()

    # what a test reads
    @property
    def summarizer(self) -> Summarizer:
        return self.engine.summarizer

    @property
    def detect(self) -> Detect:
        return self.engine.detect

    @property
    def status(self) -> Status:
        return self.engine.status

    @property
    def late_events(self) -> int:
        """Events counted late so far."""
        return int(sum(sample.value for metric in self.engine.metrics.late_events.collect()
                       for sample in metric.samples if sample.name.endswith("_total")))

    # what a test does
    def send(self, topic: str, value: bytes, *, key: bytes | None = None,
             partition: int = 0, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """One message on input topic ``topic`` ("predictions", "logs" or "feedback"),
        handled at once (a fetch of its own)."""
        self.fetch([(topic, value, key, partition, list(headers))])

    def fetch(self, messages: Sequence[tuple[str, bytes, bytes | None, int, list[Any]]]
              ) -> None:
        """Messages (stream, value, key, input partition, headers) handled as one fetch."""
        records = []
        for stream, value, key, partition, headers in messages:
            topic = self.engine.streams[stream].topic
            offset = self._offsets.get((topic, partition), 0)
            self._offsets[(topic, partition)] = offset + 1
            records.append(Record(topic, partition, offset, key, value, headers))
        self._run(self.engine.ingest(records, self.reader))

    def seek(self, stream: str, partition: int, offset: int) -> None:
        """The next message of input ``partition`` of ``stream`` has ``offset`` (a worker
        reads on from a checkpoint's offsets)."""
        self._offsets[(self.engine.streams[stream].topic, partition)] = offset

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
        """Move the clock and run the worker's timer."""
        self.clock.advance(seconds)
        self._run(self.engine.tick(self.reader))

    def checkpoint(self) -> dict[int, Checkpoint]:
        """The checkpoint a worker would write now, per partition (as a new owner reads
        it); the records go to :attr:`checkpoints` (the checkpoint topic, compacted)."""
        point = self.engine.checkpoint(dict(self._offsets))
        out: dict[int, Checkpoint] = {}
        if point is None:
            return out

        async def send(partition: int, key: bytes, value: bytes | None) -> None:
            table = self.checkpoints.setdefault(partition, {})
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

        async def flush() -> None:
            pass

        _run_now(point.write(send, flush))
        for partition in {p for p, _, _ in point.headers}:
            restored = read_checkpoint(self.checkpoints[partition].get, partition)
            if restored is not None:
                out[partition] = restored
        return out

    def stop(self) -> dict[int, Checkpoint]:
        """A graceful stop: the last checkpoint round, as a worker writes it when it stops or
        gives its partitions away (the detectors' state included: :attr:`store`)."""
        return self.checkpoint()

    def restore(self, checkpoints: dict[int, dict[bytes, bytes]]) -> None:
        """Take over every partition from the checkpoint topic of another pipeline (a
        worker restarted after ``kill -9``): its state, and input read on from the
        checkpoints' offsets (:meth:`fetch` then numbers the messages from there)."""
        engine = self.engine
        self.checkpoints = {p: dict(table) for p, table in checkpoints.items()}
        for partition, table in self.checkpoints.items():
            point = read_checkpoint(table.get, partition)
            offsets = engine.restore(partition, point, next_slot(table.get, partition),
                                     table.get)
            self._offsets.update(offsets)

    # the in-memory topics
    def _run(self, out: Outputs) -> None:
        engine, topics = self.engine, self.engine.topics
        internal = {s.internal: s for s in engine.streams.values()}
        for topic, partitions in out.pauses.items():
            self.paused[topic] = set(partitions)
        for m in out.messages:
            if m.topic in internal:
                partition = m.partition if m.partition is not None else partition_for(
                    m.key or b"", self.partitions)
                self._internal.setdefault(m.topic, []).append(
                    Message(partition, m.value, m.headers))
            elif m.topic == topics.windows:
                self.windows.append(_window.decode(m.value))
            elif m.topic == topics.alerts:
                self.alerts.append(_alert.decode(m.value))
            elif m.topic == topics.deadletter:
                self.dead_letters.append(_dead_letter.decode(m.value))
        while any(self._internal.values()):
            for topic, pending in list(self._internal.items()):
                if pending:
                    self._internal[topic] = []
                    self._run(engine.apply(internal[topic], pending))


def _run_now(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits (in-memory topics), also from a running loop."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("an in-memory write waited")


_window = msgspec.json.Decoder(WindowSummary)
_alert = msgspec.json.Decoder(AlertEvent)
_dead_letter = msgspec.json.Decoder(DeadLetter)
