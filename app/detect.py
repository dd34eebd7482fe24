"""Stage 3: closed windows → detector findings → alert events (firing / resolved).

One :class:`Detect` per worker holds, per owned partition, a
:class:`~app.detectors.monitor.ModelMonitor` per model version, an error-spike
detector per log service, and the no-data watch per model. Its alert policy is
the simple one: an alert fires once when a finding starts firing and resolves
once when the same finding comes back clear; a check that could not run
changes nothing. Alerts have a stable ``fingerprint`` (rule + labels) and an
``alert_id`` (fingerprint + start), the same on every worker and after restarts.

After every window it touches, a key's whole state (monitor and firing alerts)
is written to a :class:`SnapshotStore` — a changelog-backed Faust table in the
worker — and read back when a key shows up on a worker without it in memory.

>>> from app.config import Settings
>>> detect = Detect(Settings(window_seconds=60))
>>> detect.seen(0, "fraud", now_wall_s=0)
[]
>>> [(a.rule, a.status, a.labels) for a in detect.check_no_data(now_wall_s=181)]
[('no_data', 'firing', {'model': 'fraud'})]
>>> [(a.rule, a.status) for a in detect.seen(0, "fraud", now_wall_s=200)]
[('no_data', 'resolved')]
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from app.aggregates import PredictionAggregate
from app.config import Settings
from app.detectors.anomaly import LogErrorSpike
from app.detectors.finding import Finding
from app.detectors.monitor import ModelMonitor
from app.detectors.profile import WindowProfile
from app.detectors.reference import Reference, build_reference, contribution
from app.detectors.settings import DetectorSettings, ModelDetectors
from app.events import AlertEvent, Annotations, LogWindow, PredictionEvent, PredictionWindow
from app.summarize import Closed
from app.timefmt import rfc3339

__all__ = ["Detect", "MemoryStore", "SnapshotStore", "fingerprint", "load_reference_file"]

log = logging.getLogger("mlpulse.detect")


class SnapshotStore(Protocol):
    """Where detector state lives between windows, per partition."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def put(self, partition: int, key: bytes, value: bytes) -> None: ...
    def items(self, partition: int) -> Iterable[tuple[bytes, bytes]]: ...


class MemoryStore:
    """A :class:`SnapshotStore` in a dict (tests, the in-memory pipeline)."""

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(partition, {}).get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.data.setdefault(partition, {})[key] = value

    def items(self, partition: int) -> Iterable[tuple[bytes, bytes]]:
        return list(self.data.get(partition, {}).items())


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    """Stable id of one alert's identity: its rule and labels.

    >>> fingerprint("no_data", {"model": "fraud"})
    '5d246223df8a0a41'
    """
    text = json.dumps([rule, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Alerts:
    """Firing alerts of one key, and the policy that turns findings into alert events."""

    def __init__(self, firing: dict[str, dict[str, Any]] | None = None) -> None:
        self.firing = firing or {}

    def apply(
        self, findings: Iterable[Finding], base: dict[str, str], start_s: float, end_s: float,
        window: bool = True,
    ) -> list[AlertEvent]:
        out = []
        for f in findings:
            labels = {**base, **f.labels}
            fp = fingerprint(f.rule, labels)
            active = self.firing.get(fp)
            if f.firing and active is None:
                starts_at = rfc3339(start_s)
                self.firing[fp] = {"alert_id": f"{fp}-{int(start_s)}", "starts_at": starts_at}
                out.append(_event(f, labels, fp, status="firing",
                                  alert_id=self.firing[fp]["alert_id"], starts_at=starts_at,
                                  ends_at=None, start_s=start_s, end_s=end_s, window=window))
            elif not f.firing and active is not None:
                del self.firing[fp]
                out.append(_event(f, labels, fp, status="resolved", alert_id=active["alert_id"],
                                  starts_at=active["starts_at"], ends_at=rfc3339(start_s),
                                  start_s=start_s, end_s=end_s, window=window))
        return out


def _event(
    f: Finding, labels: dict[str, str], fp: str, *, status: str, alert_id: str, starts_at: str,
    ends_at: str | None, start_s: float, end_s: float, window: bool,
) -> AlertEvent:
    subject = " ".join(labels[k] for k in ("model", "model_version", "service") if k in labels)
    evidence = dict(f.evidence)
    trace_ids = evidence.pop("trace_ids", [])
    return AlertEvent(
        alert_id=alert_id, fingerprint=fp, status=status,  # type: ignore[arg-type]
        severity=f.severity, rule=f.rule, kind=f.kind, labels=labels,
        annotations=Annotations(summary=f.summary, description=f"{subject}: {f.summary}"),
        value=f.value, threshold=f.threshold, starts_at=starts_at, ends_at=ends_at,
        window_start=rfc3339(start_s) if window else None,
        window_end=rfc3339(end_s) if window else None,
        evidence=_plain(evidence), trace_ids=list(trace_ids),
    )


class _ModelState:
    __slots__ = ("alerts", "monitor")

    def __init__(self, monitor: ModelMonitor, alerts: _Alerts) -> None:
        self.monitor = monitor
        self.alerts = alerts


class _Presence:
    """When a model last had events (wall clock), and its no-data alert."""

    __slots__ = ("alerts", "last_seen_wall_s")

    def __init__(self, last_seen_wall_s: float, alerts: _Alerts) -> None:
        self.last_seen_wall_s = last_seen_wall_s
        self.alerts = alerts


class Detect:
    """Detector state of the partitions this worker owns, and its alert policy."""

    def __init__(self, settings: Settings, config: DetectorSettings | None = None,
                 store: SnapshotStore | None = None) -> None:
        self.settings = settings
        self.config = config if config is not None else DetectorSettings.from_mapping(
            settings.detectors)
        self.store = store if store is not None else MemoryStore()
        self._models: dict[int, dict[tuple[str, ...], _ModelState]] = {}
        self._services: dict[int, dict[str, tuple[LogErrorSpike, _Alerts]]] = {}
        self._presence: dict[int, dict[str, _Presence]] = {}
        self._file_references: dict[str, Reference] = {}
        self._restored: set[int] = set()

    # ------------------------------------------------------------ per window

    def new_profile(self, partition: int, key: tuple[str, ...]) -> WindowProfile | None:
        """The detectors' profile for a new window of (model, version)."""
        if not self.config.for_model(key[0]).enabled:
            return None
        return self._model(partition, key).monitor.new_profile()

    def on_closed(self, closed: Iterable[Closed]) -> list[AlertEvent]:
        """Alerts raised or resolved by these closed windows."""
        out: list[AlertEvent] = []
        for c in closed:
            if isinstance(c.summary, PredictionWindow):
                out.extend(self._on_prediction_window(c))
            elif isinstance(c.summary, LogWindow):
                out.extend(self._on_log_window(c))
        return out

    def _on_prediction_window(self, c: Closed) -> list[AlertEvent]:
        aggregate: PredictionAggregate = c.aggregate
        profile = aggregate.profile
        if not isinstance(profile, WindowProfile):
            return []
        state = self._model(c.partition, c.key)
        findings = state.monitor.on_window(aggregate, profile, c.start_s, c.end_s, c.summary)
        model, version = c.key
        alerts = state.alerts.apply(findings, {"model": model, "model_version": version},
                                    c.start_s, c.end_s)
        self._save_model(c.partition, c.key, state)
        return alerts

    def _on_log_window(self, c: Closed) -> list[AlertEvent]:
        service = c.key[0]
        spec = self.config.for_model(service).logs
        if not spec.enabled:
            return []
        services = self._services.setdefault(c.partition, {})
        entry = services.get(service)
        if entry is None:
            stored = self.store.get(c.partition, b"l|" + service.encode())
            if stored is not None:
                data = msgspec.msgpack.decode(stored)
                entry = (LogErrorSpike.restore(data["spike"]), _Alerts(data["firing"]))
            else:
                entry = (LogErrorSpike(spec.warmup_windows, spec.z_threshold, spec.min_increase,
                                       min_events=spec.min_events), _Alerts())
            services[service] = entry
        spike, alerts = entry
        summary = c.summary
        assert isinstance(summary, LogWindow)
        finding = spike.observe(summary.count, summary.error_count)
        events = alerts.apply([finding] if finding else [], {"service": service},
                              c.start_s, c.end_s)
        self.store.put(c.partition, b"l|" + service.encode(), msgspec.msgpack.encode(
            {"spike": spike.snapshot(), "firing": alerts.firing}))
        return events

    # ------------------------------------------------------------ no data

    def seen(self, partition: int, model: str, now_wall_s: float) -> list[AlertEvent]:
        """``model`` had events now: resolves its no-data alert if one fires."""
        models = self._presence.setdefault(partition, {})
        presence = models.get(model)
        if presence is None:
            presence = models[model] = self._load_presence(partition, model, now_wall_s)
        presence.last_seen_wall_s = now_wall_s
        if not presence.alerts.firing:
            return []
        out = presence.alerts.apply([self._no_data_finding(model, False, 0.0)],
                                    {"model": model}, now_wall_s, now_wall_s, window=False)
        self._save_presence(partition, model, presence)
        return out

    def check_no_data(self, now_wall_s: float) -> list[AlertEvent]:
        """No-data alerts of models silent for ``no_data_windows`` windows (wall clock)."""
        out: list[AlertEvent] = []
        for partition, models in self._presence.items():
            for model, presence in models.items():
                windows = self.config.for_model(model).no_data_windows
                silent_s = now_wall_s - presence.last_seen_wall_s
                due = silent_s >= windows * self.settings.window_seconds
                if due and not presence.alerts.firing:
                    out.extend(presence.alerts.apply(
                        [self._no_data_finding(model, True, silent_s)], {"model": model},
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

    def _load_model(self, partition: int, key: tuple[str, ...]) -> _ModelState:
        model, version = key
        config = self.config.for_model(model)
        stored = self.store.get(partition, _model_key(key))
        if stored is not None:
            try:
                data = msgspec.msgpack.decode(stored)
                monitor = ModelMonitor.restore(data["monitor"], config,
                                               self.settings.window_seconds)
                return _ModelState(monitor, _Alerts(data["firing"]))
            except (KeyError, TypeError, ValueError, msgspec.DecodeError) as exc:
                log.warning("mlpulse: dropping unreadable detector state of %s %s: %s",
                            model, version, exc)
        reference = self._file_reference(model, config)
        return _ModelState(ModelMonitor(model, version, config, self.settings.window_seconds,
                                        seed=_seed(key), reference=reference), _Alerts())

    def _save_model(self, partition: int, key: tuple[str, ...], state: _ModelState) -> None:
        self.store.put(partition, _model_key(key), msgspec.msgpack.encode(
            {"monitor": state.monitor.snapshot(), "firing": state.alerts.firing}))

    def _load_presence(self, partition: int, model: str, now_wall_s: float) -> _Presence:
        stored = self.store.get(partition, b"n|" + model.encode())
        if stored is None:
            return _Presence(now_wall_s, _Alerts())
        data = msgspec.msgpack.decode(stored)
        return _Presence(data["last_seen_wall_s"], _Alerts(data["firing"]))

    def _save_presence(self, partition: int, model: str, presence: _Presence) -> None:
        self.store.put(partition, b"n|" + model.encode(), msgspec.msgpack.encode(
            {"last_seen_wall_s": presence.last_seen_wall_s, "firing": presence.alerts.firing}))

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
            if key.startswith(b"n|"):
                model = key[2:].decode()
                if model not in models:
                    data = msgspec.msgpack.decode(value)
                    models[model] = _Presence(max(data["last_seen_wall_s"], now_wall_s),
                                              _Alerts(data["firing"]))

    def save_presence_all(self) -> None:
        for partition, models in self._presence.items():
            for model, presence in models.items():
                self._save_presence(partition, model, presence)

    def keep_only(self, partitions: set[int]) -> None:
        """Forget partitions this worker no longer owns (their state stays in the store)."""
        for table in (self._models, self._services, self._presence):
            for partition in set(table) - partitions:
                del table[partition]  # type: ignore[attr-defined]
        self._restored &= partitions

    def _file_reference(self, model: str, config: ModelDetectors) -> Reference | None:
        spec = config.reference
        if spec.mode != "file" or spec.path is None:
            return None
        if model not in self._file_references:
            self._file_references[model] = load_reference_file(
                Path(spec.path), model, config, self.settings)
        return self._file_references[model]


def load_reference_file(path: Path, model: str, config: ModelDetectors,
                        settings: Settings) -> Reference:
    """A reference built from prediction events in a JSON array or NDJSON file."""
    raw = path.read_bytes()
    text = raw.lstrip()
    if text.startswith(b"["):
        events = msgspec.json.decode(raw, type=list[PredictionEvent])
    else:
        events = [msgspec.json.decode(line, type=PredictionEvent)
                  for line in raw.splitlines() if line.strip()]
    events = [e for e in events if e.model == model] or events
    spec = config.reference
    profile = WindowProfile(sample_size=spec.sample_size)
    aggregate = PredictionAggregate(settings.max_categories, settings.top_values, profile=profile)
    aggregate.add_batch(events)
    times = [e.event_time_s for e in events] or [0.0]
    return build_reference([contribution(aggregate, profile, min(times), max(times))],
                           spec.bins, spec.sample_size)


def _model_key(key: tuple[str, ...]) -> bytes:
    return b"p|" + "|".join(key).encode()


def _seed(key: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.sha256("|".join(key).encode()).digest()[:4], "big")


def _plain(value: Any) -> Any:
    """Evidence as JSON-ready data (numpy scalars and arrays become numbers and lists)."""
    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=_enc_hook))


def _enc_hook(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise NotImplementedError(type(value))
