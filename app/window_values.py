"""What rules read of a closed window: its summary as metrics (:func:`window_metrics`), or
one metric at a dotted path (:func:`window_value`: read where it is, without building the
summary as data)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec

from .events import PredictionWindow
from .join import Revised
from .summarize import Closed

__all__ = ["window_metrics", "window_value"]


def window_value(closed: Closed, path: str, min_labels: int = 0) -> float | None:
    """The metric at ``path`` of a closed window, read from its summary where
    :func:`window_metrics` would build the summary as data first (None: not measured).

    >>> from mlpulse.aggregates import PredictionAggregate
    >>> from mlpulse.events import PredictionEvent
    >>> aggregate = PredictionAggregate()
    >>> aggregate.add_batch([PredictionEvent(event_id=str(i), timestamp=1.0, model="m",
    ...                      latency_ms=20.0) for i in range(120)])
    >>> summary = aggregate.result(model="m", model_version="v1", window_start="",
    ...                            window_end="", late_events=0)
    >>> closed = Closed(0, ("m", "v1"), 0.0, 60.0, aggregate, summary)
    >>> paths = ("count", "latency_ms.max", "throughput_per_s", "performance.accuracy", "x")
    >>> [window_value(closed, path) for path in paths]
    [120.0, 20.0, 2.0, None, None]
    >>> window_value(closed, "latency_ms.p99") == window_metrics(closed)["latency_ms"]["p99"]
    True
    """
    if path == "throughput_per_s":
        if closed.idle:
            return None
        return closed.summary.count / max(closed.end_s - closed.start_s, 1e-9)
    value: Any = closed.summary
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif part in getattr(type(value), "__struct_fields__", ()):
            value = getattr(value, part)
        else:
            return None
        if value is None:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    summary = closed.summary
    if isinstance(summary, PredictionWindow) and (
            (path.startswith("performance.") and summary.performance is not None
             and summary.performance.labelled < min_labels)
            or (path.startswith("outcomes.")
                and summary.outcomes[path.split(".")[1]].count < min_labels)):
        return None   # (as window_metrics leaves them out)
    return float(value)


def window_metrics(closed: Closed | Revised, min_labels: int = 0,
                   fields: Collection[str] | None = None) -> dict[str, Any]:
    """A closed window's summary as the metrics rules read (plus ``throughput_per_s``): its
    ``fields`` only, if given (:attr:`Rules.fields <mlpulse.rules.Rules.fields>`: a slice's
    summary as a whole costs more than the rules reading it).

    ``performance`` is left out until the window has ``min_labels`` labels (no verdict), an
    outcome until as many predictions have it, and
    ``throughput_per_s`` from a window closed because its events stopped (incomplete by
    construction: the end of a stream is not a throughput drop).
    """
    summary = closed.summary
    metrics: dict[str, Any] = msgspec.to_builtins(summary) if fields is None else {
        name: msgspec.to_builtins(getattr(summary, name)) for name in fields
        if hasattr(summary, name)}
    if not getattr(closed, "idle", False):
        metrics["throughput_per_s"] = metrics["count"] / max(closed.end_s - closed.start_s,
                                                             1e-9)
    performance = metrics.get("performance")
    if performance is not None and performance["labelled"] < min_labels:
        del metrics["performance"]
    if metrics.get("outcomes"):   # an outcome, likewise, once ``min_labels`` predictions have it
        metrics["outcomes"] = {name: o for name, o in metrics["outcomes"].items()
                               if o["count"] >= min_labels}
    return metrics
