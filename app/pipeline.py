"""The Faust shell of a worker: topics, agents, timers, pages and rebalance hooks.

Everything a worker does to data is in :class:`~mlpulse.engine.Engine`; this module wires
it to Kafka, top to bottom in the order data flows::

    input topics ─ ingest task (a plain aiokafka consumer, BatchConsumer, taking whole
        fetches of the input partitions matching the internal ones owned here)
        ─ Engine.ingest ─▶ dead letters, hop messages (+ progress), windows, alerts
    internal topics (by model / service) ─ agents summarize_* ─ Engine.apply ─▶ windows,
        alerts;  feedback.by-model ─ agent join_feedback ─ Engine.apply (labels)
    timer close_idle_windows ─ Engine.tick ─▶ windows of quiet models, no-data alerts,
        revised windows, progress
    each internal partition in offset order (InOrder): a message past the next offset is
        held back and the partition read again from there
    checkpoint (each commit interval, in the ingest task) ─ Engine.checkpoint ─▶ the
        checkpoint topic; then input offsets are committed and repartitioned messages
        acked (Acks: Faust's consumer acks no internal offset by itself)
    rebalance ─ Engine.assign / restore (CheckpointReader) / reads / resume
    web: /metrics (Prometheus), /status (live page), /api/status (its JSON)

All serialisation is raw bytes (JSON or msgpack made by mlpulse); Faust's object
serialisers are never used (a test checks every topic is raw).
"""

from __future__ import annotations

import asyncio
import collections
import importlib.resources
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import faust
import msgspec
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .allocator import Trimmer
from .checkpoint import CheckpointReader
from .config import Settings
from .consumer import BatchConsumer, Write
from .engine import Engine, Outputs
from .ordering import Acks, InOrder
from .repartition import key_hash
from .security import BasicAuth, auth_middleware, faust_credentials, kafka_options
from .store import TableStore
from .streams import Stream
from .topics import checkpoint_changelog, detector_changelog

__all__ = ["Pipeline", "create_app"]

log = logging.getLogger("mlpulse.pipeline")

UNKNOWN_GENERATION = -1
"""aiokafka's generation of a member the group does not know (``reset_generation``)."""


class Pipeline:
    """A Faust app around an :class:`~mlpulse.engine.Engine`; ``app`` is what a worker runs."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.store = TableStore(settings.partitions)
        self.engine = Engine(settings, store=self.store, clock=clock, registry=registry)
        self.registry = self.engine.registry
        self.trimmer = Trimmer(settings.malloc_trim_seconds)
        self.order = InOrder()
        """The next offset to apply per internal partition (and for the consumer lag)."""
        self.acks: Acks | None = None
        """Acknowledges repartitioned messages to Faust's consumer (set at assignment)."""
        self.held: list[Any] = []
        """Repartitioned messages applied since the last checkpoint: acked after it."""
        self._internal: set[TP] = set()
        """The internal partitions of the current assignment."""
        self._rewound: dict[TP, int] = {}
        """The offset each internal partition was last read again from (warned once)."""
        self._rebalances = 0
        """Rebalances begun (a re-read after one is dropped when another began)."""
        self._assigned_in = -1
        """The rebalance whose assignment this worker holds (``_rebalances`` then)."""
        self._refetch: asyncio.Future[None] | None = None
        self.state_lock = asyncio.Lock()
        """Held while the engine's state changes and what it emits goes to the producer."""
        self.app = self._app()
        self.ingest_consumer = BatchConsumer(
            bootstrap=settings.bootstrap_or_error, group_id=f"{settings.group_id}-ingest",
            handle=self._ingest, checkpoint=self._checkpoint,
            kafka={**kafka_options(settings), **settings.group_options()},
            max_records=settings.ingest_max_records, max_fetch_bytes=settings.ingest_fetch_bytes,
            commit_interval_s=settings.commit_interval_seconds,
            stall_s=settings.group_timeouts_seconds[0])
        self.checkpoint_reader = CheckpointReader(
            checkpoint_changelog(settings), {"bootstrap_servers": settings.bootstrap_or_error,
                                             "max_partition_fetch_bytes": 16 * 1024 * 1024,
                                             **kafka_options(settings)})
        self._wire()
        self.engine.metrics.track_lag(
            collections.ChainMap(self.order.next, self.ingest_consumer.positions),  # type: ignore[arg-type]
            self._highwater)

    def _app(self) -> faust.App:
        s = self.settings
        session_s, heartbeat_s, rebalance_s = s.group_timeouts_seconds
        web_options: dict[str, Any] = {}
        if s.web_auth_username and s.web_auth_password:
            web_options["middlewares"] = [auth_middleware(
                BasicAuth(s.web_auth_username, s.web_auth_password))]
        return faust.App(
            s.group_id,
            broker=[f"kafka://{host}" for host in s.bootstrap_or_error.split(",")],
            value_serializer="raw", key_serializer="raw", store="memory://",
            autodiscover=False, topic_partitions=s.partitions, topic_disable_leader=True,
            broker_session_timeout=session_s, broker_heartbeat_interval=heartbeat_s,
            broker_rebalance_timeout=rebalance_s,
            consumer_max_fetch_size=max(s.max_message_bytes, 4 * 1024 * 1024),
            producer_max_request_size=max(s.max_message_bytes, 1024 * 1024),
            # internal messages carry whole batches: let each be one producer batch
            producer_max_batch_size=max(s.max_message_bytes, 1024 * 1024),
            broker_credentials=faust_credentials(s), web_application_options=web_options,
            web_port=s.web_port, web_bind=s.web_host, web_host=s.web_host,
            datadir=s.data_dir, producer_linger=0.005, producer_partitioner=KeyPartitioner(),
            # The table lives in memory and is rebuilt from its changelog. Faust's check
            # compares the changelog's highwater with offsets this process saw in an
            # earlier assignment and, when the broker reports less, crashes the whole worker
            # during a rebalance (faust-streaming/faust#158; measured: bench.crash
            # --workers 3 lost a healthy worker and its windows). Without the check the
            # recovery reads what the changelog has.
            recovery_consistency_check=False,
            # repartitioned messages are acked once a checkpoint holds their events (see
            # _checkpoint), and a replay of the unacked ones is filtered: a rebalance need
            # not wait for them
            stream_wait_empty=False,
        )

    def _topic(self, name: str) -> Any:
        return self.app.topic(name, key_type=bytes, value_type=bytes,
                              key_serializer="raw", value_serializer="raw")

    def _wire(self) -> None:
        app, engine, s = self.app, self.engine, self.settings
        t = engine.topics
        # what the agents read (the worker's output goes to the producer: see _send)
        self.out = {name: self._topic(name) for name in (
            t.predictions_by_model, t.logs_by_service, t.feedback_by_model)}
        # detector state, snapshotted per model version at window close (raw msgpack values)
        table = app.Table("detectors", partitions=s.partitions, key_type=bytes,
                          value_type=bytes)   # the app's serialisers: raw
        assert table.changelog_topic.get_topic_name() == detector_changelog(s)
        self.store.attach(table)

        @app.task
        async def ingest() -> None:   # 1. input topics → Engine.ingest (self._ingest)
            await app.producer.maybe_start()
            await self.ingest_consumer.run()

        # 2. repartitioned messages, less what a checkpoint already holds
        for stream in engine.streams.values():
            self._agent(stream)

        @app.timer(interval=s.idle_check_seconds, name="close_idle_windows")
        async def close_idle_windows() -> None:   # 3. the wall clock
            async with self.state_lock:
                await self._send(engine.tick(self.ingest_consumer,
                                             tables_ready=not app.in_recovery))
            self.trimmer.maybe_trim(time.monotonic())

        # 4. Prometheus exposition of this worker; its status page and JSON
        page = importlib.resources.files(f"{__package__}.web").joinpath(
            "status.html").read_bytes()

        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(generate_latest(self.registry),
                             headers={"Content-Type": CONTENT_TYPE_LATEST})

        @app.page("/status")
        async def status_page(web: Any, request: Any) -> Any:
            return web.bytes(page, headers={"Content-Type": "text/html; charset=utf-8"})

        @app.page("/api/status")
        async def status_json(web: Any, request: Any) -> Any:
            return web.bytes(_encoder.encode(engine.status.to_json()),
                             content_type="application/json")

        # 5. partitions move (Faust rebalances eagerly: all revoked, then assigned)
        app.on_partitions_revoked.connect(cast(Any, self._on_revoked))
        app.on_partitions_assigned.connect(cast(Any, self._on_assigned))
        app.on_rebalance_complete.connect(cast(Any, self._on_rebalance_complete))
        app.on_before_shutdown.connect(cast(Any, self._on_shutdown))

    def _agent(self, stream: Stream) -> None:
        engine, order = self.engine, self.order
        name = _AGENTS[stream.name]
        size = engine.metrics.batch_messages.labels(stage=name)
        duration = engine.metrics.batch_duration.labels(stage=name)

        async def agent(messages: Any) -> None:
            async for batch in messages.take_events(max_=self.settings.batch_messages,
                                                    within=self.settings.batch_wait_seconds):
                started = time.perf_counter()
                async with self.state_lock:
                    # messages of a partition given away (a batch taken before a rebalance)
                    # are left to its new owner: neither applied nor acked here; of the
                    # others, those next in their partitions are applied
                    owned = engine.owned[stream.name]
                    hops = order.sort([event.message for event in batch
                                       if event.message.partition in owned],
                                      now_s=time.monotonic())
                    await self._send(engine.apply(stream, hops.apply))
                    # acked once a checkpoint holds their events
                    self.held += hops.apply
                    self.held += hops.applied
                duration.observe(time.perf_counter() - started)
                size.observe(len(batch))
                for tp, (start, end) in hops.gaps.items():
                    await self._gap(tp, start, end, "gap",
                                    "never came, read again time after time")
                if hops.rewind:
                    await self._rewind(hops.rewind)

        self.app.agent(self.out[stream.internal], name=name)(agent)

    async def _send(self, out: Outputs) -> None:
        """Hand the engine's output to the producer, in order; pause what it says.

        Straight to Faust's aiokafka producer, where Faust's own sending ends: its topics'
        ``send`` wraps each message in a pending message, a future and its sensors,
        ~44 µs of CPU a message against aiokafka's ~12 (``python -m bench.sending``), and
        a sliced worker sends a summary per slice window. A checkpoint waits for these as
        for Faust's (``_flush``: the same producer's ``flush``)."""
        send = await self._producer()
        for m in out.messages:
            await send(m.topic, m.value, key=m.key, partition=m.partition, headers=m.headers)
        for topic, partitions in out.pauses.items():
            self.ingest_consumer.pause(topic, partitions)
        if out.checkpoint_soon:
            self.ingest_consumer.commit_soon()

    async def _producer(self) -> Callable[..., Any]:
        """The ``send`` of Faust's aiokafka producer (started if Faust has not yet)."""
        producer: Any = self.app.producer   # (Faust's aiokafka driver)
        if producer._producer is None:
            await producer.maybe_start()
        return cast(Callable[..., Any], producer._ensure_producer().send)

    async def _ingest(self, records: Any) -> None:
        # under the lock until its messages are with the producer: a tick in between would
        # report progress that covers events not handed over yet (the report could overtake
        # them on the internal topic)
        async with self.state_lock:
            await self._send(self.engine.ingest(records, self.ingest_consumer))

    async def _checkpoint(self, positions: Any) -> Write | None:
        """Snapshot the state of every owned partition with the input offsets it holds;
        return what writes it, then acks the repartitioned messages it holds."""
        started = time.perf_counter()
        async with self.state_lock:   # no agent between a change and its output
            point = self.engine.checkpoint(positions, self.app.consumer_generation_id)
            held, self.held = self.held, []
        if point is None and not held:
            return None
        topic = checkpoint_changelog(self.settings)

        async def write() -> None:
            if point is not None:
                produce = await self._producer()

                async def send(partition: int, key: bytes, value: bytes | None) -> None:
                    await produce(topic, value, key=key, partition=partition)

                await point.write(send, self._flush)
            if self.acks is not None:
                self.acks.done(held)
            self.engine.metrics.batch_duration.labels(stage="checkpoint").observe(
                time.perf_counter() - started)

        return write

    async def _flush(self) -> None:
        """Until everything handed to the producer is on the broker (Faust's buffer flush
        may return with messages still queued)."""
        producer = self.app.producer
        while producer.buffer.size:
            await producer.buffer.flush()
        await producer.flush()

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        # stop reading input and checkpoint what was processed before anyone else reads it
        self._rebalances += 1
        self.engine.pause()
        if not (self._membership_lost() or self.ingest_consumer.pauses.stalled()):
            await self.ingest_consumer.assign([])
            return
        # The group dropped this worker (its heartbeat found it unknown: stopped or cut
        # off past its session timeout), or it may have: its partitions have other owners,
        # who restored their last checkpoints and write their own. Writing this state now
        # would put an older one over theirs (or tear the slot their header names). Let
        # it go unwritten; whatever is assigned next is restored from its checkpoint.
        if any(self.engine.owned.values()):
            log.warning("mlpulse: this worker lost (or may have lost) its group membership "
                        "to a pause; its partitions are not checkpointed now, and are "
                        "restored from their checkpoints if assigned again")
        await self.ingest_consumer.assign([], checkpoint=False)
        self.engine.assign({name: set() for name in self.engine.owned})
        self.order.keep_only(())
        self.held = []   # (not acked: read again by whoever restores their partitions)

    def _membership_lost(self) -> bool:
        """Whether Faust's consumer found its member unknown to the group and reset its
        generation (aiokafka does so before it revokes: a kicked member's revocation)."""
        thread = getattr(self.app.consumer, "_thread", None)
        coordinator = getattr(getattr(thread, "_consumer", None), "_coordinator", None)
        return getattr(coordinator, "generation", 0) == UNKNOWN_GENERATION

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        by_topic = {s.internal: s.name for s in self.engine.streams.values()}
        owned: dict[str, set[int]] = collections.defaultdict(set)
        for tp in assigned:
            if tp.topic in by_topic:
                owned[by_topic[tp.topic]].add(tp.partition)
        self.engine.assign(owned)
        self.acks = Acks.install(self.app.consumer, set(by_topic))
        self.ingest_consumer.pauses.member_again()
        self._assigned_in = self._rebalances
        self._internal = {tp for tp in assigned if tp.topic in by_topic}
        self.order.keep_only(self._internal)
        log.info("mlpulse assigned %s", sorted((tp.topic, tp.partition) for tp in assigned
                                                if tp.topic in by_topic))

    async def _on_rebalance_complete(self, sender: Any, **kwargs: Any) -> None:
        # The tables are recovered and Faust has not resumed the agents yet: restore the
        # partitions new here from their checkpoints, then read the input partitions that
        # match the owned ones from the checkpoints' offsets.
        if self._rebalances != self._assigned_in:
            # Faust completed the recovery of an assignment revoked since (seen after a
            # rejoin whose commit failed with IllegalGenerationError: aiokafka synced a
            # stale generation, assigned and revoked within milliseconds): reading input
            # for it would process partitions the group has not given here. The next
            # assignment's recovery reads them.
            log.warning("mlpulse: a recovery completed for an assignment revoked since; "
                        "input is read after the next one")
            return
        engine = self.engine
        restored = set(engine.to_restore())
        # internal partitions new here, or whose state is read from a checkpoint now: from
        # the group's committed offsets (what the checkpoints hold); the others read on
        await self._start_reading([tp for tp in self._internal
                                   if tp.partition in restored or tp not in self.order.next])
        for partition in sorted(restored):
            records: dict[bytes, bytes] = {}
            try:
                point, slot, records = await self.checkpoint_reader.read(partition)
            except (ValueError, KafkaError) as exc:   # never crash on it: start afresh
                log.error("mlpulse: %s; partition %d starts with no windows", exc, partition)
                point, slot = None, 0
            engine.restore(partition, point, slot, records.get)
        counts = {name: await self.ingest_consumer.partitions(name) or 0
                  for name in engine.by_topic}
        reads = engine.reads(counts)
        # from where the state held here ends, not from the group's offsets: those are the
        # state's only if every commit went through (a failed one is logged and left to be
        # read again, which a partition kept here already holds)
        offsets = {TopicPartition(topic, index): offset
                   for (topic, index), offset in engine.starts(reads).items()}
        await self.ingest_consumer.assign([TopicPartition(topic, index)
                                           for topic, index in reads], offsets)
        engine.resume()
        self._refetch = asyncio.ensure_future(self._refetch_after_resume(self._rebalances))

    async def _start_reading(self, tps: list[TP]) -> None:
        """Apply ``tps`` from their committed offsets on (from their first offsets where
        none is committed)."""
        if not tps:
            return
        consumer = self.app.consumer
        try:   # (the seek Faust makes itself next, as it resumes the partitions)
            committed = await consumer.seek_to_committed()  # type: ignore[attr-defined]
            missing = [tp for tp in tps if committed.get(tp) is None]
            first = await consumer.earliest_offsets(*missing) if missing else {}
        except Exception as exc:   # e.g. the assignment changed meanwhile
            log.warning("mlpulse: committed offsets of the internal partitions not read "
                        "(%s); each is applied from the first message it brings", exc)
            committed, first = {}, {}
        for tp in tps:
            offset = committed.get(tp)
            self.order.start(tp, offset if offset is not None else first.get(tp))

    async def _rewind(self, rewind: dict[TP, int]) -> None:
        """Read internal partitions again from their next offsets: Faust's consumer handed
        on messages past them (docs/reliability.md#messages-faust-skips)."""
        consumer, order = self.app.consumer, self.order
        for tp, want in rewind.items():
            if order.next.get(tp) != want:
                continue   # applied on meanwhile
            offset = want
            try:
                # the first time from this offset (a fetch's stale messages each ask again,
                # within a second): is it still in the log? warn, count
                if self._rewound.get(tp) != want:
                    first = (await consumer.earliest_offsets(tp)).get(tp)
                    if first is not None and first > want:   # gone before it was applied
                        await self._gap(tp, want, first, "deleted", "were deleted before "
                                        "they were applied (the topic's retention is "
                                        "shorter than this worker's lag)")
                        order.start(tp, first)
                        offset = first
                    self._rewound[tp] = offset
                    self.engine.metrics.rereads.labels(topic=tp.topic).inc()
                    log.warning("mlpulse: Faust's consumer handed on %s[%d] past offset %d "
                                "(messages it fetched and did not yield): read again from "
                                "there", tp.topic, tp.partition, offset,
                                extra={"topic": tp.topic, "partition": tp.partition})
                await consumer.seek_wait({tp: offset})
            except Exception as exc:   # e.g. no longer assigned here
                log.warning("mlpulse: %s[%d] not read again from offset %d now (%s); the "
                            "next message past it asks again", tp.topic, tp.partition,
                            offset, exc)

    async def _gap(self, tp: TP, start: int, end: int, reason: str, why: str) -> None:
        """Offsets ``start`` to ``end - 1`` of ``tp`` cannot be applied: say so, count them
        (``reason``), and let Faust commit past them."""
        self.engine.metrics.offsets_lost.labels(topic=tp.topic, reason=reason).inc(end - start)
        log.error("mlpulse: offsets %d-%d of %s[%d] %s: their events are lost", start,
                  end - 1, tp.topic, tp.partition, why,
                  extra={"topic": tp.topic, "partition": tp.partition})
        if self.acks is not None:
            await self.acks.gap(tp, start, end - 1)

    async def _refetch_after_resume(self, rebalance: int) -> None:
        """Read the internal partitions again from their committed offsets once Faust has
        resumed the flow after a rebalance.

        Faust's recovery resumes the partitions and seeks them to their committed offsets,
        then resumes flow control, which clears the agents' queues: messages fetched in
        between are dropped unseen and, read past, never fetched again
        (faust-streaming/faust#596). Measured: about 1 rebalance in 25 of bench.crash
        --join 2 lost the events a worker had repartitioned to a partition it kept, just
        before the rebalance (~13% of a window of two models). Everything from the
        committed offset on is read again; what was applied is skipped (InOrder). (Once
        another message of the partition comes, InOrder sees the jump too; this reads them
        again on a partition that stays quiet.)"""
        app = self.app
        while not app.tables.actives_ready:   # set after the flow resumed
            if self._rebalances != rebalance:
                return   # a newer rebalance reads again itself
            await asyncio.sleep(0.05)
        if self._rebalances != rebalance:
            return
        try:
            await app.consumer.perform_seek()
        except Exception as exc:   # e.g. the assignment changed meanwhile
            log.warning("mlpulse: internal partitions not read again after the rebalance "
                        "(%s); the next rebalance does", exc)

    async def _on_shutdown(self, sender: Any, **kwargs: Any) -> None:
        if self._refetch is not None:
            self._refetch.cancel()
        await self.checkpoint_reader.close()

    def _highwater(self, tp: TP) -> int | None:
        if tp.topic in self.engine.by_topic:
            return self.ingest_consumer.highwater(tp)
        try:   # aiokafka asserts the partition is assigned; None before its first fetch
            high = self.app.consumer.highwater(tp)
        except Exception:   # a scrape must never fail on a rebalance
            return None
        return int(high) if high is not None else None


class KeyPartitioner:
    """The producer's partitioner: aiokafka's default (murmur2 of the key, as Kafka's Java
    client hashes it, so that every client agrees), each key's hash remembered. Every
    summary and alert is keyed by its model (or service), and murmur2 in Python cost ~2 µs
    a message: a sliced worker sends a summary per slice window. A message without a key
    goes to a random available partition, as with the default.

    >>> partitions = [0, 1, 2, 3]
    >>> [KeyPartitioner()(key, partitions, partitions) for key in (b"fraud", b"loans")] == [
    ...     DefaultPartitioner()(key, partitions, partitions) for key in (b"fraud", b"loans")]
    True
    """

    def __init__(self, max_keys: int = 65536) -> None:
        self.max_keys = max_keys
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = key_hash(key)
        return all_partitions[hashed % len(all_partitions)]


_AGENTS = {"predictions": "summarize_predictions", "logs": "summarize_logs",
           "feedback": "join_feedback"}
"""Agent (and batch-metric stage) name per stream: labels are joined, not summarized."""

_encoder = msgspec.json.Encoder()


def create_app(settings: Settings) -> faust.App:
    """The Faust app of a worker with ``settings``."""
    return Pipeline(settings).app
