"""Where detector state lives: :class:`SnapshotStore`, in a Faust table on the worker
(:class:`TableStore`), in a dict in tests (:class:`MemoryStore`).

Values are written straight into the table's store and its changelog partition
(the partition of the model's internal topic), so snapshots can be taken from
timers too, not only while a stream event is being processed. Faust restores
the table from the changelog when partitions are assigned, before the agents
resume: a worker that takes over a partition finds its models' state there.

Snapshot keys (encoded and decoded here only): ``p|model|version`` a model version's
detectors (a slice's: ``p|model|version|segment``), ``r|...`` the same key's reference
(written only when it changes), ``n|model`` a model's presence (no-data alerts),
``c|model`` its versions' recent counts (the comparison's baseline), ``l|service`` a log
service's detector; each is routed by its model or service, like its events.

>>> model_key(("fraud", "v2")), presence_key("fraud"), service_key("api")
(b'p|fraud|v2', b'n|fraud', b'l|api')
>>> presence_model(b"n|fraud"), presence_model(b"p|fraud|v2"), routing_key(b"p|fraud|v2")
('fraud', None, b'fraud')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from .repartition import partition_for

__all__ = ["END_MARKER", "MemoryStore", "SnapshotStore", "TableStore", "comparison_key",
           "model_key", "presence_key", "presence_model", "reference_key", "routing_key",
           "service_key"]


END_MARKER = b"e|"
"""Key of the end marker of a changelog partition (:meth:`TableStore.mark_end`); its value is
empty, which :meth:`TableStore.get` reads as no state."""


def model_key(key: tuple[str, ...]) -> bytes:
    """The snapshot key of a model version's detectors."""
    return b"p|" + "|".join(key).encode()


def reference_key(key: tuple[str, ...]) -> bytes:
    """The snapshot key of a model version's reference (and what builds the next one)."""
    return b"r|" + "|".join(key).encode()


def presence_key(model: str) -> bytes:
    """The snapshot key of a model's presence (when it was last seen, its no-data alert)."""
    return b"n|" + model.encode()


def comparison_key(model: str) -> bytes:
    """The snapshot key of a model's version counts (which version is the baseline)."""
    return b"c|" + model.encode()


def service_key(service: str) -> bytes:
    """The snapshot key of a log service's error-spike detector."""
    return b"l|" + service.encode()


def presence_model(key: bytes) -> str | None:
    """The model of a presence key (None: another kind of key)."""
    return key[2:].decode() if key.startswith(b"n|") else None


def routing_key(key: bytes) -> bytes:
    """The model or service a snapshot key is routed by (its partition's)."""
    return key[2:].split(b"|", 1)[0]


class SnapshotStore(Protocol):
    """Where detector state lives between windows, per partition."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def put(self, partition: int, key: bytes, value: bytes) -> None: ...
    def items(self, partition: int) -> Iterable[tuple[bytes, bytes]]: ...


class MemoryStore:
    """A :class:`SnapshotStore` in a dict (tests, the in-memory pipeline)."""

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(partition, {}).get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.data.setdefault(partition, {})[key] = value

    def items(self, partition: int) -> Iterable[tuple[bytes, bytes]]:
        return list(self.data.get(partition, {}).items())


class TableStore:
    """A :class:`SnapshotStore` over a Faust table of raw bytes."""

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
                and partition_for(routing_key(key), self.partitions) == partition]
