"""Repartitioned messages in offset order, and the offsets Faust may commit.

The replay filter (:class:`~mlpulse.repartition.HopFilter`) drops an event numbered at or
below the last applied from its source, so each internal partition must be applied in
offset order: an event applied past one never applied makes that one a "replay" for good.
Faust's consumer does not promise that order. It can hand on a message past others it
fetched and never yielded (a fetch abandoned when its flow stopped, messages its streams
dropped as fetched in an older generation); its read position is past them, so they are
not fetched again; and it records the jump in offsets, and the message it yields, as
acknowledged (``Consumer._add_gap``, meant for compacted and transactional topics), so its
commit can pass them too. Its streams also acknowledge the messages they drop. Seen as a
loss of repartitioned events under load (docs/reliability.md).

So a worker applies each internal partition in order (:class:`InOrder`): a message past
the next offset is held back and the partition read again from that offset; a message
before it was applied already. And Faust's consumer records an internal offset as done
only when mlpulse says so, once a checkpoint holds its events (:class:`Acks`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Acks", "InOrder", "Sorted"]


@dataclass(slots=True)
class Sorted:
    """A batch of one internal topic's messages, sorted by what becomes of them."""

    apply: list[Any] = field(default_factory=list)
    """Next in their partitions, in order: apply them."""
    applied: list[Any] = field(default_factory=list)
    """Before the next offset (read again from a committed offset): applied already."""
    past: list[Any] = field(default_factory=list)
    """Past the next offset of their partition: not applied; read again later."""
    rewind: dict[Any, int] = field(default_factory=dict)
    """Partitions to read again, from this offset (their next)."""
    gaps: dict[Any, tuple[int, int]] = field(default_factory=dict)
    """Partitions whose log lacks offsets: from the first to the one before the second."""


class InOrder:
    """The next offset to apply per internal partition; which messages of a batch to apply.

    >>> import collections
    >>> Message = collections.namedtuple("Message", "tp offset")
    >>> order = InOrder()
    >>> order.start("p0", 10)   # restored from a checkpoint; committed offset 10
    >>> batch = order.sort([Message("p0", o) for o in (8, 9, 10, 11, 14, 15)])
    >>> [m.offset for m in batch.apply], [m.offset for m in batch.applied], batch.rewind
    ([10, 11], [8, 9], {'p0': 12})
    >>> [m.offset for m in order.sort([Message("p0", o) for o in (12, 13, 14)]).apply]
    [12, 13, 14]
    >>> order.sort([Message("p1", 7)]).apply   # a partition with no start: from the first
    [Message(tp='p1', offset=7)]

    Read again from its next offset, a partition that still brings a message past it, time
    after time over ``gap_seconds``, lacks those offsets in its log: it goes on from there.

    >>> for now_s in range(0, 35, 5):   # (offset 8 never comes)
    ...     batch = order.sort([Message("p1", 9)], now_s=now_s)
    >>> batch.gaps, order.next["p1"]
    ({'p1': (8, 9)}, 9)
    """

    REASKS = 5
    """How many times a partition is read again from one offset before a gap is taken."""

    def __init__(self, gap_seconds: float = 30.0) -> None:
        self.next: dict[Any, int] = {}
        """The next offset to apply per partition (the lag metric reads it too)."""
        self.gap_seconds = gap_seconds
        self._asked: dict[Any, tuple[int, float, int, int]] = {}
        """Per partition read again: from which offset, since when, how many times, and
        the least offset past it that came meanwhile."""

    def start(self, tp: Any, offset: int | None) -> None:
        """Read ``tp`` from ``offset`` on (None: from the first message it brings)."""
        if offset is None:
            self.next.pop(tp, None)
        else:
            self.next[tp] = offset

    def keep_only(self, tps: Iterable[Any]) -> None:
        keep = set(tps)
        for tp in [tp for tp in self.next if tp not in keep]:
            del self.next[tp]
        for tp in [tp for tp in self._asked if tp not in keep]:
            del self._asked[tp]

    def sort(self, messages: Sequence[Any], now_s: float = 0.0) -> Sorted:
        """Sort ``messages`` (each with ``tp`` and ``offset``, in the order fetched) and
        move each partition's next offset past those to apply (``now_s``: a monotonic
        clock, for gaps in the log)."""
        out, nexts = Sorted(), self.next
        seen: dict[Any, int] = {}
        for message in messages:
            tp, offset = message.tp, message.offset
            want = nexts.get(tp, offset)
            if offset == want:
                out.apply.append(message)
                nexts[tp] = offset + 1
            elif offset < want:
                out.applied.append(message)
            else:
                out.past.append(message)
                out.rewind[tp] = want
                seen[tp] = min(offset, seen.get(tp, offset))
        for tp, want in out.rewind.items():
            asked = self._asked.get(tp)
            if asked is None or asked[0] != want:
                self._asked[tp] = (want, now_s, 1, seen[tp])
                continue
            _, since_s, times, least = asked
            least = min(least, seen[tp])
            self._asked[tp] = (want, since_s, times + 1, least)
            if times + 1 >= self.REASKS and now_s - since_s >= self.gap_seconds:
                del self._asked[tp]
                out.gaps[tp] = (want, least)   # (the first offset that ever came past it)
                out.rewind[tp] = nexts[tp] = least
        return out


class Acks:
    """Faust's consumer, made to record an offset of ``topics`` as done only through
    :meth:`done`, never through its own acknowledgements (its streams acknowledge what they
    hand on and what they drop) or a jump in offsets (``_add_gap``). Its commits then
    never pass a message mlpulse has not applied and checkpointed.

    >>> import asyncio
    >>> class Consumer:
    ...     def ack(self, message):
    ...         print("done", message)
    ...         return True
    ...     async def _add_gap(self, tp, offset_from, offset_to):
    ...         print("gap", tp, offset_from, offset_to)
    >>> class Message:
    ...     topic = "p.predictions.by-model"
    >>> consumer = Consumer()
    >>> acks = Acks.install(consumer, {"p.predictions.by-model"})
    >>> consumer.ack(Message())   # Faust's own acknowledgement: not recorded
    False
    >>> asyncio.run(consumer._add_gap(Message.topic, 10, 19))
    >>> acks.done([Message()])
    done <...Message object at ...>
    >>> asyncio.run(acks.gap(Message.topic, 10, 19))   # a gap mlpulse knows of
    gap p.predictions.by-model 10 19
    >>> Acks.install(consumer, {"p.predictions.by-model"}) is acks   # (once per consumer)
    True
    """

    def __init__(self, ack: Callable[[Any], bool],
                 add_gap: Callable[[Any, int, int], Awaitable[None]] | None) -> None:
        self._ack = ack
        self._add_gap = add_gap

    @classmethod
    def install(cls, consumer: Any, topics: set[str]) -> Acks:
        """Take the acknowledgements of ``topics`` from ``consumer``'s own hands."""
        installed = getattr(consumer, "_mlpulse_acks", None)
        if isinstance(installed, Acks):
            return installed
        acks = cls(consumer.ack, getattr(consumer, "_add_gap", None))

        def ack(message: Any) -> bool:
            return False if message.topic in topics else acks._ack(message)

        consumer.ack = ack
        if acks._add_gap is not None:
            add_gap = acks._add_gap

            async def no_gap(tp: Any, offset_from: int, offset_to: int) -> None:
                if getattr(tp, "topic", tp) not in topics:
                    await add_gap(tp, offset_from, offset_to)

            consumer._add_gap = no_gap
        consumer._mlpulse_acks = acks
        return acks

    def done(self, messages: Iterable[Any]) -> None:
        """Record ``messages`` as done (their events are in a checkpoint)."""
        ack = self._ack
        for message in messages:
            ack(message)

    async def gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Record offsets ``offset_from`` to ``offset_to`` of ``tp`` as done (gone from
        the log before they were applied)."""
        if self._add_gap is not None:
            await self._add_gap(tp, offset_from, offset_to)
