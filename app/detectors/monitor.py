"""Everything mlpulse watches for one model version, window after window.

A :class:`ModelMonitor` owns the version's reference (built per its reference
mode), its per-event detectors (ADWIN per signal, HalfSpaceTrees on sampled
latencies), and its window-anomaly detector.
For each window it hands out a :class:`~mlpulse.detectors.profile.WindowProfile`
(``new_profile``) and, when the window closes, returns the window's
:class:`~mlpulse.detectors.finding.Finding`\\ s (``on_window``): distribution drift of
features and outputs, data quality, mean shifts seen by ADWIN, window anomalies.
``snapshot``/``restore`` round-trip all of it as plain data (msgpack-able).

>>> from mlpulse.aggregates import PredictionAggregate
>>> from mlpulse.detectors.settings import DetectorSettings
>>> from mlpulse.events import PredictionEvent
>>> rng = np.random.default_rng(0)
>>> cfg = DetectorSettings.from_mapping({"reference": {"windows": 2}}).for_model("m")
>>> monitor = ModelMonitor("m", "v1", cfg, window_seconds=60)
>>> def window(start_s, shift):
...     profile = monitor.new_profile()
...     aggregate = PredictionAggregate(profile=profile)
...     values = rng.normal(shift, 1, 500)
...     aggregate.add_batch([PredictionEvent(event_id=str(i), timestamp=start_s, model="m",
...                          features={"x": float(v)}) for i, v in enumerate(values)])
...     return monitor.on_window(aggregate, profile, start_s, start_s + 60)
>>> window(0, 0.0), window(60, 0.0), monitor.reference is not None
([], [], True)
>>> sorted({(f.rule, f.labels.get("feature")) for f in window(120, 1.0) if f.firing})
[('adwin_change', 'x'), ('feature_drift', 'x')]
>>> restored = ModelMonitor.restore(monitor.snapshot(), cfg, window_seconds=60)
>>> edges = restored.reference.numeric["f:x"].edges
>>> bool((edges == monitor.reference.numeric["f:x"].edges).all())
True
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from ..aggregates import PredictionAggregate
from .adwin import ChangeDetectors
from .anomaly import LatencyAnomaly, WindowAnomaly, window_samples, window_vector
from .drift import DriftResult, DriftTests, DriftThresholds, run_drift_tests
from .finding import Finding
from .profile import WindowProfile, binned
from .quality import check_quality
from .reference import Contribution, Reference, build_reference, contribution
from .settings import ModelDetectors

__all__ = ["ModelMonitor"]


class ModelMonitor:
    """Reference, change detectors and anomaly detector of one model version."""

    def __init__(
        self, model: str, version: str, config: ModelDetectors, window_seconds: float, *,
        seed: int = 0, reference: Reference | None = None, hst: bool = True,
    ) -> None:
        self.model = model
        self.hst = hst
        """Whether this model version gets HalfSpaceTrees (~1 MB once trained; bounded per
        worker by ``anomaly.hst_max_series``)."""
        self.version = version
        self.config = config
        self.window_seconds = window_seconds
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.reference = reference
        self.reference_changes = 0
        """Counts the changes of :meth:`reference_snapshot` (a new reference, a contribution)."""
        spec = config.reference
        self.contributions: deque[Contribution] = deque(
            maxlen={"rolling": spec.windows + spec.lag_windows,
                    "first": 4 * spec.windows}.get(spec.mode))
        adwin = config.adwin
        self.changes = (ChangeDetectors(adwin.delta, adwin.max_signals)
                        if adwin.enabled else None)
        self.adwin_active: set[str] = set()
        self.adwin_pending: set[str] = set()
        a = config.anomaly
        self.anomaly = (WindowAnomaly(a.warmup_windows, a.history_windows, a.z_threshold,
                                      a.hst_window, seed, use_hst=hst) if a.enabled else None)
        self.latency = (LatencyAnomaly(a.latency_sample_every, seed=seed)
                        if a.enabled and a.latency_sample_every and hst else None)
        self.windows_seen = 0
        self.last_end_s = -math.inf
        """End of the last window seen: a window that does not start there follows a gap."""
        self._thresholds: dict[str, DriftThresholds] = {}
        self.drift_psi_max: float | None = None
        """The largest PSI of the last window's drift tests (None: none tested)."""

    # ------------------------------------------------------------------ windows

    def _collecting(self) -> bool:
        mode = self.config.reference.mode
        return mode == "rolling" or (self.reference is None and mode in ("first", "range"))

    def _window_sample_size(self) -> int:
        """Each of the reference's windows samples its share of ``sample_size`` values
        (``range`` mode does not know its window count: a quarter)."""
        spec = self.config.reference
        windows = 4 if spec.mode == "range" else spec.windows
        return max(100, -(-spec.sample_size // windows))

    def new_profile(self) -> WindowProfile:
        """What the next window of this version collects."""
        ref = self.reference
        return WindowProfile(
            edges=ref.edges() if ref is not None else None,
            sample_size=self._window_sample_size() if self._collecting() else 0,
            changes=_PerEvent(self.changes, self.latency)
            if self.changes is not None or self.latency is not None else None, rng=self.rng,
            rows=ref.rows() if ref is not None else None,
        )

    def drift_tests(self, aggregate: PredictionAggregate, profile: WindowProfile,
                    quiet: bool = False) -> DriftTests | None:
        """A window's drift tests, whose numeric ones to run beside other windows' (one
        :func:`run_drift_tests` for the slices of a model version closing together)
        before :meth:`on_window`; None where this monitor's reference may change from
        window to window (``rolling``, or not built yet: its tests run in :meth:`on_window`).
        ``quiet``: see :attr:`DriftTests.quiet` (the window must be judged ``quiet``)."""
        ref = self.reference
        if ref is None or not aggregate.count or self.config.reference.mode == "rolling":
            return None
        drift = self._drift_tests(ref, aggregate, profile)
        drift.quiet = quiet
        return drift

    def _drift_tests(self, ref: Reference, aggregate: PredictionAggregate,
                     profile: WindowProfile) -> DriftTests:
        bins = profile.all_counts(ref.edges())
        numeric = [s for s in bins if binned(s)]
        categorical = {signal: values for signal in ref.categorical
                       if (values := _category_counts(aggregate, signal)) is not None}
        drift_for = self._drift_thresholds
        return DriftTests(bins, numeric, [ref.numeric[s] for s in numeric],
                          [drift_for(s) for s in numeric], categorical, ref,
                          [drift_for(s) for s in categorical])

    def _drift_thresholds(self, signal: str) -> DriftThresholds:
        """``config.drift_for``, remembered (asked per signal of every window)."""
        thresholds = self._thresholds.get(signal)
        if thresholds is None:
            thresholds = self._thresholds[signal] = self.config.drift_for(signal)
        return thresholds

    def on_window(
        self, aggregate: PredictionAggregate, profile: WindowProfile, start_s: float,
        end_s: float, summary: Any = None, *, complete: bool = True,
        drift: DriftTests | None = None, anomaly: tuple[Finding | None] | None = None,
        quiet: bool = False,
    ) -> list[Finding]:
        """Findings of one closed window; then the window joins the reference if due.
        ``drift`` and ``anomaly``: its drift tests and its anomaly detector's verdict (a
        1-tuple: the verdict may be None), if computed beside other windows'
        (:meth:`anomaly_input`, :func:`~mlpulse.detectors.anomaly.observe_many`).

        ``quiet``: the series has no alert pending or firing, so only findings that fire
        can change one: the clear ones are left out but for drift (the status view shows
        each signal's), which then carry their test's evidence without the reference's and
        the window's summaries.

        ``complete=False``: the window closed because its events stopped (the end of a
        stream): its throughput is not judged, nor that of the first window after a gap
        (the stream may have begun within it)."""
        self.windows_seen += 1
        follows = start_s == self.last_end_s
        self.last_end_s = end_s
        findings: list[Finding] = []
        # the changes found in this window's own events (with a backlog, later windows'
        # events may have been fed to ADWIN before this one closed)
        if self.changes is not None:
            self.changes.take_detections()
        per_event = profile.changes
        detections = dict(per_event.detections) if isinstance(per_event, _PerEvent) else {}
        ref = self.reference
        self.drift_psi_max = None
        if ref is not None and aggregate.count:
            if drift is None or drift.reference is not ref or (drift.quiet and not quiet):
                # (not run beside others, the reference changed, or more is wanted now)
                drift = self._drift_tests(ref, aggregate, profile)
            if drift.results is None:
                run_drift_tests([drift])
            self.drift_psi_max = drift.psi_max
            findings.extend(self._drift(ref, aggregate, drift, detail=not quiet))
            findings.extend(check_quality(ref, aggregate, drift.bins, self.config.quality,
                                          only_firing=quiet))
            findings.extend(self._mean_shifts(ref, detections))
        if anomaly is None and self.anomaly is not None:
            judge = self.anomaly_input(aggregate, summary, start_s, end_s, complete=complete,
                                       follows=follows)
            if judge is not None:
                anomaly = (self.anomaly.observe(*judge),)
        if anomaly is not None and anomaly[0] is not None:
            findings.append(anomaly[0])
        if self.latency is not None:
            latency = self.latency.on_window()
            if latency is not None:
                findings.append(latency)
        self._update_reference(aggregate, profile, start_s, end_s)
        trace_ids = list(aggregate.trace_ids)
        for finding in findings:
            if finding.firing or not quiet:
                finding.evidence.setdefault("trace_ids", trace_ids)
        return findings

    def anomaly_input(self, aggregate: PredictionAggregate, summary: Any, start_s: float,
                      end_s: float, *, complete: bool = True, follows: bool | None = None,
                      ) -> tuple[dict[str, float], dict[str, float]] | None:
        """What the anomaly detector judges of a window about to be seen (:meth:`on_window`):
        its health vector and what each value was measured on (None: nothing to judge).
        ``follows``: whether it starts where the last window seen ended (default: ask)."""
        if self.anomaly is None or summary is None or not aggregate.count:
            return None
        if follows is None:
            follows = start_s == self.last_end_s
        nulls = sum(s.null_count for s in aggregate.features.values())
        values = sum(s.count for s in aggregate.features.values())
        vector = window_vector(summary, end_s - start_s, nulls / values if values else 0.0)
        if not (complete and follows):
            del vector["throughput_per_s"]
        return vector, window_samples(summary, end_s - start_s, aggregate.confidence.count,
                                      values)

    def _drift(self, ref: Reference, aggregate: PredictionAggregate, drift: DriftTests,
               detail: bool = True) -> list[Finding]:
        """A finding per tested signal; the reference's and the window's summaries in the
        evidence of those that drifted, or of all with ``detail``."""
        out = []
        assert drift.results is not None
        for signal, result in zip(drift.signals, drift.results, strict=True):
            if result is not None:
                out.append(_drift_finding(signal, result, (
                    ref.numeric[signal].summary(), _numeric_summary(aggregate, signal))
                    if detail or result.drifted else None))
        assert drift.categorical_results is not None
        for (signal, values), result in zip(drift.categorical.items(),
                                            drift.categorical_results, strict=True):
            if result is not None:
                out.append(_drift_finding(signal, result, (
                    ref.categorical[signal].summary(),
                    {"counts": dict(sorted(values.items(), key=lambda kv: -kv[1])[:10])})
                    if detail or result.drifted else None))
        return out

    def _mean_shifts(self, ref: Reference, detections: dict[str, int]) -> list[Finding]:
        """ADWIN: a change alerts while the new mean is far from the reference mean.

        A signal is judged once ADWIN's window since the change holds ``min_width``
        values; it resolves below half of ``min_effect`` (hysteresis against flapping).
        """
        if self.changes is None:
            return []
        out = []
        spec = self.config.adwin
        self.adwin_pending |= set(detections)
        for signal in sorted(self.adwin_pending | self.adwin_active):
            mean = self.changes.mean(signal)
            if mean is None or self.changes.width(signal) < spec.min_width:
                continue
            if signal == "o:error":
                ref_mean = ref.error_rate
                ref_std = max(math.sqrt(ref_mean * (1 - ref_mean)), 0.01)
            elif signal in ref.numeric:
                ref_mean, ref_std = ref.numeric[signal].mean, ref.numeric[signal].std
                ref_std = max(ref_std, 1e-9 + 1e-6 * abs(ref_mean))
            else:
                self.adwin_pending.discard(signal)
                continue
            effect = abs(mean - ref_mean) / ref_std
            active = signal in self.adwin_active
            firing = effect >= (spec.min_effect / 2 if active else spec.min_effect)
            self.adwin_pending.discard(signal)
            if firing:
                self.adwin_active.add(signal)
            else:
                self.adwin_active.discard(signal)
            out.append(Finding(
                "adwin_change", "drift", firing, _signal_labels(signal), "warning",
                effect, spec.min_effect,
                f"{_signal_name(signal)}: mean {mean:.4g} since the change ADWIN found "
                f"(reference {ref_mean:.4g}, {effect:.2f} reference std away)",
                {"method": "adwin", "detections": detections.get(signal, 0),
                 "current_mean": mean, "reference_mean": ref_mean, "reference_std": ref_std,
                 "adwin_width": self.changes.width(signal), "effect": effect,
                 "delta": spec.delta}))
        return out

    def _update_reference(self, aggregate: PredictionAggregate, profile: WindowProfile,
                          start_s: float, end_s: float) -> None:
        reference, contributions = self.reference, len(self.contributions)
        last = self.contributions[-1] if self.contributions else None
        self._next_reference(aggregate, profile, start_s, end_s)
        if (self.reference is not reference or len(self.contributions) != contributions
                or (self.contributions[-1] if self.contributions else None) is not last):
            self.reference_changes += 1

    def _next_reference(self, aggregate: PredictionAggregate, profile: WindowProfile,
                        start_s: float, end_s: float) -> None:
        spec = self.config.reference
        if spec.mode == "file" or not aggregate.count:
            return
        if spec.mode == "range":
            assert spec.start is not None and spec.end is not None
            if self.reference is None and spec.start <= start_s < spec.end:
                self.contributions.append(contribution(aggregate, profile, start_s, end_s))
            if self.reference is None and end_s >= spec.end and self.contributions:
                self._build(list(self.contributions))
                self.contributions.clear()
            return
        if spec.mode == "first" and self.reference is not None:
            return
        self.contributions.append(contribution(aggregate, profile, start_s, end_s))
        if self.reference is None:
            # the first `windows` windows, or more of them (up to 4x, the latest) until
            # they hold `min_events` events: a quiet model still gets a reference, and
            # what waits for it stays bounded
            first = (list(self.contributions) if spec.mode == "first"
                     else list(self.contributions)[: spec.windows])
            if len(first) >= spec.windows and sum(c.events for c in first) >= spec.min_events:
                self._build(first)
                if spec.mode == "first":
                    self.contributions.clear()
        elif len(self.contributions) == self.contributions.maxlen:
            self._build(list(self.contributions)[: spec.windows])

    def _build(self, contributions: list[Contribution]) -> None:
        spec = self.config.reference
        self.reference = build_reference(contributions, spec.bins, spec.sample_size,
                                         seed=int(self.rng.integers(2**31)))

    # ------------------------------------------------------------------ state

    def snapshot(self, *, reference: bool = True) -> dict[str, Any]:
        """The monitor's state as plain data; with ``reference=False`` without its reference
        and the contributions to the next one (:meth:`reference_snapshot`: they change
        rarely, and are the bulk of it)."""
        out = self.reference_snapshot() if reference else {}
        return {
            **out,
            "model": self.model, "version": self.version, "windows_seen": self.windows_seen,
            "last_end_s": self.last_end_s,
            "changes": self.changes.snapshot() if self.changes is not None else None,
            "adwin_active": sorted(self.adwin_active),
            "adwin_pending": sorted(self.adwin_pending),
            "anomaly": self.anomaly.snapshot() if self.anomaly is not None else None,
            "latency": self.latency.snapshot() if self.latency is not None else None,
            "seed": self.seed,
        }

    def reference_snapshot(self) -> dict[str, Any]:
        """The reference and the contributions to the next one, as plain data."""
        return {"reference": self.reference.to_dict() if self.reference is not None else None,
                "contributions": [c.to_dict() for c in self.contributions]}


    @classmethod
    def restore(cls, data: dict[str, Any], config: ModelDetectors,
                window_seconds: float, *, hst: bool = True) -> ModelMonitor:
        """A monitor from :meth:`snapshot` (with its reference, or that of a
        :meth:`reference_snapshot` merged into it)."""
        out = cls(data["model"], data["version"], config, window_seconds, seed=data["seed"],
                  hst=hst)
        out.windows_seen = data["windows_seen"]
        out.last_end_s = data.get("last_end_s", -math.inf)
        out.rng = np.random.default_rng([data["seed"], out.windows_seen])
        if data.get("reference") is not None and out.reference is None:
            out.reference = Reference.from_dict(data["reference"])
        out.contributions.extend(Contribution.from_dict(c) for c in data.get("contributions", ()))
        if data["changes"] is not None and out.changes is not None:
            out.changes = ChangeDetectors.restore(data["changes"])
        out.adwin_active = set(data["adwin_active"])
        out.adwin_pending = set(data["adwin_pending"])
        if data["anomaly"] is not None and out.anomaly is not None:
            out.anomaly = WindowAnomaly.restore(data["anomaly"], use_hst=hst)
        if data["latency"] is not None and out.latency is not None:
            out.latency = LatencyAnomaly.restore(data["latency"])
        return out


class _PerEvent:
    """What sees every value of one window: ADWIN per signal (the model version's, shared by
    its open windows; the changes this window's values revealed are counted here, so a
    finding belongs to the window whose events triggered it), HST on sampled latencies."""

    __slots__ = ("changes", "detections", "latency")

    def __init__(self, changes: ChangeDetectors | None, latency: LatencyAnomaly | None) -> None:
        self.changes = changes
        self.latency = latency
        self.detections: dict[str, int] = {}

    def update(self, signal: str, values: np.ndarray) -> None:
        if self.changes is not None:
            found = self.changes.update(signal, values)
            if found:
                self.detections[signal] = self.detections.get(signal, 0) + found
        if self.latency is not None and signal == "o:latency_ms":
            self.latency.update(values)


def _signal_labels(signal: str) -> dict[str, str]:
    return {"feature": signal[2:]} if signal.startswith("f:") else {"signal": signal[2:]}


def _signal_name(signal: str) -> str:
    return f"feature {signal[2:]}" if signal.startswith("f:") else signal[2:]


def _drift_finding(signal: str, result: DriftResult,
                   summaries: tuple[dict[str, Any], dict[str, Any]] | None) -> Finding:
    """``summaries``: the reference's and the window's, for the evidence (None: left out)."""
    rule = "feature_drift" if signal.startswith("f:") else "prediction_drift"
    test = "KS" if result.method == "ks" else "chi-square"
    by_js = result.effect == result.js and result.effect != result.psi - result.psi_noise
    effect_name = "JS distance" if by_js else "PSI"
    value = result.js if by_js else result.psi
    return Finding(
        rule, "drift", result.drifted, _signal_labels(signal),
        "critical" if result.severity == "critical" else "warning",
        result.effect, result.effect_threshold,
        f"{_signal_name(signal)} drifted: {effect_name} {value:.3f} "
        f"(threshold {result.effect_threshold:g} above noise), {test} p={result.p_value:.2g}"
        if result.drifted else f"{_signal_name(signal)} matches the reference",
        result.evidence() if summaries is None
        else {**result.evidence(), "reference": summaries[0], "current": summaries[1]},
    )


def _numeric_summary(aggregate: PredictionAggregate, signal: str) -> dict[str, Any]:
    if signal.startswith("f:"):
        stats = aggregate.features.get(signal[2:])
        if stats is not None and stats.numeric is not None and stats.numeric.count:
            n = stats.numeric
            return {"mean": n.mean, "std": n.std, "min": n.min, "max": n.max,
                    "null_rate": stats.null_count / stats.count if stats.count else 0.0}
        return {}
    if signal == "o:confidence" and aggregate.confidence.count:
        return {"mean": aggregate.confidence.mean, "p05": aggregate.confidence.quantile(0.05)}
    return {}


def _category_counts(aggregate: PredictionAggregate, signal: str) -> dict[str, int] | None:
    if signal == "o:prediction":
        counter = aggregate.predictions
    else:
        stats = aggregate.features.get(signal[2:])
        if stats is None or stats.categories is None:
            return None
        counter = stats.categories
    counts = {k: n for k, n in counter.counts.items() if k != "null"}
    if counter.other:
        counts["__other__"] = counter.other
    return counts or None
