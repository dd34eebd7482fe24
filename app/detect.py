"""Stage 3: closed windows → findings and metrics → rules → alert lifecycle → alert events.

One :class:`Detect` per worker holds, per owned partition, a
:class:`~mlpulse.detectors.monitor.ModelMonitor` per model version, an error-spike
detector per log service, and the no-data watch per model. Each closed window's
detector findings and metrics go through the :mod:`mlpulse.rules` (conditions) and
the key's :class:`~mlpulse.alerts.Lifecycle` (pending → firing → resolved, with
inhibition); a check that could not run changes nothing.

After every window it touches, a key's whole state (monitor and alert states)
is written to a :class:`~mlpulse.store.SnapshotStore` — a changelog-backed Faust table in the
worker — and read back when a key shows up on a worker without it in memory.

>>> from mlpulse.config import Settings
>>> detect = Detect(Settings(window_seconds=60))
>>> detect.seen(0, "fraud", now_wall_s=0)
[]
>>> [(a.rule, a.status, a.labels) for a in detect.check_no_data(now_wall_s=181)]
[('no_data', 'firing', {'model': 'fraud'})]
>>> [(a.rule, a.status) for a in detect.seen(0, "fraud", now_wall_s=200)]
[('no_data', 'resolved')]
"""

from __future__ import annotations

import functools
import hashlib
import logging
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from .aggregates import PredictionAggregate
from .alerts import Lifecycle, fingerprint
from .comparisons import Comparisons
from .config import Settings
from .detectors.anomaly import LogErrorSpike, WindowAnomaly, observe_many
from .detectors.comparison import Side, compare, compare_labelled
from .detectors.comparison import findings as comparison_findings
from .detectors.drift import DriftTests, run_drift_tests
from .detectors.finding import Finding
from .detectors.monitor import ModelMonitor
from .detectors.profile import WindowProfile
from .detectors.reference import Reference, build_reference, contribution
from .detectors.settings import DetectorSettings, ModelDetectors
from .events import AlertEvent, LogWindow, PredictionEvent, PredictionWindow
from .join import Revised
from .rules import Condition, Rules
from .slicing import segment_of
from .store import (
    MemoryStore,
    SnapshotStore,
    comparison_key,
    model_key,
    presence_key,
    presence_model,
    reference_key,
    service_key,
)
from .summarize import Closed
from .window_values import window_metrics, window_value

__all__ = ["Detect", "load_reference_file"]

log = logging.getLogger("mlpulse.detect")


class _ModelState:
    __slots__ = ("alerts", "last_end_s", "monitor", "saved_reference")

    def __init__(self, monitor: ModelMonitor, alerts: Lifecycle,
                 last_end_s: float = float("-inf")) -> None:
        self.monitor = monitor
        self.alerts = alerts
        self.last_end_s = last_end_s
        """End of the last window the detectors saw: one closed again (replayed after a
        restore from a checkpoint older than this state) is not judged twice."""
        self.saved_reference = -1
        """``monitor.reference_changes`` when its reference was last stored."""

    @property
    def quiet(self) -> bool:
        """No alert pending or firing: only what fires can change one."""
        return not self.alerts.states


class _Presence:
    """When a model last had events (wall clock), and its no-data alert."""

    __slots__ = ("alerts", "last_seen_wall_s")

    def __init__(self, last_seen_wall_s: float, alerts: Lifecycle) -> None:
        self.last_seen_wall_s = last_seen_wall_s
        self.alerts = alerts


class Detect:
    """Detector state of the partitions this worker owns, and its alert policy."""

    def __init__(self, settings: Settings, config: DetectorSettings | None = None,
                 store: SnapshotStore | None = None, rules: Rules | None = None) -> None:
        self.settings = settings
        self.config = config if config is not None else DetectorSettings.from_mapping(
            settings.detectors)
        self.rules = rules if rules is not None else Rules.from_mapping(
            {"rules": settings.rules, "inhibit": settings.inhibit})
        self.store = store if store is not None else MemoryStore()
        self._models: dict[int, dict[tuple[str, ...], _ModelState]] = {}
        self._unsaved: dict[int, dict[tuple[str, tuple[str, ...]], None]] = {}
        """Per partition, the state changed since :meth:`save` last stored it, in order:
        ``("model", key)`` a model version's or slice's detectors, ``("comparison",
        (model,))`` its versions' counts, ``("service", (service,))`` a log service's."""
        self._services: dict[int, dict[str, tuple[LogErrorSpike, Lifecycle, float]]] = {}
        self._presence: dict[int, dict[str, _Presence]] = {}
        self._file_references: dict[str, Reference] = {}
        self._restored: set[int] = set()
        self.comparisons = Comparisons(settings.window_seconds,
                                       settings.feedback_horizon_seconds)
        """Versions of a model compared window by window (:mod:`mlpulse.comparisons`)."""
        self._later: list[AlertEvent] = []
        """Alerts of candidates judged when their baseline closed after them."""
        self.on_findings: Callable[[int, tuple[str, ...], list[Finding], float | None],
                                   None] | None = None
        """Called with every prediction window's findings and its drift tests' largest PSI
        (a quiet slice's clear drift findings are not built; the status view listens)."""

    # ------------------------------------------------------------ per window

    def new_profile(self, partition: int, key: tuple[str, ...]) -> WindowProfile | None:
        """The detectors' profile for a new window of (model, version)."""
        if not self.config.for_model(key[0]).enabled:
            return None
        return self._model(partition, key).monitor.new_profile()

    def on_closed(self, closed: Iterable[Closed]) -> list[AlertEvent]:
        """Alerts raised or resolved by these closed windows."""
        out: list[AlertEvent] = []
        closed = list(closed)
        for c in closed:   # first every version's side: those closing together compare now
            if isinstance(c.summary, PredictionWindow) and len(c.key) == 2:
                self._comparable(c)
        together = self._together(closed)
        for c in closed:
            if isinstance(c.summary, PredictionWindow):
                out.extend(self._on_prediction_window(c, *together.get(id(c), (None, None))))
            elif isinstance(c.summary, LogWindow):
                out.extend(self._on_log_window(c))
        self.comparisons.judged()
        out.extend(self._later)
        self._later.clear()
        return out

    def _together(self, closed: list[Closed]
                  ) -> dict[int, tuple[DriftTests | None, tuple[Finding | None] | None]]:
        """What the windows closing together (a model version's and its slices') compute
        at once, by id of their ``Closed``: their drift tests (one numpy pass for the
        numeric signals, one for the categorical ones) and their anomaly detectors'
        verdicts (:func:`~mlpulse.detectors.anomaly.observe_many`). Only the first window
        of a key is among them (its next may judge against another reference, after
        another history)."""
        drifts: dict[int, DriftTests] = {}
        anomalies: dict[int, tuple[WindowAnomaly, tuple[dict[str, float], dict[str, float]]]]
        anomalies = {}
        seen: set[tuple[str, ...]] = set()
        for c in closed:
            if not isinstance(c.summary, PredictionWindow) or c.key in seen:
                continue
            seen.add(c.key)
            profile = c.aggregate.profile
            if not isinstance(profile, WindowProfile) or (
                    len(c.key) > 2 and c.summary.count < self.settings.min_slice_events):
                continue
            state = self._model(c.partition, c.key)
            if c.end_s > state.last_end_s:
                monitor = state.monitor
                # a quiet slice's status shows its largest drift only (not each signal's)
                drift = monitor.drift_tests(c.aggregate, profile,
                                            quiet=len(c.key) > 2 and state.quiet)
                if drift is not None:
                    drifts[id(c)] = drift
                judge = monitor.anomaly_input(c.aggregate, c.summary, c.start_s, c.end_s,
                                              complete=not c.idle)
                if judge is not None and monitor.anomaly is not None:
                    anomalies[id(c)] = (monitor.anomaly, judge)
        if len(drifts) > 1:
            run_drift_tests(list(drifts.values()))
        verdicts = dict(zip(anomalies, observe_many(
            [a for a, _ in anomalies.values()], [judge[0] for _, judge in anomalies.values()],
            [judge[1] for _, judge in anomalies.values()]), strict=True))
        return {key: (drifts.get(key), (verdicts[key],) if key in verdicts else None)
                for key in drifts.keys() | verdicts.keys()}

    def _comparable(self, c: Closed) -> None:
        model, version = c.key
        config = self.config.for_model(model)
        if not (config.enabled and config.comparison.enabled):
            return
        comparisons = self.comparisons
        if not comparisons.known(c.partition, model):
            stored = self.store.get(c.partition, comparison_key(model))
            if stored is not None:
                comparisons.restore(c.partition, model, msgspec.msgpack.decode(stored))
        summary = c.summary
        assert isinstance(summary, PredictionWindow)
        side = Side.of(version, c.aggregate)
        side.performance, side.outcomes = summary.performance, dict(summary.outcomes)
        comparisons.closed(c.partition, model, c.start_s, side,
                           config.comparison.history_windows)
        self._changed(c.partition, (model,), "comparison")

    def _compare(self, c: Closed) -> tuple[list[Finding], bool]:
        """The comparison findings of this version's window, and whether they are all
        its comparison alerts may hear of in it (it was compared, or is the baseline):
        the others then resolve. A candidate that closed before its baseline is judged
        here, when the baseline closes."""
        model, version = c.key[:2]
        spec = self.config.for_model(model).comparison
        comparisons = self.comparisons
        own: list[Finding] = []
        for candidate, baseline in comparisons.pairs(c.partition, model, c.start_s, version,
                                                     spec):
            result = compare(candidate, baseline, spec)
            if not result.signals:
                continue   # too few events on a side: not compared (labels may come later)
            comparisons.compared(c.partition, model, c.start_s, candidate.version, result)
            labels = {"model": model, "model_version": candidate.version}
            if candidate.version == version:
                assert isinstance(c.summary, PredictionWindow)
                c.summary.comparison = result
                own = comparison_findings(result, labels)
            else:
                self._later.extend(self._judge_later(
                    c.partition, (model, candidate.version), c.start_s, c.end_s,
                    comparison_findings(result, labels)))
        done = bool(own) or comparisons.is_baseline(c.partition, model, c.start_s, version)
        return own, done

    def _on_prediction_window(self, c: Closed, drift: DriftTests | None = None,
                              anomaly: tuple[Finding | None] | None = None
                              ) -> list[AlertEvent]:
        aggregate: PredictionAggregate = c.aggregate
        profile = aggregate.profile
        if not isinstance(profile, WindowProfile):
            return []
        model, version, *part = c.key
        if part and c.summary.count < self.settings.min_slice_events:
            return []   # a small slice: summarised, not judged
        state = self._model(c.partition, c.key)
        if c.end_s <= state.last_end_s:
            return []
        state.last_end_s = c.end_s
        quiet = state.quiet
        findings = state.monitor.on_window(aggregate, profile, c.start_s, c.end_s, c.summary,
                                           complete=not c.idle, drift=drift, anomaly=anomaly,
                                           quiet=quiet)
        compared, complete = self._compare(c) if not part else ([], False)
        if self.on_findings is not None:
            self.on_findings(c.partition, c.key, findings + compared,
                             state.monitor.drift_psi_max)
        labels = {"model": model, "model_version": version}
        if part:
            labels["segment"] = part[0]   # e.g. "region=eu"
        judged = findings + compared
        if quiet:
            judged = [f for f in judged if f.firing]
        min_labels = self.settings.feedback_min_labels
        conditions = self.rules.evaluate_findings(judged, labels)
        if not quiet or self.rules.may_hold(
                functools.partial(window_value, c, min_labels=min_labels), labels):
            conditions += self.rules.evaluate_metrics(
                window_metrics(c, min_labels, self.rules.fields), labels, active_only=quiet)
        if complete:
            conditions += _resolve_others(state.alerts, conditions)
        presence = self._presence.get(c.partition, {}).get(model)
        alerts = state.alerts.apply(
            conditions, c.start_s, c.end_s, rules=self.rules,
            also_firing=presence.alerts.firing() if presence is not None else ())
        self._changed(c.partition, c.key)
        return alerts

    def on_revised(self, revised: Iterable[Revised]) -> list[AlertEvent]:
        """Alerts of the ``performance.*`` and ``outcomes.*`` rules on windows that late
        feedback changed, and of the versions' comparisons of them.

        Each window is judged again as its labels come in; a verdict on an older window
        than the newest judged does not move an alert (the newest labelled window leads).
        """
        out: list[AlertEvent] = []
        is_baseline = self.comparisons.is_baseline
        # baselines first: a candidate revised in the same round then shows its comparison
        for r in sorted(revised, key=lambda r: not is_baseline(r.partition, r.key[0],
                                                              r.start_s, r.key[1])):
            model, version = r.key[:2]
            config = self.config.for_model(model)
            if not config.enabled:
                continue
            labels = {"model": model, "model_version": version}
            if len(r.key) > 2:
                labels["segment"] = r.key[2]
            if config.comparison.enabled and len(r.key) == 2:
                out.extend(self._compare_revised(r, config.comparison))
            conditions = self.rules.evaluate_metrics(
                window_metrics(r, self.settings.feedback_min_labels, self.rules.fields),
                labels,
                prefix=("performance.", "outcomes."))
            if not conditions:
                continue
            state = self._model(r.partition, r.key)
            presence = self._presence.get(r.partition, {}).get(model)
            out.extend(state.alerts.apply(
                conditions, r.start_s, r.end_s, rules=self.rules,
                also_firing=presence.alerts.firing() if presence is not None else ()))
            self._changed(r.partition, r.key)
        return out

    def _compare_revised(self, r: Revised, spec: Any) -> list[AlertEvent]:
        """Late labels or outcomes of a version's window: its labelled signals against
        the baseline's again (each candidate's, if it is the baseline)."""
        model, version = r.key
        comparisons = self.comparisons
        out: list[AlertEvent] = []
        for candidate, baseline in comparisons.revised(
                r.partition, model, r.start_s, version, performance=r.summary.performance,
                outcomes=dict(r.summary.outcomes)):
            labelled = compare_labelled(candidate, baseline, spec)
            if not labelled.signals:
                continue
            merged = comparisons.last(r.partition, model, r.start_s, candidate.version)
            if merged is None:
                merged = labelled
            else:   # the event signals as compared at the close, the labelled ones anew
                merged.signals.update(labelled.signals)
            comparisons.compared(r.partition, model, r.start_s, candidate.version, merged)
            out.extend(self._judge_later(
                r.partition, (model, candidate.version), r.start_s, r.end_s,
                comparison_findings(labelled,
                                    {"model": model, "model_version": candidate.version})))
        # a candidate's revision carries its comparison (labelled signals once both have them)
        r.summary.comparison = comparisons.last(r.partition, model, r.start_s, version)
        return out

    def _judge_later(self, partition: int, key: tuple[str, ...], start_s: float,
                     end_s: float, findings: list[Finding]) -> list[AlertEvent]:
        """Comparison findings of a window its version had closed before (its baseline
        closed later, or late labels came): judged on that window's alert states."""
        if not findings:
            return []
        state = self._model(partition, key)
        presence = self._presence.get(partition, {}).get(key[0])
        labels = {"model": key[0], "model_version": key[1]}
        alerts = state.alerts.apply(
            self.rules.evaluate_findings(findings, labels), start_s, end_s, rules=self.rules,
            also_firing=presence.alerts.firing() if presence is not None else ())
        self._changed(partition, key)
        return alerts

    def _on_log_window(self, c: Closed) -> list[AlertEvent]:
        service = c.key[0]
        spec = self.config.for_model(service).logs
        if not spec.enabled:
            return []
        services = self._services.setdefault(c.partition, {})
        entry = services.get(service)
        if entry is None:
            stored = self.store.get(c.partition, service_key(service))
            if stored is not None:
                data = msgspec.msgpack.decode(stored)
                entry = (LogErrorSpike.restore(data["spike"]), Lifecycle(data["alerts"]),
                         data.get("last_end_s", float("-inf")))
            else:
                entry = (LogErrorSpike(spec.warmup_windows, spec.z_threshold, spec.min_increase,
                                       min_events=spec.min_events), Lifecycle(), float("-inf"))
        spike, alerts, last_end_s = entry
        if c.end_s <= last_end_s:   # closed again after a restore: judged already
            return []
        services[service] = (spike, alerts, c.end_s)
        summary = c.summary
        assert isinstance(summary, LogWindow)
        finding = spike.observe(summary.count, summary.error_count)
        labels = {"service": service}
        conditions = (self.rules.evaluate_findings([finding] if finding else [], labels)
                      + self.rules.evaluate_metrics(
                          window_metrics(c, fields=self.rules.fields), labels, source="logs"))
        events = alerts.apply(conditions, c.start_s, c.end_s)
        self._changed(c.partition, (service,), "service")
        return events

    # ------------------------------------------------------------ no data

    def seen(self, partition: int, model: str, now_wall_s: float) -> list[AlertEvent]:
        """``model`` had events now: resolves its no-data alert if one fires."""
        models = self._presence.setdefault(partition, {})
        presence = models.get(model)
        if presence is None:
            presence = models[model] = self._load_presence(partition, model, now_wall_s)
        presence.last_seen_wall_s = now_wall_s
        if not presence.alerts.states:
            return []
        out = presence.alerts.apply(
            self.rules.evaluate_findings([self._no_data_finding(model, False, 0.0)],
                                         {"model": model}),
            now_wall_s, now_wall_s, window=False)
        self._save_presence(partition, model, presence)
        return out

    def touch(self, now_wall_s: float) -> None:
        """Input resumes after a pause: every model's silence counts from ``now_wall_s``."""
        for models in self._presence.values():
            for presence in models.values():
                if not presence.alerts.states:
                    presence.last_seen_wall_s = max(presence.last_seen_wall_s, now_wall_s)

    def check_no_data(self, now_wall_s: float) -> list[AlertEvent]:
        """No-data alerts of models silent for ``no_data_windows`` windows (wall clock)."""
        out: list[AlertEvent] = []
        for partition, models in self._presence.items():
            for model, presence in models.items():
                windows = self.config.for_model(model).no_data_windows
                silent_s = now_wall_s - presence.last_seen_wall_s
                due = silent_s >= windows * self.settings.window_seconds
                if due and not presence.alerts.states:
                    out.extend(presence.alerts.apply(
                        self.rules.evaluate_findings(
                            [self._no_data_finding(model, True, silent_s)], {"model": model}),
                        presence.last_seen_wall_s, now_wall_s, window=False))
                    self._save_presence(partition, model, presence)
        return out

    def _no_data_finding(self, model: str, firing: bool, silent_s: float) -> Finding:
        windows = self.config.for_model(model).no_data_windows
        return Finding(
            "no_data", "no_data", firing, {}, "critical", silent_s,
            windows * self.settings.window_seconds,
            f"no events from {model} for {silent_s:.0f} s" if firing
            else f"events from {model} arrive again",
            {"silent_seconds": silent_s})

    # ------------------------------------------------------------ state

    def _model(self, partition: int, key: tuple[str, ...]) -> _ModelState:
        models = self._models.setdefault(partition, {})
        state = models.get(key)
        if state is None:
            state = models[key] = self._load_model(partition, key)
        return state

    def _hst_allowed(self, config: ModelDetectors) -> bool:
        """HalfSpaceTrees for one more model version? (bounded: they are big)"""
        with_hst = sum(1 for models in self._models.values() for state in models.values()
                       if state.monitor.hst)
        return with_hst < config.anomaly.hst_max_series

    def _load_model(self, partition: int, key: tuple[str, ...]) -> _ModelState:
        model, version = key[:2]
        config = self.config.for_model(model)
        if len(key) > 2:   # a slice: judged by window, without per-event detectors
            config = msgspec.structs.replace(
                config, adwin=msgspec.structs.replace(config.adwin, enabled=False))
        hst = len(key) == 2 and self._hst_allowed(config)
        stored = self.store.get(partition, model_key(key))
        if stored is not None:
            try:
                data = _unpack(stored)
                stored_reference = self.store.get(partition, reference_key(key))
                if stored_reference is not None and "reference" not in data["monitor"]:
                    data["monitor"].update(_unpack(stored_reference))
                monitor = ModelMonitor.restore(data["monitor"], config,
                                               self.settings.window_seconds, hst=hst)
                restored = _ModelState(monitor, Lifecycle(data["alerts"]),
                                       data.get("last_end_s", float("-inf")))
                restored.saved_reference = monitor.reference_changes
                return restored
            except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:
                log.warning("mlpulse: dropping unreadable detector state of %s %s: %s",
                            model, version, exc)
        reference = self._file_reference(model, config, key[2] if len(key) > 2 else None)
        return _ModelState(ModelMonitor(model, version, config, self.settings.window_seconds,
                                        seed=_seed(key), reference=reference, hst=hst),
                           Lifecycle())

    def _changed(self, partition: int, key: tuple[str, ...], kind: str = "model") -> None:
        """A model version's (or slice's) detectors or alerts moved, or a model's version
        counts (``kind="comparison"``), or a log service's detector (``"service"``):
        stored at the next :meth:`save`."""
        self._unsaved.setdefault(partition, {})[(kind, key)] = None

    def save(self) -> None:
        """Store the detector state changed since the last call: of every model version
        and slice judged, every model's version counts and every log service's detector.
        Each checkpoint round calls it, before it snapshots the windows: a restore then
        finds the detectors as of the windows it restores, and judges what it replays
        again, alike. A reference (the bulk of a state) is stored under its own key, only
        when it changed."""
        unsaved, self._unsaved = self._unsaved, {}
        for partition, changed in unsaved.items():
            models = self._models.get(partition, {})
            services = self._services.get(partition, {})
            for kind, key in changed:
                if kind == "comparison":
                    self.store.put(partition, comparison_key(key[0]), msgspec.msgpack.encode(
                        self.comparisons.state(partition, key[0])))
                elif kind == "service" and key[0] in services:
                    spike, alerts, last_end_s = services[key[0]]
                    self.store.put(partition, service_key(key[0]), msgspec.msgpack.encode(
                        {"spike": spike.snapshot(), "alerts": alerts.snapshot(),
                         "last_end_s": last_end_s}))
                elif kind == "model" and key in models:
                    self._store_model(partition, key, models[key])

    def _store_model(self, partition: int, key: tuple[str, ...], state: _ModelState) -> None:
        monitor = state.monitor
        if monitor.reference_changes != state.saved_reference:
            self.store.put(partition, reference_key(key), _pack(monitor.reference_snapshot()))
            state.saved_reference = monitor.reference_changes
        self.store.put(partition, model_key(key), _pack(
            {"monitor": monitor.snapshot(reference=False), "alerts": state.alerts.snapshot(),
             "last_end_s": state.last_end_s}))

    def _load_presence(self, partition: int, model: str, now_wall_s: float) -> _Presence:
        stored = self.store.get(partition, presence_key(model))
        if stored is None:
            return _Presence(now_wall_s, Lifecycle())
        data = msgspec.msgpack.decode(stored)
        return _Presence(data["last_seen_wall_s"], Lifecycle(data["alerts"]))

    def _save_presence(self, partition: int, model: str, presence: _Presence) -> None:
        self.store.put(partition, presence_key(model), msgspec.msgpack.encode(
            {"last_seen_wall_s": presence.last_seen_wall_s,
             "alerts": presence.alerts.snapshot()}))

    def restore_presence(self, partition: int, now_wall_s: float) -> None:
        """Watch, for no data, every model this partition's state knows (after assignment).

        A restored model gets the full silence allowance again from ``now_wall_s``:
        its events may still wait in the backlog.
        """
        if partition in self._restored:
            return
        self._restored.add(partition)
        models = self._presence.setdefault(partition, {})
        for key, value in self.store.items(partition):
            model = presence_model(key)
            if model is not None and model not in models:
                data = msgspec.msgpack.decode(value)
                models[model] = _Presence(max(data["last_seen_wall_s"], now_wall_s),
                                          Lifecycle(data["alerts"]))

    def keep_only(self, partitions: set[int]) -> None:
        """Forget partitions this worker no longer owns (their state stays in the store: the
        checkpoint round before a partition is given away stored it)."""
        for table in (self._models, self._unsaved, self._services, self._presence):
            for partition in set(table) - partitions:
                del table[partition]  # type: ignore[attr-defined]
        self.comparisons.keep_only(partitions)
        self._restored &= partitions

    def _file_reference(self, model: str, config: ModelDetectors,
                        segment: str | None = None) -> Reference | None:
        """The reference file's reference of ``model`` (of its events in slice ``segment``,
        for a slice's)."""
        spec = config.reference
        if spec.mode != "file" or spec.path is None:
            return None
        name = model if segment is None else f"{model}|{segment}"
        if name not in self._file_references:
            try:
                self._file_references[name] = load_reference_file(
                    Path(spec.path), model, config, self.settings,
                    segment_of(segment) if segment is not None else None)
            except (OSError, ValueError, msgspec.DecodeError) as exc:
                # a broken reference file must not stop the worker: say so, detect without it
                log.error("mlpulse: reference file %s of %s unusable (%s); its drift "
                          "and data-quality checks are off", spec.path, name, exc)
                return None
        return self._file_references[name]


def load_reference_file(path: Path, model: str, config: ModelDetectors,
                        settings: Settings, segment: dict[str, str] | None = None) -> Reference:
    """A reference built from prediction events in a JSON array or NDJSON file (those of
    ``model``, if any; for a slice, those of its ``segment``)."""
    raw = path.read_bytes()
    text = raw.lstrip()
    if text.startswith(b"["):
        events = msgspec.json.decode(raw, type=list[PredictionEvent])
    else:
        events = [msgspec.json.decode(line, type=PredictionEvent)
                  for line in raw.splitlines() if line.strip()]
    events = [e for e in events if e.model == model] or events
    if segment is not None:
        events = [e for e in events if all(e.segment.get(k) == v for k, v in segment.items())]
        if not events:
            raise ValueError(f"no event of the slice {segment}")
    spec = config.reference
    profile = WindowProfile(sample_size=spec.sample_size)
    aggregate = PredictionAggregate(settings.max_categories, settings.top_values, profile=profile)
    aggregate.add_batch(events)
    times = [e.event_time_s for e in events] or [0.0]
    return build_reference([contribution(aggregate, profile, min(times), max(times))],
                           spec.bins, spec.sample_size)


def _resolve_others(alerts: Lifecycle, conditions: list[Condition]) -> list[Condition]:
    """Clear conditions for the comparison alerts of a version that this window's
    comparison did not name (its baseline changed, or it became the baseline)."""
    held = {fp: state for fp, state in alerts.states.items()
            if state.get("last", {}).get("kind") == "comparison"}
    if not held:
        return []
    named = {fingerprint(c.rule, c.labels) for c in conditions if c.kind == "comparison"}
    return [Condition(rule=state["rule"], active=False, labels=state["labels"],
                      kind="comparison")
            for fp, state in held.items() if fp not in named]


PACK_ABOVE = 8192
"""Detector states of more bytes than this are stored compressed."""


def _pack(state: dict[str, Any]) -> bytes:
    """A model version's detector state as stored: msgpack, compressed when large (~8.5 KB →
    ~4 KB with 20 features; a worker holds one per series in its table, and writes it per
    window). A slice's (~1.7 KB, ~3.6 KB once its anomaly history is full) is not:
    compressing took a fifth of its window's judging (~40 µs of zlib a window)."""
    packed = msgspec.msgpack.encode(state)
    return zlib.compress(packed, 1) if len(packed) > PACK_ABOVE else packed


def _unpack(stored: bytes) -> Any:
    """The state :func:`_pack` stored, compressed or not (a msgpack map never starts with
    zlib's 0x78).

    >>> large = {"a": "x" * 10_000}
    >>> _pack(large)[:1], _unpack(_pack(large)) == large, _unpack(_pack({"a": 1}))
    (b'x', True, {'a': 1})
    """
    return msgspec.msgpack.decode(zlib.decompress(stored) if stored[:1] == b"\x78" else stored)


def _seed(key: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.sha256("|".join(key).encode()).digest()[:4], "big")
