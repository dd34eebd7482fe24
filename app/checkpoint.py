"""Checkpoints: window state and the input offsets it holds, together, per partition.

What makes window counts exact across a crash (``kill -9``) or a rebalance. Every
``commit_interval_seconds`` the worker writes, for each internal partition ``p`` it owns,
one :class:`Checkpoint`: the open windows of ``p`` (:meth:`Summarizer.partition_state
<mlpulse.summarize.Summarizer.partition_state>`), the next offset of every input partition
whose events ``p`` takes directly (input partitions ``i`` with ``i % N == p``), and how far
each source's repartitioned events were applied (:class:`~mlpulse.repartition.HopFilter`).
A new owner of ``p`` restores the checkpoint, seeks those input partitions to its offsets
and drops the repartitioned events it already holds: each event is counted once.

A checkpoint is compressed and cut into chunks (each record stays well under a message's
size limit) and written to one of two slots in turn; a small header naming the slot is
written last. A crash while writing leaves the header of the previous checkpoint,
whose slot is intact: :func:`read_checkpoint` never returns a torn one.

>>> table = {}
>>> for key, value in checkpoint_records(2, Checkpoint(state=b"windows", inputs={"in:2": 41},
...                                                       hops={"in:0": 7}), slot=0):
...     table[key] = value
>>> read_checkpoint(table.get, 2)
Checkpoint(state=b'windows', inputs={'in:2': 41}, hops={'in:0': 7})
>>> read_checkpoint(table.get, 3) is None
True
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

__all__ = ["Checkpoint", "CheckpointReader", "checkpoint_records", "next_slot",
           "read_checkpoint"]

CHUNK_BYTES = 512 * 1024
"""Largest value of one checkpoint record (compressed)."""

class Checkpoint(msgspec.Struct, frozen=True):
    """What a new owner of a partition needs to carry on exactly."""

    state: bytes
    """The partition's open windows and watermarks (``Summarizer.partition_state``)."""
    inputs: dict[str, int]
    """``"topic:partition"`` → next input offset whose events the state does not hold."""
    hops: dict[str, int]
    """``"topic:partition"`` of a source → last sequence number applied from it."""

    def fingerprint(self) -> Checkpoint:
        """This checkpoint with a 16-byte digest for its state: what a worker keeps of the
        last one it wrote, to tell whether the next one changed (not ~1 MB per partition).

        >>> a = Checkpoint(state=b"windows", inputs={"in:0": 5}, hops={})
        >>> a.fingerprint() == Checkpoint(b"windows", {"in:0": 5}, {}).fingerprint()
        True
        >>> a.fingerprint() == Checkpoint(b"windows", {"in:0": 6}, {}).fingerprint()
        False
        """
        return msgspec.structs.replace(
            self, state=hashlib.blake2b(self.state, digest_size=16).digest())


class _Header(msgspec.Struct, frozen=True):
    slot: int
    chunks: int
    crc: int


_encoder = msgspec.msgpack.Encoder()
_checkpoint = msgspec.msgpack.Decoder(Checkpoint)
_header = msgspec.msgpack.Decoder(_Header)


def _header_key(partition: int) -> bytes:
    return f"c|{partition}".encode()


def _chunk_key(partition: int, slot: int, index: int) -> bytes:
    return f"c|{partition}|{slot}|{index}".encode()


def checkpoint_records(partition: int, checkpoint: Checkpoint, slot: int
                       ) -> list[tuple[bytes, bytes]]:
    """(key, value) records of ``checkpoint`` in ``slot`` (0 or 1), header last."""
    blob = zlib.compress(_encoder.encode(checkpoint), 1)
    chunks = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    records = [(_chunk_key(partition, slot, i), chunk) for i, chunk in enumerate(chunks)]
    header = _Header(slot=slot, chunks=len(chunks), crc=zlib.crc32(blob))
    records.append((_header_key(partition), _encoder.encode(header)))
    return records


def read_checkpoint(get: Callable[[bytes], bytes | None], partition: int) -> Checkpoint | None:
    """The last complete checkpoint of ``partition`` in a table (``get``), or None."""
    raw = get(_header_key(partition))
    if not raw:
        return None
    header = _header.decode(raw)
    parts = [get(_chunk_key(partition, header.slot, i)) for i in range(header.chunks)]
    blob = b"".join(part for part in parts if part is not None)
    if None in parts or zlib.crc32(blob) != header.crc:
        raise ValueError(f"checkpoint of partition {partition} is incomplete or corrupt")
    return _checkpoint.decode(zlib.decompress(blob))


def next_slot(get: Callable[[bytes], bytes | None], partition: int) -> int:
    """The slot the next checkpoint of ``partition`` goes to (not the current one's)."""
    raw = get(_header_key(partition))
    return 1 - _header.decode(raw).slot if raw else 0


class CheckpointReader:
    """Reads the newest complete checkpoint of a partition straight from its topic.

    Not through a Faust table: a new owner must see every checkpoint written before the
    rebalance (previous owners write their last one before giving the partition up),
    whatever state Faust's table recovery is in.
    """

    def __init__(self, topic: str, consumer_options: Mapping[str, Any]) -> None:
        self.topic = topic
        self._options = dict(consumer_options)
        self._consumer: Any = None

    async def read(self, partition: int, timeout_s: float = 30.0
                   ) -> tuple[Checkpoint | None, int]:
        """The checkpoint (None if there is none) and the slot the next one goes to.
        Raises ValueError for a corrupt one."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if self._consumer is None:
            consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                        auto_offset_reset="earliest", **self._options)
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        records: dict[bytes, bytes] = {}
        if end:
            consumer.seek(tp, 0)
            deadline = asyncio.get_running_loop().time() + timeout_s
            while await consumer.position(tp) < max(end, consumer.highwater(tp) or 0):
                if asyncio.get_running_loop().time() > deadline:
                    raise ValueError(f"checkpoint of partition {partition} not read in "
                                     f"{timeout_s:.0f} s")
                batch = await consumer.getmany(tp, timeout_ms=500)
                for message in batch.get(tp, []):
                    if message.key is not None and message.value is not None:
                        records[message.key] = message.value
        return read_checkpoint(records.get, partition), next_slot(records.get, partition)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
