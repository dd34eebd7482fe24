"""The one Faust module: topics, agents and timers, wired top to bottom.

Data flow (one line per step, item shape on the right)::

    mlpulse.predictions ─ ingest ─▶ bytes: one event or a JSON array (task "ingest": a plain
        │                          aiokafka group <group>-ingest taking whole fetches)
        ├─▶ mlpulse.deadletter                  DeadLetter JSON, one per bad event
        ├─ keyed by model, read from its partition: applied here (summarize, below)
        └─▶ mlpulse.predictions.by-model        msgpack [PredictionEvent] per partition,
                                                header mlpulse-origin (where each was read);
                                                empty messages with header mlpulse-progress:
                                                how far each input partition read here has
                                                come (mlpulse.progress: windows wait for the
                                                slowest; applied directly when the owner is
                                                here and nothing is in flight)
    mlpulse.predictions.by-model ─ summarize_predictions
        ├─▶ mlpulse.windows                     PredictionWindow JSON, key = model
        └─ detect (per closed window) ─▶ mlpulse.alerts   AlertEvent JSON, key = model
             └─▶ table "detectors"              detector state per model version (changelog)
    mlpulse.logs ─ ingest ─▶ mlpulse.logs.by-service ─ summarize_logs
        ├─▶ mlpulse.windows ; detect ─▶ mlpulse.alerts (log error spikes)
    mlpulse.feedback ─ ingest ─▶ mlpulse.feedback.by-model   key = model
    mlpulse.feedback.by-model ─ join_feedback ─▶ labels scored into the windows of their
        predictions (same partition as the model's predictions.by-model)
    checkpoint (each commit interval, a snapshot in the ingest task, written while it reads
        on) ─▶ <group>-checkpoints-changelog: per owned partition its windows + the input
        offsets and origins they hold; then input offsets are committed and repartitioned
        messages acked. A new owner reads it back (mlpulse.checkpoint.CheckpointReader) and
        restores it.
    web: /metrics (Prometheus), /status (live page), /api/status (its JSON)
    timer close_idle_windows (every idle_check_seconds) ─▶ mlpulse.windows, mlpulse.alerts
        (idle windows, no-data alerts of silent models, revised summaries of windows
        that late labels changed, and the performance alerts they raise)

Repartitioning by model means producers may key (or not key) their messages as
they like: each (model, version, window) still lives on one partition of the
internal topic, owned by one worker of the consumer group, and is emitted once (a
window that closed after a killed worker's last checkpoint is emitted again, identical).
All serialisation is raw bytes (JSON or msgpack made by mlpulse); Faust's object
serialisers are never used (a test checks every topic is raw).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import importlib.resources
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import faust
import msgspec
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .allocator import Trimmer
from .checkpoint import (
    ORIGIN_HEADER,
    Checkpoint,
    CheckpointReader,
    HopFilter,
    checkpoint_records,
    in_order,
    origin_of,
    pack_origin,
)
from .codec import chunk_spans, chunked, group_by
from .config import Settings
from .consumer import BatchConsumer, Write
from .deadletter import encode_dead_letter, reason_category
from .detect import Detect
from .events import AlertEvent, DeadLetter, PredictionWindow, WindowSummary
from .ingest import SLICE_BYTES, Ingest, Routed, slices
from .join import Revised
from .metrics import Metrics
from .progress import (
    PROGRESS_HEADER,
    InputClocks,
    encode_progress,
    progress_of,
    too_far_ahead,
)
from .security import BasicAuth, auth_middleware, faust_credentials, kafka_options
from .status import Status, StatusCollector
from .store import TableStore, partition_for
from .summarize import Closed, Summarizer, encode_summary, summary_key
from .topics import Topics, checkpoint_changelog, detector_changelog

__all__ = ["Pipeline", "create_app"]

PROGRESS_INTERVAL_S = 0.1
"""Least wall-clock time between two progress messages of a worker to one internal
partition (unless an input partition changed state: behind, caught up, idle): what a
window's close may lag."""

log = logging.getLogger("mlpulse.pipeline")


class Pipeline:
    """A Faust app with mlpulse's agents; ``app`` is what a Faust worker runs."""

    def __init__(
        self, settings: Settings, clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = Topics(settings)
        self.ingest = Ingest(settings)
        self.store = TableStore(settings.partitions)
        self.detect = Detect(settings, store=self.store)
        self.summarizer = Summarizer(settings, profiles=self.detect.new_profile)
        self.trimmer = Trimmer(settings.malloc_trim_seconds)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics.track_open_windows(lambda: self.summarizer.open_windows)
        if self.summarizer.join is not None:
            join = self.summarizer.join
            self.metrics.track_label_join(lambda: join.counts, lambda: join.size)
        self.status = Status()
        self.detect.on_findings = self.status.on_findings
        self.registry.register(StatusCollector(self.status, lambda: self.summarizer.guard.folded))
        self.owned_partitions: set[int] = set()
        self.owned_log_partitions: set[int] = set()
        self.owned_feedback_partitions: set[int] = set()
        self.positions: dict[TP, int] = {}
        """Next offset to process per input partition (for consumer lag)."""
        self.hops = HopFilter()
        self.clocks = InputClocks(settings.idle_partition_seconds)
        """Event-time progress of the input partitions this worker reads."""
        self.published: dict[tuple[int, str, int], int] = {}
        """(internal partition, input topic, input partition) → last sequence number
        repartitioned: events of it are on their way while the owner applied less."""
        self.sent_progress: dict[tuple[str, int], tuple[float, dict[int, Any]]] = {}
        """(stream, internal partition) → when and what progress was last sent to it."""
        self.restored: set[int] = set()
        """Internal partitions whose state this worker holds (restored from a checkpoint)."""
        self.input_offsets: dict[TopicPartition, int] = {}
        """Next input offset per input partition read, as of the last checkpoint."""
        self.held: list[Any] = []
        """Repartitioned messages applied since the last checkpoint: acked after it."""
        self.written: dict[int, Checkpoint] = {}
        """Fingerprint of the last checkpoint written (or restored) per partition."""
        self.slots: dict[int, int] = {}
        """The slot the next checkpoint of each partition goes to (not its last one's)."""
        self.reading = False
        """Whether input is being read (not during a rebalance): idle windows and silent
        models are judged on the wall clock only then."""
        self.state_lock = asyncio.Lock()
        """Held while windows change and what they emit is handed to the producer."""
        self.app = self._build_app()
        self.metrics.track_lag(
            collections.ChainMap(self.positions, self.ingest_consumer.positions),  # type: ignore[arg-type]
            self._highwater)

    def _highwater(self, tp: TP) -> int | None:
        if tp.topic in (self.topics.predictions, self.topics.logs, self.topics.feedback):
            return self.ingest_consumer.highwater(tp)
        try:   # aiokafka asserts the partition is assigned; None before its first fetch
            high = self.app.consumer.highwater(tp)
        except Exception:   # a scrape must never fail on a rebalance
            return None
        return int(high) if high is not None else None

    def _build_app(self) -> faust.App:
        s = self.settings
        web_options: dict[str, Any] = {}
        if s.web_auth_username and s.web_auth_password:
            auth = BasicAuth(s.web_auth_username, s.web_auth_password)
            web_options["middlewares"] = [auth_middleware(auth)]
        app = faust.App(
            s.group_id,
            broker=[f"kafka://{host}" for host in s.bootstrap_or_error.split(",")],
            value_serializer="raw",
            key_serializer="raw",
            store="memory://",
            autodiscover=False,
            topic_partitions=s.partitions,
            topic_disable_leader=True,
            broker_session_timeout=10,
            broker_rebalance_timeout=10,
            consumer_max_fetch_size=max(s.max_message_bytes, 4 * 1024 * 1024),
            producer_max_request_size=max(s.max_message_bytes, 1024 * 1024),
            # internal messages carry whole batches: let each be one producer batch
            producer_max_batch_size=max(s.max_message_bytes, 1024 * 1024),
            broker_credentials=faust_credentials(s),
            web_application_options=web_options,
            web_port=s.web_port,
            web_bind=s.web_host,
            web_host=s.web_host,
            datadir=s.data_dir,
            producer_linger=0.005,
            # The table lives in memory and is rebuilt from its changelog. Faust's check
            # compares the changelog's highwater with offsets this process saw in an
            # earlier assignment and, when the broker reports less, crashes the whole worker
            # during a rebalance (faust-streaming/faust#158; measured: bench.crash
            # --workers 3 lost a healthy worker and its windows). Without the check the
            # recovery reads what the changelog has.
            recovery_consistency_check=False,
            # repartitioned messages are acked once a checkpoint holds their events (see
            # checkpoint below), and a replay of the unacked ones is filtered: a rebalance
            # need not wait for them
            stream_wait_empty=False,
        )
        t = self.topics

        def topic(name: str) -> Any:
            return app.topic(name, key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw")

        by_model, by_service = topic(t.predictions_by_model), topic(t.logs_by_service)
        feedback_by_model = topic(t.feedback_by_model)
        windows, deadletter, alerts = topic(t.windows), topic(t.deadletter), topic(t.alerts)
        # detector state, snapshotted per model version at window close (raw msgpack values)
        table = app.Table("detectors", partitions=s.partitions, key_type=bytes,
                          value_type=bytes)   # the app's serialisers: raw
        assert table.changelog_topic.get_topic_name() == detector_changelog(s)
        self.store.attach(table)
        # per partition: its windows with the input offsets and hop positions they hold
        # (a compacted topic, read by a new owner itself: mlpulse.checkpoint.CheckpointReader)
        checkpoints = topic(checkpoint_changelog(s))
        self.checkpoint_reader = CheckpointReader(
            checkpoint_changelog(s), {"bootstrap_servers": s.bootstrap_or_error,
                                      "max_partition_fetch_bytes": 16 * 1024 * 1024,
                                      **kafka_options(s)})

        take = {"max_": s.batch_messages, "within": s.batch_wait_seconds}

        metrics = self.metrics

        async def publish(routed: Routed, internal: Any, encode: Any, kind: str) -> None:
            """Repartition events: one message (or several in order, if large) per internal
            partition, saying where each event was read: each input partition's events
            then reach an internal partition in order (what the replay filter needs).
            Labels go one message per model."""
            if kind == "feedback":
                for key, events in routed.all_by_key().items():
                    for payload in chunked(events, encode, s.internal_message_bytes):
                        await internal.send(key=key.encode(), value=payload)
            else:
                by_partition: dict[int, list[Any]] = {}
                for key, events in routed.all_by_key().items():
                    by_partition.setdefault(home(key.encode()), []).extend(events)
                name = routed_topic[kind]
                for partition, unordered in by_partition.items():
                    events, sources, seqs = in_order(unordered, *routed.origin(unordered))
                    for source, seq in dict(zip(sources, seqs, strict=True)).items():
                        self.published[(partition, name, source)] = seq
                    for span, payload in chunk_spans(events, encode, s.internal_message_bytes):
                        await internal.send(value=payload, partition=partition, headers=[
                            (ORIGIN_HEADER, pack_origin(sources[span], seqs[span]))])
            await self._dead_letters(deadletter, routed.dead_letters)

        async def emit(closed: list[Closed], raised: list[AlertEvent],
                       revised: Sequence[Revised] = ()) -> None:
            status = self.status
            done: list[tuple[int, WindowSummary]] = [
                *((c.partition, c.summary) for c in closed),
                *((r.partition, r.summary) for r in revised)]
            for partition, summary in done:
                await windows.send(key=summary_key(summary), value=encode_summary(summary))
                status.on_window(partition, summary)
            kinds = collections.Counter(
                "predictions" if isinstance(c.summary, PredictionWindow) else "logs"
                for c in closed)
            for kind, n in kinds.items():
                metrics.windows_closed.labels(kind=kind).inc(n)
            if closed:   # a checkpoint soon: a crash then emits fewer of them again
                self.ingest_consumer.commit_soon()
            raised = raised + self.detect.on_closed(closed) + self.detect.on_revised(revised)
            for alert in raised:
                await alerts.send(key=alert_key(alert), value=encode_alert(alert))
                metrics.alerts.labels(rule=alert.rule, status=alert.status).inc()
                log.info("alert %s %s: %s", alert.rule, alert.status, alert.annotations.summary,
                         extra={"rule": alert.rule, "status": alert.status,
                                "alert_id": alert.alert_id,
                                "model": alert.labels.get("model"),
                                "model_version": alert.labels.get("model_version"),
                                "service": alert.labels.get("service"),
                                "trace_id": alert.trace_ids[0] if alert.trace_ids else None})
            status.on_alerts(raised)

        positions = self.positions

        async def batches(stream: Any, stage: str) -> Any:
            """Batches of messages of ``stream``, timed and counted per stage."""
            size = metrics.batch_messages.labels(stage=stage)
            duration = metrics.batch_duration.labels(stage=stage)
            async for batch in stream.take_events(**take):
                started = time.perf_counter()
                yield batch
                duration.observe(time.perf_counter() - started)
                size.observe(len(batch))
                for event in batch:
                    positions[event.message.tp] = event.message.offset + 1

        def ingested(records: Sequence[Any], kind: str, topic_name: str,
                     local: Callable[[bytes, int], bool] | None) -> Routed:
            """Decode a batch of records of one topic; merge their events per routing key."""
            routed = self.ingest.fetch(kind, records, self.clock(), local)
            metrics.messages.labels(topic=topic_name).inc(len(records))
            metrics.events.labels(topic=topic_name, outcome="accepted").inc(routed.accepted)
            if routed.dead_letters:
                metrics.events.labels(topic=topic_name, outcome="dead_lettered").inc(
                    len(routed.dead_letters))
                reasons = collections.Counter(reason_category(d.error)
                                              for d in routed.dead_letters)
                for reason, n in reasons.items():
                    metrics.dead_letters.labels(topic=topic_name, reason=reason).inc(n)
            return routed

        # 2. aggregate into event-time windows (events of partitions this worker owns)
        def apply(kind: str, partition: int, name: str, events: list[Any], *, now: float,
                  raised: list[AlertEvent]) -> None:
            summarizer = self.summarizer
            if kind == "feedback":
                summarizer.add_feedback(partition, events)
                return
            add = (summarizer.add_prediction_events if kind == "predictions"
                   else summarizer.add_log_events)
            late = add(partition, events, now)
            if late:
                metrics.late_events.labels(kind=kind).inc(late)
            if kind == "predictions":
                model = summarizer.guard.known_model(name)
                raised.extend(self.detect.seen(partition, model, now))

        # 1. decode, validate, dead-letter; apply the events of models (services) whose
        #    windows this worker owns, repartition the others by model / service.
        #    A plain aiokafka consumer (app/consumer.py) hands over whole fetches of the
        #    input partitions matching the internal ones Faust assigned: a single-event
        #    message costs microseconds, not Faust's ~85 µs, and events keyed by model
        #    (the SDK's) skip the repartition hop.
        routes = {
            t.predictions: ("predictions", by_model, self.ingest.encode_predictions),
            t.logs: ("logs", by_service, self.ingest.encode_logs),
            t.feedback: ("feedback", feedback_by_model, self.ingest.encode_feedback),
        }
        owners = {"predictions": lambda: self.owned_partitions,
                  "logs": lambda: self.owned_log_partitions,
                  "feedback": lambda: self.owned_feedback_partitions}

        @functools.lru_cache(maxsize=65536)
        def home(key: bytes) -> int:
            return partition_for(key, s.partitions)

        def local(key: bytes, source: int) -> bool:
            """Input partition i holds the events its key is hashed to (i mod N)."""
            return home(key) == source % s.partitions

        async def ingest_fetch(records: Sequence[Any]) -> None:
            by_topic: dict[str, dict[int, list[Any]]] = {}
            for r in records:
                by_topic.setdefault(r.topic, {}).setdefault(r.partition, []).append(r)
            now = self.clock()
            raised: list[AlertEvent] = []
            for topic_name, parts in by_topic.items():
                kind, internal, encode = routes[topic_name]
                stage = f"ingest_{kind}"
                started = time.perf_counter()
                owned = owners[kind]()
                # Events are applied here if their message was keyed by their model
                # (service) and read from input partition i = its partition mod N (owned
                # here with i; i's offset is in that partition's checkpoint): a model's
                # events then come from one partition, in order. They are decoded and
                # applied a slice of the fetch at a time, each while its events are in the
                # CPU cache (a fetch is MBs of objects once decoded: ~5-7% more events/s,
                # measured). The others take the hop tagged with their origin, once per
                # fetch, as one batch. Labels are applied wherever their model is.
                hop = Routed()
                newest: dict[int, float] = {}
                for index, whole in parts.items():
                    for batch in slices(whole, SLICE_BYTES):
                        routed = ingested(batch, kind, topic_name,
                                          local if kind != "feedback" else None)
                        if routed.newest_s > newest.get(index, -math.inf):
                            newest[index] = routed.newest_s
                        if kind == "feedback":
                            routed.by_key, routed.repartition = routed.all_by_key(), {}
                        for key in list(routed.by_key):
                            partition = home(key.encode())
                            if partition in owned:
                                apply(kind, partition, key, routed.by_key.pop(key), now=now,
                                      raised=raised)
                        hop.merge(routed)   # (origins of all-applied slices not kept)
                await publish(hop, internal, encode, kind)
                # the input partitions' progress moves on only now that their events are
                # on their way: a progress report never overtakes the events it covers
                for index in parts:
                    self.clocks.read(kind, index, newest.get(index, -math.inf), now)
                if kind != "feedback":
                    await progress(kind, now)
                align_labels(now)
                metrics.batch_duration.labels(stage=stage).observe(
                    time.perf_counter() - started)
                metrics.batch_messages.labels(stage=stage).observe(
                    sum(len(whole) for whole in parts.values()))
            await emit(self.summarizer.close_due_windows(now, check_idle=False), raised)

        routed_topic = {"predictions": t.predictions, "logs": t.logs, "feedback": t.feedback}
        internal_topic = {"predictions": by_model, "logs": by_service}

        def caught_up(kind: str, index: int) -> bool:
            return self.ingest_consumer.caught_up(TopicPartition(routed_topic[kind], index))

        def align_labels(now: float) -> None:
            """Pause the label partitions that run more than a window (and the lateness)
            ahead of the slowest prediction partition: a label waits for its prediction,
            so labels read ahead of their predictions would pile up (bounded, then lost as
            unmatched) while a backlog of both is read."""
            name = t.feedback
            reading = [tp.partition for tp in self.ingest_consumer.assigned if tp.topic == name]
            if not reading:
                return
            predictions = [tp.partition for tp in self.ingest_consumer.assigned
                           if tp.topic == t.predictions]
            slowest = self.summarizer.watermarks.slowest_s(
                "predictions", self.owned_partitions,
                also=self.clocks.report("predictions", predictions, now, caught_up))
            labels = {i: self.clocks.newest_s("feedback", i) for i in reading}
            self.ingest_consumer.pause(name, too_far_ahead(
                labels, slowest, s.window_seconds + s.lateness_seconds))

        async def progress(kind: str, now: float, *, force: bool = False) -> None:
            """Tell every owner of ``kind``'s windows how far the input partitions read here
            have come (mlpulse.progress): the owner here directly unless events of those
            partitions are on their way to it through the internal topic, the others (and
            then this one) by a message on that topic, after those events; then pause the
            input partitions that run too far ahead of the slowest."""
            name = routed_topic[kind]
            reading = [tp.partition for tp in self.ingest_consumer.assigned
                       if tp.topic == name]
            if not reading:
                return
            report = self.clocks.report(kind, reading, now, caught_up)
            owned = owners[kind]()
            applied = self.hops
            for partition in range(s.partitions):
                if partition in owned:
                    direct = {i: r for i, r in report.items()
                              if self.published.get((partition, name, i), -1)
                              <= applied.last(partition, name, i)}
                    if direct:
                        self.summarizer.progress(partition, kind, direct)
                    if len(direct) == len(report):
                        continue
                last = self.sent_progress.get((kind, partition))
                if last is not None and not force:
                    sent_at, sent = last
                    if sent == report:
                        continue
                    state_changed = any(sent.get(i, (0.0, state))[1] != state
                                        for i, (_, state) in report.items())
                    if now - sent_at < PROGRESS_INTERVAL_S and not state_changed:
                        continue
                await internal_topic[kind].send(
                    value=b"", partition=partition,
                    headers=[(PROGRESS_HEADER, encode_progress(report))])
                self.sent_progress[(kind, partition)] = (now, report)
            slowest = self.summarizer.watermarks.slowest_s(kind, owned, also=report)
            self.ingest_consumer.pause(name, too_far_ahead(
                {i: r[0] for i, r in report.items()}, slowest, s.max_drift_seconds))

        exact_inputs = {t.predictions, t.logs}

        async def flush() -> None:
            """Until everything handed to the producer is on the broker (Faust's buffer
            flush may return with messages still queued)."""
            producer = app.producer
            while producer.buffer.size:
                await producer.buffer.flush()
            await producer.flush()

        async def checkpoint(positions: Any) -> Write | None:
            """Snapshot the windows of every owned partition with the input offsets and hop
            positions they hold; return what makes them durable, then acks the
            repartitioned messages they hold (None: nothing to do)."""
            started = time.perf_counter()
            self.input_offsets.update(positions)
            async with self.state_lock:   # no agent between a change and its output
                due: list[tuple[int, Checkpoint, Checkpoint]] = []
                for partition in sorted(self.restored):
                    point = Checkpoint(
                        state=self.summarizer.partition_state(partition),
                        inputs={f"{tp.topic}:{tp.partition}": offset
                                for tp, offset in self.input_offsets.items()
                                if tp.topic in exact_inputs
                                and tp.partition % s.partitions == partition},
                        hops=self.hops.state(partition))
                    mark = point.fingerprint()
                    if self.written.get(partition) != mark:
                        due.append((partition, point, mark))
                held, self.held = self.held, []
                states = self.store.take_touched()
            if not due and not held and not states:
                return None

            async def write() -> None:
                # Two broker round trips for all partitions, however many: first the
                # chunks (in the slot the current header does not name) with the output of
                # the changes the checkpoints hold, then the headers that make them
                # current. A header is alone in the last batch of its partition: a broker
                # that reports the end of a partition as its last batch's first offset + 1
                # (Tansu 0.6 does) still has a reader see every record before it.
                headers: list[tuple[int, bytes, bytes]] = []
                for partition, point, _ in due:
                    *chunks, header = checkpoint_records(partition, point,
                                                         self.slots.get(partition, 0))
                    for key, value in chunks:
                        await checkpoints.send(key=key, value=value, partition=partition)
                    headers.append((partition, *header))
                await flush()
                for partition, key, value in headers:
                    await checkpoints.send(key=key, value=value, partition=partition)
                for partition in sorted(states):   # detector states: see TableStore.mark_end
                    self.store.mark_end(partition)
                if headers or states:
                    await flush()
                for partition, _, mark in due:
                    self.slots[partition] = 1 - self.slots.get(partition, 0)
                    self.written[partition] = mark
                for message in held:
                    message.ack(app.consumer)
                metrics.batch_duration.labels(stage="checkpoint").observe(
                    time.perf_counter() - started)

            return write

        self.ingest_consumer = BatchConsumer(
            bootstrap=s.bootstrap_or_error, group_id=f"{s.group_id}-ingest",
            handle=ingest_fetch, checkpoint=checkpoint, kafka=kafka_options(s),
            max_records=s.ingest_max_records, max_fetch_bytes=s.ingest_fetch_bytes,
            commit_interval_s=s.commit_interval_seconds)

        @app.task
        async def ingest() -> None:
            await app.producer.maybe_start()
            await self.ingest_consumer.run()

        @app.agent(feedback_by_model, name="join_feedback")
        async def join_feedback(stream: Any) -> None:
            summarizer = self.summarizer
            async for batch in batches(stream, "join_feedback"):
                for event in batch:
                    labels = summarizer.decode_feedback(event.message.value)
                    apply("feedback", event.message.partition, "", labels, now=0.0, raised=[])

        # ... and those other workers repartitioned to it (less what a checkpoint already
        # holds); emit what the watermark closed
        async def summarize(batch: Any, decode: Any, key: str, kind: str, source: str) -> None:
            hops, held = self.hops, self.held
            async with self.state_lock:
                now = self.clock()
                grouped: dict[tuple[int, str], list[Any]] = {}
                reports: list[tuple[int, dict[int, tuple[float, int]]]] = []
                for event in batch:
                    message = event.message
                    events = decode(message.value) if message.value else []
                    origin = origin_of(message.headers) if events else None
                    if origin is not None:
                        admitted = hops.admit(message.partition, source, *origin)
                        if not all(admitted):
                            events = [e for e, ok in zip(events, admitted, strict=True) if ok]
                    for name, group in group_by(events, key).items():
                        grouped.setdefault((message.partition, name), []).extend(group)
                    report = progress_of(message.headers) if not events else None
                    if report is not None:   # after the events of the messages before it
                        reports.append((message.partition, report))
                    message.incref()   # acked once a checkpoint holds it
                    held.append(message)
                raised: list[AlertEvent] = []
                for (partition, name), events in grouped.items():
                    apply(kind, partition, name, events, now=now, raised=raised)
                for partition, report in reports:   # in order: progress only moves forward
                    self.summarizer.progress(partition, kind, report)
                await emit(self.summarizer.close_due_windows(now, check_idle=False), raised)

        @app.agent(by_model, name="summarize_predictions")
        async def summarize_predictions(stream: Any) -> None:
            summarizer = self.summarizer
            async for batch in batches(stream, "summarize_predictions"):
                await summarize(batch, summarizer.decode_predictions, "model", "predictions",
                                t.predictions)

        @app.agent(by_service, name="summarize_logs")
        async def summarize_logs(stream: Any) -> None:
            summarizer = self.summarizer
            async for batch in batches(stream, "summarize_logs"):
                await summarize(batch, summarizer.decode_logs, "service", "logs", t.logs)

        # 3. close windows of quiet streams on the wall clock
        @app.timer(interval=s.idle_check_seconds, name="close_idle_windows")
        async def close_idle_windows() -> None:
            now = self.clock()
            if not app.in_recovery:   # the table is complete: watch restored models too
                for partition in self.owned_partitions:
                    self.detect.restore_presence(partition, now)
            async with self.state_lock:
                if self.reading:
                    # input partitions turn idle (or not) on the wall clock too
                    await progress("predictions", now)
                    await progress("logs", now)
                    align_labels(now)
                    await emit(self.summarizer.close_due_windows(now),
                               self.detect.check_no_data(now), self.summarizer.revisions(now))
                else:   # input paused by a rebalance: nothing is idle or silent for that
                    await emit(self.summarizer.close_due_windows(now, check_idle=False), [])
            self.trimmer.maybe_trim(time.monotonic())

        # 4. Prometheus exposition of this worker; its status as JSON
        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(generate_latest(self.registry),
                             headers={"Content-Type": CONTENT_TYPE_LATEST})

        page = importlib.resources.files(f"{__package__}.web").joinpath("status.html").read_bytes()

        @app.page("/status")
        async def status_page(web: Any, request: Any) -> Any:
            return web.bytes(page, headers={"Content-Type": "text/html; charset=utf-8"})

        @app.page("/api/status")
        async def status_json(web: Any, request: Any) -> Any:
            return web.bytes(_encoder.encode(self.status.to_json()),
                             content_type="application/json")

        internal = {t.predictions_by_model, t.logs_by_service, t.feedback_by_model}

        async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
            # Faust rebalances eagerly: everything is revoked, then the new assignment
            # arrives. Keep the state of partitions that stayed; drop the rest.
            owned = sorted((tp.topic, tp.partition) for tp in assigned if tp.topic in internal)
            self.owned_partitions = {p for name, p in owned if name == t.predictions_by_model}
            self.owned_log_partitions = {p for name, p in owned if name == t.logs_by_service}
            self.owned_feedback_partitions = {
                p for name, p in owned if name == t.feedback_by_model}
            self.summarizer.keep_only(predictions=self.owned_partitions,
                                      logs=self.owned_log_partitions)
            self.hops.keep_only(self.owned_partitions)
            self.restored &= self.owned_partitions
            for partition in set(self.written) - self.restored:
                del self.written[partition]
            self.detect.keep_only({p for _, p in owned})
            self.status.keep_only(self.owned_partitions | {
                p for name, p in owned if name == t.logs_by_service})
            for tp in [tp for tp in self.positions if tp not in assigned]:
                del self.positions[tp]
            log.info("mlpulse assigned %s", owned)

        async def on_rebalance_complete(sender: Any, **kwargs: Any) -> None:
            # The tables are recovered and Faust has not resumed the agents yet: restore
            # the partitions new here from their checkpoints, then read the input
            # partitions that match the owned ones (input partition i goes with internal
            # partition i mod N) from the checkpoints' offsets.
            offsets: dict[TopicPartition, int] = {}
            for partition in sorted(self.owned_partitions - self.restored):
                offsets.update(await self._restore(partition))
            reads = []
            now = self.clock()
            for name, kind in routes.items():
                count = await self.ingest_consumer.partitions(name) or s.partitions
                mine = owners[kind[0]]()
                indices = [i for i in range(count) if i % s.partitions in mine]
                reads += [TopicPartition(name, i) for i in indices]
                if kind[0] != "feedback":   # windows wait for the slowest of them
                    self.summarizer.sources(kind[0], count)
                    self.clocks.assigned(kind[0], indices, now)
            await self.ingest_consumer.assign(reads, offsets)
            # every owner hears again how far the input partitions read here have come
            self.sent_progress.clear()
            # the windows kept here waited for input during the rebalance: their idle
            # time (and the models' silence) counts from now
            self.summarizer.touch(now)
            self.detect.touch(now)
            self.reading = True

        async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
            # stop reading input and checkpoint what was processed before anyone else
            # reads it
            self.reading = False
            await self.ingest_consumer.assign([])

        app.on_partitions_assigned.connect(cast(Any, on_assigned))
        app.on_partitions_revoked.connect(cast(Any, on_revoked))
        app.on_rebalance_complete.connect(cast(Any, on_rebalance_complete))

        async def on_shutdown(sender: Any, **kwargs: Any) -> None:
            await self.checkpoint_reader.close()

        app.on_before_shutdown.connect(cast(Any, on_shutdown))
        return app

    async def _restore(self, partition: int) -> dict[TopicPartition, int]:
        """Take over ``partition`` from its last checkpoint; the input offsets to read from.

        The partition counts as held (and so is checkpointed) only once its state is in:
        a checkpoint round while the read is under way (the ingest consumer still reads
        the partitions it kept) would otherwise write the partition's empty state over its
        checkpoint, and the events since the input offsets its last owner committed would
        be lost (seen in a crash test: 300 events of two windows). A partition that a newer
        assignment took while the read was under way is left alone."""
        try:
            point, self.slots[partition] = await self.checkpoint_reader.read(partition)
        except (ValueError, KafkaError) as exc:   # never crash on it: start afresh
            log.error("mlpulse: %s; partition %d starts with no windows", exc, partition)
            point = None
        if partition not in self.owned_partitions:   # a newer assignment took it meanwhile
            return {}
        self.restored.add(partition)
        if point is None:
            return {}
        self.summarizer.restore_partition(partition, point.state, self.clock())
        self.hops.restore(partition, point.hops)
        self.written[partition] = point.fingerprint()
        offsets = {}
        for name, offset in point.inputs.items():
            topic, _, index = name.rpartition(":")
            offsets[TopicPartition(topic, int(index))] = offset
        self.input_offsets.update(offsets)
        log.info("mlpulse restored partition %d from its checkpoint (%d bytes of windows)",
                 partition, len(point.state))
        return offsets

    async def _dead_letters(self, topic: Any, records: list[DeadLetter]) -> None:
        for record in records:
            await topic.send(key=None, value=encode_dead_letter(record))
        if records:
            first = records[0]
            log.warning("dead-lettered %d input(s), first: %s", len(records), first.error,
                        extra={"topic": first.source_topic, "partition": first.partition,
                               "offset": first.offset, "count": len(records)})


def alert_key(alert: AlertEvent) -> bytes:
    """Message key of an alert: its model (or service), so one model's alerts stay in order."""
    return alert.labels.get("model", alert.labels.get("service", "")).encode()


def encode_alert(alert: AlertEvent) -> bytes:
    return _encoder.encode(alert)


_encoder = msgspec.json.Encoder()


def create_app(settings: Settings) -> faust.App:
    """The Faust app of a worker with ``settings``."""
    return Pipeline(settings).app
