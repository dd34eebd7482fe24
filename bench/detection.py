"""Detection quality of mlpulse's detectors, beside two baselines, on streams with known changes.

``python -m bench.detection [--quick]`` prints a table and writes
``bench/results/detection.json``. Everything runs in process: no broker, no worker. Each
stream goes window by window through exactly what the worker does per model version —
:class:`~mlpulse.aggregates.PredictionAggregate` with the monitor's
:class:`~mlpulse.detectors.profile.WindowProfile`, then
:meth:`~mlpulse.detectors.monitor.ModelMonitor.on_window` — and the same windows feed:

mlpulse is the worker's detection stage, :class:`~mlpulse.detect.Detect`: every detector, the
built-in rules and the alert lifecycle; its alerts are the ``firing`` alert events it raises.

* **ADWIN defaults**: plain ``river.drift.ADWIN()`` per signal, fed event by event with
  every numeric signal (numeric features, ``latency_ms``, ``confidence``, the 0/1 error
  indicator; on Phishing its nine features). A change counts as caught at the first
  ``drift_detected`` of the changed signal after the change point; every detection on
  stationary data is a false alert.
* **Evidently-style**: a batch test per window against the raw values of the reference
  windows, as Evidently's defaults do for small data: two-sample KS
  (``scipy.stats.ks_2samp``) for numeric features, chi-square
  (``scipy.stats.chi2_contingency``, no continuity correction, i.e. the z-test on binary
  features) for categorical ones and for numeric features with at most 5 distinct reference
  values; a feature drifts at p < 0.05. It tests features only, so latency and error bursts
  are out of its scope ("n/a").

Synthetic streams (seeded ``numpy`` Generators; one model with numeric features ``num_a``
~ N(0, 1), ``num_b`` ~ N(50, 10), ``num_c`` ~ LogNormal(0, 0.5), ``num_d`` ~ LogNormal(3, 1),
categorical ``segment`` (6 equiprobable values), latency ~ LogNormal(ln 40 ms, 0.35),
confidence ~ Beta(8, 2), prediction ``pos``/``neg`` (30 % ``pos``), 1 % errors (failed
events carry no prediction or confidence)): windows of 500 events (60 s), reference = the
first 3 windows, 20 windows per stream, change at the start of window 12 (0-based), so 9
monitored pre-change windows and 8 after. Shift scenarios move one numeric feature,
rotating over the four across streams (σ is that feature's true standard deviation):
abrupt mean shift by 0.25σ/0.5σ/1σ/2σ; a linear ramp to +1σ over 3 windows; variance
×2 (values stretched about the mean). Category mix: ``segment`` goes from 6 equiprobable
values to one at 40 % (the rest 12 % each). Bursts: latency ×3, or error rate 1 % → 10 %,
for 2 windows. Stationary: long streams without change, of 500-event windows, of 200-event
windows (also at 2 % errors), of 2,000-event windows, and of skewed, heavy-tailed features
(``HEAVY``).

Real data: river's bundled ``datasets.Phishing`` (1,250 rows, 9 features, read from the
installed wheel, no download), rows as events (``x`` → ``features``, integer values sent as
floats as they arrive after JSON decoding; ``y`` → a boolean ``prediction``; no latency or
confidence), windows of 100 rows. Pre-change rows come from a random permutation (the
reference is its first 3 windows); after the change at window 12 rows are drawn only from
those whose chosen feature is above its median (covariate shift by selection), or half of
them so (a milder mix). The chosen feature rotates over the six features whose above-median
share is between 5 % and 50 % (on three-level features "above the median" means the top
level, so the full selection makes the feature constant: a blatant shift; hence the mix).
A no-shift control streams concatenated random permutations.

Metrics. A stream's change is *caught* when, within the detection horizon (all 8 post-change
windows; for bursts the 2 burst windows plus 1), a detector fires *for the changed thing*:
mlpulse, any firing finding labelled with the changed feature (any rule), for latency
bursts ``adwin_change`` on ``latency_ms`` or ``window_anomaly``, for error bursts
``adwin_change`` on ``error`` or ``window_anomaly``; the baselines, a detection on the
changed signal/feature. *Delay* counts from the change point: windows = closed windows
since the change up to and including the detecting one (1 = the first changed window);
events = changed events seen up to the detection (window detectors: the whole windows;
ADWIN: the exact event). "≤2w" is the share of streams caught with a delay of at most
2 windows. *False alerts* are firing transitions — a (rule, labels) going from not firing
to firing, as mlpulse's alert policy raises them; for Evidently-style, a feature's drift
flag switching on; for ADWIN every detection — counted on stationary streams and on the
monitored pre-change windows of the change streams (windows 3..11), per 100 windows.

Detector settings are mlpulse's defaults (``reference: {windows: 3, min_events: 300}``,
the default too). ``window_anomaly`` needs 10 warm-up windows (``anomaly.warmup_windows``);
rather than lowering it, streams run 20 windows with the change at window 12, so the
anomaly detector is judging windows before any change. Goals checked: at least 95 % of
abrupt shifts ≥ 0.5σ caught within 2 windows; at most 0.5 false alerts per 100 stationary
windows (1 per 200). ``--quick`` runs 4 streams per scenario and shorter stationary streams.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from river import drift
from scipy import stats

from bench import detection_apart
from mlpulse.aggregates import PredictionAggregate
from mlpulse.config import Settings
from mlpulse.detect import Detect
from mlpulse.detectors.finding import Finding
from mlpulse.events import PredictionEvent
from mlpulse.summarize import Closed
from mlpulse.timefmt import rfc3339

__all__ = ["main", "run"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "detection.json"
MODEL, VERSION = "bench-model", "v1"
T0 = 1_700_000_000.0
WINDOW_S = 60.0
REF_WINDOWS = 3
SEED = 20_240_601

# synthetic model
WINDOW_EVENTS = 500
STREAM_WINDOWS = 20
CHANGE_WINDOW = 12
BURST_WINDOWS = 2
RAMP_WINDOWS = 3
NUMERIC: dict[str, tuple[str, float, float]] = {
    "num_a": ("normal", 0.0, 1.0), "num_b": ("normal", 50.0, 10.0),
    "num_c": ("lognormal", 0.0, 0.5), "num_d": ("lognormal", 3.0, 1.0),
}
HEAVY: dict[str, tuple[str, float, float]] = {
    "num_a": ("student_t", 2.0, 1.0), "num_b": ("lognormal", 0.0, 1.5),
    "num_c": ("pareto", 1.5, 1.0), "num_d": ("exponential", 0.0, 20.0),
}
"""Stationary streams of skewed, heavy-tailed features: Student's t with 2 degrees of freedom
(infinite variance), LogNormal(0, 1.5), Pareto(1.5) (infinite variance), Exponential(20)."""
SEGMENTS = [f"seg{i}" for i in range(6)]
ERROR_RATE, BURST_ERROR_RATE, LATENCY_FACTOR = 0.01, 0.10, 3.0

# Phishing
PHISHING_WINDOW = 100
P_VALUE = 0.05
EVIDENTLY_MAX_CATEGORICAL_UNIQUE = 5

Kind = Literal["mean", "ramp", "variance", "category", "latency", "error", "none",
               "select", "select_mix"]
DetectorName = Literal["mlpulse", "adwin", "evidently"]
DETECTORS: tuple[DetectorName, ...] = ("mlpulse", "adwin", "evidently")
TITLES = {"mlpulse": "mlpulse", "adwin": "ADWIN defaults", "evidently": "Evidently-style"}


# --------------------------------------------------------------------------- stream data


@dataclass
class WindowData:
    """One window of one model's events, as columns (what both baselines read directly)."""

    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    error: np.ndarray
    latency: np.ndarray | None = None
    confidence: np.ndarray | None = None   # NaN where the event has none
    prediction: list[str | bool | None] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.error.size)

    def signals(self) -> dict[str, np.ndarray]:
        """Numeric per-event signals, for the ADWIN baseline (names as mlpulse's)."""
        out = {"f:" + name: values for name, values in self.numeric.items()}
        if self.latency is not None:
            out["o:latency_ms"] = self.latency
            out["o:error"] = self.error.astype(np.float64)
        if self.confidence is not None:
            out["o:confidence"] = self.confidence[~np.isnan(self.confidence)]
        return out

    def events(self, start_s: float, first_id: int) -> list[PredictionEvent]:
        n = self.size
        stamps = (start_s + np.arange(n) * (WINDOW_S / n)).tolist()
        names = [*self.numeric, *self.categorical]
        columns = [self.numeric[k].tolist() for k in self.numeric]
        columns += [self.categorical[k].tolist() for k in self.categorical]
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        latency: list[float | None] = (self.latency.tolist() if self.latency is not None
                                       else [None] * n)
        confidence: list[float | None] = (
            [None if math.isnan(c) else c for c in self.confidence.tolist()]
            if self.confidence is not None else [None] * n)
        prediction = self.prediction or [None] * n
        status: list[Literal["ok", "error"]] = [
            "error" if e else "ok" for e in self.error.tolist()]
        return [PredictionEvent(
            event_id=str(first_id + i), timestamp=stamps[i], model=MODEL, model_version=VERSION,
            latency_ms=latency[i], status=status[i],
            prediction=prediction[i], confidence=confidence[i], features=rows[i],
        ) for i in range(n)]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    size: float = 0.0
    source: Literal["synthetic", "phishing"] = "synthetic"
    events: int = WINDOW_EVENTS
    """Events per window (synthetic streams)."""
    heavy: bool = False
    """Skewed and heavy-tailed features instead of the usual ones (HEAVY)."""
    error_rate: float = ERROR_RATE

    @property
    def target_of(self) -> Callable[[int], str | None]:
        """The changed signal of stream ``i`` (``f:<feature>``, ``o:latency_ms``, ``o:error``)."""
        def target(i: int) -> str | None:
            if self.kind in ("mean", "ramp", "variance"):
                return "f:" + list(NUMERIC)[i % len(NUMERIC)]
            if self.kind in ("select", "select_mix"):
                return "f:" + PHISHING_TARGETS[i % len(PHISHING_TARGETS)]
            return {"category": "f:segment", "latency": "o:latency_ms",
                    "error": "o:error"}.get(self.kind)
        return target

    @property
    def horizon(self) -> int:
        """Windows after the change point in which a detection counts."""
        if self.kind in ("latency", "error"):
            return BURST_WINDOWS + 1
        return STREAM_WINDOWS - CHANGE_WINDOW


def _std(spec: tuple[str, float, float]) -> tuple[float, float]:
    """True mean and standard deviation of a feature's distribution."""
    dist, mu, sigma = spec
    if dist == "normal":
        return mu, sigma
    mean = math.exp(mu + sigma**2 / 2)
    return mean, math.sqrt((math.exp(sigma**2) - 1) * math.exp(2 * mu + sigma**2))


def _draw(spec: tuple[str, float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    dist, a, b = spec
    if dist == "normal":
        return rng.normal(a, b, n)
    if dist == "lognormal":
        return rng.lognormal(a, b, n)
    if dist == "student_t":
        return b * rng.standard_t(a, n)
    if dist == "pareto":
        return b * (1.0 + rng.pareto(a, n))
    return a + rng.exponential(b, n)


def synthetic_windows(scenario: Scenario, target: str | None, n_windows: int,
                      rng: np.random.Generator) -> Iterator[WindowData]:
    """The windows of one synthetic stream (change at ``CHANGE_WINDOW`` unless stationary)."""
    n = scenario.events
    change_at = CHANGE_WINDOW * n
    for w in range(n_windows):
        t = w * n + np.arange(n)          # event index in the stream
        after = t >= change_at if scenario.kind != "none" else np.zeros(n, dtype=bool)
        burst = after.any() and w < CHANGE_WINDOW + BURST_WINDOWS
        numeric = {}
        for name, spec in (HEAVY if scenario.heavy else NUMERIC).items():
            x = _draw(spec, n, rng)
            if target == "f:" + name:
                mean, std = _std(spec)
                if scenario.kind == "mean":
                    x = x + np.where(after, scenario.size * std, 0.0)
                elif scenario.kind == "ramp":
                    ramp = np.clip((t - change_at + 1) / (RAMP_WINDOWS * n), 0.0, 1.0)
                    x = x + np.where(after, scenario.size * std * ramp, 0.0)
                elif scenario.kind == "variance":
                    x = np.where(after, mean + scenario.size * (x - mean), x)
            numeric[name] = x
        shares = np.full(len(SEGMENTS), 1 / len(SEGMENTS))
        segment = np.asarray(SEGMENTS)[rng.choice(len(SEGMENTS), n, p=shares)]
        if scenario.kind == "category" and after.any():
            changed = np.asarray(SEGMENTS)[rng.choice(
                len(SEGMENTS), n, p=[0.4] + [0.6 / (len(SEGMENTS) - 1)] * (len(SEGMENTS) - 1))]
            segment = np.where(after, changed, segment)
        latency = rng.lognormal(math.log(40.0), 0.35, n)
        if scenario.kind == "latency" and burst:
            latency = np.where(after, latency * LATENCY_FACTOR, latency)
        error_rate = np.where(after & (scenario.kind == "error") & burst, BURST_ERROR_RATE,
                              scenario.error_rate)
        error = rng.random(n) < error_rate
        confidence = np.where(error, np.nan, rng.beta(8.0, 2.0, n))
        positive = rng.random(n) < 0.3
        prediction: list[str | bool | None] = [
            None if e else ("pos" if p else "neg")
            for e, p in zip(error.tolist(), positive.tolist(), strict=True)]
        yield WindowData(numeric=numeric, categorical={"segment": segment}, error=error,
                         latency=latency, confidence=confidence, prediction=prediction)


# --------------------------------------------------------------------------- Phishing


@dataclass
class Phishing:
    """river's bundled Phishing dataset as columns."""

    names: list[str]
    x: np.ndarray          # rows × features, float
    y: np.ndarray          # bool

    @classmethod
    def load(cls) -> Phishing:
        from river import datasets

        rows = list(datasets.Phishing())
        names = list(rows[0][0])
        x = np.array([[float(r[k]) for k in names] for r, _ in rows], dtype=np.float64)
        return cls(names, x, np.array([bool(y) for _, y in rows]))

    def selected(self, feature: str) -> np.ndarray:
        """Indices of the rows whose ``feature`` is above its median."""
        column = self.x[:, self.names.index(feature)]
        return np.flatnonzero(column > np.median(column))

    def window(self, idx: np.ndarray) -> WindowData:
        rows = self.x[idx]
        return WindowData(numeric={k: rows[:, j] for j, k in enumerate(self.names)},
                          categorical={}, error=np.zeros(idx.size, dtype=bool),
                          prediction=[bool(v) for v in self.y[idx].tolist()])


PHISHING_TARGETS: list[str] = []   # filled by _phishing_targets()


def _phishing_targets(data: Phishing) -> list[str]:
    out = []
    for name in data.names:
        share = data.selected(name).size / data.x.shape[0]
        if 0.05 <= share <= 0.5:
            out.append(name)
    return out


def phishing_windows(scenario: Scenario, target: str | None, n_windows: int, data: Phishing,
                     rng: np.random.Generator) -> Iterator[WindowData]:
    n, rows = PHISHING_WINDOW, data.x.shape[0]
    order = rng.permutation(rows)
    selected = data.selected(target[2:]) if target is not None else np.empty(0, dtype=int)
    for w in range(n_windows):
        if scenario.kind != "none" and w >= CHANGE_WINDOW:
            pick = selected[rng.integers(0, selected.size, n)]
            if scenario.kind == "select_mix":
                pick = np.where(rng.random(n) < 0.5, pick, rng.integers(0, rows, n))
        else:
            while order.size < (w + 1) * n:       # no-shift control: fresh permutations
                order = np.concatenate([order, rng.permutation(rows)])
            pick = order[w * n:(w + 1) * n]
        yield data.window(pick)


# --------------------------------------------------------------------------- detectors


@dataclass
class Verdict:
    """What one detector says after one window.

    ``targets``: signals it fires for, each with how many of the window's events it had
    seen when it did; ``causes``: per target, what fired for it (rules, tests);
    ``alerts``: the new alerts (source, example text).
    """

    targets: dict[str, int] = field(default_factory=dict)
    causes: dict[str, list[str]] = field(default_factory=dict)
    alerts: list[tuple[str, str]] = field(default_factory=list)


class Detector(Protocol):
    def step(self, w: int, data: WindowData, events: list[PredictionEvent],
             start_s: float) -> Verdict: ...


class Mlpulse:
    """The worker's detection stage (:class:`~mlpulse.detect.Detect`: every detector, the
    built-in rules and the alert lifecycle) fed as the worker feeds it; alerts = the
    ``firing`` alert events it raises."""

    def __init__(self, seed: int) -> None:
        settings = Settings(window_seconds=WINDOW_S, detectors={
            "reference": {"windows": REF_WINDOWS, "min_events": 300}})
        self.detect = Detect(settings)
        self.key = (MODEL, f"{VERSION}-{seed}")   # the key seeds the detectors' sampling
        self.findings: list[Finding] = []
        self.detect.on_findings = lambda partition, key, findings: self.findings.extend(
            findings)

    def step(self, w: int, data: WindowData, events: list[PredictionEvent],
             start_s: float) -> Verdict:
        profile = self.detect.new_profile(0, self.key)
        aggregate = PredictionAggregate(profile=profile)
        aggregate.add_batch(events)
        summary = aggregate.result(model=MODEL, model_version=self.key[1],
                                   window_start=rfc3339(start_s),
                                   window_end=rfc3339(start_s + WINDOW_S), late_events=0)
        self.findings = []
        alerts = self.detect.on_closed([Closed(0, self.key, start_s, start_s + WINDOW_S,
                                               aggregate, summary)])
        out = Verdict()
        for finding in self.findings:
            if finding.firing:
                for target in _finding_targets(finding):
                    out.targets[target] = data.size
                    out.causes.setdefault(target, []).append(finding.rule)
        for alert in alerts:
            if alert.status == "firing":
                label = alert.labels.get("feature") or alert.labels.get("signal")
                source = f"{alert.rule}[{label}]" if label else alert.rule
                out.alerts.append((source, alert.annotations.summary))
        return out


def _finding_targets(finding: Finding) -> list[str]:
    if finding.rule == "window_anomaly":
        return ["o:latency_ms", "o:error"]
    if "feature" in finding.labels:
        return ["f:" + finding.labels["feature"]]
    if finding.rule == "adwin_change" and "signal" in finding.labels:
        return ["o:" + finding.labels["signal"]]
    return []


class AdwinDefaults:
    """Plain ``river.drift.ADWIN()`` per numeric signal, fed per event."""

    def __init__(self) -> None:
        self.detectors: dict[str, drift.ADWIN] = {}

    def step(self, w: int, data: WindowData, events: list[PredictionEvent],
             start_s: float) -> Verdict:
        out = Verdict()
        for signal, values in data.signals().items():
            detector = self.detectors.get(signal)
            if detector is None:
                detector = self.detectors[signal] = drift.ADWIN()
            update = detector.update
            for i, value in enumerate(values.tolist()):
                update(value)
                if detector.drift_detected:
                    out.targets.setdefault(signal, i + 1)
                    out.alerts.append((signal, f"ADWIN detection on {signal} at event {i}"))
        return out


class EvidentlyStyle:
    """Per-window KS / chi-square of each feature against the reference windows' raw values."""

    def __init__(self) -> None:
        self.reference: dict[str, list[np.ndarray]] = {}
        self.reference_values: dict[str, np.ndarray] = {}
        self.categorical: set[str] = set()
        self.ready = False
        self.flagged: dict[str, bool] = {}

    def step(self, w: int, data: WindowData, events: list[PredictionEvent],
             start_s: float) -> Verdict:
        columns: dict[str, np.ndarray] = {**data.numeric, **data.categorical}
        if w < REF_WINDOWS:
            for name, values in columns.items():
                self.reference.setdefault(name, []).append(values)
            return Verdict()
        if not self.ready:
            self.reference_values = {k: np.concatenate(v) for k, v in self.reference.items()}
            self.categorical = {k for k, v in self.reference_values.items()
                                if k in data.categorical
                                or np.unique(v).size <= EVIDENTLY_MAX_CATEGORICAL_UNIQUE}
            self.ready = True
        out = Verdict()
        for name, values in columns.items():
            ref = self.reference_values[name]
            if name in self.categorical:
                p_value = _chi_square(ref, values)
                test = "chi-square"
            else:
                p_value = float(stats.ks_2samp(values, ref).pvalue)
                test = "KS"
            drifted = p_value < P_VALUE
            if drifted:
                out.targets["f:" + name] = data.size
                if not self.flagged.get(name, False):
                    out.alerts.append((f"{test}[{name}]", f"{name}: {test} p={p_value:.2g}"))
            self.flagged[name] = drifted
        return out


def _chi_square(reference: np.ndarray, current: np.ndarray) -> float:
    values, inverse = np.unique(np.concatenate([reference, current]), return_inverse=True)
    if values.size < 2:
        return 1.0
    table = np.vstack([np.bincount(inverse[:reference.size], minlength=values.size),
                       np.bincount(inverse[reference.size:], minlength=values.size)])
    return float(stats.chi2_contingency(table, correction=False).pvalue)


# --------------------------------------------------------------------------- scoring


@dataclass
class Outcome:
    """One detector on one stream."""

    delay_windows: int | None = None
    delay_events: int | None = None
    caught_by: list[str] = field(default_factory=list)
    false_alerts: int = 0
    monitored_windows: int = 0
    sources: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamSpec:
    scenario: Scenario
    index: int
    target: str | None
    windows: Iterator[WindowData]
    n_windows: int
    window_events: int


def run_stream(spec: StreamSpec, seed: int) -> dict[DetectorName, Outcome]:
    detectors: dict[DetectorName, Detector] = {
        "mlpulse": Mlpulse(seed), "adwin": AdwinDefaults(), "evidently": EvidentlyStyle()}
    outcomes: dict[DetectorName, Outcome] = {name: Outcome() for name in detectors}
    stationary = spec.scenario.kind == "none"
    change = spec.n_windows if stationary else CHANGE_WINDOW
    first_id = 0
    for w, data in enumerate(spec.windows):
        start_s = T0 + w * WINDOW_S
        events = data.events(start_s, first_id)
        first_id += data.size
        for name, detector in detectors.items():
            verdict = detector.step(w, data, events, start_s)
            outcome = outcomes[name]
            if REF_WINDOWS <= w < change:
                outcome.monitored_windows += 1
                outcome.false_alerts += len(verdict.alerts)
                for source, text in verdict.alerts:
                    outcome.sources[source] += 1
                    outcome.examples.setdefault(
                        source, f"{spec.scenario.name} stream {spec.index} window {w}: {text}")
            elif (not stationary and spec.target in verdict.targets
                  and outcome.delay_windows is None
                  and change <= w < change + spec.scenario.horizon):
                outcome.delay_windows = w - change + 1
                outcome.delay_events = ((w - change) * spec.window_events
                                        + verdict.targets[spec.target])
                outcome.caught_by = sorted(set(verdict.causes.get(spec.target, [])))
    return outcomes


@dataclass
class Plan:
    streams: int
    stationary_streams: int
    stationary_windows: int
    phishing_streams: int
    control_streams: int
    control_windows: int


FULL = Plan(streams=20, stationary_streams=10, stationary_windows=200, phishing_streams=20,
            control_streams=10, control_windows=100)
QUICK = Plan(streams=4, stationary_streams=3, stationary_windows=60, phishing_streams=6,
             control_streams=2, control_windows=50)

SCENARIOS = [
    Scenario("mean shift 0.25σ", "mean", 0.25),
    Scenario("mean shift 0.5σ", "mean", 0.5),
    Scenario("mean shift 1σ", "mean", 1.0),
    Scenario("mean shift 2σ", "mean", 2.0),
    Scenario("ramp to 1σ / 3 windows", "ramp", 1.0),
    Scenario("variance ×2", "variance", 2.0),
    Scenario("category mix 1/6 → 40%", "category"),
    Scenario("latency ×3, 2 windows", "latency"),
    Scenario("errors 1% → 10%, 2 windows", "error"),
    Scenario("stationary", "none"),
    Scenario("stationary, 200-event windows", "none", events=200),
    Scenario("stationary, 200-event windows, 2% errors", "none", events=200, error_rate=0.02),
    Scenario("stationary, 2,000-event windows", "none", events=2000),
    Scenario("stationary, heavy-tailed features", "none", heavy=True),
    Scenario("phishing: x > median", "select", source="phishing"),
    Scenario("phishing: 50% x > median", "select_mix", source="phishing"),
    Scenario("phishing: no shift", "none", source="phishing"),
]
GOAL_SHIFTS = ("mean shift 0.5σ", "mean shift 1σ", "mean shift 2σ")
GOAL_CAUGHT, GOAL_WITHIN, GOAL_FALSE_PER_100 = 0.95, 2, 0.5


def streams_of(scenario: Scenario, plan: Plan, data: Phishing) -> Iterator[tuple[StreamSpec,
                                                                                 int]]:
    number = SCENARIOS.index(scenario)
    if scenario.source == "phishing":
        count = plan.control_streams if scenario.kind == "none" else plan.phishing_streams
        n_windows = plan.control_windows if scenario.kind == "none" else STREAM_WINDOWS
    else:
        count = plan.stationary_streams if scenario.kind == "none" else plan.streams
        n_windows = plan.stationary_windows if scenario.kind == "none" else STREAM_WINDOWS
    for i in range(count):
        rng = np.random.default_rng([SEED, number, i])
        target = scenario.target_of(i)
        windows = (phishing_windows(scenario, target, n_windows, data, rng)
                   if scenario.source == "phishing"
                   else synthetic_windows(scenario, target, n_windows, rng))
        size = PHISHING_WINDOW if scenario.source == "phishing" else scenario.events
        yield StreamSpec(scenario, i, target, windows, n_windows, size), number * 1000 + i


# --------------------------------------------------------------------------- reporting


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def summarise(scenario: Scenario, outcomes: list[dict[DetectorName, Outcome]]) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": scenario.name, "kind": scenario.kind,
                           "source": scenario.source, "streams": len(outcomes)}
    for name in DETECTORS:
        per = [o[name] for o in outcomes]
        caught = [o for o in per if o.delay_windows is not None]
        within = [o for o in caught if (o.delay_windows or 0) <= GOAL_WITHIN]
        sources: Counter[str] = Counter()
        examples: dict[str, str] = {}
        caught_by = Counter(rule for o in caught for rule in o.caught_by)
        for o in per:
            sources.update(o.sources)
            for k, v in o.examples.items():
                examples.setdefault(k, v)
        out[name] = {
            "applicable": _applicable(name, scenario),
            "caught": len(caught), "rate": len(caught) / len(per) if per else None,
            "within_2_windows": len(within) / len(per) if per else None,
            "median_delay_windows": _median([o.delay_windows or 0 for o in caught]),
            "median_delay_events": _median([o.delay_events or 0 for o in caught]),
            "delays_windows": [o.delay_windows for o in per],
            "caught_by": dict(caught_by.most_common()),
            "false_alerts": sum(o.false_alerts for o in per),
            "monitored_windows": sum(o.monitored_windows for o in per),
            "false_alert_sources": dict(sources.most_common()),
            "false_alert_examples": examples,
        }
    return out


def _applicable(name: DetectorName, scenario: Scenario) -> bool:
    if scenario.kind == "none":
        return True
    if name == "evidently":
        return scenario.kind not in ("latency", "error")
    if name == "adwin":
        return scenario.kind != "category"
    return True


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:g}"


def render(results: list[dict[str, Any]]) -> str:
    lines = []
    head = (f"{'scenario':<27}{'n':>3} │ {'mlpulse':<27}│ {'ADWIN defaults':<27}│ "
            f"{'Evidently-style':<20}")
    sub = (f"{'':<30} │ {'rate':>5}{'≤2w':>5}{'med w':>7}{'med ev':>8}  │ "
           f"{'rate':>5}{'≤2w':>5}{'med w':>7}{'med ev':>8}  │ {'rate':>5}{'≤2w':>5}{'med w':>7}")
    lines += [head, sub, "─" * len(sub)]
    for r in results:
        if r["kind"] == "none":
            continue
        cells = []
        for name in DETECTORS:
            d = r[name]
            if not d["applicable"]:
                cells.append(f"{'n/a':>5}{'':>5}{'':>7}" + ("" if name == "evidently"
                                                             else f"{'':>8}  "))
                continue
            cell = (f"{_pct(d['rate']):>5}{_pct(d['within_2_windows']):>5}"
                    f"{_num(d['median_delay_windows']):>7}")
            if name != "evidently":
                cell += f"{_num(d['median_delay_events']):>8}  "
            cells.append(cell)
        lines.append(f"{r['scenario']:<27}{r['streams']:>3} │ " + "│ ".join(cells))
    lines.append("")
    lines.append("false alerts per 100 stationary windows (firing transitions; alerts/windows)")
    fa_head = (f"{'':<34}{'windows':>8} │ {'mlpulse':>16} │ {'ADWIN defaults':>16} │ "
               f"{'Evidently-style':>16}")
    lines += [fa_head, "─" * len(fa_head)]
    for label, (n_windows, counts) in false_alert_rows(results).items():
        row = f"{label:<34}{n_windows:>8} │ "
        row += " │ ".join(f"{_per100(counts[name], n_windows):>16}" for name in DETECTORS)
        lines.append(row)
    return "\n".join(lines)


def _per100(alerts: int, windows: int) -> str:
    return f"{100 * alerts / windows:.2f} ({alerts})" if windows else "—"


def false_alert_rows(
    results: list[dict[str, Any]],
) -> dict[str, tuple[int, dict[DetectorName, int]]]:
    groups: dict[str, list[dict[str, Any]]] = {
        r["scenario"]: [r] for r in results if r["source"] == "synthetic" and r["kind"] == "none"}
    groups |= {
        "synthetic pre-change windows": [r for r in results
                                         if r["source"] == "synthetic" and r["kind"] != "none"],
        "phishing no-shift control": [r for r in results
                                      if r["source"] == "phishing" and r["kind"] == "none"],
        "phishing pre-change windows": [r for r in results
                                        if r["source"] == "phishing" and r["kind"] != "none"],
    }
    groups["all stationary windows"] = [r for g in groups.values() for r in g]
    out = {}
    for label, rows in groups.items():
        windows = sum(r["mlpulse"]["monitored_windows"] for r in rows)
        counts = {name: sum(r[name]["false_alerts"] for r in rows) for name in DETECTORS}
        out[label] = (windows, counts)
    return out


def goals(results: list[dict[str, Any]]) -> dict[str, Any]:
    shifts = [r for r in results if r["scenario"] in GOAL_SHIFTS]
    fa = false_alert_rows(results)
    out: dict[str, Any] = {}
    for name in DETECTORS:
        streams = sum(r["streams"] for r in shifts)
        within = sum(round(r[name]["within_2_windows"] * r["streams"]) for r in shifts)
        windows, counts = fa["all stationary windows"]
        rate = 100 * counts[name] / windows if windows else math.nan
        out[name] = {
            "shifts_caught_within_2_windows": within / streams if streams else None,
            "shifts_streams": streams,
            "false_alerts_per_100_windows": rate,
            "caught_goal_met": streams > 0 and within / streams >= GOAL_CAUGHT,
            "false_alert_goal_met": rate <= GOAL_FALSE_PER_100,
        }
    return out


def render_goals(g: dict[str, Any]) -> str:
    lines = ["goals (mlpulse; baselines for comparison):"]
    for name in DETECTORS:
        d = g[name]
        caught = d["shifts_caught_within_2_windows"]
        lines.append(
            f"  {TITLES[name]:<16} ≥95% of 0.5σ/1σ/2σ shifts caught within 2 windows: "
            f"{_pct(caught)} of {d['shifts_streams']} → "
            f"{'MET' if d['caught_goal_met'] else 'NOT met'};  "
            f"≤0.5 false alerts/100 stationary windows: "
            f"{d['false_alerts_per_100_windows']:.2f} → "
            f"{'MET' if d['false_alert_goal_met'] else 'NOT met'}")
    return "\n".join(lines)


def render_caught_by(results: list[dict[str, Any]]) -> str:
    lines = ["mlpulse rules firing for the target in the detecting window (streams):"]
    for r in results:
        if r["kind"] != "none" and r["mlpulse"]["caught_by"]:
            rules = ", ".join(f"{k} {v}" for k, v in r["mlpulse"]["caught_by"].items())
            lines.append(f"  {r['scenario']:<27} {rules}")
    return "\n".join(lines)


def render_sources(results: list[dict[str, Any]]) -> str:
    sources: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in results:
        sources.update(r["mlpulse"]["false_alert_sources"])
        for k, v in r["mlpulse"]["false_alert_examples"].items():
            examples.setdefault(k, v)
    if not sources:
        return "mlpulse false alerts by rule: none"
    lines = ["mlpulse false alerts by rule[label] (first example):"]
    for source, count in sources.most_common():
        lines.append(f"  {count:>4}  {source}: {examples[source]}")
    return "\n".join(lines)


def false_alerts_by_detector(results: list[dict[str, Any]]
                             ) -> dict[str, dict[str, float | int]]:
    """mlpulse's firing alerts per rule (detector or threshold rule) on each group of
    stationary windows, per 200 model-windows (the goal: at most 1 in all)."""
    out: dict[str, dict[str, float | int]] = {}
    groups = {r["scenario"]: [r] for r in results if r["kind"] == "none"}
    groups["pre-change windows"] = [r for r in results if r["kind"] != "none"]
    for label, rows in groups.items():
        windows = sum(r["mlpulse"]["monitored_windows"] for r in rows)
        by_rule: Counter[str] = Counter()
        for r in rows:
            for source, n in r["mlpulse"]["false_alert_sources"].items():
                by_rule[source.split("[", 1)[0]] += n
        out[label] = {"windows": windows, "alerts": sum(by_rule.values()),
                      "per_200_windows": 200 * sum(by_rule.values()) / windows if windows
                      else 0.0,
                      **{rule: n for rule, n in by_rule.most_common()}}
    return out


def render_by_detector(results: list[dict[str, Any]]) -> str:
    table = false_alerts_by_detector(results)
    rules = sorted({k for row in table.values() for k in row}
                   - {"windows", "alerts", "per_200_windows"})
    head = f"{'mlpulse firing alerts, stationary':<40}{'windows':>8}{'per 200':>9}"
    head += "".join(f"{rule:>18}" for rule in rules)
    lines = [head, "─" * len(head)]
    for label, row in table.items():
        line = f"{label:<40}{row['windows']:>8}{row['per_200_windows']:>9.2f}"
        line += "".join(f"{row.get(rule, 0):>18}" for rule in rules)
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def run(plan: Plan, log: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    data = Phishing.load()
    PHISHING_TARGETS[:] = _phishing_targets(data)
    results = []
    for scenario in SCENARIOS:
        started = time.perf_counter()
        outcomes = [run_stream(spec, seed) for spec, seed in streams_of(scenario, plan, data)]
        results.append(summarise(scenario, outcomes))
        log(f"{scenario.name}: {len(outcomes)} streams in {time.perf_counter() - started:.1f} s")
    return results


def _git() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()
    status = git("status", "--porcelain", "--", "app")
    return {"git_commit": git("rev-parse", "--short", "HEAD"),
            "app_dirty": bool(status) if status is not None else None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="4 streams per scenario, shorter stationary streams")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL

    def log(message: str) -> None:
        print(f"[detection {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
              flush=True)

    load_before = os.getloadavg()
    git = _git()   # before the run: the code measured is the code at start
    started = time.perf_counter()
    results = run(plan, log)
    apart = detection_apart.run(3 if args.quick else 10, log)   # slices and versions
    elapsed = time.perf_counter() - started
    g = goals(results)
    table = render(results)
    print(table)
    print()
    print(render_goals(g))
    print()
    print(render_caught_by(results))
    print()
    print(render_sources(results))
    print()
    print(render_by_detector(results))
    print()
    print(detection_apart.render(apart))
    print(f"\nruntime {elapsed:.1f} s ({'quick' if args.quick else 'full'})")
    import river
    import scipy

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **git,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "river": river.__version__, "scipy": scipy.__version__,
                 "numpy": np.__version__,
                 "loadavg_before": [round(x, 2) for x in load_before],
                 "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "config": {"quick": args.quick, "seed": SEED, "plan": vars(plan),
                   "window_events": WINDOW_EVENTS, "phishing_window_rows": PHISHING_WINDOW,
                   "stream_windows": STREAM_WINDOWS, "change_window": CHANGE_WINDOW,
                   "reference_windows": REF_WINDOWS, "window_seconds": WINDOW_S,
                   "burst_windows": BURST_WINDOWS, "ramp_windows": RAMP_WINDOWS,
                   "phishing_targets": PHISHING_TARGETS,
                   "mlpulse_settings": "defaults (reference: windows 3, min_events 300), "
                                       "built-in rules and alert lifecycle (mlpulse.detect)",
                   "evidently_p_value": P_VALUE},
        "method": __doc__,
        "runtime_s": round(elapsed, 1),
        "scenarios": results,
        "false_alerts": {label: {"windows": n, "alerts": counts}
                         for label, (n, counts) in false_alert_rows(results).items()},
        "mlpulse_false_alerts_by_detector": false_alerts_by_detector(results),
        "goals": g,
        "table": table,
        "slices_and_versions": {"method": detection_apart.__doc__, "rows": apart,
                                "table": detection_apart.render(apart)},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(_jsonable(report), indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
