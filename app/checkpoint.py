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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

__all__ = ["Checkpoint", "CheckpointReader", "CheckpointRound", "CheckpointWriter",
           "checkpoint_records", "header_generation", "next_slot", "read_checkpoint"]

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
    generation: int = 0
    """The consumer group generation of the assignment its writer held (0: unknown)."""


_encoder = msgspec.msgpack.Encoder()
_checkpoint = msgspec.msgpack.Decoder(Checkpoint)
_header = msgspec.msgpack.Decoder(_Header)


def _header_key(partition: int) -> bytes:
    return f"c|{partition}".encode()


def _chunk_key(partition: int, slot: int, index: int) -> bytes:
    return f"c|{partition}|{slot}|{index}".encode()


def checkpoint_records(partition: int, checkpoint: Checkpoint, slot: int,
                       generation: int = 0) -> list[tuple[bytes, bytes]]:
    """(key, value) records of ``checkpoint`` in ``slot`` (0 or 1), header last; the header
    names the group ``generation`` of the writer's assignment (see :func:`header_generation`)."""
    blob = zlib.compress(_encoder.encode(checkpoint), 1)
    chunks = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
    records = [(_chunk_key(partition, slot, i), chunk) for i, chunk in enumerate(chunks)]
    header = _Header(slot=slot, chunks=len(chunks), crc=zlib.crc32(blob),
                     generation=generation)
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


def header_generation(key: bytes, value: bytes | None) -> tuple[int, int] | None:
    """(partition, writer's group generation) of a checkpoint topic record that is a
    header, else None: the generations of a partition's headers, in the order they were
    written, never go down where no worker wrote after losing its assignment.

    >>> [header_generation(k, v) for k, v in checkpoint_records(
    ...     3, Checkpoint(b"", {}, {}), slot=0, generation=7)]
    [None, (3, 7)]
    """
    if value is None or not key.startswith(b"c|") or key.count(b"|") != 1:
        return None
    return int(key[2:]), _header.decode(value).generation


def next_slot(get: Callable[[bytes], bytes | None], partition: int) -> int:
    """The slot the next checkpoint of ``partition`` goes to (not the current one's)."""
    raw = get(_header_key(partition))
    return 1 - _header.decode(raw).slot if raw else 0


@dataclass(slots=True)
class CheckpointRound:
    """The checkpoints of every partition whose state changed since its last one.

    Write ``chunks``, make them durable, then ``headers`` (a header is alone in the last
    batch of its partition: a broker that reports the end of a partition as its last
    batch's first offset + 1, as Tansu 0.6 does, still has a reader see every record
    before it), then :meth:`headers_written`, make that durable, then :meth:`done`.
    """

    chunks: list[tuple[int, bytes, bytes | None]]
    """(partition, key, value) records of the checkpoint topic (None: a tombstone)."""
    headers: list[tuple[int, bytes, bytes]]
    headers_written: Callable[[], None]
    """What follows the headers (the end markers of the detector states written)."""
    done: Callable[[], None]
    """The round is durable: the next one compares with it, and writes the other slot."""

    async def write(self, send: Callable[[int, bytes, bytes | None], Awaitable[Any]],
                    flush: Callable[[], Awaitable[Any]]) -> None:
        """Write the round in that order with ``send(partition, key, value)``; ``flush``
        makes what was sent durable. Two broker round trips for all partitions, however
        many: the chunks (in the slot the current header does not name), then the headers
        that make them current."""
        for partition, key, value in self.chunks:
            await send(partition, key, value)
        await flush()
        for partition, key, header in self.headers:
            await send(partition, key, header)
        self.headers_written()
        await flush()
        self.done()


class CheckpointWriter:
    """What was last written per partition, and the records of the next round.

    >>> writer = CheckpointWriter()
    >>> point = Checkpoint(state=b"windows", inputs={"in:1": 5}, hops={})
    >>> first = writer.round({1: point})
    >>> [key for _, key, _ in first.chunks + first.headers]
    [b'c|1|0|0', b'c|1']
    >>> first.done()
    >>> writer.round({1: point}) is None   # unchanged: nothing to write
    True
    >>> changed = msgspec.structs.replace(point, inputs={"in:1": 6})
    >>> [key for _, key, _ in writer.round({1: changed}).chunks]
    [b'c|1|1|0']
    """

    def __init__(self) -> None:
        self.written: dict[int, Checkpoint] = {}
        """Fingerprint of the last checkpoint written (or restored) per partition."""
        self.slots: dict[int, int] = {}
        """The slot the next checkpoint of each partition goes to (not its last one's)."""

    def restored(self, partition: int, point: Checkpoint | None, slot: int) -> None:
        """A new owner read ``point`` (the slot after its own comes next)."""
        self.slots[partition] = slot
        if point is not None:
            self.written[partition] = point.fingerprint()

    def keep_only(self, partitions: set[int]) -> None:
        for partition in set(self.written) - partitions:
            del self.written[partition]

    def round(self, points: Mapping[int, Checkpoint],
              after_headers: Callable[[], None] | None = None,
              records: Mapping[int, list[tuple[bytes, bytes | None]]] | None = None,
              written: Callable[[], None] | None = None,
              generation: int = 0) -> CheckpointRound | None:
        """The records of the points that differ from the last written, after the other
        ``records`` of their partitions (keys outside the checkpoints' own; None values
        are tombstones); None when there is nothing to write, nor ``after_headers``.
        ``written`` is called once the round is durable; ``generation``: the writer's
        group generation, in the headers."""
        due = [(partition, point, mark) for partition, point in sorted(points.items())
               if self.written.get(partition) != (mark := point.fingerprint())]
        extra = [(partition, key, value) for partition, rows in sorted((records or {}).items())
                 for key, value in rows]
        if not due and not extra and after_headers is None:
            return None
        chunks: list[tuple[int, bytes, bytes | None]] = extra
        headers: list[tuple[int, bytes, bytes]] = []
        for partition, point, _ in due:
            *parts, header = checkpoint_records(partition, point, self.slots.get(partition, 0),
                                                generation)
            chunks += [(partition, key, value) for key, value in parts]
            headers.append((partition, *header))

        def done() -> None:
            for partition, _, mark in due:
                self.slots[partition] = 1 - self.slots.get(partition, 0)
                self.written[partition] = mark
            if written is not None:
                written()

        return CheckpointRound(chunks, headers, after_headers or _nothing, done)


def _nothing() -> None:
    pass


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
                   ) -> tuple[Checkpoint | None, int, dict[bytes, bytes]]:
        """The checkpoint (None if there is none), the slot the next one goes to, and
        every record of the partition (the label index's chunks are among them). Raises
        ValueError for a corrupt one."""
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
                    if message.key is None:
                        continue
                    if message.value is None:   # a tombstone
                        records.pop(message.key, None)
                    else:
                        records[message.key] = message.value
        return (read_checkpoint(records.get, partition), next_slot(records.get, partition),
                records)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
