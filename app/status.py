"""What a worker knows now: each series' latest window, detector scores and open alerts.

The pipeline tells a :class:`Status` about every window it emits, the detector
findings of every prediction window and every alert event; Prometheus reads it
through :class:`StatusCollector` at scrape time (no per-event gauge writes) and
the status page through :meth:`Status.to_json`. Bounded: series exist only for
names the cardinality guard admitted, each keeps ``history`` points, and the
series of partitions that moved to another worker are dropped.

>>> from mlpulse.events import LogWindow
>>> status = Status(history=3)
>>> status.on_window(0, LogWindow(service="api", window_start="2026-01-01T00:00:00Z",
...     window_end="2026-01-01T00:01:00Z", count=10, error_count=1, error_rate=0.1,
...     counts={"INFO": 9, "ERROR": 1}, late_events=0))
>>> status.to_json()["services"][0]["latest"]["error_rate"]
0.1
"""

from __future__ import annotations

import collections
import functools
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .detectors.finding import Finding
from .events import AlertEvent, LogWindow, PredictionWindow, WindowSummary
from .slicing import SliceNames

__all__ = ["Status", "StatusCollector"]

_DRIFT_RULES = ("feature_drift", "prediction_drift")
_encoder = msgspec.json.Encoder()


@functools.lru_cache(maxsize=256)
def _epoch_s(rfc3339: str) -> float:
    """Seconds since the epoch of a window's bound, remembered (a model version's window
    and its slices' are bounded alike)."""
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


_POINT = ("window_start", "count", "error_rate", "p50_ms", "p95_ms", "p99_ms", "confidence",
          "accuracy", "drift_psi_max")
"""Fields of a prediction series' history point (a tuple: 1,000 series × 60 points of dicts
took ~40 MB)."""
_LOG_POINT = ("window_start", "count", "error_rate")
_PSI_MAX = _POINT.index("drift_psi_max")


class _Latest(NamedTuple):
    """What the Prometheus collector reads of a series' latest window."""

    window_start: str
    start_s: float
    end_s: float
    events: int
    error_rate: float
    cost_usd: float = 0.0
    latency_ms: tuple[float, float, float] | None = None
    """p50, p95, p99"""
    confidence: float | None = None
    llm: tuple[tuple[str, str, float], ...] = ()
    """(quantity, statistic, value) per request of the window's LLM calls."""


def _llm_values(summary: WindowSummary) -> tuple[tuple[str, str, float], ...]:
    llm = getattr(summary, "llm", None)
    if llm is None:
        return ()
    out = [("cost_usd_per_1k_requests", "value", llm.cost_usd_per_1k_requests)]
    for quantity in ("tokens_in", "tokens_out", "cost_usd"):
        d = getattr(llm, quantity)
        if d is not None:
            out += [(quantity, "mean", d.mean), (quantity, "50", d.p50), (quantity, "95", d.p95)]
    return tuple((q, s, v) for q, s, v in out if v is not None)


def _performance(performance: Any) -> dict[str, float]:
    """The quality metrics of a window's ``performance`` (not its label delays)."""
    return {k: v for k, v in msgspec.structs.asdict(performance).items()
            if isinstance(v, float) and not k.startswith("label_delay")}


def _latest(summary: WindowSummary) -> _Latest:
    start_s, end_s = _epoch_s(summary.window_start), _epoch_s(summary.window_end)
    if isinstance(summary, LogWindow):
        return _Latest(summary.window_start, start_s, end_s, summary.count, summary.error_rate)
    latency = summary.latency_ms
    return _Latest(summary.window_start, start_s, end_s, summary.count, summary.error_rate,
                   summary.cost_usd,
                   (latency.p50, latency.p95, latency.p99) if latency is not None else None,
                   summary.confidence.mean if summary.confidence is not None else None,
                   _llm_values(summary))


class _Series:
    """One series, compactly: its latest window as compressed JSON (for the status page)
    and as the few numbers the collector reads; history points and drift scores as
    tuples."""

    __slots__ = ("anomaly", "drift", "history", "latest", "latest_json", "partition",
                 "performance", "performance_window")

    def __init__(self, partition: int, history: int) -> None:
        self.partition = partition
        self.latest: _Latest | None = None
        self.latest_json = b""
        self.history: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=history)
        self.drift: dict[tuple[str, str], tuple[float, float, float, float]] = {}
        """(signal, signal kind) → (psi, js, p_value, drifted) of the latest window."""
        self.anomaly: dict[str, float] = {}
        self.performance: dict[str, float] = {}
        """Quality of the newest window with labels (windows close before labels come)."""
        self.performance_window = ""

    def set_latest(self, summary: WindowSummary) -> None:
        self.latest = _latest(summary)
        self.latest_json = zlib.compress(_encoder.encode(summary), 1)   # ~1.1 KB, not 3


class _Slice:
    """A slice's latest window, as the few numbers the page and the collector show."""

    __slots__ = ("drift_psi_max", "latest", "partition", "performance", "performance_window")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.latest: _Latest | None = None
        self.drift_psi_max: float | None = None
        self.performance: dict[str, float] = {}
        """Quality of the slice's newest window with labels (as a model version's)."""
        self.performance_window = ""


class Status:
    """Latest windows, scores and firing alerts of the series this worker owns."""

    def __init__(self, history: int = 60) -> None:
        self.history = history
        self.models: dict[tuple[str, str], _Series] = {}
        self.slices: dict[tuple[str, str, str], _Slice] = {}
        """(model, version, slice name) → its latest window (slices are bounded by the
        cardinality guard's values per key)."""
        self.services: dict[str, _Series] = {}
        self.alerts: dict[str, AlertEvent] = {}
        """Firing alerts by fingerprint."""
        self._slice_names = SliceNames()

    # ------------------------------------------------------------ fed by the pipeline

    def on_window(self, partition: int, summary: WindowSummary) -> None:
        if isinstance(summary, PredictionWindow):
            if summary.segment:
                self._on_slice_window(partition, summary)
                return
            key = (summary.model, summary.model_version)
            series = self.models.get(key)
            if series is None:
                series = self.models[key] = _Series(partition, self.history)
            if summary.performance is not None and (
                    summary.window_start >= series.performance_window):
                series.performance_window = summary.window_start
                series.performance = _performance(summary.performance)
            point = _prediction_point(summary)
            if summary.revision and series.latest is not None and (
                    series.latest.window_start != summary.window_start):
                for i, old in enumerate(series.history):   # a revision of an older window
                    if old[0] == summary.window_start:
                        series.history[i] = (*point[:_PSI_MAX], old[_PSI_MAX])
                return
            series.set_latest(summary)
            _append(series, point)
        else:
            service = self.services.get(summary.service)
            if service is None:
                service = self.services[summary.service] = _Series(partition, self.history)
            service.set_latest(summary)
            _append(service, (summary.window_start, summary.count, summary.error_rate))

    def on_compared(self, summary: PredictionWindow) -> None:
        """A window's summary again, now with its version comparison (judged after
        :meth:`on_window`): the latest window shown carries it."""
        series = self.models.get((summary.model, summary.model_version))
        if series is not None and series.latest is not None and (
                series.latest.window_start == summary.window_start):
            series.set_latest(summary)

    def _on_slice_window(self, partition: int, summary: PredictionWindow) -> None:
        segment = summary.segment
        key = (summary.model, summary.model_version,
               self._slice_names(tuple(segment), tuple(segment.values())))
        entry = self.slices.get(key)
        if entry is None:
            entry = self.slices[key] = _Slice(partition)
        if entry.latest is None or summary.window_start >= entry.latest.window_start:
            entry.latest = _latest(summary)
        if summary.performance is not None and (
                summary.window_start >= entry.performance_window):
            entry.performance_window = summary.window_start
            entry.performance = _performance(summary.performance)

    def on_findings(self, partition: int, key: tuple[str, ...], findings: Iterable[Finding],
                    drift_psi_max: float | None) -> None:
        """Detector findings of a prediction window of (model, version) or of a slice, and
        the largest PSI of its drift tests (None: none tested): all a slice shows."""
        if len(key) > 2:
            entry = self.slices.get((key[0], key[1], key[2]))
            if entry is not None:
                entry.drift_psi_max = drift_psi_max
            return
        series = self.models.get((key[0], key[1]))
        if series is None:
            series = self.models[(key[0], key[1])] = _Series(partition, self.history)
        for f in findings:
            if f.rule in _DRIFT_RULES:
                signal, kind = ((f.labels["feature"], "feature") if "feature" in f.labels
                                else (f.labels.get("signal", "prediction"), "output"))
                series.drift[(signal, kind)] = (
                    float(f.evidence.get("psi", 0.0)), float(f.evidence.get("js", 0.0)),
                    float(f.evidence.get("p_value", 1.0)), float(f.firing))
            elif f.rule == "window_anomaly":
                series.anomaly["robust_z"] = float(f.value or 0.0)
                series.anomaly["hst"] = float(f.evidence.get("hst_score") or 0.0)
        if series.history and series.drift:
            last = series.history[-1]
            series.history[-1] = (*last[:_PSI_MAX], max(d[0] for d in series.drift.values()))

    def on_alerts(self, alerts: Iterable[AlertEvent]) -> None:
        for alert in alerts:
            if alert.status == "firing":
                self.alerts[alert.fingerprint] = alert
            else:
                self.alerts.pop(alert.fingerprint, None)

    def keep_only(self, partitions: set[int]) -> None:
        """Forget the series of partitions this worker no longer owns."""
        for key in [k for k, s in self.models.items() if s.partition not in partitions]:
            del self.models[key]
        for name in [k for k, s in self.services.items() if s.partition not in partitions]:
            del self.services[name]
        for sliced in [k for k, s in self.slices.items() if s.partition not in partitions]:
            del self.slices[sliced]
        models = {m for m, _ in self.models} | set(self.services)
        for fp in [fp for fp, a in self.alerts.items()
                   if a.labels.get("model", a.labels.get("service")) not in models]:
            del self.alerts[fp]

    # ------------------------------------------------------------ read by operators

    def to_json(self) -> dict[str, Any]:
        """Everything the status page shows (JSON-ready)."""
        return {
            "models": [
                {"model": model, "model_version": version,
                 "latest": (msgspec.json.decode(zlib.decompress(s.latest_json))
                            if s.latest_json else None),
                 "history": [dict(zip(_POINT, p, strict=True)) for p in s.history],
                 "drift": [{"signal": signal, "kind": kind,
                            **dict(zip(("psi", "js", "p_value", "drifted"), scores,
                                       strict=True))}
                           for (signal, kind), scores in sorted(s.drift.items())],
                 "anomaly": s.anomaly, "performance": s.performance}
                for (model, version), s in sorted(self.models.items())],
            "slices": [
                {"model": model, "model_version": version, "segment": name,
                 "window_start": s.latest.window_start, "count": s.latest.events,
                 "error_rate": s.latest.error_rate,
                 "p99_ms": s.latest.latency_ms[2] if s.latest.latency_ms else None,
                 "drift_psi_max": s.drift_psi_max, "performance": s.performance}
                for (model, version, name), s in sorted(self.slices.items()) if s.latest],
            "services": [
                {"service": name, "latest": msgspec.json.decode(zlib.decompress(s.latest_json)),
                 "history": [dict(zip(_LOG_POINT, p, strict=True)) for p in s.history]}
                for name, s in sorted(self.services.items()) if s.latest_json],
            "alerts": [msgspec.to_builtins(a) for a in
                       sorted(self.alerts.values(), key=lambda a: a.starts_at, reverse=True)],
        }


def _prediction_point(w: PredictionWindow) -> tuple[Any, ...]:
    """A history point (fields: ``_POINT``), no drift score yet."""
    latency = w.latency_ms
    return (w.window_start, w.count, w.error_rate,
            latency.p50 if latency else None, latency.p95 if latency else None,
            latency.p99 if latency else None, w.confidence.mean if w.confidence else None,
            w.performance.accuracy if w.performance else None, None)


def _append(series: _Series, point: tuple[Any, ...]) -> None:
    if series.history and series.history[-1][0] == point[0]:   # a revision of the newest
        if len(point) > _PSI_MAX:
            point = (*point[:_PSI_MAX], series.history[-1][_PSI_MAX])
        series.history[-1] = point
    else:
        series.history.append(point)


class StatusCollector(Collector):
    """Per model/version and per service gauges of the latest closed window, read from a
    :class:`Status` at scrape time; plus what the cardinality guard folded."""

    def __init__(self, status: Status, folded: Callable[[], Mapping[str, int]]) -> None:
        self.status = status
        self.folded = folded

    def collect(self) -> Iterable[Metric]:
        s = self.status
        mv = ["model", "model_version"]

        def gauge(name: str, doc: str, extra: Iterable[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*mv, *extra])

        events = gauge("mlpulse_model_window_events", "Events in the latest closed window.")
        rate = gauge("mlpulse_model_throughput_events_per_second",
                     "Events per second of event time in the latest closed window.")
        errors = gauge("mlpulse_model_error_ratio", "Failed share of the latest window.")
        latency = gauge("mlpulse_model_latency_seconds",
                        "Latency percentiles of the latest window (a gauge per percentile: "
                        "`quantile` is reserved for summaries).", ["percentile"])
        confidence = gauge("mlpulse_model_confidence_mean",
                           "Mean confidence of the latest window.")
        cost = gauge("mlpulse_model_window_cost_usd", "LLM cost in the latest window (USD).")
        llm = gauge("mlpulse_model_llm_per_request",
                    "LLM calls of the latest window, per request: tokens_in, tokens_out, "
                    "cost_usd (mean, 50th and 95th percentile), and cost_usd_per_1k_requests.",
                    ["quantity", "statistic"])
        end = gauge("mlpulse_model_window_end_timestamp_seconds",
                    "End of the latest closed window (Unix time).")
        quality = gauge("mlpulse_model_performance",
                        "Model quality of the newest window with labels (accuracy, f1, ..., "
                        "label_coverage; mae and rmse in prediction units).", ["metric"])
        drift = gauge("mlpulse_model_drift_score",
                      "Drift of a signal in the latest window against its reference.",
                      ["signal", "signal_kind", "statistic"])
        p_value = gauge("mlpulse_model_drift_p_value",
                        "p-value of the latest window's drift test.", ["signal", "signal_kind"])
        anomaly = gauge("mlpulse_model_anomaly_score",
                        "Anomaly scores of the latest window's metrics.", ["detector"])
        for (model, version), series in sorted(s.models.items()):
            labels = [model, version]
            w = series.latest
            if w is not None:
                events.add_metric(labels, w.events)
                rate.add_metric(labels, w.events / max(w.end_s - w.start_s, 1e-9))
                errors.add_metric(labels, w.error_rate)
                end.add_metric(labels, w.end_s)
                cost.add_metric(labels, w.cost_usd)
                for quantity, statistic, value in w.llm:
                    llm.add_metric([*labels, quantity, statistic], value)
                if w.latency_ms is not None:
                    for q, ms in zip(("50", "95", "99"), w.latency_ms, strict=True):
                        latency.add_metric([*labels, q], ms / 1000.0)
                if w.confidence is not None:
                    confidence.add_metric(labels, w.confidence)
            for metric, value in sorted(series.performance.items()):
                quality.add_metric([*labels, metric], value)
            for (signal, kind), (psi, js, p, _) in sorted(series.drift.items()):
                drift.add_metric([*labels, signal, kind, "psi"], psi)
                drift.add_metric([*labels, signal, kind, "js"], js)
                p_value.add_metric([*labels, signal, kind], p)
            for detector, score in sorted(series.anomaly.items()):
                anomaly.add_metric([*labels, detector], score)
        yield from (events, rate, errors, latency, confidence, cost, llm, end, quality, drift,
                    p_value, anomaly)
        yield from self._slices()

        log_events = GaugeMetricFamily("mlpulse_service_window_log_events",
                                       "Log events in the latest closed window.",
                                       labels=["service"])
        log_errors = GaugeMetricFamily("mlpulse_service_log_error_ratio",
                                       "ERROR/FATAL share of the latest log window.",
                                       labels=["service"])
        for name, series in sorted(s.services.items()):
            if series.latest is not None:
                log_events.add_metric([name], series.latest.events)
                log_errors.add_metric([name], series.latest.error_rate)
        yield log_events
        yield log_errors

        firing = GaugeMetricFamily("mlpulse_alerts_firing", "Alerts firing now.",
                                   labels=["rule", "severity"])
        counts = collections.Counter((a.rule, a.severity) for a in s.alerts.values())
        for (rule, severity), n in sorted(counts.items()):
            firing.add_metric([rule, severity], n)
        yield firing

        folded = CounterMetricFamily(
            "mlpulse_series_folded", "Events counted under __other__ by the cardinality "
            "guard, by what was folded (model, version, service, segment, feature).",
            labels=["kind"])
        totals = self.folded()
        for kind in ("model", "version", "service", "segment", "feature"):
            folded.add_metric([kind], totals.get(kind, 0))
        yield folded

    def _slices(self) -> Iterable[Metric]:
        """Each slice's latest window: families of their own (``mlpulse_slice_*``, with a
        ``segment`` label), so that queries of the model-level families count no event
        twice."""
        labels = ["model", "model_version", "segment"]
        events = GaugeMetricFamily("mlpulse_slice_window_events",
                                   "Events of the slice in its latest closed window.",
                                   labels=labels)
        errors = GaugeMetricFamily("mlpulse_slice_error_ratio",
                                   "Failed share of the slice's latest window.", labels=labels)
        latency = GaugeMetricFamily("mlpulse_slice_latency_seconds",
                                    "Latency percentiles of the slice's latest window.",
                                    labels=[*labels, "percentile"])
        drift = GaugeMetricFamily("mlpulse_slice_drift_score_max",
                                  "Largest PSI of the slice's signals in its latest window "
                                  "against the slice's own reference.", labels=labels)
        quality = GaugeMetricFamily("mlpulse_slice_performance",
                                    "Model quality of the slice's newest window with labels "
                                    "(as mlpulse_model_performance).",
                                    labels=[*labels, "metric"])
        for (model, version, name), entry in sorted(self.status.slices.items()):
            w = entry.latest
            if w is None:
                continue
            values = [model, version, name]
            events.add_metric(values, w.events)
            errors.add_metric(values, w.error_rate)
            if w.latency_ms is not None:
                for q, ms in zip(("50", "95", "99"), w.latency_ms, strict=True):
                    latency.add_metric([*values, q], ms / 1000.0)
            if entry.drift_psi_max is not None:
                drift.add_metric(values, entry.drift_psi_max)
            for metric, value in sorted(entry.performance.items()):
                quality.add_metric([*values, metric], value)
        yield from (events, errors, latency, drift, quality)

