"""Input topics read in whole fetches by a plain aiokafka consumer.

Faust hands a stream one message at a time and spends ~85 µs on each (measured:
the per-message task and future juggling in its consumer loop, events, acks,
sensors). The ingest stage does not need Faust's streams: a
:class:`BatchConsumer` takes everything a ``getmany`` returns, hands it to
``handle`` as one batch and, every ``commit_interval_s``, hands the positions it reached
to ``checkpoint`` (which snapshots the state ``handle`` built with them and returns what
makes it and ``handle``'s output durable) before it commits those offsets. The writing
and the commit (~3 broker round trips) go on in the background while fetches are
handled; a rebalance or a stop waits for them.

Which input partitions a worker reads is decided by Faust's consumer group: the
pipeline assigns it (:meth:`~BatchConsumer.assign`) the input partitions that match the
internal partitions Faust gave the worker, so a model's events mostly arrive on
the worker that owns its windows. Offsets are committed under ``<group>-ingest``, after
the checkpoint that holds them; a reader resumes from the offsets it is told (where the
state it holds ends: a checkpoint's, or ``BEGINNING``), the committed ones only where it is
told none (a start without any checkpoint). On every rebalance the consumer checkpoints
and commits first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from .ownership import BEGINNING

__all__ = ["BEGINNING", "BatchConsumer", "Pauses", "TakeCheckpoint", "Write"]

log = logging.getLogger("mlpulse.consumer")

FETCHER_TURNS = 5
"""Event-loop turns given to aiokafka's fetcher between a ``getmany`` and handling its
records: enough for it to wake up and put the next fetch request on the wire."""

SOON_FRACTION = 4
PAUSE_FACTOR = 20
"""A checkpoint follows the last one no sooner than this many times as long as the last
one's snapshot took: snapshots (every open window's state, under the state lock) then
take at most ~5% of the worker's time, however much state it holds (Flink's minimum pause
between checkpoints, set by what they cost), and no later than ``MAX_PAUSE_S``."""
MAX_PAUSE_S = 15.0
"""A checkpoint asked for soon (:meth:`BatchConsumer.commit_soon`) comes a quarter of the
commit interval after the last one at the earliest. Under load windows close all the time:
a round every tenth of the interval (written in the foreground then) cost ~10% of the
events/s of ``make bench`` (102k -> 114k at a quarter)."""

REPLACE_PAUSE_S = 1.0
"""Wait before a failed aiokafka consumer is replaced (:meth:`BatchConsumer._replace`)."""

Handler = Callable[[Sequence[Any]], Awaitable[None]]
Write = Callable[[], Awaitable[None]]
TakeCheckpoint = Callable[[Mapping[TopicPartition, int]], Awaitable[Write | None]]
"""Takes a checkpoint's snapshot (of the state the handled records built, with their
positions) and returns what writes it (None: nothing to write)."""


class Pauses:
    """Whether a pause of the ingest loop may have cost the worker its partitions. A worker
    stopped past its group session timeout (``stall_s``: SIGSTOP, a paused VM, swapping)
    wakes up a zombie: the group gave its partitions to others, whose checkpoints it must
    not overwrite. Its heartbeat fails within a third of the timeout and its partitions are
    revoked; until then, and ``stall_s`` at most, it does not checkpoint (:meth:`stalled`).

    >>> pauses = Pauses(stall_s=10.0)
    >>> pauses.stalled()   # (the loop has not started)
    False
    >>> pauses.turn_s = time.monotonic() - 30   # the loop stopped 30 s ago
    >>> pauses.stalled(), (pauses.turned(), pauses.stalled())[1]
    (True, True)
    >>> pauses.held_until_s -= 11   # 11 s on, no revocation came: still a member
    >>> pauses.stalled()
    False
    """

    def __init__(self, stall_s: float | None) -> None:
        self.stall_s = stall_s
        self.turn_s: float | None = None
        """When the loop last turned (None: it has not started)."""
        self.held_until_s = 0.0
        """Until when checkpoints wait after a pause."""

    def turned(self) -> None:
        """The loop turns: after a pause longer than ``stall_s``, checkpoints wait."""
        now_s = time.monotonic()
        if (self.stall_s is not None and self.turn_s is not None
                and now_s - self.turn_s > self.stall_s):
            self.held_until_s = now_s + self.stall_s
            log.warning("the ingest loop did not turn for %.1f s (the process stopped or "
                        "starved, or one long fetch), longer than the group's session "
                        "timeout: no checkpoint for %.1f s, until the group tells whether "
                        "this worker still owns its partitions", now_s - self.turn_s,
                        self.stall_s)
        self.turn_s = now_s

    def member_again(self) -> None:
        """The group assigned this worker partitions since: its checkpoints need not wait."""
        self.held_until_s = 0.0
        if self.turn_s is not None:
            self.turn_s = time.monotonic()

    def stalled(self) -> bool:
        """Whether the worker may have lost its partitions to a pause: the loop has not
        turned for longer than ``stall_s``, or did so less than ``stall_s`` ago."""
        if self.stall_s is None or self.turn_s is None:
            return False
        now_s = time.monotonic()
        return now_s - self.turn_s > self.stall_s or now_s < self.held_until_s


class BatchConsumer:
    """``handle`` every fetch of the assigned partitions; commit after ``checkpoint``."""

    def __init__(
        self, *, bootstrap: str, group_id: str, handle: Handler,
        checkpoint: TakeCheckpoint, max_records: int = 2000,
        max_fetch_bytes: int = 1024 * 1024, commit_interval_s: float = 1.0,
        close_timeout_s: float = 5.0, kafka: Mapping[str, Any] | None = None,
        stall_s: float | None = None,
    ) -> None:
        self.close_timeout_s = close_timeout_s
        self.pauses = Pauses(stall_s)
        """Whether a pause of this consumer's loop may have cost the worker its partitions
        (``stall_s``: the group's session timeout; None: never)."""
        self.handle = handle
        self.checkpoint = checkpoint
        self.max_records = max_records
        self.commit_interval_s = commit_interval_s
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap, "group_id": group_id, "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            # bounded fetches bound what a backlog holds in memory; a message larger than
            # either limit still comes, alone (KIP-74). Per partition a quarter of the
            # total, so that a fetch of a backlog carries four partitions, not one: they
            # move on in event time together (windows wait for the slowest, mlpulse.progress),
            # where 1 MiB each read one partition at a time and the others waited
            "fetch_max_bytes": max_fetch_bytes,
            "max_partition_fetch_bytes": max(min(max_fetch_bytes, 1024 * 1024) // 4,
                                             64 * 1024),
            **(kafka or {}),
        }
        self.consumer: AIOKafkaConsumer | None = None
        self.positions: dict[TopicPartition, int] = {}
        """Next offset to process per owned partition."""
        self._uncommitted: dict[TopicPartition, int] = {}
        self._assigned: list[TopicPartition] = []
        self._paused: set[TopicPartition] = set()
        self._starting = asyncio.Lock()
        self._handling = asyncio.Lock()
        """Held while a fetch is handled and while a checkpoint is taken: a rebalance
        checkpoints between fetches, never in the middle of one."""
        self._generation = 0
        """Counts assignments: a fetch that straddles one is dropped (read again)."""
        self._starts: dict[TopicPartition, int] = {}
        """Where the assignment reads each partition from (absent: its committed offset)."""
        self._last_commit_s = time.monotonic()
        self._commit_soon = False
        self._snapshot_s = 0.0
        """How long the last checkpoint's snapshot took (see ``PAUSE_FACTOR``)."""
        self._writing: asyncio.Future[None] | None = None
        """The checkpoint round writing in the background, if any."""
        self.started = asyncio.Event()

    async def run(self) -> None:
        """Consume what is assigned until cancelled; commit what was processed on the way
        out."""
        consumer = await self._start()
        pauses = self.pauses
        try:
            while True:
                pauses.turned()
                if not self._assigned:
                    await asyncio.sleep(0.05)
                else:
                    generation = self._generation
                    try:
                        batches = await consumer.getmany(timeout_ms=200,
                                                         max_records=self.max_records)
                    except KafkaError as exc:
                        consumer = await self._replace(exc)
                        continue
                    if batches:
                        # a few loop turns first, so that aiokafka's fetcher task sends
                        # the next fetch now and the broker answers while this one is
                        # handled (handling never yields)
                        for _ in range(FETCHER_TURNS):
                            await asyncio.sleep(0)
                    failed: KafkaError | None = None
                    async with self._handling:
                        if generation != self._generation:
                            # reassigned meanwhile: getmany may have waited for the new
                            # assignment and returned its first records, its positions
                            # moved past them; they are read again from its starts
                            try:
                                await self._seek_starts(consumer, [tp for tp in batches
                                                                   if tp in self._assigned])
                            except KafkaError as exc:
                                failed = exc
                            batches = {}
                        records = [r for rs in batches.values() for r in rs]
                        if records:
                            await self.handle(records)
                            for tp, rs in batches.items():
                                self._uncommitted[tp] = rs[-1].offset + 1
                                self.positions[tp] = rs[-1].offset + 1
                    if failed is not None:
                        consumer = await self._replace(failed)
                        continue
                # a checkpoint even with no input of its own: state also comes from the
                # repartitioned topics
                if self._round_due():
                    async with self._handling:
                        await self._commit(wait=False)
        finally:
            # a last commit, but never hang a shutdown on a broker that is gone: what was
            # not committed is read again (at-least-once)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._close()), self.close_timeout_s)

    async def _start(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self.consumer is not None:
                return self.consumer
            return await self._connect()

    async def _connect(self) -> AIOKafkaConsumer:
        while True:
            consumer = AIOKafkaConsumer(**self._options)
            try:
                await consumer.start()
                break
            except KafkaError as exc:   # the broker is not up yet: keep trying
                await consumer.stop()
                log.warning("ingest consumer cannot start (%s); retrying", exc)
                await asyncio.sleep(1.0)
        self.consumer = consumer
        self.started.set()
        return consumer

    def _round_due(self) -> bool:
        """Whether the loop checkpoints now: one is :meth:`due`, the last one's writing is
        done, and no pause may have cost this worker its partitions (:meth:`Pauses.stalled`)."""
        return (self.due(time.monotonic() - self._last_commit_s)
                and (self._writing is None or self._writing.done())
                and not self.pauses.stalled())

    def due(self, since_s: float) -> bool:
        """Whether a checkpoint is due ``since_s`` after the last: the interval is over (a
        quarter of it if :meth:`commit_soon` asked), and so is the pause the last
        snapshot's duration sets (``PAUSE_FACTOR``).

        >>> c = BatchConsumer(bootstrap="unused", group_id="g", handle=None, checkpoint=None)
        >>> c.due(0.5), c.due(1.0)
        (False, True)
        >>> c._snapshot_s = 0.1   # a large state: 0.1 s a snapshot
        >>> c.due(1.0), c.due(2.0)
        (False, True)
        """
        pause_s = min(PAUSE_FACTOR * self._snapshot_s, MAX_PAUSE_S)
        if self._commit_soon:
            return since_s >= max(self.commit_interval_s / SOON_FRACTION, pause_s)
        return since_s >= max(self.commit_interval_s, pause_s)

    def commit_soon(self) -> None:
        """Checkpoint and commit before the interval is over (e.g. windows were emitted:
        the sooner a checkpoint follows, the fewer a crash has emitted again)."""
        self._commit_soon = True

    async def _commit(self, *, wait: bool = True) -> None:
        """Checkpoint, then commit the offsets the checkpoint holds. The checkpoint's
        snapshot is taken now; with ``wait=False`` its writing and the commit go on in
        the background while fetches are handled (the next round waits for them)."""
        await self._settle()
        self._commit_soon = False
        started_s = time.monotonic()
        write = await self.checkpoint(dict(self.positions))
        self._snapshot_s = time.monotonic() - started_s
        offsets, self._uncommitted = self._uncommitted, {}
        self._last_commit_s = time.monotonic()
        finish = self._finish(write, offsets)
        if wait:
            await finish
        else:
            self._writing = asyncio.ensure_future(finish)

    async def _settle(self) -> None:
        """Until the round writing in the background is done (raising its error, if any)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def _finish(self, write: Write | None, offsets: dict[TopicPartition, int]) -> None:
        if write is not None:
            await write()   # the state and output of the handled records are durable first
        if not offsets:
            return
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:   # e.g. a rebalance in between: replayed, not lost
            log.warning("ingest commit failed (%s); those records will be read again", exc)

    async def _close(self) -> None:
        if self.consumer is None:
            return
        async with self._handling:
            if not self.pauses.stalled():   # (else its partitions may have other owners)
                await self._commit()
        await self.consumer.stop()

    # ------------------------------------------------------------ assignment

    async def partitions(self, topic: str) -> int | None:
        """Number of partitions of ``topic`` (None if unknown)."""
        consumer = await self._start()
        known = consumer.partitions_for_topic(topic)
        if not known:
            await consumer.topics()   # refresh metadata
            known = consumer.partitions_for_topic(topic)
        return len(known) if known else None

    async def assign(self, partitions: Sequence[TopicPartition],
                     offsets: Mapping[TopicPartition, int] | None = None, *,
                     checkpoint: bool = True) -> None:
        """Read exactly ``partitions`` from now on, those in ``offsets`` from there
        (``BEGINNING``: the oldest offset it has), the others from their committed offsets
        (checkpointing and committing first; with ``checkpoint=False`` neither: what was
        handled since the last checkpoint is let go, and read again by whoever restores
        it)."""
        if self.consumer is None and not partitions:
            return
        async with self._handling:
            consumer = await self._start()
            if checkpoint:
                await self._commit()
            else:
                await self._settle()
                self._uncommitted = {}
                self.positions.clear()
            self._assign(consumer, partitions, offsets or {})
            try:
                await self._seek(consumer, self._starts)
            except KafkaError as exc:   # a failed consumer: run() replaces it, and seeks
                log.warning("ingest consumer cannot seek (%s)", exc)
        log.info("mlpulse ingest reads %s", sorted((tp.topic, tp.partition)
                                                   for tp in self._assigned))

    async def _seek(self, consumer: AIOKafkaConsumer,
                    starts: Mapping[TopicPartition, int]) -> None:
        """Seek assigned partitions to ``starts`` (``BEGINNING``: their oldest offset); the
        offsets go first, before any wait (a fetch would read from committed ones)."""
        oldest = []
        for tp, start in starts.items():
            if start == BEGINNING:
                self.positions.pop(tp, None)
                oldest.append(tp)
            else:
                consumer.seek(tp, start)
                self.positions[tp] = start
        if oldest:
            await consumer.seek_to_beginning(*oldest)

    async def _replace(self, exc: Exception) -> AIOKafkaConsumer:
        """A new aiokafka consumer in place of one that failed, reading the same partitions
        on from where they were handled (else from the assignment's starts). Seen: two
        assignments in a row while aiokafka's coordinator routine looked the coordinator up
        (at a start, or after losing the broker) killed that routine (an assertion), and
        every later fetch raised."""
        log.error("ingest consumer failed (%s); replacing it", exc)
        await asyncio.sleep(REPLACE_PAUSE_S)   # (an error that persists: one a second)
        async with self._handling:
            failed, self.consumer = self.consumer, None
            if failed is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(failed.stop(), self.close_timeout_s)
                # its dead coordinator task's error is taken (aiokafka's close skips a done
                # task): left, asyncio logs it when the task is collected, wherever that is
                task = getattr(getattr(failed, "_coordinator", None), "_coordination_task",
                               None)
                if task is not None and task.done() and not task.cancelled():
                    task.exception()
            consumer = await self._connect()
            paused = self._paused
            self._assign(consumer, list(self._assigned), {**self._starts, **self.positions})
            await self._seek(consumer, self._starts)
            if paused:   # (event-time alignment's pauses hold)
                consumer.pause(*paused)
                self._paused = paused
        return consumer

    async def _seek_starts(self, consumer: AIOKafkaConsumer,
                           partitions: Sequence[TopicPartition]) -> None:
        """Seek ``partitions`` (assigned, nothing of them handled since) back to where
        this assignment reads them from."""
        starts = {}
        for tp in partitions:
            start = self._starts.get(tp)
            if start is None:   # the committed offset; never committed: the oldest
                committed = await consumer.committed(tp)
                start = BEGINNING if committed is None else committed
            starts[tp] = start
        await self._seek(consumer, starts)

    def _assign(self, consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition],
                offsets: Mapping[TopicPartition, int]) -> None:
        self._assigned = list(partitions)
        self._starts = {tp: offsets[tp] for tp in self._assigned if tp in offsets}
        self._paused = set()
        self._generation += 1
        for tp in [tp for tp in self.positions if tp not in self._assigned]:
            del self.positions[tp]   # in place: the lag metric holds this dict
        if self._assigned:   # (sought to their starts by the caller: _seek)
            consumer.assign(self._assigned)
        else:
            consumer.unsubscribe()

    @property
    def assigned(self) -> list[TopicPartition]:
        """The input partitions read now."""
        return list(self._assigned)

    def reading(self, topic: str) -> list[int]:
        """The partitions of ``topic`` read now."""
        return [tp.partition for tp in self._assigned if tp.topic == topic]

    def pause(self, topic: str, partitions: set[int]) -> None:
        """Fetch nothing of exactly these partitions of ``topic`` (the others of it are
        resumed): event-time alignment (mlpulse.progress). Fetched records of a paused
        partition are dropped by aiokafka, and fetched again on resume."""
        if self.consumer is None:
            return
        want = {tp for tp in self._assigned if tp.topic == topic and tp.partition in partitions}
        mine = {tp for tp in self._paused if tp.topic == topic}
        if want == mine:
            return
        if want - mine:
            self.consumer.pause(*(want - mine))
        if mine - want:
            self.consumer.resume(*(mine - want))
        self._paused = (self._paused - mine) | want
        log.debug("mlpulse ingest pauses %s", sorted(tp.partition for tp in want))

    def caught_up(self, topic: str, partition: int) -> bool:
        """Whether everything the partition held at its last fetch response has been
        handled."""
        if self.consumer is None:
            return False
        tp = TopicPartition(topic, partition)
        if tp not in self._assigned:
            return False
        try:
            high = self.consumer.highwater(tp)
        except (AssertionError, KeyError, AttributeError):
            return False
        if high is None:
            return False
        position = self.positions.get(tp)
        if position is None:   # nothing handled yet: where the consumer would read next
            try:
                state = self.consumer._subscription.subscription.assignment.state_value(tp)
                position = state.position if state.has_valid_position else None
            except AttributeError:
                return False
        return position is not None and position >= high

    def highwater(self, tp: Any) -> int | None:
        """High watermark of an owned partition (None before its first fetch)."""
        if self.consumer is None:
            return None
        try:
            high = self.consumer.highwater(TopicPartition(tp.topic, tp.partition))
        except (AssertionError, KeyError, AttributeError):
            return None
        return int(high) if high is not None else None
