"""BatchConsumer's checkpoint rounds: written in the background, offsets committed after."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from mlpulse.consumer import BEGINNING, BatchConsumer, Pauses

TP = TopicPartition("in", 0)


class FakeKafka:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.append(f"commit {offsets[TP]}")


def consumer_with(log: list[str], checkpoint) -> BatchConsumer:
    async def handle(records) -> None:
        pass

    consumer = BatchConsumer(bootstrap="unused:9092", group_id="g", handle=handle,
                             checkpoint=checkpoint)
    consumer.consumer = FakeKafka(log)  # type: ignore[assignment]
    return consumer


def logging_checkpoint(log: list[str], release: asyncio.Event):
    """Logs its snapshot; its write waits for ``release``, then logs."""
    async def checkpoint(positions):
        log.append(f"snapshot {positions[TP]}")

        async def write() -> None:
            await release.wait()
            log.append(f"written {positions[TP]}")

        return write

    return checkpoint


async def test_a_background_round_commits_after_its_write_and_the_next_waits_for_it():
    log: list[str] = []
    release = asyncio.Event()
    consumer = consumer_with(log, logging_checkpoint(log, release))
    consumer.positions[TP] = consumer._uncommitted[TP] = 10
    await consumer._commit(wait=False)   # returns with the write pending
    await asyncio.sleep(0.01)
    assert log == ["snapshot 10"]        # nothing committed before the write is done

    consumer.positions[TP] = consumer._uncommitted[TP] = 20
    second = asyncio.ensure_future(consumer._commit())   # e.g. a rebalance: waits
    await asyncio.sleep(0.01)
    assert log == ["snapshot 10"]        # no snapshot while the first round writes
    release.set()
    await second
    assert log == ["snapshot 10", "written 10", "commit 10",
                   "snapshot 20", "written 20", "commit 20"]


async def test_a_failed_background_write_surfaces_at_the_next_round():
    log: list[str] = []

    async def checkpoint(positions):
        async def write() -> None:
            raise RuntimeError("broker said no")
        return write

    consumer = consumer_with(log, checkpoint)
    consumer._uncommitted[TP] = 5
    await consumer._commit(wait=False)
    with pytest.raises(RuntimeError, match="broker said no"):
        await consumer._commit()
    assert log == []   # its offsets were never committed


async def test_a_slow_snapshot_spaces_the_next_checkpoints_out():
    async def checkpoint(positions):
        await asyncio.sleep(0.06)   # a large state takes long to snapshot

    consumer = consumer_with([], checkpoint)
    assert consumer.due(1.0)
    await consumer._commit()
    assert consumer._snapshot_s >= 0.06
    assert not consumer.due(1.0)     # 20 × the snapshot: 1.2 s at least
    assert consumer.due(1.3)
    consumer.commit_soon()           # windows closed: sooner, but not before the pause
    assert not consumer.due(1.0) and consumer.due(1.3)


async def test_a_replaced_consumer_reads_on_from_where_its_partitions_were_handled(
        monkeypatch):
    # (on the broker, with the failure that asks for it: tests/integration/
    # test_consumer_on_broker.py::test_two_assignments_in_a_row_leave_the_ingest_reading)
    other, fresh = TopicPartition("in", 1), TopicPartition("in", 2)
    calls: list[tuple] = []

    class Replacement:
        def assign(self, partitions) -> None:
            calls.append(("assign", sorted(partitions)))

        def seek(self, tp, offset) -> None:
            calls.append(("seek", tp.partition, offset))

        def pause(self, *tps) -> None:
            calls.append(("pause", sorted(tp.partition for tp in tps)))

        async def seek_to_beginning(self, *tps) -> None:
            calls.append(("oldest", sorted(tp.partition for tp in tps)))

    async def connect():
        return Replacement()

    monkeypatch.setattr("mlpulse.consumer.REPLACE_PAUSE_S", 0.0)
    consumer = consumer_with([], None)
    consumer.consumer = None   # (the failed one is gone)
    consumer._connect = connect  # type: ignore[method-assign]
    consumer._assigned = [TP, other, fresh]
    consumer._starts = {TP: 5, fresh: BEGINNING}   # `other`: from its committed offset
    consumer.positions[TP] = 12                    # handled up to here
    consumer._paused = {other}                     # held back by event-time alignment
    await consumer._replace(KafkaError("coordination"))
    assert calls == [("assign", [TP, other, fresh]), ("seek", 0, 12), ("oldest", [2]),
                     ("pause", [1])]
    assert consumer._paused == {other} and consumer.positions == {TP: 12}


async def test_no_checkpoint_after_a_pause_longer_than_the_session_timeout():
    """A worker stopped past its session timeout may have new owners for its partitions:
    its checkpoints wait until the group has told (its revocation, or ``stall_s`` more);
    a revocation that finds it dropped lets go of what it handled, unwritten."""
    log: list[str] = []
    release = asyncio.Event()
    release.set()
    consumer = consumer_with(log, logging_checkpoint(log, release))
    pauses = consumer.pauses = Pauses(stall_s=10.0)
    consumer.positions[TP] = consumer._uncommitted[TP] = 5
    consumer._last_commit_s -= 60   # a round is due
    assert consumer._round_due()
    pauses.turn_s = time.monotonic() - 30   # the loop last turned 30 s ago
    assert not consumer._round_due()
    pauses.turned()
    assert not consumer._round_due()
    pauses.held_until_s -= 11   # no revocation came: still a member
    assert consumer._round_due()
    consumer.positions[TP] = consumer._uncommitted[TP] = 9
    consumer._assign = lambda *args: None  # type: ignore[method-assign]
    await consumer.assign([], checkpoint=False)
    assert log == [] and consumer.positions == {} and consumer._uncommitted == {}
