"""What a detector says about one window: a :class:`Finding`, firing or clear.

A finding names its rule and the labels that make it one alert (model, version,
feature or signal); the alert policy (:mod:`mlpulse.detect`) turns a change of its
``firing`` state into a firing or resolved alert event. A check that could not
run (too little data) returns no finding, and the alert state stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Finding", "Kind", "Severity"]

Kind = Literal["drift", "anomaly", "data_quality", "no_data", "comparison"]
Severity = Literal["critical", "warning", "info"]


@dataclass
class Finding:
    rule: str
    kind: Kind
    firing: bool
    labels: dict[str, str] = field(default_factory=dict)
    severity: Severity = "warning"
    value: float | None = None
    threshold: float | None = None
    summary: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
