"""What a worker writes to its output topics: message keys and bytes, in one place.

Window summaries and alerts are keyed by their model (or service), so one model's
records stay in order on one partition; dead letters are not keyed.

>>> from mlpulse.events import LogWindow
>>> window = LogWindow(service="api", window_start="1970-01-01T00:00:00Z",
...                    window_end="1970-01-01T00:01:00Z", count=3, error_count=0,
...                    error_rate=0.0, counts={"info": 3}, late_events=0)
>>> window_key(window), encode(window)[:31]
(b'api', b'{"kind":"logs","service":"api",')
"""

from __future__ import annotations

import msgspec

from .events import AlertEvent, DeadLetter, WindowSummary

__all__ = ["alert_key", "encode", "window_key"]

_encoder = msgspec.json.Encoder()


def encode(record: WindowSummary | AlertEvent | DeadLetter) -> bytes:
    """The JSON bytes of an output record (the shapes of ``schemas/``)."""
    return _encoder.encode(record)


def window_key(summary: WindowSummary) -> bytes:
    """Message key of a summary on the windows topic: its model or service."""
    return (summary.model if hasattr(summary, "model") else summary.service).encode()  # type: ignore[union-attr]


def alert_key(alert: AlertEvent) -> bytes:
    """Message key of an alert: its model (or service), so one model's alerts stay in order."""
    return alert.labels.get("model", alert.labels.get("service", "")).encode()
