"""The repartition protocol: how events reach the worker that owns their model.

Every event of one model (service) must reach the one partition of the internal topic
that owns its windows, ``partition_for(model)``. Events read where they do not belong
travel through the internal topic in messages tagged with where each was read
(:data:`ORIGIN_HEADER`: input partition and sequence number, ``offset << SEQ_BITS |
index in its message``); each input partition's events reach an internal partition in
order, so the owner drops a replay (after a rebalance or crash) by remembering the last
sequence number it applied per source (:class:`HopFilter`). Progress reports of the
input partitions travel the same way, after the events they cover
(:mod:`mlpulse.progress`).
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka.partitioner import murmur2

T = TypeVar("T")

__all__ = ["ORIGIN_HEADER", "SEQ_BITS", "HopFilter", "header", "in_order", "key_hash",
           "origin_of", "pack_origin", "partition_for", "unpack_origin"]

ORIGIN_HEADER = "mlpulse-origin"
"""Header of a repartitioned message: where its events were read (see :func:`pack_origin`)."""

SEQ_BITS = 20
"""An event's sequence number is ``offset << SEQ_BITS | index`` (its index in its message)."""


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (as for the internal topics)."""
    return key_hash(key) % partitions


def key_hash(key: bytes) -> int:
    """What Kafka's default partitioner reduces modulo the partition count: murmur2 of the
    key, as Kafka's Java client hashes it, made positive."""
    return int(murmur2(key)) & 0x7FFFFFFF



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
