"""Detector settings: the ``detectors:`` section of the YAML file named by ``MLPULSE_CONFIG``.

Top-level keys are the defaults for every model; ``models.<name>`` overrides
them for one model, or for every model a glob matches (``fraud-*``; the first listed that
matches; keys merge, one level deep), and ``features.<name>`` overrides the drift thresholds
of one feature. ``segments`` lists the segment keys that slice the model (instead of
``MLPULSE_SEGMENT_KEYS``); a list among them is a cross product (``[region, tier]``: one
slice per pair of values)::

    detectors:
      reference: {mode: first, windows: 3, min_events: 300}
      drift: {p_value: 0.01, psi: 0.1, psi_critical: 0.25}
      models:
        fraud:
          drift: {psi: 0.2}
          features:
            amount: {psi: 0.05}
        "checkout-*":
          segments: [region, [region, tier]]

Mistakes come back as :class:`~mlpulse.errors.ConfigError` naming the field.

>>> s = DetectorSettings.from_mapping(
...     {"drift": {"psi": 0.2}, "models": {"fraud": {"features": {"amount": {"psi": 0.05}}}}})
>>> cfg = s.for_model("fraud")
>>> cfg.drift.psi, cfg.drift_for("f:amount").psi, cfg.drift_for("f:age").psi
(0.2, 0.05, 0.2)
>>> s = DetectorSettings.from_mapping({"models": {"shop-*": {"segments": ["region", ["region",
...                                                                                  "tier"]]}}})
>>> s.for_model("shop-eu").slices, s.for_model("fraud").slices
((('region',), ('region', 'tier')), None)
>>> DetectorSettings.from_mapping({"drift": {"psi": "high"}})
Traceback (most recent call last):
...
mlpulse.errors.ConfigError: detectors: Expected `float`, got `str` - at `$.drift.psi`
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from ..errors import ConfigError
from .comparison import ComparisonSpec
from .drift import DriftThresholds
from .quality import QualityThresholds

__all__ = ["DetectorSettings", "ModelDetectors", "ReferenceSpec"]

Positive = Annotated[int, msgspec.Meta(ge=1)]
SegmentKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class ReferenceSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a model version's reference comes from.

    ``first``: its first ``windows`` windows (and at least ``min_events`` events);
    ``range``: its windows starting in [``start``, ``end``) (epoch seconds);
    ``rolling``: the ``windows`` windows before the latest ``lag_windows`` ones, re-built
    every window (after a ``first`` reference); ``file``: events in a JSON array or
    NDJSON file at ``path`` (one reference for every version of the model).
    """

    mode: Literal["first", "range", "rolling", "file"] = "first"
    windows: Positive = 3
    min_events: Annotated[int, msgspec.Meta(ge=0)] = 300
    bins: Annotated[int, msgspec.Meta(ge=2, le=100)] = 10
    sample_size: Annotated[int, msgspec.Meta(ge=100, le=100_000)] = 2000
    lag_windows: Positive = 1
    start: float | None = None
    end: float | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.mode == "range" and (self.start is None or self.end is None):
            raise ValueError("reference mode `range` needs `start` and `end`")
        if self.mode == "file" and not self.path:
            raise ValueError("reference mode `file` needs `path`")


class AdwinSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-event change detection: ADWIN's ``delta``; a change alerts when the mean of the
    ``min_width`` or more values since it is ``min_effect`` reference standard deviations
    away from the reference mean."""

    enabled: bool = True
    delta: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.002
    min_effect: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    min_width: Positive = 200
    max_signals: Positive = 32


class AnomalySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    warmup_windows: Positive = 10
    history_windows: Positive = 50
    z_threshold: Annotated[float, msgspec.Meta(gt=0)] = 6.0
    hst_window: Positive = 20
    latency_sample_every: Annotated[int, msgspec.Meta(ge=0)] = 100
    """Score one event's latency in this many with HalfSpaceTrees (0: off)."""
    hst_max_series: Annotated[int, msgspec.Meta(ge=0)] = 50
    """Model versions per worker that get HalfSpaceTrees (river's trees take ~0.6 MB per
    model version once trained); the others keep the robust window check and ADWIN."""


class LogErrorSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    warmup_windows: Positive = 3
    z_threshold: Annotated[float, msgspec.Meta(gt=0)] = 4.0
    min_increase: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.05
    min_events: Positive = 20


class ModelDetectors(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every detector setting of one model."""

    enabled: bool = True
    reference: ReferenceSpec = ReferenceSpec()
    drift: DriftThresholds = DriftThresholds()
    features: dict[str, DriftThresholds] = {}
    quality: QualityThresholds = QualityThresholds()
    adwin: AdwinSpec = AdwinSpec()
    anomaly: AnomalySpec = AnomalySpec()
    logs: LogErrorSpec = LogErrorSpec()
    comparison: ComparisonSpec = ComparisonSpec()
    no_data_windows: Positive = 3
    segments: Annotated[list[SegmentKey | Annotated[list[SegmentKey], msgspec.Meta(
        min_length=1, max_length=4)]], msgspec.Meta(max_length=16)] | None = None
    """Segment keys slicing this model (None: ``MLPULSE_SEGMENT_KEYS``)."""

    @property
    def slices(self) -> tuple[tuple[str, ...], ...] | None:
        """``segments`` as tuples of keys (one key, or a cross product), each once."""
        if self.segments is None:
            return None
        return tuple(dict.fromkeys(
            (k,) if isinstance(k, str) else tuple(dict.fromkeys(k)) for k in self.segments))

    def drift_for(self, signal: str) -> DriftThresholds:
        """Thresholds of one signal (``f:<feature>`` or ``o:<output>``)."""
        return self.features.get(signal[2:], self.drift) if signal.startswith("f:") else self.drift


class DetectorSettings:
    """Defaults plus per-model overrides (see the module docs)."""

    def __init__(self, defaults: dict[str, Any] | None = None,
                 models: dict[str, dict[str, Any]] | None = None) -> None:
        self._defaults = defaults or {}
        self._models = models or {}
        self.defaults = _convert(self._defaults, "detectors")
        self._resolved = {name: _convert(_merge(self._defaults, override),
                                         f"detectors.models.{name}")
                          for name, override in self._models.items()}
        self._globs = [(name, config) for name, config in self._resolved.items()
                       if re.search(r"[*?\[]", name)]
        self._matched: dict[str, ModelDetectors] = {}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> DetectorSettings:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError("detectors: expected a mapping")
        defaults = {k: v for k, v in data.items() if k != "models"}
        models = data.get("models") or {}
        if not isinstance(models, Mapping) or not all(
                isinstance(v, Mapping) for v in models.values()):
            raise ConfigError("detectors.models: expected a mapping of model name to settings")
        return cls(defaults, {str(k): dict(v) for k, v in models.items()})

    def for_model(self, model: str) -> ModelDetectors:
        """The settings of ``model``: its own entry, else the first glob entry that matches
        it, else the defaults."""
        config = self._resolved.get(model) or self._matched.get(model)
        if config is None:
            config = next((c for pattern, c in self._globs
                           if fnmatch.fnmatchcase(model, pattern)), self.defaults)
            if len(self._matched) < 100_000:   # model names are bounded by the guard's
                self._matched[model] = config
        return config


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "features":
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    if "features" in out and "drift" in out and isinstance(out["features"], Mapping):
        # a feature's thresholds start from the model's drift thresholds
        out["features"] = {name: {**out["drift"], **(spec or {})}
                           for name, spec in out["features"].items()}
    return out


def _convert(data: dict[str, Any], where: str) -> ModelDetectors:
    try:
        return msgspec.convert(data, ModelDetectors)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
