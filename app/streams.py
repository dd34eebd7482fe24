"""The three input streams: where each is read, how it is routed, where it is repartitioned.

>>> from mlpulse.config import Settings
>>> predictions, logs, feedback = streams(Settings(topic_prefix="acme."))
>>> predictions.topic, predictions.internal, predictions.key, predictions.aligned
('acme.predictions', 'acme.predictions.by-model', 'model', True)
>>> feedback.internal, feedback.aligned
('acme.feedback.by-model', False)
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .events import FeedbackEvent, LogEvent, PredictionEvent
from .topics import Topics

__all__ = ["Stream", "streams"]


@dataclass(frozen=True, slots=True)
class Stream:
    """One input stream."""

    name: str
    """``"predictions"``, ``"logs"`` or ``"feedback"``: what the stages call it."""
    topic: str
    """The input topic producers write."""
    internal: str
    """The internal topic its events are repartitioned through, by ``key``."""
    key: str
    """The event field that routes it: ``"model"`` or ``"service"``."""
    aligned: bool
    """Whether windows of it wait for the slowest input partition (:mod:`mlpulse.progress`);
    labels are not windowed: they wait for their predictions instead."""
    event_type: type
    """What its messages hold (one event or an array: the codec validates them)."""


def streams(settings: Settings) -> tuple[Stream, Stream, Stream]:
    """Predictions, logs and feedback under ``settings``' topic names."""
    t = Topics(settings)
    return (Stream("predictions", t.predictions, t.predictions_by_model, "model", True,
                   PredictionEvent),
            Stream("logs", t.logs, t.logs_by_service, "service", True, LogEvent),
            Stream("feedback", t.feedback, t.feedback_by_model, "model", False, FeedbackEvent))
