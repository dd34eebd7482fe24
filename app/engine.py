"""The engine: everything a worker does to data, without Faust.

A worker (:mod:`mlpulse.pipeline`, the Faust shell) and the test kit
(:mod:`mlpulse.testing`) drive the same :class:`Engine`. Each method takes what arrived
(a fetch of input records, repartitioned messages, a tick of the clock, an assignment)
and returns :class:`Outputs`: the messages to produce, in order, and the input partitions
to pause. The data flow, one line per step::

    input records ─ ingest ─▶ dead letters; events of models (services) owned here and
        │                     read where they belong (keyed by their model) ─ windows
        └─▶ hop messages: the other events, by model, to the internal topic's partition
            that owns them, tagged with where each was read (mlpulse.repartition); then
            how far each input partition read here has come (mlpulse.progress)
    hop messages ─ apply ─▶ windows (replays dropped by origin; progress moves the
        aligned watermark)
    windows ─ close (watermark, or idle on the clock) ─▶ window summaries ─ detect ─▶ alerts
    labels ─ join ─▶ revised summaries of the windows of their predictions
    checkpoint ─▶ per owned partition: its windows, input offsets and hop positions
        (mlpulse.checkpoint); a new owner restores them

>>> from mlpulse.testing import LocalPipeline
>>> pipe = LocalPipeline(window_seconds=10, lateness_seconds=0)
>>> pipe.send_predictions([{"event_id": "1", "timestamp": 3, "model": "m"},
...                        {"event_id": "2", "timestamp": 12, "model": "m"}])
>>> [(w.model, w.window_start, w.count) for w in pipe.windows]
[('m', '1970-01-01T00:00:00Z', 1)]
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from .checkpoint import Checkpoint, CheckpointRound, CheckpointWriter
from .codec import chunk_spans, group_by
from .config import Settings
from .deadletter import reason_category
from .detect import Detect
from .events import AlertEvent, PredictionWindow
from .ingest import SLICE_BYTES, Ingest, Record, Routed, slices
from .join import Revised
from .metrics import Metrics
from .outputs import Outputs, Produce, alert_key, encode, window_key
from .ownership import Ownership
from .progress import progress_of
from .repartition import ORIGIN_HEADER, HopFilter, in_order, origin_of, pack_origin, partition_for
from .reporting import Reader, Reporter
from .status import Status, StatusCollector
from .store import SnapshotStore
from .streams import Stream, streams
from .summarize import Closed, Summarizer
from .topics import Topics

__all__ = ["Engine", "Hop", "Outputs", "Produce", "Reader"]

log = logging.getLogger("mlpulse.pipeline")


class Hop(Protocol):
    """A repartitioned message as Faust (or the test kit) hands it over."""

    partition: int
    value: bytes
    headers: Any


class Engine:
    """One worker's state and every step of its data flow."""

    def __init__(self, settings: Settings, *, store: SnapshotStore | None = None,
                 clock: Callable[[], float] = time.time,
                 registry: CollectorRegistry | None = None,
                 input_streams: Sequence[Stream] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = Topics(settings)
        self.predictions, self.logs, self.feedback = (
            tuple(input_streams) if input_streams is not None else streams(settings))
        self.streams = {s.name: s for s in (self.predictions, self.logs, self.feedback)}
        self.by_topic = {s.topic: s for s in self.streams.values()}
        self.ingest_stage = Ingest(settings)
        self.detect = Detect(settings, store=store)
        self.store = self.detect.store
        self.summarizer = Summarizer(
            settings, profiles=self.detect.new_profile,
            slicing=lambda model: self.detect.config.for_model(model).slices)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics.track_open_windows(lambda: self.summarizer.open_windows)
        if self.summarizer.join is not None:
            join = self.summarizer.join
            self.metrics.track_label_join(lambda: join.counts, lambda: join.size)
        self.status = Status()
        self.detect.on_findings = self.status.on_findings
        self.registry.register(StatusCollector(self.status, lambda: self.summarizer.guard.folded))
        self.ownership = Ownership(
            partitions=settings.partitions,
            streams={name: stream.topic for name, stream in self.streams.items()})
        """Which partitions are owned here and held, with the input offsets they hold."""
        self.hops = HopFilter()
        self.reporter = Reporter(settings, self.summarizer, self.hops)
        """How far the input partitions read here have come, and who heard of it."""
        self.writer = CheckpointWriter()
        self.paused: dict[str, set[int]] = {}
        """Input partitions paused per topic (event-time alignment)."""
        self.reading = False
        """Whether input is being read (not during a rebalance): idle windows and silent
        models are judged on the wall clock only then."""
        partitions = settings.partitions
        self._home = functools.lru_cache(maxsize=65536)(
            lambda key: partition_for(key, partitions))

    # ------------------------------------------------------------------ 1. ingest

    def local(self, key: bytes, source: int) -> bool:
        """Input partition i holds the events its key is hashed to (i mod N)."""
        return bool(self._home(key) == source % self.settings.partitions)

    def ingest(self, records: Sequence[Record], reader: Reader) -> Outputs:
        """Decode a fetch of input records, validate, dead-letter; apply the events of
        models (services) owned here that were read where they belong, repartition the
        others; then report progress and close what the watermark passed.

        Events are applied here if their message was keyed by their model (service) and
        read from input partition i = its partition mod N (owned here with i; i's offset
        is in that partition's checkpoint): a model's events then come from one
        partition, in order. They are decoded and applied a slice of the fetch at a
        time, each while its events are in the CPU cache (a fetch is MBs of objects once
        decoded: ~5-7% more events/s, measured). The others take the hop tagged with
        their origin, once per fetch, as one batch. Labels are applied wherever their
        model is.
        """
        out = Outputs()
        by_topic: dict[str, dict[int, list[Record]]] = {}
        for r in records:
            by_topic.setdefault(r.topic, {}).setdefault(r.partition, []).append(r)
        now = self.clock()
        raised: list[AlertEvent] = []
        metrics = self.metrics
        for topic, parts in by_topic.items():
            stream = self.by_topic[topic]
            started = time.perf_counter()
            owned = self.owned[stream.name]
            hop = Routed()
            newest: dict[int, float] = {}
            for index, whole in parts.items():
                for batch in slices(whole, SLICE_BYTES):
                    routed = self._decode(stream, batch, now)
                    if routed.newest_s > newest.get(index, -math.inf):
                        newest[index] = routed.newest_s
                    for key in list(routed.by_key):
                        partition = self._home(key.encode())
                        if partition in owned:
                            self._apply(stream, partition, key, routed.by_key.pop(key),
                                        now=now, raised=raised)
                    hop.merge(routed)   # (origins of all-applied slices not kept)
            self._publish(stream, hop, out)
            # the input partitions' progress moves on only now that their events are on
            # their way: a progress report never overtakes the events it covers
            for index in parts:
                self.reporter.read(stream.name, index, newest.get(index, -math.inf), now)
            if stream.aligned:
                self._progress(stream, now, reader, out)
            metrics.batch_duration.labels(stage=f"ingest_{stream.name}").observe(
                time.perf_counter() - started)
            metrics.batch_messages.labels(stage=f"ingest_{stream.name}").observe(
                sum(len(whole) for whole in parts.values()))
        self._align_labels(now, reader, out)   # once all of the fetch's clocks moved
        self._emit(self.summarizer.close_due(now, check_idle=False), raised, out)
        return out

    def _decode(self, stream: Stream, records: Sequence[Record], now: float) -> Routed:
        routed = self.ingest_stage.fetch(stream, records, now, self.local)
        metrics = self.metrics
        metrics.messages.labels(topic=stream.topic).inc(len(records))
        metrics.events.labels(topic=stream.topic, outcome="accepted").inc(routed.accepted)
        if routed.dead_letters:
            metrics.events.labels(topic=stream.topic, outcome="dead_lettered").inc(
                len(routed.dead_letters))
            reasons = collections.Counter(reason_category(d.error) for d in routed.dead_letters)
            for reason, n in reasons.items():
                metrics.dead_letters.labels(topic=stream.topic, reason=reason).inc(n)
        return routed

    def _publish(self, stream: Stream, routed: Routed, out: Outputs) -> None:
        """Repartition events: one message (or several in order, if large) per internal
        partition, saying where each event was read: each input partition's events then
        reach an internal partition in order (what the replay filter needs)."""
        encode_events = functools.partial(self.ingest_stage.encode, stream)
        limit = self.settings.internal_message_bytes
        by_partition: dict[int, list[Any]] = {}
        for key, events in routed.all_by_key().items():
            by_partition.setdefault(self._home(key.encode()), []).extend(events)
        for partition, unordered in by_partition.items():
            events, sources, seqs = in_order(unordered, *routed.origin(unordered))
            self.reporter.repartitioned(partition, stream.topic, sources, seqs)
            for span, payload in chunk_spans(events, encode_events, limit):
                out.messages.append(Produce(
                    stream.internal, payload, partition=partition,
                    headers=[(ORIGIN_HEADER, pack_origin(sources[span], seqs[span]))]))
        for record in routed.dead_letters:
            out.messages.append(Produce(self.topics.deadletter, encode(record)))
        if routed.dead_letters:
            first = routed.dead_letters[0]
            log.warning("dead-lettered %d input(s), first: %s", len(routed.dead_letters),
                        first.error, extra={"topic": first.source_topic,
                                            "partition": first.partition,
                                            "offset": first.offset,
                                            "count": len(routed.dead_letters)})

    def _progress(self, stream: Stream, now: float, reader: Reader, out: Outputs) -> None:
        """Tell every owner of ``stream``'s windows how far the input partitions read here
        have come (mlpulse.reporting); pause those too far ahead of the slowest."""
        messages, paused = self.reporter.report(stream, self.owned[stream.name], now, reader)
        out.messages += messages
        if paused is not None:
            self._pause(stream.topic, paused, out)

    def _align_labels(self, now: float, reader: Reader, out: Outputs) -> None:
        """Pause the label partitions that run ahead of the predictions."""
        paused = self.reporter.align_labels(self.predictions, self.feedback,
                                            self.owned["predictions"], now, reader)
        if paused is not None:
            self._pause(self.feedback.topic, paused, out)

    def _pause(self, topic: str, partitions: set[int], out: Outputs) -> None:
        """Exactly ``partitions`` of input ``topic`` are paused now."""
        out.pauses[topic] = partitions
        metrics = self.metrics
        metrics.paused_partitions.labels(topic=topic).set(len(partitions))
        new = partitions - self.paused.get(topic, set())
        if new:
            metrics.pauses.labels(topic=topic).inc(len(new))
        self.paused[topic] = partitions

    # ------------------------------------------------------- 2. repartitioned messages

    def apply(self, stream: Stream, messages: Iterable[Hop]) -> Outputs:
        """Apply repartitioned messages of ``stream`` (less what was applied already: a
        replay after a rebalance or crash) and the progress reports among them, in order;
        close what the watermark passed."""
        out = Outputs()
        now = self.clock()
        decode = self.ingest_stage.decode_internal
        grouped: dict[tuple[int, str], list[Any]] = {}
        reports: list[tuple[int, dict[int, tuple[float, int]]]] = []
        for message in messages:
            events = decode(stream, message.value) if message.value else []
            origin = origin_of(message.headers) if events else None
            if origin is not None:
                admitted = self.hops.admit(message.partition, stream.topic, *origin)
                if not all(admitted):
                    events = [e for e, ok in zip(events, admitted, strict=True) if ok]
            for name, group in group_by(events, stream.key).items():
                grouped.setdefault((message.partition, name), []).extend(group)
            report = progress_of(message.headers) if not events else None
            if report is not None:   # after the events of the messages before it
                reports.append((message.partition, report))
        raised: list[AlertEvent] = []
        for (partition, name), events in grouped.items():
            self._apply(stream, partition, name, events, now=now, raised=raised)
        for partition, report in reports:   # in order: progress only moves forward
            self.summarizer.progress(partition, stream.name, report)
        if stream.aligned:
            self.reporter.caught_up_with(
                stream, {p for p, _ in grouped} & self.owned[stream.name])
        self._emit(self.summarizer.close_due(now, check_idle=False), raised, out)
        return out

    def _apply(self, stream: Stream, partition: int, name: str, events: list[Any], *,
               now: float, raised: list[AlertEvent]) -> None:
        """Aggregate events of one key into event-time windows of ``partition``."""
        summarizer = self.summarizer
        if not stream.aligned:
            summarizer.add_feedback(partition, events)
            return
        if stream is self.predictions:
            late = summarizer.add_prediction_events(partition, events, now)
        else:
            late = summarizer.add_log_events(partition, events, now)
        if late:
            self.metrics.late_events.labels(kind=stream.name).inc(late)
        if stream is self.predictions:
            model = summarizer.guard.known_model(name)
            raised.extend(self.detect.seen(partition, model, now))

    # ----------------------------------------------------------------- 3. the clock

    def tick(self, reader: Reader, *, tables_ready: bool = True) -> Outputs:
        """The wall clock moved: input partitions turn idle (or not), quiet windows
        close, silent models alert, windows that late labels changed are revised.

        While input is paused by a rebalance nothing is idle or silent for that: only
        what the watermark passed closes."""
        out = Outputs()
        now = self.clock()
        if tables_ready:   # the detector table is complete: watch restored models too
            for partition in self.owned["predictions"]:
                self.detect.restore_presence(partition, now)
        if not self.reading:
            self._emit(self.summarizer.close_due(now, check_idle=False), [], out)
            return out
        self._progress(self.predictions, now, reader, out)
        self._progress(self.logs, now, reader, out)
        self._align_labels(now, reader, out)
        self._emit(self.summarizer.close_due(now), self.detect.check_no_data(now), out,
                   self.summarizer.revisions(now))
        return out

    # ------------------------------------------------------------------ 4. outputs

    def _emit(self, closed: list[Closed], raised: list[AlertEvent], out: Outputs,
              revised: Sequence[Revised] = ()) -> None:
        """Summaries of closed and revised windows, and the alerts they raise."""
        status, metrics = self.status, self.metrics
        windows = self.topics.windows
        summaries = [*((c.partition, c.summary) for c in closed),
                     *((r.partition, r.summary) for r in revised)]
        for partition, summary in summaries:
            status.on_window(partition, summary)
        # judged before they are written: a candidate version's summary carries its comparison
        raised = raised + self.detect.on_closed(closed) + self.detect.on_revised(revised)
        for _, summary in summaries:
            out.messages.append(Produce(windows, encode(summary), key=window_key(summary)))
            if isinstance(summary, PredictionWindow) and summary.comparison is not None:
                status.on_compared(summary)
        kinds = collections.Counter(
            "predictions" if isinstance(c.summary, PredictionWindow) else "logs"
            for c in closed)
        for kind, n in kinds.items():
            metrics.windows_closed.labels(kind=kind).inc(n)
        if closed:
            out.checkpoint_soon = True
        for alert in raised:
            out.messages.append(Produce(self.topics.alerts, encode(alert), key=alert_key(alert)))
            metrics.alerts.labels(rule=alert.rule, status=alert.status).inc()
            log.info("alert %s %s: %s", alert.rule, alert.status, alert.annotations.summary,
                     extra={"rule": alert.rule, "status": alert.status,
                            "alert_id": alert.alert_id,
                            "model": alert.labels.get("model"),
                            "model_version": alert.labels.get("model_version"),
                            "service": alert.labels.get("service"),
                            "trace_id": alert.trace_ids[0] if alert.trace_ids else None})
        status.on_alerts(raised)

    # ------------------------------------------------------------- 5. checkpoints

    def checkpoint(self, positions: Mapping[tuple[str, int], int], generation: int = 0
                   ) -> CheckpointRound | None:
        """Snapshot the windows of every owned partition with the input offsets and hop
        positions they hold (``positions``: next input offset per input partition read);
        None when nothing changed. ``generation``: the consumer group generation of the
        assignment held, named in the checkpoints' headers."""
        self.detect.save()   # before the windows: never older than the checkpoint
        own = self.ownership
        own.read_to(positions)
        topics = {s.topic for s in self.streams.values()}
        summarizer = self.summarizer
        points = {partition: Checkpoint(
            state=summarizer.partition_state(partition),
            inputs=own.inputs_of(partition, topics),
            hops=self.hops.state(partition)) for partition in own.held}
        records = {partition: summarizer.partition_records(partition) for partition in points}
        take_touched = getattr(self.store, "take_touched", None)
        states: set[int] = take_touched() if take_touched is not None else set()
        mark_end: Callable[[int], None] | None = getattr(self.store, "mark_end", None)

        def mark_ends() -> None:   # detector states: see TableStore.mark_end
            for partition in sorted(states):
                if mark_end is not None:
                    mark_end(partition)

        def written() -> None:
            for partition in points:
                summarizer.records_written(partition)

        point = self.writer.round(points, mark_ends if states else None, records, written,
                                  generation)
        if point is None:
            written()   # nothing new: what the last checkpoint does not name can go
        return point

    # ---------------------------------------------------------- 6. partitions move

    def assign(self, owned: Mapping[str, set[int]]) -> None:
        """The consumer group gave this worker these internal partitions per stream
        (Faust rebalances eagerly: everything is revoked, then the new assignment
        arrives). Keep the state of partitions that stayed; drop the rest."""
        own = self.ownership
        own.assign(owned)
        predictions, logs = own.owned["predictions"], own.owned["logs"]
        self.summarizer.keep_only(predictions=predictions, logs=logs)
        self.hops.keep_only(predictions)
        self.writer.keep_only(own.held)
        self.detect.keep_only(set().union(*own.owned.values()))
        self.status.keep_only(predictions | logs)

    @property
    def owned(self) -> dict[str, set[int]]:
        """Internal partitions owned per stream."""
        return self.ownership.owned

    def to_restore(self) -> list[int]:
        """Owned partitions whose state is not here yet: read their checkpoints."""
        return self.ownership.to_restore()

    def restore(self, partition: int, point: Checkpoint | None, slot: int,
                records: Callable[[bytes], bytes | None] | None = None
                ) -> dict[tuple[str, int], int]:
        """Take over ``partition`` from its last checkpoint (None: start afresh) and the
        other records of the checkpoint topic (``records``: the label index's); the input
        offsets to read from.

        The partition counts as held (and so is checkpointed) only once its state is in:
        a checkpoint round while the read was under way would otherwise write the
        partition's empty state over its checkpoint, and the events since the input
        offsets its last owner committed would be lost (seen in a crash test: 300 events
        of two windows). A partition that a newer assignment took meanwhile is left
        alone."""
        if partition not in self.owned["predictions"]:
            return {}
        self.writer.restored(partition, point, slot)
        if point is None:
            return self.ownership.hold(partition, {}, checkpoint=False)
        self.summarizer.restore_partition(partition, point.state, self.clock(), records)
        self.hops.restore(partition, point.hops)
        log.info("mlpulse restored partition %d from its checkpoint (%d bytes of windows)",
                 partition, len(point.state))
        return self.ownership.hold(partition, point.inputs)

    def reads(self, counts: Mapping[str, int]) -> list[tuple[str, int]]:
        """The input partitions to read (``counts``: partitions per input topic): input
        partition i goes with internal partition i mod N; windows wait for the slowest of
        them."""
        now = self.clock()
        out: list[tuple[str, int]] = []
        for name, indices in self.ownership.reads(counts).items():
            stream = self.streams[name]
            out += [(stream.topic, i) for i in indices]
            if stream.aligned:
                self.summarizer.sources(name, counts.get(stream.topic) or
                                        self.settings.partitions)
                self.reporter.assigned(name, indices, now)
        return out

    def starts(self, reads: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Where to read each input partition of ``reads`` from: where the state held here
        ends (:meth:`~mlpulse.ownership.Ownership.starts`)."""
        return self.ownership.starts(reads)

    def resume(self) -> None:
        """Input is read again after a rebalance: every owner hears again how far the
        input partitions read here have come; the windows kept here waited for input
        during the rebalance, so their idle time (and the models' silence) counts from
        now."""
        now = self.clock()
        self.reporter.reset()
        self.summarizer.touch(now)
        self.detect.touch(now)
        self.reading = True

    def pause(self) -> None:
        """Input stops for a rebalance."""
        self.reading = False
