"""Prometheus metrics of a worker, on an injected registry; incremented once per batch.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = Metrics(registry)
>>> metrics.events.labels(topic="mlpulse.predictions", outcome="accepted").inc(3)
>>> registry.get_sample_value(
...     "mlpulse_events_total", {"topic": "mlpulse.predictions", "outcome": "accepted"})
3.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics"]


class Metrics:
    """The worker's own counters (per-model views come with the detectors)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "mlpulse_events", "Input events by topic and outcome (accepted, dead_lettered).",
            ["topic", "outcome"], registry=registry)
        self.dead_letters = Counter(
            "mlpulse_dead_letters", "Dead-lettered inputs by topic and reason (invalid_event, "
            "malformed_json, future_timestamp, too_large, empty, ...).", ["topic", "reason"],
            registry=registry)
        self.messages = Counter(
            "mlpulse_messages", "Input Kafka messages by topic.", ["topic"], registry=registry)
        self.late_events = Counter(
            "mlpulse_late_events", "Events whose window had already closed (not aggregated).",
            ["kind"], registry=registry)
        self.windows_closed = Counter(
            "mlpulse_windows_closed", "Window summaries emitted.", ["kind"], registry=registry)
        self.alerts = Counter(
            "mlpulse_alerts", "Alert events published, by rule and status (firing, resolved).",
            ["rule", "status"], registry=registry)
        self.batch_messages = Histogram(
            "mlpulse_batch_messages", "Kafka messages per batch a stage processed (the count "
            "is the number of batches).", ["stage"], registry=registry,
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000))
        self.batch_duration = Histogram(
            "mlpulse_batch_duration_seconds", "Time a stage spent on one batch.", ["stage"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.open_windows = Gauge(
            "mlpulse_open_windows", "Windows currently open on this worker.", registry=registry)
        self.paused_partitions = Gauge(
            "mlpulse_input_partitions_paused",
            "Input partitions paused because their event time runs ahead of the slowest "
            "(event-time alignment; labels: ahead of the predictions).", ["topic"],
            registry=registry)
        self.pauses = Counter(
            "mlpulse_input_partition_pauses_total",
            "Times an input partition was paused by event-time alignment.", ["topic"],
            registry=registry)
        self.rereads = Counter(
            "mlpulse_internal_rereads",
            "Times a repartitioned topic's partition was read again from its next offset: "
            "Faust's consumer handed on a message past others it had not yielded.",
            ["topic"], registry=registry)
        self.offsets_lost = Counter(
            "mlpulse_internal_offsets_lost",
            "Offsets of a repartitioned topic that could not be applied (reason: deleted by "
            "retention first, gap in the log): their events are lost.", ["topic", "reason"],
            registry=registry)

    def track_open_windows(self, count: Callable[[], int]) -> None:
        """Read the open-window count at scrape time (no writes on the hot path)."""
        self.open_windows.set_function(lambda: float(count()))

    def track_lag(self, positions: Mapping[Any, int],
                  highwater: Callable[[Any], int | None]) -> None:
        """Consumer lag per input partition (high watermark − next offset to process),
        read at scrape time; ``positions`` maps Faust TPs to the next offset."""
        self.registry.register(_LagCollector(positions, highwater))

    def track_label_join(self, counts: Callable[[], Mapping[str, int]],
                         size: Callable[[], int]) -> None:
        """Report the label join's running totals, read at scrape time."""
        self.registry.register(_LabelJoinCollector(counts, size))


class _LagCollector(Collector):
    def __init__(self, positions: Mapping[Any, int],
                 highwater: Callable[[Any], int | None]) -> None:
        self.positions = positions
        self.highwater = highwater

    def collect(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "mlpulse_consumer_lag_messages", "Messages of an input partition not processed "
            "yet by this worker (high watermark - position).", labels=["topic", "partition"])
        for tp, position in sorted(self.positions.items()):
            high = self.highwater(tp)
            if high is not None:
                lag.add_metric([tp.topic, str(tp.partition)], max(high - position, 0))
        yield lag


class _LabelJoinCollector(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]], size: Callable[[], int]):
        self.counts = counts
        self.size = size

    def collect(self) -> Iterable[Metric]:
        counts = self.counts()
        labels = CounterMetricFamily(
            "mlpulse_labels", "Labels (feedback) by outcome: joined to their prediction, or "
            "unmatched (no prediction found in time).", labels=["outcome"])
        for outcome in ("joined", "unmatched"):
            labels.add_metric([outcome], counts.get(outcome, 0))
        unlabelled = CounterMetricFamily(
            "mlpulse_unlabelled_predictions", "Predictions that left the label index without "
            "a label, by reason (horizon passed, evicted for memory).", labels=["reason"])
        unlabelled.add_metric(["horizon"], counts.get("unlabelled", 0))
        unlabelled.add_metric(["evicted"], counts.get("evicted", 0))
        yield labels
        yield unlabelled
        yield CounterMetricFamily(
            "mlpulse_outcomes_joined", "Predictions whose business outcomes (feedback) joined "
            "them.", value=counts.get("outcomes_joined", 0))
        yield CounterMetricFamily(
            "mlpulse_window_revisions", "Window summaries re-emitted because late labels "
            "changed them.", value=counts.get("revisions", 0))
        yield GaugeMetricFamily(
            "mlpulse_predictions_awaiting_labels", "Predictions kept in the label index.",
            value=self.size())
