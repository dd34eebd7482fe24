"""The Faust shell's rebalance callbacks (mlpulse.pipeline.Pipeline), without a broker."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

from mlpulse.checkpoint import Checkpoint
from mlpulse.config import Settings
from mlpulse.ownership import BEGINNING
from mlpulse.pipeline import Pipeline


def _pipeline() -> tuple[Pipeline, list[Any]]:
    pipeline = Pipeline(Settings(kafka_bootstrap="127.0.0.1:1"))
    calls: list[Any] = []
    told: dict[Any, int] = {}
    pipeline.told = told  # type: ignore[attr-defined]   (the ingest's start offsets)

    async def assign(partitions: Any, offsets: Any = None, *, checkpoint: bool = True
                     ) -> None:
        calls.append(("ingest reads", sorted(partitions)) if checkpoint
                     else ("ingest reads, no checkpoint", sorted(partitions)))
        told.clear()
        told.update(offsets or {})

    async def partitions(topic: str) -> int:
        return 8   # input partitions i and i + 4 go with internal partition i (of 4)

    async def refetch(rebalance: int) -> None:
        calls.append("refetch")

    async def start_reading(tps: Any) -> None:   # (no committed offsets here)
        if tps:
            calls.append(("start", sorted(tps)))

    pipeline.ingest_consumer.assign = assign  # type: ignore[method-assign]
    pipeline.ingest_consumer.partitions = partitions  # type: ignore[method-assign]
    pipeline._refetch_after_resume = refetch  # type: ignore[method-assign]
    pipeline._start_reading = start_reading  # type: ignore[method-assign]
    pipeline.engine.resume = lambda: calls.append("resume")  # type: ignore[method-assign]
    return pipeline, calls


def test_the_input_is_read_once_the_assignment_is_recovered():
    pipeline, calls = _pipeline()

    async def rebalance() -> None:
        await pipeline._on_revoked(None, set())
        await pipeline._on_assigned(None, set())
        await pipeline._on_rebalance_complete(None)
        await asyncio.sleep(0)

    asyncio.run(rebalance())
    assert calls == [("ingest reads", []), ("ingest reads", []), "resume", "refetch"]


def test_a_recovery_of_an_assignment_revoked_since_reads_nothing():
    # seen in a 3-worker kill test: the commit of a rejoin failed (IllegalGenerationError),
    # aiokafka synced a stale generation, assigned and revoked at once, and Faust still
    # completed the recovery of that assignment; the next assignment's recovery reads
    pipeline, calls = _pipeline()

    async def rebalances() -> list[Any]:
        await pipeline._on_revoked(None, set())
        await pipeline._on_assigned(None, set())
        await pipeline._on_revoked(None, set())   # a new rebalance began
        await pipeline._on_rebalance_complete(None)   # the revoked assignment's
        stale = list(calls)
        await pipeline._on_assigned(None, set())
        await pipeline._on_rebalance_complete(None)
        await asyncio.sleep(0)
        return stale

    stale = asyncio.run(rebalances())
    assert "resume" not in stale and "refetch" not in stale
    assert calls[-2:] == ["resume", "refetch"]


def test_the_input_is_read_from_where_the_state_held_ends_not_from_committed_offsets():
    # the group's committed offsets are the state's only if every commit went through (a
    # failed one is left to be read again, which a partition kept here already holds)
    pipeline, _ = _pipeline()
    internal = pipeline.engine.streams["predictions"].internal
    topic = pipeline.engine.predictions.topic
    empty = pipeline.engine.summarizer.partition_state(1)   # (no windows)
    held = {1: Checkpoint(state=empty, inputs={}, hops={}),
            2: Checkpoint(state=empty, inputs={f"{topic}:2": 40}, hops={}), 3: None}

    async def read(partition: int) -> Any:
        return held[partition], 0, {}

    pipeline.checkpoint_reader.read = read  # type: ignore[method-assign]

    async def rebalance(partitions: set[int]) -> None:
        await pipeline._on_revoked(None, set())
        await pipeline._on_assigned(None, {TP(internal, p) for p in partitions})
        await pipeline._on_rebalance_complete(None)

    def told() -> dict[tuple[str, int], int]:   # the ingest's start offsets of ``topic``
        return {(tp.topic, tp.partition): offset for tp, offset in pipeline.told.items()
                if tp.topic == topic}   # type: ignore[attr-defined]

    asyncio.run(rebalance({1, 2, 3}))
    # internal partition 1's checkpoint names neither of its input partitions 1 and 5:
    # from their beginning; partition 2's names input 2 (6 from its beginning); partition 3
    # had no checkpoint at all: its inputs are left to the committed offsets
    assert told() == {(topic, 1): BEGINNING, (topic, 5): BEGINNING, (topic, 2): 40,
                      (topic, 6): BEGINNING}
    assert all(isinstance(tp, TopicPartition) for tp in pipeline.told)  # type: ignore[attr-defined]

    # partition 2 stays: read on from where its state ends (the last checkpoint's offset)
    pipeline.engine.ownership.read_to({(topic, 2): 75, (topic, 6): 9})
    asyncio.run(rebalance({2}))
    assert told() == {(topic, 2): 75, (topic, 6): 9}


def test_a_worker_the_group_dropped_writes_no_checkpoint_and_restores_what_it_gets_again():
    # a worker stopped past its session timeout wakes up a zombie: its partitions have
    # new owners, who restored their checkpoints; at its revocation it writes nothing
    # (an older state over theirs) and drops its state: a partition it is given again is
    # restored from its checkpoint, not kept
    pipeline, calls = _pipeline()
    internal = pipeline.engine.streams["predictions"].internal
    topic = pipeline.engine.predictions.topic
    empty = pipeline.engine.summarizer.partition_state(2)
    reads: list[int] = []

    async def read(partition: int) -> Any:
        reads.append(partition)
        return Checkpoint(state=empty, inputs={f"{topic}:2": 40}, hops={}), 0, {}

    pipeline.checkpoint_reader.read = read  # type: ignore[method-assign]

    async def rebalance(partitions: set[int]) -> None:
        await pipeline._on_revoked(None, set())
        await pipeline._on_assigned(None, {TP(internal, p) for p in partitions})
        await pipeline._on_rebalance_complete(None)

    asyncio.run(rebalance({2}))
    pipeline.engine.ownership.read_to({(topic, 2): 75, (topic, 6): 9})
    asyncio.run(rebalance({2}))   # a member throughout: kept, read on
    assert reads == [2] and ("ingest reads, no checkpoint", []) not in calls
    pipeline._membership_lost = lambda: True  # type: ignore[method-assign]
    asyncio.run(rebalance({2}))   # dropped meanwhile: restored again
    assert reads == [2, 2]
    assert ("ingest reads, no checkpoint", []) in calls
    assert pipeline.told[TopicPartition(topic, 2)] == 40  # type: ignore[attr-defined]


class _Consumer:
    """What the ordering asks of Faust's consumer: committed and first offsets, seeks."""

    def __init__(self, committed: dict[TP, int | None], first: dict[TP, int]) -> None:
        self.committed, self.first = committed, first
        self.seeks: list[dict[TP, int]] = []
        self.asked_first = 0

    async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
        return {TopicPartition(tp.topic, tp.partition): o for tp, o in self.committed.items()}

    async def earliest_offsets(self, *tps: TP) -> dict[TopicPartition, int]:
        self.asked_first += 1
        return {TopicPartition(tp.topic, tp.partition): self.first[tp] for tp in tps}

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.seeks.append(dict(offsets))


def _with_consumer(committed: dict[int, int | None], first: dict[int, int]
                   ) -> tuple[Pipeline, _Consumer, str]:
    """A pipeline whose Faust consumer is a :class:`_Consumer` of internal partitions."""
    pipeline = Pipeline(Settings(kafka_bootstrap="127.0.0.1:1"))
    internal = pipeline.engine.streams["predictions"].internal
    consumer = _Consumer({TP(internal, p): o for p, o in committed.items()},
                         {TP(internal, p): o for p, o in first.items()})
    pipeline.app.consumer = consumer  # type: ignore[assignment]
    return pipeline, consumer, internal


def test_internal_partitions_are_applied_from_their_committed_offsets_or_their_start():
    pipeline, _, internal = _with_consumer({0: 42, 1: None}, {1: 3})
    a, b = TP(internal, 0), TP(internal, 1)
    asyncio.run(pipeline._start_reading([a, b]))
    assert pipeline.order.next == {a: 42, b: 3}


def test_a_partition_faust_handed_on_past_its_next_offset_is_read_again(caplog):
    pipeline, consumer, internal = _with_consumer({}, {2: 0})
    tp = TP(internal, 2)
    pipeline.order.start(tp, 10)
    with caplog.at_level("WARNING", logger="mlpulse.pipeline"):
        asyncio.run(pipeline._rewind({tp: 10}))
        asyncio.run(pipeline._rewind({tp: 10}))   # (stale messages keep coming: warned once)
        asyncio.run(pipeline._rewind({tp: 9}))   # applied on meanwhile: nothing to do
    assert consumer.seeks == [{tp: 10}, {tp: 10}]
    assert consumer.asked_first == 1   # (the log's start, asked once per offset)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and f"{internal}[2] past offset 10" in warned[0], warned
    assert pipeline.registry.get_sample_value(
        "mlpulse_internal_rereads_total", {"topic": internal}) == 1


def test_offsets_deleted_before_they_were_applied_are_reported_and_passed(caplog):
    # the topic's retention took them (a worker far behind): nothing can read them again;
    # the loss is logged, Faust may commit past them, and the partition reads on
    pipeline, consumer, internal = _with_consumer({}, {2: 15})
    tp = TP(internal, 2)
    gaps: list[tuple[TP, int, int]] = []

    class Acks:
        async def gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
            gaps.append((tp, offset_from, offset_to))

    pipeline.acks = Acks()  # type: ignore[assignment]
    pipeline.order.start(tp, 10)
    with caplog.at_level("ERROR", logger="mlpulse.pipeline"):
        asyncio.run(pipeline._rewind({tp: 10}))
    assert gaps == [(tp, 10, 14)] and pipeline.order.next[tp] == 15
    assert consumer.seeks == [{tp: 15}]
    assert any("offsets 10-14" in r.getMessage() and r.levelname == "ERROR"
               for r in caplog.records)
    assert pipeline.registry.get_sample_value(
        "mlpulse_internal_offsets_lost_total", {"topic": internal, "reason": "deleted"}) == 5
