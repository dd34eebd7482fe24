"""Repartitioned messages in offset order (mlpulse.ordering), and Faust's own consumer
made to commit no internal offset mlpulse has not called done."""

from __future__ import annotations

import asyncio
import collections
import random

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from mlpulse.config import Settings
from mlpulse.ordering import Acks, InOrder
from mlpulse.pipeline import Pipeline

Message = collections.namedtuple("Message", "tp offset")


class SkippingLog:
    """A live partition read as Faust's consumer may read it: fetches of a few messages,
    some of which it drops unyielded once while its position moves past them; a seek
    (``rewind``) makes it read on from there. Messages already fetched (in ``stale``) still
    come after a seek, as Faust's drain loop goes on with its batch."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.position = 0
        self.dropped: set[int] = set()
        self.stale: list[int] = []

    def fetch(self) -> list[int]:
        if self.stale:
            out, self.stale = self.stale, []
            return out
        count = self.rng.randint(1, 6)
        out = []
        for offset in range(self.position, self.position + count):
            if offset not in self.dropped and self.rng.random() < 0.15:
                self.dropped.add(offset)   # fetched, never yielded; read past
                continue
            out.append(offset)
        self.position += count
        if out and self.rng.random() < 0.3:   # a seek lands mid-batch: the rest comes later
            cut = self.rng.randrange(len(out))
            out, self.stale = out[:cut], out[cut:]
        return out

    def rewind(self, offset: int) -> None:
        self.position = offset


@pytest.mark.parametrize("seed", range(20))
def test_every_offset_is_applied_once_in_order_however_faust_skips(seed):
    # (a skipped message is read again once a later one comes: on the worker, the
    # ingest's progress reports keep coming, and a rebalance reads again from committed)
    rng = random.Random(seed)
    log = SkippingLog(rng)
    order, applied = InOrder(), []
    order.start("p", 0)
    for _ in range(10_000):
        batch = order.sort([Message("p", o) for o in log.fetch()])
        applied += [m.offset for m in batch.apply]
        if "p" in batch.rewind:
            log.rewind(batch.rewind["p"])
        if len(applied) >= 200:
            break
    assert applied == list(range(len(applied))) and len(applied) >= 200
    assert log.dropped   # (the log did skip)


def test_a_partition_already_applied_is_skipped_and_others_go_on():
    order = InOrder()
    order.start("a", 5)
    batch = order.sort([Message("a", 3), Message("b", 40), Message("a", 5), Message("b", 41),
                        Message("a", 7), Message("a", 8)])
    assert [m.offset for m in batch.apply] == [40, 5, 41]   # (as fetched)
    assert [m.offset for m in batch.applied] == [3]
    assert [m.offset for m in batch.past] == [7, 8] and batch.rewind == {"a": 6}
    order.keep_only({"a"})
    assert order.next == {"a": 6}


def _consumer_and_topic() -> tuple[object, str]:
    pipeline = Pipeline(Settings(kafka_bootstrap="127.0.0.1:1"))
    topic = pipeline.engine.streams["predictions"].internal
    pipeline.app.topics.acking_topics.add(topic)   # (as once its agents run)
    return pipeline.app.consumer, topic


def _messages(topic: str, offsets: range) -> list[ConsumerMessage]:
    return [ConsumerMessage(topic, 0, o, 0.0, 0, None, None, b"", None) for o in offsets]


def test_faust_commits_an_internal_offset_only_once_mlpulse_calls_it_done():
    consumer, topic = _consumer_and_topic()
    tp = TP(topic, 0)
    consumer._committed_offset[tp] = 0   # type: ignore[attr-defined]
    # as it is: Faust's stream acks what it hands on (or drops), and the jump to offset 9
    # past 3-8 (fetched, never yielded) counts as acknowledged: its commit passes them
    messages = _messages(topic, range(10))
    for message in messages[:3] + messages[9:]:
        message.ack(consumer)   # type: ignore[arg-type]
    asyncio.run(consumer._add_gap(tp, 3, 9))   # type: ignore[attr-defined]
    assert consumer._new_offset(tp) == 10   # type: ignore[attr-defined]

    consumer, topic = _consumer_and_topic()
    tp = TP(topic, 0)
    consumer._committed_offset[tp] = 0   # type: ignore[attr-defined]
    acks = Acks.install(consumer, {topic})
    messages = _messages(topic, range(10))
    for message in messages:
        message.ack(consumer)   # type: ignore[arg-type]
    asyncio.run(consumer._add_gap(tp, 3, 9))   # type: ignore[attr-defined]
    assert consumer._new_offset(tp) is None   # type: ignore[attr-defined]
    acks.done(messages[:4])   # a checkpoint holds their events
    assert consumer._new_offset(tp) == 4   # type: ignore[attr-defined]
    asyncio.run(acks.gap(tp, 4, 6))   # deleted from the log before they were applied
    acks.done(messages[7:9])
    assert consumer._new_offset(tp) == 9   # type: ignore[attr-defined]


def test_other_topics_keep_faust_acks():
    consumer, topic = _consumer_and_topic()
    other = TP("mlpulse-detectors-changelog", 0)
    consumer.app.topics.acking_topics.add(other.topic)   # type: ignore[attr-defined]
    consumer._committed_offset[other] = 0   # type: ignore[attr-defined]
    Acks.install(consumer, {topic})
    for message in _messages(other.topic, range(3)):
        message.ack(consumer)   # type: ignore[arg-type]
    assert consumer._new_offset(other) == 3   # type: ignore[attr-defined]


def test_a_gap_is_taken_only_from_a_partition_read_again_time_after_time():
    # stale messages of a fetch keep coming right after a seek: many asks, no gap
    order = InOrder(gap_seconds=30.0)
    order.start("p", 10)
    for k in range(20):
        assert not order.sort([Message("p", 11 + k)], now_s=k * 0.01).gaps
    assert [m.offset for m in order.sort([Message("p", 10)], now_s=1.0).apply] == [10]
    # offset 11 never comes, over 30 s: the log lacks it; the gap ends where the first
    # message past it is, whatever the batch that shows it last brings
    batches = [order.sort([Message("p", offset)], now_s=now_s)
               for now_s, offset in ((2, 12), (10, 40), (20, 12), (30, 50), (33, 60))]
    assert [b.gaps for b in batches] == [{}, {}, {}, {}, {"p": (11, 12)}]
    assert batches[-1].rewind == {"p": 12} and order.next == {"p": 12}
