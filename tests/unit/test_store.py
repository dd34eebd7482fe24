"""The detector-state store finds a partition's keys the way Kafka routed them."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from mlpulse.repartition import partition_for
from mlpulse.store import END_MARKER, TableStore


class FakeTable:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog: list[tuple[int, bytes, bytes]] = []

    def send_changelog(self, partition: int, key: bytes, value: bytes) -> None:
        self.changelog.append((partition, key, value))


def test_partition_for_matches_the_producers_default_partitioner():
    partitioner = DefaultPartitioner()
    partitions = list(range(4))
    for name in (b"model-0", b"fraud", b"a/b:c", b"x" * 128):
        assert partition_for(name, 4) == partitioner(name, partitions, partitions)


def test_items_of_a_partition_and_changelog_writes():
    table = FakeTable()
    store = TableStore(partitions=4)
    store.attach(table)
    keys = {b"p|fraud|v1": b"1", b"n|fraud": b"2", b"l|api": b"3", b"p|other|v2": b"4"}
    for key, value in keys.items():
        store.put(partition_for(key[2:].split(b"|")[0], 4), key, value)
    fraud = partition_for(b"fraud", 4)
    assert {k for k, _ in store.items(fraud)} >= {b"p|fraud|v1", b"n|fraud"}
    assert all(partition_for(k[2:].split(b"|")[0], 4) == fraud for k, _ in store.items(fraud))
    assert store.get(fraud, b"n|fraud") == b"2" and store.get(fraud, b"nope") is None
    assert table.changelog[0][:2] == (fraud, b"p|fraud|v1")


def test_written_partitions_get_an_end_marker_that_reads_as_no_state():
    table = FakeTable()
    store = TableStore(partitions=4)
    store.attach(table)
    store.put(1, b"p|fraud|v1", b"state")
    store.put(3, b"n|api", b"state")
    touched = store.take_touched()
    assert touched == {1, 3} and store.take_touched() == set()
    for partition in sorted(touched):
        store.mark_end(partition)
    assert [(p, k) for p, k, _ in table.changelog[-2:]] == [(1, END_MARKER), (3, END_MARKER)]
    table.data[END_MARKER] = b""   # as a recovery reads it back
    assert store.get(1, END_MARKER) is None
    assert all(key != END_MARKER for p in range(4) for key, _ in store.items(p))
