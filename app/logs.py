"""The worker's own logs: one JSON object per line, or readable text on a terminal.

Every record carries ``time``, ``level``, ``logger`` and ``message``; the
context mlpulse passes with ``extra=`` (``model``, ``model_version``,
``service``, ``rule``, ``trace_id``, ``topic``, ``partition``, ``offset``,
``count``) is added when present, and an exception becomes ``exception`` (its
traceback as text). Faust's and aiokafka's records go through the same handler.

>>> record = logging.LogRecord("mlpulse.pipeline", logging.WARNING, __file__, 1,
...                            "dead-lettered %d events", (2,), None)
>>> record.topic, record.partition = "mlpulse.predictions", 3
>>> line = JsonFormatter().format(record)
>>> msgspec.json.decode(line)["message"], msgspec.json.decode(line)["partition"]
('dead-lettered 2 events', 3)
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = ["CONTEXT_FIELDS", "JsonFormatter", "logging_config"]

CONTEXT_FIELDS = ("model", "model_version", "service", "rule", "status", "trace_id",
                  "topic", "partition", "offset", "count", "alert_id")
_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(out).decode()


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, with the context fields appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{name}={record.__dict__[name]}" for name in CONTEXT_FIELDS
                           if record.__dict__.get(name) is not None)
        return f"{text} [{context}]" if context else text


def logging_config(level: str, log_format: str = "auto") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for ``level`` and ``log_format``
    (``json``, ``text``, or ``auto``: text on a terminal, else JSON)."""
    if log_format == "auto":
        log_format = "text" if sys.stderr.isatty() else "json"
    formatter = {"()": JsonFormatter} if log_format == "json" else {"()": TextFormatter}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mlpulse": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "mlpulse"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }
