"""Trace context: W3C ``traceparent`` in Kafka headers, OpenTelemetry in the SDK.

Events carry a ``trace_id``; a message may instead (or also) carry a W3C
``traceparent`` header, whose trace id then applies to its events that have
none, and to its dead letters. Window exemplars and alert evidence list these
ids, so an alert leads to the traces (Jaeger, Zipkin, Tempo) behind it.

>>> parent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
>>> trace_from_headers([("traceparent", parent)])
'4bf92f3577b34da6a3ce929d0e0e4736'
>>> trace_from_headers({"traceparent": b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"})
>>> trace_from_headers(None), trace_from_headers([("traceparent", b"garbage")])
(None, None)
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["current_trace_id", "trace_from_headers"]

_TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_INVALID = "0" * 32


def trace_from_headers(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None
                       ) -> str | None:
    """The trace id of a message's ``traceparent`` header, if it has a valid one."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if key.lower() == "traceparent" and value:
            raw = value.encode() if isinstance(value, str) else bytes(value)
            match = _TRACEPARENT.match(raw)
            if match is not None and match[1].decode() != _INVALID:
                return match[1].decode()
    return None


@functools.cache
def _otel_trace() -> Any:
    """opentelemetry.trace, or None when opentelemetry-api is not installed (tried once)."""
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


def current_trace_id() -> str | None:
    """The trace id of the current OpenTelemetry span, when opentelemetry-api is installed
    and a span is recording; else None."""
    trace = _otel_trace()
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}"
