"""Bytes → validated events, with a dead-letter reason for everything rejected.

A message value is one JSON event object or a JSON array of them (a batch
envelope). Valid events of an envelope are kept; each invalid one is rejected on
its own, with its index and its own bytes. The fast path decodes a whole valid
envelope in one msgspec call; only a failing envelope is split into elements.

>>> codec = Codec(PredictionEvent, max_future_skew_seconds=None)
>>> good = b'{"event_id": "a", "timestamp": 10, "model": "m"}'
>>> bad = b'{"event_id": "b", "timestamp": 10, "model": "m", "latency_ms": -1}'
>>> decoded = codec.decode(b"[" + good + b"," + bad + b"]", now_s=0)
>>> [e.event_id for e in decoded.events]
['a']
>>> decoded.rejected[0].index, decoded.rejected[0].reason
(1, 'invalid prediction event: Expected `float` >= 0.0 - at `$.latency_ms`')
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

import msgspec

from .events import FeedbackEvent, LogEvent, PredictionEvent

__all__ = ["Codec", "Decoded", "InternalCodec", "Rejected", "group_by"]

E = TypeVar("E", PredictionEvent, LogEvent, FeedbackEvent)

_KIND_NAMES = {
    PredictionEvent: "prediction event",
    LogEvent: "log event",
    FeedbackEvent: "feedback event",
}
_WHITESPACE = b" \t\r\n"
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


@dataclass(frozen=True, slots=True)
class Rejected:
    """One input the worker could not use: why, where in an envelope, its bytes."""

    reason: str
    index: int | None
    payload: bytes


@dataclass(slots=True)
class Decoded(Generic[E]):
    """Result of decoding one message value."""

    events: list[E]
    rejected: list[Rejected]


class Codec(Generic[E]):
    """Decoder of one input topic's messages into events of type ``event_type``."""

    def __init__(
        self,
        event_type: type[E],
        *,
        max_message_bytes: int = 16 * 1024 * 1024,
        max_batch_events: int = 10_000,
        max_future_skew_seconds: float | None = 300.0,
    ) -> None:
        self.event_type: type[E] = event_type
        self.kind = _KIND_NAMES[event_type]
        self.max_message_bytes = max_message_bytes
        self.max_batch_events = max_batch_events
        self.max_future_skew_seconds = max_future_skew_seconds
        self._one: msgspec.json.Decoder[E] = msgspec.json.Decoder(event_type)
        self._many = msgspec.json.Decoder(
            Annotated[list[event_type], msgspec.Meta(max_length=max_batch_events)]  # type: ignore[valid-type]
        )
        self._raw_items = msgspec.json.Decoder(list[msgspec.Raw])

    def decode(self, data: bytes, now_s: float) -> Decoded[E]:
        """Decode one message value; never raises on bad input."""
        try:
            return self._decode(data, now_s)
        except Exception as exc:
            return self._reject_all(f"cannot decode {self.kind}: {type(exc).__name__}: {exc}", data)

    def decode_joined(self, values: Sequence[bytes], now_s: float) -> list[E] | None:
        """Events of single-event messages ``values``, decoded as one array (one call
        instead of one per message), or None when any of them is not one valid event
        on its own — then decode each with :meth:`decode` for its exact rejection.

        >>> codec = Codec(PredictionEvent, max_future_skew_seconds=None)
        >>> one = b'{"event_id": "1", "timestamp": 1, "model": "m"}'
        >>> [e.event_id for e in codec.decode_joined([one, one], now_s=0)]
        ['1', '1']
        >>> codec.decode_joined([one, one[:-1] + b"},{" + one[1:]], now_s=0) is None
        True
        """
        if not values or len(values) > self.max_batch_events:
            return None
        joined = b"[" + b",".join(values) + b"]"
        try:
            # message boundaries must be item boundaries: no message may hold two
            # events, or half of one (each message alone must be one object)
            items = self._raw_items.decode(joined)
            if len(items) != len(values) or any(
                    len(item) != len(value) for item, value in zip(items, values, strict=True)):
                return None
            decoded = self._decode_envelope(joined)
        except _DECODE_ERRORS:
            return None
        if decoded.rejected or len(decoded.events) != len(values):
            return None
        if self.max_future_skew_seconds is not None:
            self._reject_future(decoded, joined, now_s + self.max_future_skew_seconds)
            if decoded.rejected:
                return None
        return decoded.events

    def _decode(self, data: bytes, now_s: float) -> Decoded[E]:
        if len(data) > self.max_message_bytes:
            return self._reject_all(
                f"message is {len(data)} bytes, above the limit of {self.max_message_bytes}", data
            )
        first = data.lstrip(_WHITESPACE)[:1]
        if first == b"[":
            decoded = self._decode_envelope(data)
        elif first == b"{":
            try:
                decoded = Decoded([self._one.decode(data)], [])
            except _DECODE_ERRORS as exc:
                return self._reject_all(self._reason(exc), data)
        elif not first:
            return self._reject_all("message is empty: expected a JSON object or array", data)
        else:
            return self._reject_all(
                f"not a JSON object or array of {self.kind}s (starts with {first!r})", data
            )
        if self.max_future_skew_seconds is not None and decoded.events:
            self._reject_future(decoded, data, now_s + self.max_future_skew_seconds)
        return decoded

    def _decode_envelope(self, data: bytes) -> Decoded[E]:
        try:
            return Decoded(self._many.decode(data), [])
        except _DECODE_ERRORS:
            pass  # find out which elements are bad
        try:
            items = self._raw_items.decode(data)
        except _DECODE_ERRORS as exc:
            return self._reject_all(self._reason(exc), data)
        if len(items) > self.max_batch_events:
            return self._reject_all(
                f"batch envelope holds {len(items)} events, above the limit of "
                f"{self.max_batch_events}",
                data,
            )
        events: list[E] = []
        rejected: list[Rejected] = []
        for index, item in enumerate(items):
            try:
                events.append(self._one.decode(item))
            except _DECODE_ERRORS as exc:
                rejected.append(Rejected(self._reason(exc), index, bytes(item)))
        return Decoded(events, rejected)

    def _reject_future(self, decoded: Decoded[E], data: bytes, limit_s: float) -> None:
        """Move events stamped beyond ``limit_s`` from ``events`` to ``rejected``."""
        newest: float = max([e.timestamp for e in decoded.events])  # type: ignore[type-var,assignment]
        if newest <= limit_s:
            return
        envelope = data.lstrip(_WHITESPACE)[:1] == b"["
        rejected_at = {r.index for r in decoded.rejected}
        items = self._raw_items.decode(data) if envelope else [data]
        indices = [i for i in range(len(items)) if i not in rejected_at]
        skew_s = self.max_future_skew_seconds or 0.0
        kept: list[E] = []
        for index, event in zip(indices, decoded.events, strict=True):
            if event.event_time_s <= limit_s:
                kept.append(event)
                continue
            reason = (
                f"invalid {self.kind}: timestamp {_iso(event.event_time_s)} is "
                f"{event.event_time_s - limit_s + skew_s:.0f} s ahead of the wall clock "
                f"(limit {skew_s:.0f} s) - at `$.timestamp`"
            )
            if event.event_time_s > 1e11:
                reason += "; epoch milliseconds? timestamp must be in seconds"
            decoded.rejected.append(
                Rejected(reason, index if envelope else None, bytes(items[index]))
            )
        decoded.rejected.sort(key=lambda r: -1 if r.index is None else r.index)
        decoded.events = kept

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, msgspec.ValidationError):
            return f"invalid {self.kind}: {exc}"
        if isinstance(exc, UnicodeDecodeError):
            return f"JSON is malformed: not valid UTF-8 (byte {exc.start})"
        if isinstance(exc, RecursionError):
            return "JSON is malformed: nested too deeply"
        return f"JSON is malformed: {_strip_prefix(str(exc))}"

    @staticmethod
    def _reject_all(reason: str, data: bytes) -> Decoded[E]:
        return Decoded([], [Rejected(reason, None, data)])


def _strip_prefix(message: str) -> str:
    return message.removeprefix("JSON is malformed: ")


def _iso(epoch_s: float) -> str:
    try:
        return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return f"{epoch_s:g}"


def group_by(events: Sequence[E], key: str) -> dict[str, list[E]]:
    """Events grouped by one attribute, in arrival order within each group.

    >>> class X:
    ...     def __init__(self, m): self.model = m
    >>> {k: len(v) for k, v in group_by([X("a"), X("b"), X("a")], "model").items()}
    {'a': 2, 'b': 1}
    """
    values = list(map(operator.attrgetter(key), events))
    if values and values.count(values[0]) == len(values):   # the usual: one model per batch
        return {values[0]: list(events)}
    groups: dict[str, list[E]] = {}
    for value, event in zip(values, events, strict=True):
        group = groups.get(value)
        if group is None:
            groups[value] = [event]
        else:
            group.append(event)
    return groups


class _Trusted(msgspec.Struct, kw_only=True, gc=False):
    """Base of the unvalidated mirrors of the event types used on internal topics."""

    timestamp: float

    @property
    def event_time_s(self) -> float:
        return self.timestamp


def _strip(tp: Any) -> Any:
    """``tp`` without ``Annotated`` constraints, recursively."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _strip(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return Union[tuple(_strip(a) for a in get_args(tp))]  # noqa: UP007
    if origin in (list, dict):
        return origin[tuple(_strip(a) for a in get_args(tp))]
    return tp


def trusted_mirror(event_type: type[Any]) -> type[Any]:
    """A Struct with ``event_type``'s fields minus validation, for data mlpulse validated.

    Decoding a repartitioned batch then costs a plain decode, not a second validation.

    >>> Mirror = trusted_mirror(PredictionEvent)
    >>> msgspec.json.decode(b'{"event_id": "1", "timestamp": 5, "model": "bad name!"}',
    ...                     type=Mirror).model
    'bad name!'
    """
    fields = []
    for f in msgspec.structs.fields(event_type):
        if f.name == "timestamp":
            continue
        default = f.default if f.default is not msgspec.NODEFAULT else msgspec.NODEFAULT
        if f.default_factory is not msgspec.NODEFAULT:
            default = msgspec.field(default_factory=f.default_factory)
        spec = (f.name, _strip(f.type)) if default is msgspec.NODEFAULT else (
            f.name, _strip(f.type), default)
        fields.append(spec)
    return msgspec.defstruct(f"Trusted{event_type.__name__}", fields, bases=(_Trusted,),
                             kw_only=True, gc=False)


class InternalCodec(Generic[E]):
    """MessagePack for validated events on internal (repartition) topics: data, never objects.

    Decoding yields :func:`trusted_mirror` objects: same fields, no second validation.
    """

    def __init__(self, event_type: type[E]) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        mirror = trusted_mirror(event_type)
        self._decoder = msgspec.msgpack.Decoder(list[mirror])  # type: ignore[valid-type]

    def encode(self, events: Sequence[E]) -> bytes:
        return self._encoder.encode(events)

    def decode(self, data: bytes) -> list[E]:
        return self._decoder.decode(data)  # type: ignore[no-any-return]


def chunked(events: list[Any], encode: Callable[[list[Any]], bytes], max_bytes: int) -> list[bytes]:
    """Encoded payloads of ``events``, split in halves until each is at most ``max_bytes``
    (a single event is never split).

    >>> [len(p) for p in chunked(list(range(10)), bytes, 4)]
    [2, 3, 2, 3]
    """
    return [payload for _, payload in chunk_spans(events, encode, max_bytes)]


def chunk_spans(events: list[Any], encode: Callable[[list[Any]], bytes], max_bytes: int,
                start: int = 0) -> list[tuple[slice, bytes]]:
    """Like :func:`chunked`, with the slice of ``events`` each payload holds.

    >>> [(s.start, s.stop) for s, _ in chunk_spans(list(range(10)), bytes, 4)]
    [(0, 2), (2, 5), (5, 7), (7, 10)]
    """
    payload = encode(events)
    if len(payload) <= max_bytes or len(events) <= 1:
        return [(slice(start, start + len(events)), payload)]
    half = len(events) // 2
    return (chunk_spans(events[:half], encode, max_bytes, start)
            + chunk_spans(events[half:], encode, max_bytes, start + half))
