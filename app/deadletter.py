"""Dead-letter records: the reason, where the input came from, and its original bytes.

>>> from mlpulse.codec import Rejected
>>> record = dead_letter(Rejected("bad", None, b"\\xff"), "mlpulse.predictions", 0, 7, 0.0)
>>> record.payload, record.payload_encoding, record.received_at
('/w==', 'base64', '1970-01-01T00:00:00Z')
"""

from __future__ import annotations

import base64

from .codec import Rejected
from .events import DeadLetter
from .timefmt import rfc3339

__all__ = ["dead_letter", "reason_category"]


def dead_letter(
    rejected: Rejected, source_topic: str, partition: int | None, offset: int | None,
    received_at_s: float, *, trace_id: str | None = None,
) -> DeadLetter:
    """The dead-letter record of one rejected input (``trace_id``: of its message's
    ``traceparent`` header)."""
    try:
        payload = rejected.payload.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        payload = base64.b64encode(rejected.payload).decode("ascii")
        encoding = "base64"
    return DeadLetter(
        error=rejected.reason,
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        index=rejected.index,
        received_at=rfc3339(received_at_s),
        payload=payload,
        payload_encoding=encoding,  # type: ignore[arg-type]
        trace_id=trace_id,
    )


_CATEGORIES = (
    ("ahead of the wall clock", "future_timestamp"),
    ("JSON is malformed", "malformed_json"),
    ("invalid ", "invalid_event"),
    ("message is empty", "empty"),
    ("message is ", "too_large"),
    ("batch envelope holds", "envelope_too_long"),
    ("not a JSON object or array", "not_json_object"),
)


def reason_category(error: str) -> str:
    """A dead letter's reason as one of a few metric label values.

    >>> reason_category("invalid prediction event: Expected `float` - at `$.latency_ms`")
    'invalid_event'
    >>> reason_category("JSON is malformed: truncated"), reason_category("?")
    ('malformed_json', 'other')
    """
    for text, category in _CATEGORIES:
        if text in error if category == "future_timestamp" else error.startswith(text):
            return category
    return "other"
