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

from dataclasses import dataclass, field

import msgspec

from .events import AlertEvent, DeadLetter, WindowSummary

__all__ = ["Outputs", "Produce", "alert_key", "encode", "window_key"]

_encoder = msgspec.json.Encoder()


@dataclass(slots=True)
class Produce:
    """One message to produce (``partition`` None: by ``key``, as Kafka's partitioner)."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class Outputs:
    """What a step of the engine asks the worker to do, in order."""

    messages: list[Produce] = field(default_factory=list)
    """Messages to hand to the producer in this order (hop messages before the progress
    reports that cover them)."""
    pauses: dict[str, set[int]] = field(default_factory=dict)
    """Input topic → exactly the partitions of it to pause now (the others resume)."""
    checkpoint_soon: bool = False
    """Windows closed: a checkpoint soon means a crash emits fewer of them again."""


def encode(record: WindowSummary | AlertEvent | DeadLetter) -> bytes:
    """The JSON bytes of an output record (the shapes of ``schemas/``)."""
    return _encoder.encode(record)


def window_key(summary: WindowSummary) -> bytes:
    """Message key of a summary on the windows topic: its model or service."""
    return (summary.model if hasattr(summary, "model") else summary.service).encode()  # type: ignore[union-attr]


def alert_key(alert: AlertEvent) -> bytes:
    """Message key of an alert: its model (or service), so one model's alerts stay in order."""
    return alert.labels.get("model", alert.labels.get("service", "")).encode()
