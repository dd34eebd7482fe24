"""The Quix Streams peer: mlpulse's prediction windows written as a Quix Streams application.

Reads JSON prediction events (one per message, or envelopes expanded with
``.apply(lambda batch: batch, expand=True)``), takes each event's ``timestamp``
(epoch seconds) as its event time, re-keys events by ``model|model_version``
(``group_by``: a repartition topic, as mlpulse repartitions by model), and
aggregates them in an event-time tumbling window (``window_ms``, grace
``grace_ms``) per key: count, errors, latency count/sum/min/max (mean on output).
Closed windows (``.final()``) are collected in the process. Run as
``python -m bench.quix_app`` with its settings in environment variables:

``BENCH_QUIX_BOOTSTRAP``        broker, ``host:port``
``BENCH_QUIX_TOPIC``            input topic (pre-filled, created with retention configs)
``BENCH_QUIX_MODE``             ``single`` (one event per message) or ``envelopes``
``BENCH_QUIX_GROUP``            consumer group (fresh per run)
``BENCH_QUIX_STATE_DIR``        RocksDB state directory (fresh per run)
``BENCH_QUIX_EXPECTED_ROWS``    events on the input, sentinels included
``BENCH_QUIX_EXPECTED_EVENTS``  events that closed windows must count (sentinels excluded)
``BENCH_QUIX_CUTOFF_MS``        windows starting at or after this belong to the sentinels
``BENCH_QUIX_WINDOW_MS``        window length (default 60,000)
``BENCH_QUIX_GRACE_MS``         allowed lateness (default 10,000)
``BENCH_QUIX_RESULT``           JSON file written when done
``BENCH_QUIX_CONSUMER_CONFIG``  extra librdkafka consumer settings, a JSON object (optional)
``BENCH_QUIX_LOGLEVEL``         Quix's log level (default ``INFO``)

It is done when every event has reached the window step and the closed windows
count ``BENCH_QUIX_EXPECTED_EVENTS`` events; it then writes the result
(wall-clock times of partition assignment, first event, all events windowed,
done; CPU times; counts) and exits at once with status 0.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.models import TimestampType

__all__ = ["initializer", "main", "reducer"]

Event = dict[str, Any]

CONSUMER_CONFIG = {"session.timeout.ms": 10_000}
"""Tansu answers a first JoinGroup after half the session timeout: librdkafka's default
(45 s) would add 22 s to every start (not timed). 10 s is the naive Faust agent's."""


def initializer(event: Event) -> dict[str, Any]:
    """The aggregate of a window's first event.

    >>> initializer({"status": "error", "latency_ms": 5.0})["errors"]
    1
    """
    return reducer({"count": 0, "errors": 0, "latency_n": 0, "latency_sum": 0.0,
                    "latency_min": None, "latency_max": None}, event)


def reducer(agg: dict[str, Any], event: Event) -> dict[str, Any]:
    """Add one event to a window's aggregate (in place; returned).

    >>> agg = initializer({"latency_ms": 5.0})
    >>> agg = reducer(agg, {"status": "error", "latency_ms": 1.0})
    >>> reducer(agg, {"latency_ms": None})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'count': 3, 'errors': 1, 'latency_n': 2, 'latency_sum': 6.0,
     'latency_min': 1.0, 'latency_max': 5.0}
    """
    agg["count"] += 1
    if event.get("status") == "error":
        agg["errors"] += 1
    latency = event.get("latency_ms")
    if latency is not None:
        agg["latency_n"] += 1
        agg["latency_sum"] += latency
        low, high = agg["latency_min"], agg["latency_max"]
        if low is None or latency < low:
            agg["latency_min"] = latency
        if high is None or latency > high:
            agg["latency_max"] = latency
    return agg


def _event_time_ms(value: Any, headers: Any, timestamp_ms: int, kind: TimestampType) -> int:
    """Event time of a single-event message; an envelope keeps its broker timestamp."""
    if isinstance(value, dict):
        return int(value["timestamp"] * 1000)
    return timestamp_ms


def _set_event_time(value: Event, key: Any, timestamp_ms: int, headers: Any) -> int:
    return int(value["timestamp"] * 1000)


def main() -> None:
    env = os.environ
    mode = env["BENCH_QUIX_MODE"]
    if mode not in ("single", "envelopes"):
        raise SystemExit(f"BENCH_QUIX_MODE must be single or envelopes, not {mode!r}")
    expected_rows = int(env["BENCH_QUIX_EXPECTED_ROWS"])
    expected_events = int(env["BENCH_QUIX_EXPECTED_EVENTS"])
    cutoff_ms = int(env["BENCH_QUIX_CUTOFF_MS"])
    result = Path(env["BENCH_QUIX_RESULT"])
    marks: dict[str, float] = {}
    state: dict[str, int] = {"rows": 0, "window_events": 0, "windows": 0}
    counts: Counter[str] = Counter()

    class TimedApplication(Application):
        """Marks the first non-empty partition assignment (after Quix opened its stores)."""

        def _on_assign(self, consumer: Any, topic_partitions: Any) -> None:
            super()._on_assign(consumer, topic_partitions)
            if topic_partitions and "assigned_at" not in marks:
                marks["assigned_at"] = time.time()
                marks["cpu_assigned"] = time.process_time()

    app = TimedApplication(
        broker_address=env["BENCH_QUIX_BOOTSTRAP"],
        consumer_group=env["BENCH_QUIX_GROUP"],
        auto_offset_reset="earliest",
        state_dir=env["BENCH_QUIX_STATE_DIR"],
        loglevel=env.get("BENCH_QUIX_LOGLEVEL", "INFO"),  # type: ignore[arg-type]
        consumer_extra_config={**CONSUMER_CONFIG,
                               **json.loads(env.get("BENCH_QUIX_CONSUMER_CONFIG", "{}"))},
    )
    topic = app.topic(env["BENCH_QUIX_TOPIC"], value_deserializer="json",
                      key_deserializer="bytes", timestamp_extractor=_event_time_ms)
    sdf = app.dataframe(topic)
    if mode == "envelopes":
        sdf = sdf.apply(lambda batch: batch, expand=True).set_timestamp(_set_event_time)
    sdf = sdf.group_by(lambda event: f"{event['model']}|{event['model_version']}",
                       name="model_version")

    def finish() -> None:
        record = {"rows": state["rows"], "window_events": state["window_events"],
                  "windows": state["windows"], "done_at": time.time(),
                  "cpu_done": time.process_time(), "counts": dict(counts), "mode": mode,
                  **marks}
        tmp = result.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(result)
        os._exit(0)

    def done() -> bool:
        return state["rows"] >= expected_rows and state["window_events"] >= expected_events

    def count_row(event: Event) -> None:
        if not state["rows"]:
            marks["first_at"] = time.time()
        state["rows"] += 1
        if state["rows"] == expected_rows:
            marks["rows_done_at"] = time.time()
            if done():  # every window already closed: this is a sentinel (or late) event
                finish()

    def closed(window: dict[str, Any], key: Any, timestamp_ms: int, headers: Any) -> None:
        if window["start"] >= cutoff_ms:
            return
        value = window["value"]
        state["windows"] += 1
        state["window_events"] += value["count"]
        counts[str(key)] += value["count"]
        if done():
            finish()

    window = sdf.update(count_row).tumbling_window(
        duration_ms=int(env.get("BENCH_QUIX_WINDOW_MS", "60000")),
        grace_ms=int(env.get("BENCH_QUIX_GRACE_MS", "10000")))
    sdf = window.reduce(reducer=reducer, initializer=initializer).final()
    sdf = sdf.update(closed, metadata=True)
    app.run()


if __name__ == "__main__":
    main()
