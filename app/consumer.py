"""Input topics read in whole fetches by a plain aiokafka consumer group.

Faust hands a stream one message at a time and spends ~85 µs on each (measured:
the per-message task and future juggling in its consumer loop, events, acks,
sensors). The ingest stage is stateless — decode, validate, route — so it does
not need Faust's streams: a :class:`BatchConsumer` takes everything a
``getmany`` returns, hands it to ``handle`` as one batch, and commits offsets
only after ``flush`` returned (everything ``handle`` produced is then on the
broker: at-least-once, as before). It is still a Kafka consumer group
(``<group>-ingest``): partitions of the input topics split among workers, and
move on a crash or a new worker, committed offsets first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

__all__ = ["BatchConsumer"]

log = logging.getLogger("mlpulse.consumer")

Handler = Callable[[Sequence[Any]], Awaitable[None]]


class BatchConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    """``handle`` every fetch of ``topics``; commit after ``flush``."""

    def __init__(
        self, *, bootstrap: str, group_id: str, topics: Sequence[str], handle: Handler,
        flush: Callable[[], Awaitable[None]], max_records: int = 2000,
        max_fetch_bytes: int = 16 * 1024 * 1024, commit_interval_s: float = 1.0,
        session_timeout_ms: int = 10_000,
    ) -> None:
        self.topics = list(topics)
        self.handle = handle
        self.flush = flush
        self.max_records = max_records
        self.commit_interval_s = commit_interval_s
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap, "group_id": group_id, "enable_auto_commit": False,
            "auto_offset_reset": "earliest", "max_partition_fetch_bytes": max_fetch_bytes,
            "fetch_max_bytes": max(max_fetch_bytes, 52_428_800),
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": max(session_timeout_ms // 5, 500),
            "max_poll_interval_ms": 300_000,
        }
        self.consumer: AIOKafkaConsumer | None = None
        self.positions: dict[TopicPartition, int] = {}
        """Next offset to process per owned partition."""
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit_s = time.monotonic()
        self.started = asyncio.Event()

    async def run(self) -> None:
        """Consume until cancelled; commit what was processed on the way out."""
        consumer = await self._start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
                records = [r for rs in batches.values() for r in rs]
                if records:
                    await self.handle(records)
                    for tp, rs in batches.items():
                        self._uncommitted[tp] = self.positions[tp] = rs[-1].offset + 1
                if self._uncommitted and (
                        time.monotonic() - self._last_commit_s >= self.commit_interval_s):
                    await self._commit()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._close())

    async def _start(self) -> AIOKafkaConsumer:
        while True:
            consumer = AIOKafkaConsumer(**self._options)
            try:
                await consumer.start()
                break
            except KafkaError as exc:   # the broker is not up yet: keep trying
                await consumer.stop()
                log.warning("ingest consumer cannot start (%s); retrying", exc)
                await asyncio.sleep(1.0)
        consumer.subscribe(self.topics, listener=self)
        self.consumer = consumer
        self.started.set()
        return consumer

    async def _commit(self) -> None:
        await self.flush()   # what the handled records produced is on the broker first
        offsets, self._uncommitted = self._uncommitted, {}
        self._last_commit_s = time.monotonic()
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:   # e.g. a rebalance in between: replayed, not lost
            log.warning("ingest commit failed (%s); those records will be read again", exc)

    async def _close(self) -> None:
        if self.consumer is None:
            return
        if self._uncommitted:
            await self._commit()
        await self.consumer.stop()

    # ------------------------------------------------------------ rebalance listener

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        if self._uncommitted:
            await self._commit()
        for tp in revoked:
            self.positions.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("mlpulse ingest assigned %s", sorted((tp.topic, tp.partition)
                                                       for tp in assigned))

    def highwater(self, tp: Any) -> int | None:
        """High watermark of an owned partition (None before its first fetch)."""
        if self.consumer is None:
            return None
        try:
            high = self.consumer.highwater(TopicPartition(tp.topic, tp.partition))
        except (AssertionError, KeyError, AttributeError):
            return None
        return int(high) if high is not None else None
