"""Where the ingest consumer starts reading, on the real broker (its checkpoint rounds:
tests/unit/test_consumer.py)."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from mlpulse.consumer import BEGINNING, BatchConsumer


async def _read_from(bootstrap: str, group: str, tp: TopicPartition,
                     offsets: dict[TopicPartition, int], until: int) -> list[int]:
    """The offsets a BatchConsumer told ``offsets`` hands over, until it has seen ``until``."""
    seen: list[int] = []

    async def handle(records) -> None:
        seen.extend(r.offset for r in records)

    async def checkpoint(positions):
        return None

    consumer = BatchConsumer(bootstrap=bootstrap, group_id=group, handle=handle,
                             checkpoint=checkpoint)
    task = asyncio.ensure_future(consumer.run())
    try:
        await consumer.assign([tp], offsets)
        async with asyncio.timeout(20):
            while not seen or seen[-1] < until:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return seen


async def test_a_reader_told_beginning_reads_what_the_group_committed_past(settings, topics):
    # A partition restored from a checkpoint that names no offset of one of its input
    # partitions holds none of its events: that input is read from its beginning, even if
    # the ingest group's committed offset is ahead (seen in a 3-worker kill test: 70
    # messages read by a worker killed before its checkpoint were never counted).
    tp = TopicPartition(topics.predictions, 0)
    group = f"{settings.group_id}-ingest"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(30):
            await producer.send(tp.topic, f"{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()

    async def commit(offset: int) -> None:
        committer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                     group_id=group, enable_auto_commit=False)
        await committer.start()
        try:
            committer.assign([tp])
            await committer.commit({tp: offset})
        finally:
            await committer.stop()

    await commit(20)
    told = await _read_from(settings.kafka_bootstrap, group, tp, {tp: BEGINNING}, until=29)
    assert told == list(range(30))
    await commit(20)   # (the reader committed what it read as it stopped)
    untold = await _read_from(settings.kafka_bootstrap, group, tp, {}, until=29)
    assert untold == list(range(20, 30))   # what it was: the committed offset


async def test_a_fetch_that_spans_a_new_assignment_is_read_again(settings, topics):
    # A rebalance's assignment can come while the ingest waits in aiokafka's getmany
    # (records of the old one woke it, or it waits for an assignment once the partitions
    # were taken): getmany then returns the new assignment's first records, its position
    # moved past them, and the ingest drops a fetch that spans an assignment. Seen in
    # 3-worker kill tests: one fetch's worth of messages lost (18 in the middle of a
    # partition kept across a rebalance; 70 from the beginning of one given with no offset).
    # Here the fetch is held until the new assignment is in, then goes to the broker.
    tp = TopicPartition(topics.predictions, 0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(30):
            await producer.send(tp.topic, f"{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    seen: list[int] = []

    async def handle(records) -> None:
        seen.extend(r.offset for r in records)

    async def checkpoint(positions):
        return None

    consumer = BatchConsumer(bootstrap=settings.kafka_bootstrap,
                             group_id=f"{settings.group_id}-ingest", handle=handle,
                             checkpoint=checkpoint)
    kafka = await consumer._start()
    fetch, held, gate = kafka.getmany, asyncio.Event(), asyncio.Event()

    async def spanning(*args, **kwargs):   # the next fetch waits for the gate
        if not held.is_set():
            held.set()
            await gate.wait()
        return await fetch(*args, **kwargs)

    kafka.getmany = spanning  # type: ignore[method-assign]
    task = asyncio.ensure_future(consumer.run())
    try:
        await consumer.assign([tp], {tp: 30})   # nothing to read; its fetch is held
        await held.wait()
        await asyncio.sleep(0.5)   # (aiokafka's coordinator takes the first one in)
        await consumer.assign([tp], {tp: 10})   # the new assignment: from offset 10
        gate.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while not seen or seen[-1] < 29:
                    await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seen == list(range(10, 30))


async def test_two_assignments_in_a_row_leave_the_ingest_reading(settings, topics):
    # Two assignments while aiokafka's coordinator routine looks the coordinator up (at a
    # start, or after losing the broker) kill that routine (an assertion in aiokafka
    # 0.14.0): every later fetch raised and the ingest stopped reading for good. A failed
    # consumer is now replaced and reads on from where the assignment says.
    tp = TopicPartition(topics.predictions, 0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(30):
            await producer.send(tp.topic, f"{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    seen: list[int] = []

    async def handle(records) -> None:
        seen.extend(r.offset for r in records)

    async def checkpoint(positions):
        return None

    consumer = BatchConsumer(bootstrap=settings.kafka_bootstrap,
                             group_id=f"{settings.group_id}-ingest", handle=handle,
                             checkpoint=checkpoint)
    task = asyncio.ensure_future(consumer.run())
    try:
        await consumer.assign([tp], {tp: 30})
        await consumer.assign([tp], {tp: 10})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while (not seen or seen[-1] < 29) and not task.done():
                    await asyncio.sleep(0.05)
        assert not task.done(), task.exception()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seen == list(range(10, 30))
