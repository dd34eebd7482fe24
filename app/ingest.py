"""Stage 1: message value → validated events routed by key, plus dead letters.

Input topics may be keyed any way (or not at all). Ingest decodes and validates
each message and groups its valid events by model (predictions and feedback) or
service (logs), so the pipeline can repartition them: every event of one model then
reaches the one partition, and so the one worker, that owns the model's windows.

>>> from mlpulse.config import Settings
>>> ingest = Ingest(Settings())
>>> routed = ingest.predictions(
...     b'[{"event_id": "1", "timestamp": 5, "model": "a"}, {"event_id": "2"}]',
...     topic="mlpulse.predictions", partition=0, offset=3, now_s=10,
... )
>>> sorted(routed.by_key), routed.accepted, routed.dead_letters[0].error
(['a'], 1, 'invalid prediction event: Object missing required field `timestamp`')
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .codec import Codec, Decoded, InternalCodec, group_by
from .config import Settings
from .deadletter import dead_letter
from .events import DeadLetter, FeedbackEvent, LogEvent, PredictionEvent
from .repartition import SEQ_BITS
from .streams import Stream
from .tracing import trace_from_headers

__all__ = ["SLICE_BYTES", "Ingest", "Record", "Routed", "slices"]



@dataclass(slots=True)
class Routed:
    """What one input message turned into."""

    by_key: dict[str, list[Any]] = field(default_factory=dict)
    """Valid events per routing key (model or service), in arrival order."""
    repartition: dict[str, list[Any]] = field(default_factory=dict)
    """Those of a fetch's valid events that must be repartitioned (:meth:`Ingest.fetch`
    puts them here, not in ``by_key``): their message was not keyed by their routing
    key, or was read where ``local`` says it does not belong."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0
    newest_s: float = -math.inf
    """The newest event time of the valid events (:meth:`Ingest.fetch` sets it): how
    far the input partition they were read from has come (:mod:`mlpulse.progress`)."""
    origins: list[tuple[list[Any], Sequence[int], Sequence[int]]] = field(
        default_factory=list)
    """Valid events as decoded, with their input partitions and sequence numbers
    (``offset << SEQ_BITS | index in the message``): where each came from, for the events
    that are repartitioned."""
    _origin_of: dict[int, tuple[int, int]] | None = None

    def merge(self, other: Routed) -> None:
        """Add another message's result (the pipeline batches messages); ``other`` is
        consumed (its lists go in, not copies).

        The origins of a result whose events were all taken out (applied where they were
        read) are dropped, from both: no event of theirs is left to tag, and they would
        keep those event objects alive, to be freed long after they left the CPU cache
        (in one profile of a worker, ~10% of its samples were that late free).

        >>> batch, applied = Routed(), Routed(accepted=1, origins=[([object()], [0], [0])])
        >>> batch.merge(applied)
        >>> batch.accepted, batch.origins, applied.origins
        (1, [], [])
        """
        _extend(self.by_key, other.by_key)
        _extend(self.repartition, other.repartition)
        self.dead_letters.extend(other.dead_letters)
        self.accepted += other.accepted
        self.newest_s = max(self.newest_s, other.newest_s)
        if other.by_key or other.repartition:
            self.origins.extend(other.origins)
        else:   # freed now, not when ``other`` goes
            other.origins = []

    def all_by_key(self) -> dict[str, list[Any]]:
        """``by_key`` and ``repartition`` together (not in arrival order across the two)."""
        if not self.repartition:
            return self.by_key
        merged = {key: list(events) for key, events in self.by_key.items()}
        _extend(merged, self.repartition)
        return merged

    def origin(self, events: list[Any]) -> tuple[list[int], list[int]]:
        """The input partitions and sequence numbers of some of the events (e.g. one
        key's), in their order."""
        if self._origin_of is None:
            self._origin_of = {id(e): (source, seq) for decoded, sources, seqs in self.origins
                               for e, source, seq in zip(decoded, sources, seqs, strict=True)}
        origin_of = self._origin_of
        pairs = [origin_of[id(e)] for e in events]
        return [source for source, _ in pairs], [seq for _, seq in pairs]


class Record(Protocol):
    """An input message as aiokafka (or Faust) hands it over."""

    key: bytes | None
    topic: str
    partition: int
    offset: int
    value: bytes
    headers: Any


class Ingest:
    """Decoders and router of the input streams (:class:`~mlpulse.streams.Stream`)."""

    def __init__(self, settings: Settings) -> None:
        self._codecs: dict[type, Codec[Any]] = {
            event_type: Codec(event_type, max_message_bytes=settings.max_message_bytes,
                              max_batch_events=settings.max_batch_events,
                              max_future_skew_seconds=settings.max_future_skew_seconds)
            for event_type in (PredictionEvent, LogEvent, FeedbackEvent)}
        self._internal: dict[type, InternalCodec[Any]] = {
            event_type: InternalCodec(event_type) for event_type in self._codecs}

    def fetch(self, stream: Stream, records: Sequence[Record], now_s: float,
              local: Callable[[bytes, int], bool] | None = None) -> Routed:
        """Decode and route a fetch of messages of ``stream``'s input topic.

        Single-event messages (the common case for producers other than the SDK) are
        decoded together as one array — one decoder call, not one per message; if any
        of them is invalid, each is decoded on its own so that its dead letter names
        its own offset. Envelopes and messages with a ``traceparent`` header are
        decoded one by one. Events of messages keyed by their routing key (as the SDK
        keys them) and read where ``local(key, partition)`` says they belong go to
        ``by_key``, the others to ``repartition``.
        """
        here = local if local is not None else _anywhere
        event_type, attr = stream.event_type, stream.key
        codec = self._codecs[event_type]
        routed = Routed()
        single: list[Record] = []
        for r in records:
            value = r.value
            if (value is not None and value[:1] == b"{"
                    and len(value) <= codec.max_message_bytes
                    and trace_from_headers(r.headers) is None):
                single.append(r)
            else:
                routed.merge(_numbered(self.decode(
                    event_type, attr, value or b"", topic=r.topic, partition=r.partition,
                    offset=r.offset, now_s=now_s, trace_id=trace_from_headers(r.headers)),
                    r, here))
        step = codec.max_batch_events
        for start in range(0, len(single), step):
            chunk = single[start:start + step]
            events = codec.decode_joined([r.value for r in chunk], now_s)
            if events is not None:   # one event per message
                keyed = [r.key is not None and r.key == getattr(e, attr).encode()
                         and here(r.key, r.partition) for r, e in zip(chunk, events, strict=True)]
                one = Routed(accepted=len(events), newest_s=max(
                    map(_TIMESTAMP, events), default=-math.inf), origins=[(
                    events, [r.partition for r in chunk],
                    [r.offset << SEQ_BITS for r in chunk])])
                if all(keyed):
                    one.by_key = group_by(events, attr)
                else:
                    one.by_key = group_by([e for e, k in zip(events, keyed, strict=True) if k],
                                          attr)
                    one.repartition = group_by(
                        [e for e, k in zip(events, keyed, strict=True) if not k], attr)
                routed.merge(one)
                continue
            for r in chunk:
                routed.merge(_numbered(self.decode(
                    event_type, attr, r.value, topic=r.topic, partition=r.partition,
                    offset=r.offset, now_s=now_s), r, here))
        return routed

    def encode(self, stream: Stream, events: list[Any]) -> bytes:
        """Internal payload (msgpack) of routed events of ``stream``."""
        return self._internal[stream.event_type].encode(events)

    def decode_internal(self, stream: Stream, payload: bytes) -> list[Any]:
        """The events of an internal payload of ``stream`` (validated before: not again)."""
        return self._internal[stream.event_type].decode(payload)

    def decode(
        self, event_type: type, key: str, value: bytes, *, topic: str, partition: int | None,
        offset: int | None, now_s: float, trace_id: str | None = None,
    ) -> Routed:
        """One message's events of ``event_type``, by their routing field ``key``; its
        dead letters. ``trace_id`` (of the message's ``traceparent`` header) goes to its
        events that have none (labels have none), and to its dead letters."""
        decoded = self._codecs[event_type].decode(value, now_s)
        if trace_id is not None and event_type is not FeedbackEvent:   # labels have no trace
            _inherit_trace(decoded.events, trace_id)
        routed = _rejections(decoded, topic, partition, offset, now_s, trace_id=trace_id)
        routed.by_key = group_by(decoded.events, key)
        return routed

    def predictions(self, value: bytes, **where: Any) -> Routed:
        """One message of prediction events (``topic``, ``partition``, ``offset``,
        ``now_s``, ``trace_id``: as :meth:`decode`)."""
        return self.decode(PredictionEvent, "model", value, **where)

    def logs(self, value: bytes, **where: Any) -> Routed:
        return self.decode(LogEvent, "service", value, **where)

    def feedback(self, value: bytes, **where: Any) -> Routed:
        return self.decode(FeedbackEvent, "model", value, **where)


SLICE_BYTES = 256 * 1024
"""Message bytes of a fetch decoded and applied at a time (:func:`slices`): ~500 events,
whose objects stay in the CPU's cache from decode to aggregation."""


def slices(records: Sequence[Record], max_bytes: int) -> list[Sequence[Record]]:
    """``records`` cut, in order, into runs of at most ``max_bytes`` of message values
    (a larger message alone).

    >>> from types import SimpleNamespace as R
    >>> [len(s) for s in slices([R(value=b"x" * n) for n in (3, 3, 5, 1, 1)], 6)]
    [2, 2, 1]
    >>> slices([], 6)
    []
    """
    out: list[Sequence[Record]] = []
    start = size = 0
    for index, record in enumerate(records):
        length = len(record.value or b"")
        if size + length > max_bytes and index > start:
            out.append(records[start:index])
            start, size = index, 0
        size += length
    if start < len(records):
        out.append(records[start:])
    return out


_TIMESTAMP = operator.attrgetter("timestamp")


def _anywhere(key: bytes, partition: int) -> bool:
    return True


def _numbered(routed: Routed, record: Record, local: Callable[[bytes, int], bool]) -> Routed:
    """``routed`` (of one message) with its events' origins; those of other keys than
    the message's, or not ``local``, moved to ``repartition``."""
    groups = list(routed.by_key.values())
    # a copy: by_key's lists grow as later messages merge into them
    events = list(groups[0]) if len(groups) == 1 else list(itertools.chain(*groups))
    offset, key = record.offset, record.key
    first = offset << SEQ_BITS   # + index = offset << SEQ_BITS | index (index < 2**SEQ_BITS)
    routed.origins = [(events, [record.partition] * len(events),
                       range(first, first + len(events)))]
    routed.newest_s = max(map(_TIMESTAMP, events), default=-math.inf)
    for name in [name for name in routed.by_key
                 if key is None or key != name.encode() or not local(key, record.partition)]:
        routed.repartition[name] = routed.by_key.pop(name)
    return routed


def _extend(into: dict[str, list[Any]], other: dict[str, list[Any]]) -> None:
    for key, events in other.items():
        mine = into.get(key)
        if mine is None:
            into[key] = events
        else:
            mine.extend(events)


def _inherit_trace(events: list[PredictionEvent] | list[LogEvent], trace_id: str) -> None:
    for event in events:
        if event.trace_id is None:
            event.trace_id = trace_id


def _rejections(
    decoded: Decoded[PredictionEvent] | Decoded[LogEvent] | Decoded[FeedbackEvent],
    topic: str, partition: int | None, offset: int | None, now_s: float, *,
    trace_id: str | None = None,
) -> Routed:
    return Routed(
        dead_letters=[
            dead_letter(rejected, topic, partition, offset, now_s, trace_id=trace_id)
            for rejected in decoded.rejected
        ],
        accepted=len(decoded.events),
    )
