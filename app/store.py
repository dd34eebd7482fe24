"""Detector state in a Faust table: the worker's :class:`~mlpulse.detect.SnapshotStore`.

Values are written straight into the table's store and its changelog partition
(the partition of the model's internal topic), so snapshots can be taken from
timers too, not only while a stream event is being processed. Faust restores
the table from the changelog when partitions are assigned, before the agents
resume: a worker that takes over a partition finds its models' state there.

>>> partition_for(b"model-0", 4) == partition_for(b"model-0", 4) < 4
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .repartition import partition_for

__all__ = ["END_MARKER", "TableStore"]


END_MARKER = b"e|"
"""Key of the end marker of a changelog partition (:meth:`TableStore.mark_end`); its value is
empty, which :meth:`TableStore.get` reads as no state."""


def _routing_key(key: bytes) -> bytes:
    """``p|model|version``, ``n|model`` and ``l|service`` are routed by model / service."""
    return key[2:].split(b"|", 1)[0]


class TableStore:
    """A :class:`~mlpulse.detect.SnapshotStore` over a Faust table of raw bytes."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.table: Any = None
        self.touched: set[int] = set()
        """Changelog partitions written since :meth:`mark_ends` last ran."""

    def attach(self, table: Any) -> None:
        self.table = table

    def get(self, partition: int, key: bytes) -> bytes | None:
        value = self.table.data.get(key)
        return value if isinstance(value, bytes) and value else None

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.table.data[key] = value
        self.table.send_changelog(partition, key, value)
        self.touched.add(partition)

    def take_touched(self) -> set[int]:
        """The changelog partitions written since the last call."""
        touched, self.touched = self.touched, set()
        return touched

    def mark_end(self, partition: int) -> None:
        """Write a small end marker to a changelog partition, after a flush of its states.

        A broker that reports the end of a partition as its last batch's first offset + 1
        (Tansu 0.6 does) has Faust's table recovery miss the rest of that batch: several
        windows' detector states written together (as windows that waited for the slowest
        input partition close together) were lost, and a restarted worker raised a firing
        alert again. With the marker alone in the last batch, every state before it is read.
        """
        self.table.send_changelog(partition, END_MARKER, b"")

    def items(self, partition: int) -> Iterable[tuple[bytes, bytes]]:
        return [(key, value) for key, value in list(self.table.data.items())
                if isinstance(key, bytes) and isinstance(value, bytes) and value
                and partition_for(_routing_key(key), self.partitions) == partition]
