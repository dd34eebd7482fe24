"""Alert rules: the ``rules:`` and ``inhibit:`` sections of the YAML config.

A rule turns either a **window metric** or a **detector finding** into an alert
*condition* for one window:

* ``expr: latency_ms.p99 > 500`` — a metric of the closed window (any number in
  the window summary by dotted path, e.g. ``error_rate``, ``confidence.mean``,
  ``cost_usd``, ``cache_hit_rate``, ``features.amount.mean``, ``performance.accuracy``,
  ``outcomes.converted.rate``; plus ``throughput_per_s``), an operator
  (``> >= < <= == !=``) and a number;
* ``detector: feature_drift`` (or ``"*"``) — the findings of that detector rule
  (``kind: drift`` etc. also matches by kind).

``for: N`` windows the condition must hold before the alert fires (pending
until then), ``keep_firing_for: N`` windows it keeps firing after clearing;
``severity``, extra ``labels``, ``summary``/``description`` templates
(``{model}``, ``{model_version}``, ``{value}``, ``{threshold}``, ``{feature}``,
``{summary}`` — the detector's own words — and any label) and ``runbook_url``;
``match`` limits a rule to models/versions/services, slices (``segment: "region=*"``) or
compared signals by glob (``fraud-*``).
A rate (``error_rate``, ``*_rate``, ``performance.accuracy`` ...) is judged against its
sampling error: ``error_rate > 0.05`` holds when the window's errors show, with
``confidence`` (default 0.95, one-sided Wilson bound), a rate above 5%: 7 failures in 200
calls do not, 20 do; at thousands of events the bound is within a fraction of a percent.

Without a ``rules:`` section the built-in :data:`DEFAULT_RULES` apply: every
detector finding, error rate above 5% and p99 latency above 1 s for 2 windows.

>>> rules = Rules.from_mapping({"rules": [
...     {"name": "slow", "expr": "latency_ms.p99 > 500", "for": 2, "severity": "critical",
...      "summary": "p99 {value:.0f} ms on {model}"}]})
>>> [(c.rule, c.active, c.value, c.summary) for c in rules.evaluate_metrics(
...     {"latency_ms": {"p99": 812.0}}, {"model": "fraud", "model_version": "v3"})]
[('slow', True, 812.0, 'p99 812 ms on fraud')]
>>> Rules.from_mapping({"rules": [{"name": "x", "expr": "p99 >> 5"}]})
Traceback (most recent call last):
...
mlpulse.errors.ConfigError: rules[0].expr: expected `<metric> <op> <number>`, got 'p99 >> 5'
"""

from __future__ import annotations

import fnmatch
import functools
import math
import operator
import re
import statistics
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from .detectors.finding import Finding
from .errors import ConfigError

__all__ = ["DEFAULT_INHIBIT", "DEFAULT_RULES", "Condition", "Inhibit", "Rule", "Rules"]

Severity = Literal["critical", "warning", "info"]
Windows = Annotated[int, msgspec.Meta(ge=0, le=10_000)]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}
_EXPR = re.compile(
    r"^\s*([A-Za-z_][\w.\-/:]*)\s*(>=|<=|==|!=|>|<)\s*(-?[\d.]+(?:[eE][-+]?\d+)?)\s*$")


_MATCH_KEYS = frozenset({"model", "model_version", "service", "segment", "baseline_version",
                         "signal"})
"""Labels a rule's ``match`` may select on (``segment``: a slice, e.g. ``region=*``;
``segment: ""`` the model level only)."""


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One alert rule (see the module docs)."""

    name: str | None = None
    expr: str | None = None
    detector: str | None = None
    for_: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = msgspec.field(default=1, name="for")
    keep_firing_for: Windows = 0
    severity: Severity | None = None
    labels: dict[str, str] = {}
    match: dict[str, str] = {}
    summary: str | None = None
    description: str | None = None
    runbook_url: str | None = None
    source: Literal["predictions", "logs"] = "predictions"
    confidence: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.95
    """A rate (``*_rate``, ``performance.*``) must be beyond the threshold with this
    one-sided confidence, given how many events it was measured on (Wilson bound); 0
    compares the rate as measured."""

    def __post_init__(self) -> None:
        if (self.expr is None) == (self.detector is None):
            raise ValueError("a rule has exactly one of `expr` or `detector`")
        if self.expr is not None and not self.name:
            raise ValueError("a rule with `expr` needs a `name`")
        unknown = set(self.match) - _MATCH_KEYS
        if unknown:
            raise ValueError(f"`match` keys are {', '.join(sorted(_MATCH_KEYS))}; "
                             f"got {sorted(unknown)}")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(fnmatch.fnmatchcase(labels.get(key, ""), pattern)
                   for key, pattern in self.match.items())


class Inhibit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """While a ``source`` alert fires, ``target`` alerts with ``equal`` labels stay quiet."""

    source: list[str]
    target: list[str]
    equal: list[str] = msgspec.field(default_factory=lambda: ["model", "model_version"])


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"detector": "*"},
    {"name": "high_error_rate", "expr": "error_rate > 0.05", "for": 2, "severity": "critical",
     "summary": "{value:.1%} of predictions fail on {model} {model_version}"},
    {"name": "high_latency", "expr": "latency_ms.p99 > 1000", "for": 2, "severity": "warning",
     "summary": "p99 latency {value:.0f} ms on {model} {model_version}"},
    {"name": "log_error_rate", "expr": "error_rate > 0.2", "for": 2, "source": "logs",
     "severity": "warning", "summary": "{value:.1%} of {service}'s log records are errors"},
)
DEFAULT_INHIBIT: tuple[dict[str, Any], ...] = (
    {"source": ["no_data"], "target": ["*"], "equal": ["model"]},
    {"source": ["type_change", "feature_missing"],
     "target": ["feature_drift", "prediction_drift", "adwin_change", "null_rate",
                "out_of_range", "unseen_category", "window_anomaly"],
     "equal": ["model", "model_version"]},
)


@dataclass
class Condition:
    """A rule's verdict on one window: active or not, with what an alert needs."""

    rule: str
    active: bool
    labels: dict[str, str]
    for_windows: int = 1
    keep_firing_for: int = 0
    kind: str = "threshold"
    severity: Severity = "warning"
    value: float | None = None
    threshold: float | None = None
    summary: str = ""
    description: str = ""
    runbook_url: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


class Rules:
    """Parsed rules and inhibitions, ready to evaluate windows and findings."""

    def __init__(self, rules: Iterable[Rule], inhibit: Iterable[Inhibit]) -> None:
        self.rules = list(rules)
        self.inhibit = list(inhibit)
        self._parsed = {id(r): _parse_expr(r.expr, i) for i, r in enumerate(self.rules)
                        if r.expr is not None}
        self.fields = frozenset({path.split(".", 1)[0] for path, _, _ in self._parsed.values()}
                                | {"count", "trace_ids"})
        """The fields of a window summary that :meth:`evaluate_metrics` reads (a rate's
        trials: ``count``, or within the rate's own field)."""
        for i, rule in enumerate(self.rules):
            for what, template in (("summary", rule.summary), ("description", rule.description)):
                if template is not None:
                    _check_template(template, f"rules[{i}].{what}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Rules:
        """Rules from a config mapping (its ``rules`` and ``inhibit`` keys; defaults if absent)."""
        data = data or {}
        raw_rules = data.get("rules")
        raw_inhibit = data.get("inhibit")
        rules = _convert(list(DEFAULT_RULES) if raw_rules is None else raw_rules,
                         list[Rule], "rules")
        inhibit = _convert(list(DEFAULT_INHIBIT) if raw_inhibit is None else raw_inhibit,
                           list[Inhibit], "inhibit")
        return cls(rules, inhibit)

    # ------------------------------------------------------------ evaluation

    def evaluate_metrics(self, metrics: Mapping[str, Any], labels: Mapping[str, str],
                         source: str = "predictions", prefix: str | tuple[str, ...] = "",
                         active_only: bool = False) -> list[Condition]:
        """Conditions of the ``expr`` rules on one window's metrics (a summary as a dict);
        only rules whose metric starts with ``prefix``, and only those that hold with
        ``active_only`` (a series with no alert to resolve). The window's ``trace_ids``
        (exemplars) go into each condition's evidence."""
        trace_ids = metrics.get("trace_ids") or []
        out = []
        for rule, path, op, threshold in self._expr_rules(labels, source):
            if not path.startswith(prefix):
                continue
            value = _lookup(metrics, path)
            if value is None:
                continue   # not measured in this window (e.g. no labels yet): no verdict
            assert rule.name is not None
            judged = value
            n = _trials(metrics, path) if rule.confidence and op not in ("==", "!=") else None
            if n:   # a rate of n events: judged by the bound on the side of the threshold
                low, high = wilson_bounds(value, n, rule.confidence)
                judged = low if op in (">", ">=") else high
            active = _OPS[op](judged, threshold)
            if active_only and not active:
                continue
            evidence: dict[str, Any] = {"trace_ids": list(trace_ids)}
            if n:
                evidence.update({"events": n, "bound": judged, "confidence": rule.confidence})
            out.append(self._condition(rule, rule.name, active, labels,
                                       "threshold", value=value, threshold=threshold,
                                       detail=f"{path} {op} {threshold:g}", evidence=evidence))
        return out

    def may_hold(self, value_of: Callable[[str], float | None], labels: Mapping[str, str],
                 source: str = "predictions") -> bool:
        """Whether any ``expr`` rule may hold on a window whose metric at a path is
        ``value_of(path)`` (None: not measured): a screen before :meth:`evaluate_metrics`
        with ``active_only``, which builds the window's metrics (a slice's cost more than
        judging it). It reads each value as measured, and as a share (clamped to [0, 1])
        where the rule has a confidence, never the confidence bound itself: a Wilson
        interval holds its share, so a bound meets the threshold only where the share
        does. Conservative: a metric ``value_of`` reports that the window's metrics would
        leave out only makes it answer True.

        >>> rules = Rules.from_mapping({"rules": [
        ...     {"name": "errors", "expr": "error_rate > 0.05", "confidence": 0.95}]})
        >>> labels = {"model": "m", "model_version": "v1"}
        >>> rules.may_hold({"error_rate": 0.01}.get, labels), rules.may_hold(
        ...     {"error_rate": 0.06}.get, labels), rules.may_hold({}.get, labels)
        (False, True, False)
        """
        for rule, path, op, threshold in self._expr_rules(labels, source):
            value = value_of(path)
            if value is None:
                continue
            if _OPS[op](value, threshold) or (
                    rule.confidence and op not in ("==", "!=")
                    and _OPS[op](min(max(value, 0.0), 1.0), threshold)):
                return True
        return False

    def _expr_rules(self, labels: Mapping[str, str], source: str
                    ) -> Iterator[tuple[Rule, str, str, float]]:
        """The ``expr`` rules of ``source`` matching ``labels``, each with its metric's
        path, operator and threshold."""
        for rule in self.rules:
            if rule.expr is not None and rule.source == source and rule.matches(labels):
                yield (rule, *self._parsed[id(rule)])

    def evaluate_findings(self, findings: Iterable[Finding],
                          labels: Mapping[str, str]) -> list[Condition]:
        """Conditions of the ``detector`` rules on a window's detector findings."""
        out = []
        detector_rules = [r for r in self.rules if r.detector is not None]
        for finding in findings:
            finding_labels = {**labels, **finding.labels}
            for rule in detector_rules:
                if not _detector_matches(rule.detector, finding) or not rule.matches(
                        finding_labels):
                    continue
                out.append(self._condition(
                    rule, rule.name or finding.rule, finding.firing, finding_labels,
                    finding.kind, value=finding.value, threshold=finding.threshold,
                    detail=finding.summary, severity=finding.severity,
                    evidence=finding.evidence))
        return out

    def _condition(
        self, rule: Rule, name: str, active: bool, labels: Mapping[str, str], kind: str, *,
        value: float | None, threshold: float | None, detail: str,
        severity: Severity = "warning", evidence: dict[str, Any] | None = None,
    ) -> Condition:
        all_labels = {**labels, **rule.labels} if rule.labels else dict(labels)
        summary, description = detail, ""
        if rule.summary or rule.description:   # templates (most rules have none)
            context = {**all_labels, "value": value if value is not None else float("nan"),
                       "threshold": threshold if threshold is not None else float("nan"),
                       "summary": detail, "rule": name}
            summary = _render(rule.summary, context) if rule.summary else detail
            description = _render(rule.description, context) if rule.description else ""
        return Condition(
            rule=name, active=active, labels=all_labels, for_windows=rule.for_,
            keep_firing_for=rule.keep_firing_for, kind=kind,
            severity=rule.severity or severity, value=value, threshold=threshold,
            summary=summary, description=description,
            runbook_url=rule.runbook_url, evidence=dict(evidence or {}),
        )

    def inhibited(self, target: str, labels: Mapping[str, str],
                  firing: Iterable[tuple[str, Mapping[str, str]]]) -> bool:
        """Whether an alert of rule ``target`` with ``labels`` is held back by a firing one."""
        for inhibit in self.inhibit:
            if target in inhibit.source or not (target in inhibit.target or "*" in inhibit.target):
                continue
            for rule, source_labels in firing:
                if rule in inhibit.source and all(
                        source_labels.get(k) == labels.get(k) for k in inhibit.equal):
                    return True
        return False


def _detector_matches(selector: str | None, finding: Finding) -> bool:
    return selector in ("*", finding.rule, f"kind:{finding.kind}")


def _parse_expr(expr: str | None, index: int) -> tuple[str, str, float]:
    match = _EXPR.match(expr or "")
    if match is None:
        raise ConfigError(f"rules[{index}].expr: expected `<metric> <op> <number>`, "
                          f"got {expr!r}")
    return match[1], match[2], float(match[3])


def wilson_bounds(rate: float, n: float, confidence: float) -> tuple[float, float]:
    """One-sided Wilson score bounds of a rate measured on ``n`` events, each at
    ``confidence``: 7 failures in 200 calls (3.5%) are not shown to exceed 5%, 20 are.

    >>> [round(b, 3) for b in wilson_bounds(0.035, 200, 0.95)]
    [0.019, 0.063]
    >>> wilson_bounds(0.10, 200, 0.95)[0] > 0.05
    True
    """
    z = _z(confidence)
    rate = min(max(rate, 0.0), 1.0)
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


@functools.lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    """The standard normal quantile of a rule's ``confidence`` (a few, asked every window)."""
    return statistics.NormalDist().inv_cdf(confidence)


def _trials(metrics: Mapping[str, Any], path: str) -> float | None:
    """How many events a rate metric is a share of (None: not a rate)."""
    leaf = path.rsplit(".", 1)[-1]
    if path.startswith("performance.") and leaf in _LABEL_SHARES:
        return _lookup(metrics, "performance.labelled")
    if path.startswith("outcomes.") and leaf == "rate":   # a share of the joined outcomes
        return _lookup(metrics, path[:-len("rate")] + "count")
    if leaf.endswith(("_rate", "_coverage")) or leaf == "low_rate":
        return _lookup(metrics, "count")
    return None


_LABEL_SHARES = frozenset({"accuracy", "precision", "recall", "f1", "macro_f1"})
"""Performance measures that are shares of the labelled predictions (about: precision and
recall are shares of a part of them, so their bound is, if anything, too tight)."""


def _lookup(metrics: Mapping[str, Any], path: str) -> float | None:
    value: Any = metrics
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Lenient(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _render(template: str, context: Mapping[str, Any]) -> str:
    try:
        return template.format_map(_Lenient(context))
    except (ValueError, TypeError, IndexError, AttributeError):
        return template


def _check_template(template: str, where: str) -> None:
    try:
        list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid template: {exc}") from None


def _convert(data: Any, tp: Any, where: str) -> Any:
    try:
        return msgspec.convert(data, tp)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
