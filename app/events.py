"""Wire types: every message mlpulse reads or writes, as msgspec Structs.

These types *are* the public contract. ``schemas/*.json`` are generated from
them (``make schemas``) and a test checks that the files match.

Inputs are decoded and validated in one pass by msgspec; constraints a type
cannot express (time zone, level spelling) live in ``__post_init__`` and come
out as the same ``msgspec.ValidationError`` with the field path.

>>> import msgspec
>>> event = msgspec.json.decode(
...     b'{"event_id": "e1", "timestamp": "2024-01-01T00:00:00Z", "model": "fraud"}',
...     type=PredictionEvent,
... )
>>> event.event_time_s, event.model_version, event.status
(1704067200.0, 'unknown', 'ok')
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "LOG_LEVELS",
    "MAX_FEATURES",
    "MAX_OUTCOMES",
    "AlertEvent",
    "ComparisonSummary",
    "ConfidenceSummary",
    "DeadLetter",
    "Distribution",
    "FeatureSummary",
    "FeedbackEvent",
    "LLMSummary",
    "LatencySummary",
    "LogEvent",
    "LogWindow",
    "OutcomeSummary",
    "PerformanceSummary",
    "PredictionEvent",
    "PredictionWindow",
    "SignalComparison",
    "WindowSummary",
]

MAX_FEATURES = 1000
"""Most features one prediction event may carry."""
MAX_OUTCOMES = 16
"""Most outcomes one feedback event may carry."""

_FLOAT_MAX = 1e150
"""Largest magnitude of a number in an event: beyond it, squares (variances) would overflow
to infinity; non-finite literals (NaN, Infinity, 1e999) are rejected by the parser."""

FiniteFloat = Annotated[float, Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]
NonNegative = Annotated[float, Meta(ge=0, le=_FLOAT_MAX)]
Probability = Annotated[float, Meta(ge=0, le=1)]
Count = Annotated[int, Meta(ge=0, le=2**53)]
ShortText = Annotated[str, Meta(max_length=128)]
Text = Annotated[str, Meta(max_length=1024)]
# Patterns and dict-key lengths cost msgspec ~2 µs per event (measured); they are checked
# in __post_init__ with C-speed str methods instead, and still documented in the schemas.
_NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-"
_HEX = b"0123456789abcdef"
Name = Annotated[str, Meta(min_length=1, max_length=128)]
"""A key of ``features``/``fields``: 1-128 characters (msgspec checks keys in C: 1 µs per
event faster than a check in ``__post_init__``)."""
SegmentKey = Annotated[str, Meta(max_length=128)]
ModelName = Annotated[
    str, Meta(min_length=1, max_length=128,
              extra_json_schema={"pattern": r"^[A-Za-z0-9._:/-]+$"})
]
TraceId = Annotated[
    str, Meta(min_length=32, max_length=32, extra_json_schema={"pattern": r"^[0-9a-f]{32}$"})
]
EpochSeconds = Annotated[float, Meta(ge=0, le=_FLOAT_MAX)]
Timestamp = EpochSeconds | Annotated[datetime, Meta(tz=True)]
"""Event time: Unix epoch seconds, or an RFC 3339 string with an offset."""

FeatureValue = FiniteFloat | Text | bool | None
Prediction = FiniteFloat | Text | bool | None

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
_LEVEL_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL"}
ERROR_LEVELS = frozenset({"ERROR", "FATAL"})


def _epoch_seconds(value: float | datetime) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


_GOOD_NAMES: set[str] = set()
"""Names that passed :func:`_check_name` (at most ``_MAX_GOOD_NAMES``): most events name
a model seen before, and a set lookup is cheaper than the check."""
_MAX_GOOD_NAMES = 10_000


def _check_name(field: str, value: str) -> None:
    if value.encode().translate(None, _NAME_CHARS):   # what is left is not allowed
        raise ValueError(f"Expected `str` of [A-Za-z0-9._:/-] only - at `$.{field}`")
    if len(_GOOD_NAMES) < _MAX_GOOD_NAMES:
        _GOOD_NAMES.add(value)


def _check_trace_id(value: str | None) -> None:
    if value is not None and value.encode().translate(None, _HEX):
        raise ValueError("Expected `str` of 32 lowercase hex digits - at `$.trace_id`")


class PredictionEvent(Struct, kw_only=True, gc=False):
    """One model prediction, as emitted by a serving service."""

    event_id: ShortText
    timestamp: Timestamp
    model: ModelName
    model_version: ShortText = "unknown"
    latency_ms: NonNegative | None = None
    status: Literal["ok", "error"] = "ok"
    error_type: ShortText | None = None
    prediction: Prediction = None
    confidence: Probability | None = None
    features: Annotated[dict[Name, FeatureValue], Meta(max_length=MAX_FEATURES)] = {}
    segment: Annotated[dict[SegmentKey, ShortText], Meta(max_length=32)] = {}
    trace_id: TraceId | None = None
    request_id: ShortText | None = None
    tokens_in: Count | None = None
    tokens_out: Count | None = None
    cost_usd: NonNegative | None = None
    cache_hit: bool | None = None

    def __post_init__(self) -> None:
        # runs for every event: the checks are inlined, and a model name checked once
        if type(self.timestamp) is not float:
            self.timestamp = _epoch_seconds(self.timestamp)
        if self.model not in _GOOD_NAMES:
            _check_name("model", self.model)
        trace_id = self.trace_id
        if trace_id is not None and trace_id.encode().translate(None, _HEX):
            _check_trace_id(trace_id)

    @property
    def event_time_s(self) -> float:
        """Event time in Unix epoch seconds."""
        return self.timestamp  # type: ignore[return-value]


class LogEvent(Struct, kw_only=True, gc=False):
    """One log record of a serving service.

    >>> msgspec.json.decode(
    ...     b'{"timestamp": 0, "level": "warning", "service": "api", "message": "slow"}',
    ...     type=LogEvent,
    ... ).level
    'WARN'
    """

    timestamp: Timestamp
    level: Annotated[str, Meta(min_length=1, max_length=16)]
    service: ModelName
    message: Annotated[str, Meta(max_length=65536)]
    model: ModelName | None = None
    model_version: ShortText | None = None
    trace_id: TraceId | None = None
    request_id: ShortText | None = None
    fields: Annotated[dict[Name, Any], Meta(max_length=MAX_FEATURES)] = {}

    def __post_init__(self) -> None:
        self.timestamp = _epoch_seconds(self.timestamp)
        _check_name("service", self.service)
        if self.model is not None:
            _check_name("model", self.model)
        _check_trace_id(self.trace_id)
        level = self.level.upper()
        level = _LEVEL_ALIASES.get(level, level)
        if level not in LOG_LEVELS:
            raise ValueError(
                f"level must be one of {', '.join(LOG_LEVELS)} (any case), "
                f"got {self.level!r}"
            )
        self.level = level

    @property
    def event_time_s(self) -> float:
        """Event time in Unix epoch seconds."""
        return self.timestamp  # type: ignore[return-value]


class FeedbackEvent(Struct, kw_only=True, gc=False):
    """Delayed ground truth for one prediction of ``model`` (joined by ``event_id``): its
    ``label``, its business ``outcomes`` (name → number or boolean, e.g.
    ``{"converted": true, "revenue_usd": 12.5}``), or both.

    ``timestamp`` is when the feedback became known; ``model`` routes it to the worker
    that holds the model's predictions, so it is required. A prediction takes one label
    and one set of outcomes (a label and outcomes may come in separate events; a repeat of
    either is a duplicate).
    """

    event_id: ShortText
    timestamp: Timestamp
    model: ModelName
    label: FiniteFloat | Text | bool | None = None
    outcomes: Annotated[dict[Name, FiniteFloat | bool], Meta(max_length=MAX_OUTCOMES)] = {}

    def __post_init__(self) -> None:
        self.timestamp = _epoch_seconds(self.timestamp)
        _check_name("model", self.model)
        if self.label is None and not self.outcomes:
            raise ValueError("a feedback event carries a `label`, `outcomes` or both")

    @property
    def event_time_s(self) -> float:
        """Event time in Unix epoch seconds."""
        return self.timestamp  # type: ignore[return-value]


# ---------------------------------------------------------------- outputs


class LatencySummary(Struct):
    """Latency of one window, milliseconds; quantiles within 1% relative error."""

    p50: float
    p95: float
    p99: float
    mean: float
    max: float


class ConfidenceSummary(Struct):
    """Confidence of one window: mean, 5th percentile, share below 0.5."""

    mean: float
    p05: float
    low_rate: float


class Distribution(Struct):
    """A per-request quantity of one window: mean, median, 95th percentile, maximum
    (quantiles within 1% relative error)."""

    mean: float
    p50: float
    p95: float
    max: float


class LLMSummary(Struct, omit_defaults=True):
    """What one window's LLM calls cost, per request: the events that reported tokens or
    a cost (``requests``); ``cost_usd_per_1k_requests`` is over those that reported a
    cost."""

    requests: int
    tokens_in: Distribution | None = None
    tokens_out: Distribution | None = None
    cost_usd: Distribution | None = None
    cost_usd_per_1k_requests: float | None = None


class FeatureSummary(Struct, omit_defaults=True):
    """Statistics of one feature in one window.

    Numbers carry ``mean``/``std``/``min``/``max``; strings and booleans carry
    ``top`` (value → count); a feature seen with both kinds carries both.
    """

    count: int
    null_count: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    top: dict[str, int] | None = None


class PerformanceSummary(Struct, omit_defaults=True):
    """Model quality of one window's predictions, from the labels joined so far.

    Classification (labels and predictions that are strings, booleans or 0/1)
    reports ``accuracy`` and ``precision``/``recall``/``f1`` — of the positive
    class for binary problems, macro averages otherwise — and ``macro_f1``;
    numeric predictions report ``mae`` and ``rmse``. ``label_coverage`` is the
    labelled share of the window's predictions; delays are from prediction to label.
    """

    labelled: int
    label_coverage: float
    label_delay_mean_seconds: float | None = None
    label_delay_max_seconds: float | None = None
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    macro_f1: float | None = None
    mae: float | None = None
    rmse: float | None = None


class OutcomeSummary(Struct, omit_defaults=True):
    """One business outcome of one window's predictions, from the feedback joined so far:
    how many predictions have it, its sum, mean and (population) standard deviation;
    ``rate`` (the share true) when every value was a boolean."""

    count: int
    sum: float
    mean: float
    std: float
    rate: float | None = None


class SignalComparison(Struct):
    """One signal of a candidate version against the baseline version in the same window.

    ``effect`` is what makes a difference material: a rate difference
    (``two_proportion``, outcomes: the relative change), the ratio of the quantiles
    (``quantile_exceedance``), the PSI (``chi_square`` of binned numbers) or the largest
    change of a category's share (``chi_square`` of categories), Cohen's d (``welch_t``).
    ``verdict``: ``worse``/``better`` for signals with a direction, ``different`` for
    distributions, ``same`` when the difference is not significant or not material.
    """

    test: Literal["two_proportion", "quantile_exceedance", "chi_square", "welch_t"]
    candidate: float | None
    baseline: float | None
    effect: float | None
    p_value: float
    verdict: Literal["worse", "better", "different", "same"]


class ComparisonSummary(Struct):
    """A candidate version's window against its model's baseline version in the same
    window (see docs/detection.md, "Version comparison")."""

    baseline_version: str
    baseline_count: int
    signals: dict[str, SignalComparison]


class PredictionWindow(Struct, tag_field="kind", tag="predictions", kw_only=True):
    """Closed event-time window of one (model, model_version).

    ``revision`` is 0 when the window closes; each later re-emission (labels that
    arrived after the close changed ``performance``) carries the next number and
    replaces the earlier ones.
    """

    model: str
    model_version: str
    window_start: str
    window_end: str
    count: int
    error_count: int
    error_rate: float
    latency_ms: LatencySummary | None
    confidence: ConfidenceSummary | None
    predictions: dict[str, int]
    features: dict[str, FeatureSummary]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    cache_hit_rate: float | None
    late_events: int
    error_types: dict[str, int] = {}
    trace_ids: list[str] = []
    performance: PerformanceSummary | None = None
    llm: LLMSummary | None = None
    """Per-request tokens and cost (None: no event of the window reported them)."""
    segment: dict[str, str] = {}
    """The slice this window summarises (e.g. ``{"region": "eu"}``); empty: the whole model
    version."""
    outcomes: dict[str, OutcomeSummary] = {}
    """Business outcomes joined from feedback so far, by name."""
    comparison: ComparisonSummary | None = None
    """This version against the model's baseline version in the same window (None: no
    other version had events, or this is the baseline)."""
    revision: int = 0


class LogWindow(Struct, tag_field="kind", tag="logs", kw_only=True):
    """Closed event-time window of one service's logs."""

    service: str
    window_start: str
    window_end: str
    count: int
    error_count: int
    error_rate: float
    counts: dict[str, int]
    late_events: int


WindowSummary = PredictionWindow | LogWindow


class Annotations(Struct, omit_defaults=True):
    summary: str
    description: str
    runbook_url: str | None = None


class AlertEvent(Struct, kw_only=True):
    """A finding published on the alerts topic."""

    alert_id: str
    fingerprint: str
    status: Literal["firing", "resolved"]
    severity: Literal["critical", "warning", "info"]
    rule: str
    kind: Literal["threshold", "drift", "anomaly", "data_quality", "performance", "no_data",
                  "comparison"]
    labels: dict[str, str]
    annotations: Annotations
    value: float | None
    threshold: float | None
    starts_at: str
    ends_at: str | None
    window_start: str | None
    window_end: str | None
    evidence: dict[str, Any] = {}
    trace_ids: list[str] = []


class DeadLetter(Struct, kw_only=True, omit_defaults=True):
    """An input that could not be processed, kept with its reason and bytes."""

    error: str
    source_topic: str
    partition: int | None
    offset: int | None
    index: int | None
    received_at: str
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    trace_id: str | None = None


def schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the wire types, by file name under ``schemas/``."""
    types: dict[str, Any] = {
        "prediction.schema.json": PredictionEvent,
        "log.schema.json": LogEvent,
        "feedback.schema.json": FeedbackEvent,
        "window.schema.json": WindowSummary,
        "alert.schema.json": AlertEvent,
        "deadletter.schema.json": DeadLetter,
    }
    return {name: msgspec.json.schema(tp) for name, tp in types.items()}
