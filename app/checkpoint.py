"""Checkpoints: window state and the input offsets it holds, together, per partition.

What makes window counts exact across a crash (``kill -9``) or a rebalance. Every
``commit_interval_seconds`` the worker writes, for each internal partition ``p`` it owns,
one :class:`Checkpoint`: the open windows of ``p`` (:meth:`Summarizer.partition_state
<mlpulse.summarize.Summarizer.partition_state>`), the next offset of every input partition
whose events ``p`` takes directly (input partitions ``i`` with ``i % N == p``), and how far
each source's repartitioned events were applied (:class:`HopFilter`). A new owner of ``p``
restores the checkpoint, seeks those input partitions to its offsets and drops the
repartitioned events it already holds: each event is counted once.

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
import itertools
import zlib
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

__all__ = ["Checkpoint", "CheckpointReader", "HopFilter", "checkpoint_records", "header",
           "in_order", "next_slot", "origin_of", "pack_origin", "read_checkpoint", "unpack_origin"]

CHUNK_BYTES = 512 * 1024
"""Largest value of one checkpoint record (compressed)."""

ORIGIN_HEADER = "mlpulse-origin"
"""Header of a repartitioned message: where its events were read (see :func:`pack_origin`)."""

SEQ_BITS = 20
"""An event's sequence number is ``offset << SEQ_BITS | index`` (its index in its message)."""


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


def in_order(events: list[T], sources: list[int], seqs: list[int]
             ) -> tuple[list[T], list[int], list[int]]:
    """Events sorted by input partition and sequence number (a fetch decodes envelopes
    before single events, and a partition's messages before the next partition's).

    >>> in_order(["b", "a", "c"], [0, 0, 1], [7, 5, 1])
    (['a', 'b', 'c'], [0, 0, 1], [5, 7, 1])
    """
    pairs = list(zip(sources, seqs, strict=True))
    if all(a < b for a, b in itertools.pairwise(pairs)):
        return events, sources, seqs
    order = sorted(range(len(pairs)), key=pairs.__getitem__)
    return ([events[i] for i in order], [sources[i] for i in order],
            [seqs[i] for i in order])


def pack_origin(sources: Sequence[int], seqs: Sequence[int]) -> bytes:
    """Header value: each event's input partition and sequence number.

    >>> unpack_origin(pack_origin([3, 3], [5 << SEQ_BITS, 6 << SEQ_BITS | 1]))
    ([3, 3], [5242880, 6291457])
    """
    numbers = array("q", bytes(16 * len(seqs)))
    numbers[0::2] = array("q", sources)
    numbers[1::2] = array("q", seqs)
    return numbers.tobytes()


def unpack_origin(value: bytes) -> tuple[list[int], list[int]]:
    numbers = array("q")
    numbers.frombytes(value)
    return numbers[0::2].tolist(), numbers[1::2].tolist()


def origin_of(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None
              ) -> tuple[list[int], list[int]] | None:
    """The origin in a message's headers (a mapping or (key, value) pairs), if any.

    >>> origin_of([("traceparent", b"x"), (ORIGIN_HEADER, pack_origin([1], [9]))])
    ([1], [9])
    >>> origin_of(None) is None
    True
    """
    value = header(headers, ORIGIN_HEADER)
    return unpack_origin(value) if value else None


def header(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None, name: str
           ) -> bytes | None:
    """The value of header ``name`` of a message (headers as a mapping or (key, value)
    pairs, as aiokafka and Faust hand them over), if it has one.

    >>> header([("a", b"1"), ("b", b"2")], "b"), header(None, "b")
    (b'2', None)
    """
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key == name and value:
            return bytes(value)
    return None


class HopFilter:
    """The last sequence number applied per (partition, source): replays are dropped.

    Each source (input partition of a topic) reaches a partition's repartitioned topic in
    order, so an event numbered at or below the last one applied from its source was
    applied.

    >>> hops = HopFilter()
    >>> hops.admit(0, "in", [1, 1, 1], [10, 11, 12])
    [True, True, True]
    >>> hops.admit(0, "in", [1, 1, 2], [11, 13, 4])   # a replay, partly new
    [False, True, True]
    >>> hops.state(0)
    {'in:1': 13, 'in:2': 4}
    """

    def __init__(self) -> None:
        self._applied: dict[int, dict[str, int]] = {}

    def admit(self, partition: int, topic: str, sources: Sequence[int], seqs: Sequence[int]
              ) -> list[bool]:
        """Which of these events (input partitions of ``topic``, sequence numbers
        increasing per partition) to apply; records them."""
        applied = self._applied.setdefault(partition, {})
        names = {source: f"{topic}:{source}" for source in set(sources)}
        last = {source: applied.get(name, -1) for source, name in names.items()}
        out = [seq > last[source] for source, seq in zip(sources, seqs, strict=True)]
        for source, seq in zip(sources, seqs, strict=True):
            if seq > last[source]:
                applied[names[source]] = max(applied.get(names[source], -1), seq)
        return out

    def last(self, partition: int, topic: str, source: int) -> int:
        """The last sequence number applied from input partition ``source`` of ``topic``
        (-1: none)."""
        return self._applied.get(partition, {}).get(f"{topic}:{source}", -1)

    def state(self, partition: int) -> dict[str, int]:
        return dict(self._applied.get(partition, {}))

    def restore(self, partition: int, state: dict[str, int]) -> None:
        self._applied[partition] = dict(state)

    def keep_only(self, partitions: Iterable[int]) -> None:
        keep = set(partitions)
        for partition in set(self._applied) - keep:
            del self._applied[partition]


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
