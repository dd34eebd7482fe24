"""Which partitions a worker owns, which it holds the state of, and the input partitions
that go with them.

The consumer group assigns internal partitions (one per stream and index); input
partition ``i`` of each input topic goes with internal partition ``i mod N``. A partition
is *held* once its state is in (restored from its checkpoint, or known to have none): only
held partitions are checkpointed.

>>> own = Ownership(partitions=4, streams={"predictions": "in", "logs": "logs"})
>>> own.assign({"predictions": {1, 3}, "logs": {1, 3}})
>>> own.to_restore()
[1, 3]
>>> own.hold(1, {"in:1": 40, "in:5": 7})
{('in', 1): 40, ('in', 5): 7}
>>> own.held, own.inputs_of(1, {"in"})
({1}, {'in:1': 40, 'in:5': 7})
>>> own.reads({"in": 8, "logs": 4})
{'predictions': [1, 3, 5, 7], 'logs': [1, 3]}

Where each input partition is read from is what the held state says, never the consumer
group's committed offsets: a checkpoint's input offsets, and an input partition it does not
name from its beginning (its events are not in the state). Committed offsets are read only
for a partition started without any checkpoint.

>>> own.starts([("in", 1), ("in", 5), ("in", 3)])
{('in', 1): 40, ('in', 5): 7}
>>> own.hold(3, {}, checkpoint=True)   # a checkpoint that names none of its inputs
{}
>>> own.starts([("in", 3), ("in", 7)])
{('in', 3): -2, ('in', 7): -2}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["BEGINNING", "Ownership"]

BEGINNING = -2
"""A start offset: the partition's oldest (Kafka's ``ListOffsets`` code for it)."""


class Ownership:
    """The partitions of one worker: owned, held, and the input offsets they hold."""

    def __init__(self, *, partitions: int, streams: Mapping[str, str]) -> None:
        self.partitions = partitions
        self.topics = dict(streams)
        """Stream name → its input topic."""
        self.owned: dict[str, set[int]] = {name: set() for name in streams}
        """Internal partitions owned per stream (the consumer group's assignment)."""
        self.held: set[int] = set()
        """Owned partitions whose state this worker holds (restored from a checkpoint)."""
        self.input_offsets: dict[tuple[str, int], int] = {}
        """Next input offset per input partition read, as of the last checkpoint."""
        self.whole: set[int] = set()
        """Held partitions whose state accounts for every input partition: restored from a
        checkpoint, which names the offset of each one it holds events of (the others:
        none)."""

    def assign(self, owned: Mapping[str, set[int]]) -> None:
        """A new assignment: what is no longer owned is no longer held."""
        self.owned = {name: set(owned.get(name, set())) for name in self.topics}
        self.held &= self.owned["predictions"]
        self.whole &= self.held

    def to_restore(self) -> list[int]:
        """Owned partitions whose state is not here yet: read their checkpoints."""
        return sorted(self.owned["predictions"] - self.held)

    def hold(self, partition: int, inputs: Mapping[str, int], *, checkpoint: bool = True
             ) -> dict[tuple[str, int], int]:
        """``partition``'s state is in, holding ``inputs`` (``"topic:index"`` → next offset
        of a checkpoint; ``checkpoint`` False: none was found, the state is empty); the
        input offsets to read from. What was known of its inputs before goes."""
        self.held.add(partition)
        if checkpoint:
            self.whole.add(partition)
        else:
            self.whole.discard(partition)
        n = self.partitions
        for key in [key for key in self.input_offsets if key[1] % n == partition]:
            del self.input_offsets[key]
        offsets = {}
        for name, offset in inputs.items():
            topic, _, index = name.rpartition(":")
            offsets[(topic, int(index))] = offset
        self.input_offsets.update(offsets)
        return offsets

    def read_to(self, positions: Mapping[tuple[str, int], int]) -> None:
        """The input has been handled up to ``positions`` (next offset per partition)."""
        self.input_offsets.update(positions)

    def inputs_of(self, partition: int, topics: set[str]) -> dict[str, int]:
        """The input offsets of ``topics`` whose events ``partition`` takes directly (input
        partitions ``i`` with ``i mod N`` = ``partition``): what its checkpoint holds."""
        return {f"{topic}:{index}": offset
                for (topic, index), offset in self.input_offsets.items()
                if topic in topics and index % self.partitions == partition}

    def reads(self, counts: Mapping[str, int]) -> dict[str, list[int]]:
        """Per stream, the input partitions to read (``counts``: partitions per input
        topic; unknown: as many as the internal topics)."""
        n = self.partitions
        return {name: [i for i in range(counts.get(topic) or n) if i % n in self.owned[name]]
                for name, topic in self.topics.items()}

    def starts(self, reads: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Where to read each of ``reads`` (input partitions of held partitions) from: the
        offset the held state holds it to, else its beginning (``BEGINNING``) where the
        state is a checkpoint's; the rest (a start without a checkpoint) are left to the
        consumer group's committed offsets."""
        out: dict[tuple[str, int], int] = {}
        for key in reads:
            offset = self.input_offsets.get(key)
            if offset is not None:
                out[key] = offset
            elif key[1] % self.partitions in self.whole:
                out[key] = BEGINNING
        return out
