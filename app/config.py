"""Settings: frozen, typed, read from ``MLPULSE_*`` variables and an optional YAML file.

Precedence: environment variable, then the YAML file named by ``MLPULSE_CONFIG``
(keys are the setting names in lower case, e.g. ``window_seconds: 30``), then
the default.

>>> s = Settings.from_env({"MLPULSE_WINDOW_SECONDS": "30"})
>>> s.window_seconds, s.lateness_seconds, s.topic("windows")
(30.0, 10.0, 'mlpulse.windows')
>>> Settings.from_env({"MLPULSE_PARTITIONS": "zero"})
Traceback (most recent call last):
...
mlpulse.errors.ConfigError: MLPULSE_PARTITIONS: expected an integer, got 'zero'
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
"""The Kafka security protocols mlpulse connects with (``MLPULSE_KAFKA_SECURITY_PROTOCOL``)."""
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

__all__ = ["Settings"]

_PREFIX = "MLPULSE_"
_SECTIONS = ("detectors", "rules", "inhibit")
"""YAML-only sections: structured, validated by their own modules."""


@dataclass(frozen=True)
class Settings:
    """Every knob of a worker. Field docs are the README configuration table."""

    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers; unset: ``worker`` and ``demo`` start the embedded broker."""
    kafka_security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka client of mlpulse."""
    kafka_sasl_mechanism: str = "PLAIN"
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols)."""
    kafka_sasl_username: str | None = None
    """SASL user name."""
    kafka_sasl_password: str | None = field(default=None, repr=False)
    """SASL password (never logged)."""
    kafka_ssl_cafile: str | None = None
    """CA bundle to verify the brokers (SSL/SASL_SSL); unset: the system's CAs."""
    kafka_ssl_certfile: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    kafka_ssl_keyfile: str | None = None
    """Private key of the client certificate."""
    kafka_ssl_key_password: str | None = field(default=None, repr=False)
    """Password of the private key (never logged)."""
    topic_prefix: str = "mlpulse."
    """Prefix of every topic name."""
    partitions: int = 4
    """Partitions of the topics mlpulse creates."""
    group_id: str = "mlpulse"
    """Consumer group (Faust app id); workers with the same id split partitions."""
    window_seconds: float = 60.0
    """Tumbling window size, event time."""
    lateness_seconds: float = 10.0
    """Allowed lateness: the watermark trails the newest event time by this much."""
    idle_partition_seconds: float = 5.0
    """An input partition that is caught up and got no message for this long (wall clock)
    stops holding event time back; until then every window waits for it."""
    max_drift_seconds: float = 300.0
    """While a backlog is read, an input partition whose event time runs this far ahead
    of the slowest is paused until the others catch up (bounds the open windows)."""
    max_future_skew_seconds: float = 300.0
    """Events stamped further than this ahead of the wall clock are dead-lettered."""
    web_host: str = "127.0.0.1"
    """Address of the worker's HTTP server."""
    web_port: int = 6066
    """Port of the worker's HTTP server."""
    web_auth_username: str | None = None
    """With ``web_auth_password``: HTTP basic auth on ``/metrics`` and the status pages."""
    web_auth_password: str | None = field(default=None, repr=False)
    """Basic-auth password of the worker's pages (never logged)."""
    data_dir: str = ".mlpulse"
    """Directory for worker state."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest input message accepted; larger ones are dead-lettered."""
    max_batch_events: int = 10_000
    """Most events in one batch envelope."""
    max_categories: int = 1000
    """Distinct values counted per categorical feature per window; more go to ``__other__``."""
    top_values: int = 50
    """Values listed per categorical feature/prediction in a window summary."""
    max_models: int = 1000
    """Models tracked per worker; more are folded into ``__other__`` (cardinality guard)."""
    max_versions: int = 20
    """Versions tracked per model; more are folded into ``__other__``."""
    max_services: int = 1000
    """Log services tracked per worker; more are folded into ``__other__``."""
    segment_keys: str = ""
    """Comma-separated segment keys (e.g. ``region,tier``): each value of each key is a
    *slice* of a model version with its own windows, detectors and alerts, beside the
    model version's own (one slice per key=value, not their cross product)."""
    max_segment_values: int = 20
    """Values tracked per segment key per model version; more are folded into ``__other__``
    (the most frequent keep their slot: a value unseen for ``series_idle_seconds`` gives
    its slot up)."""
    min_slice_events: int = 100
    """A slice window with fewer events is summarised but not judged (no detector or rule
    runs on it): small samples would cry wolf."""
    max_features: int = 200
    """Feature names per model-version window; more are folded into ``__other__``."""
    series_idle_seconds: float = 3600.0
    """A model, version or service unseen this long (wall clock) gives up its slot."""
    internal_message_bytes: int = 1_000_000
    """Largest message the worker writes to its internal topics (under Kafka's 1 MB default)."""
    batch_messages: int = 500
    """Most Kafka messages a worker stage takes at once (batches are processed together)."""
    ingest_max_records: int = 5000
    """Most input messages the ingest stage takes from one fetch."""
    ingest_fetch_bytes: int = 1024 * 1024
    """Most bytes of input the ingest stage fetches at once, over all its partitions (a
    larger message still comes, alone): what a backlog holds in memory while it is read."""
    group_session_timeout_seconds: float = 10.0
    """How long the group coordinator waits for a silent worker before it hands the
    worker's partitions to the others (Kafka's session timeout; heartbeats go every third
    of it, at most every 3 s). Shorter: a dead worker is replaced sooner and a group forms
    sooner (a broker may wait half of it for members to join), but a worker stalled that
    long loses its partitions. Apache Kafka accepts 6 s to 30 min by default
    (``group.min.session.timeout.ms``, ``group.max.session.timeout.ms``)."""
    commit_interval_seconds: float = 1.0
    """How often a worker checkpoints its windows with the input offsets they hold (what a
    crash replays at most), then commits those offsets."""
    batch_wait_seconds: float = 0.05
    """Longest a stage waits to fill a batch of messages (each stage wakes this often when
    idle: at 5 ms, three stages took 6% of a core of an idle worker; at 50 ms, 1.3%)."""
    idle_check_seconds: float = 1.0
    """How often idle windows are checked for closing (wall clock)."""
    malloc_trim_seconds: float = 2.0
    """How often the worker returns freed heap memory to the OS (glibc ``malloc_trim``: ~1 ms
    when a burst of window closes left something to return, µs otherwise); 0 turns it off."""
    feedback_horizon_seconds: float = 3600.0
    """How long (event time after a window ends) labels are joined to its predictions;
    0 turns the join off."""
    feedback_max_predictions: int = 250_000
    """Most predictions a worker keeps awaiting labels (~25 bytes each; a window awaiting
    labels counts as 64, ``mlpulse.join.WINDOW_COST``); oldest windows go first."""
    feedback_min_labels: int = 20
    """Labels a window needs before ``performance.*`` rules judge it."""
    revision_interval_seconds: float = 5.0
    """Least wall-clock time between two revisions of one window's summary."""
    alertmanager_url: str | None = None
    """Alertmanager for ``mlpulse alertmanager-bridge``, e.g. ``http://alertmanager:9093``."""
    event_loop: str = "uvloop"
    """Event loop of the worker: ``uvloop`` or ``asyncio``."""
    log_level: str = "info"
    """Log level of the worker."""
    log_format: str = "auto"
    """Worker logs: ``json`` (one object per line), ``text``, or ``auto`` (text on a
    terminal, else JSON)."""
    config_file: str | None = field(default=None, metadata={"env": "MLPULSE_CONFIG"})
    """YAML file with any of these settings (lower-case names) and a ``detectors:`` section."""
    detectors: Any = field(default=None, compare=False, metadata={"env": None})
    """The ``detectors:`` section of the YAML file (see README, Detection); YAML only."""
    rules: Any = field(default=None, compare=False, metadata={"env": None})
    """The ``rules:`` section (see README, Alerts); YAML only; unset: built-in rules."""
    inhibit: Any = field(default=None, compare=False, metadata={"env": None})
    """The ``inhibit:`` section (see README, Alerts); YAML only; unset: built-in ones."""

    def topic(self, name: str) -> str:
        """Full name of one of mlpulse's topics."""
        return f"{self.topic_prefix}{name}"

    @property
    def bootstrap_or_error(self) -> str:
        if not self.kafka_bootstrap:
            raise ConfigError("MLPULSE_KAFKA_BOOTSTRAP: not set")
        return self.kafka_bootstrap

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``) and the YAML file."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = env.get("MLPULSE_CONFIG")
        if config_file:
            values.update(_read_yaml(Path(config_file)))
            values["config_file"] = config_file
        for f in fields(cls):
            var = f.metadata.get("env", _PREFIX + f.name.upper())
            if var is not None and var in env and f.name != "config_file":
                values[f.name] = _cast(var, env[var], f.type)
        for name, value in list(values.items()):
            if name not in _SECTIONS:
                values[name] = _cast(name, value, _field_type(name))
        settings = cls(**values)
        settings._validate()
        return settings

    @property
    def slice_keys(self) -> tuple[str, ...]:
        """The segment keys that slice every model (``segment_keys``, parsed)."""
        return tuple(dict.fromkeys(k.strip() for k in self.segment_keys.split(",") if k.strip()))

    @property
    def group_timeouts_seconds(self) -> tuple[float, float, float]:
        """A consumer group member's session timeout, heartbeat interval and rebalance
        timeout (``group_session_timeout_seconds``; a rebalance waits at least 10 s for
        members to rejoin: they checkpoint first).

        >>> Settings(group_session_timeout_seconds=4).group_timeouts_seconds
        (4.0, 1.3333333333333333, 10.0)
        """
        session = float(self.group_session_timeout_seconds)
        return session, min(3.0, session / 3), max(10.0, session)

    def group_options(self) -> dict[str, int]:
        """:attr:`group_timeouts_seconds` as aiokafka consumer keyword arguments."""
        session, heartbeat, rebalance = self.group_timeouts_seconds
        return {"session_timeout_ms": round(session * 1000),
                "heartbeat_interval_ms": round(heartbeat * 1000),
                "rebalance_timeout_ms": round(rebalance * 1000)}

    def _validate(self) -> None:
        positive = ("partitions", "window_seconds", "max_message_bytes",
                    "max_batch_events", "max_categories", "top_values", "idle_check_seconds",
                    "batch_messages", "batch_wait_seconds", "internal_message_bytes",
                    "feedback_max_predictions", "max_models", "max_versions", "max_services",
                    "max_features", "max_segment_values", "series_idle_seconds",
                    "ingest_max_records",
                    "ingest_fetch_bytes", "commit_interval_seconds", "max_drift_seconds",
                    "group_session_timeout_seconds")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_PREFIX}{name.upper()}: must be > 0")
        for name in ("lateness_seconds", "idle_partition_seconds", "max_future_skew_seconds",
                     "feedback_horizon_seconds",
                     "feedback_min_labels", "revision_interval_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_PREFIX}{name.upper()}: must be >= 0")
        if self.min_slice_events < 0:
            raise ConfigError("MLPULSE_MIN_SLICE_EVENTS: must be >= 0")
        for key in self.slice_keys:
            if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", key):
                raise ConfigError(f"MLPULSE_SEGMENT_KEYS: {key!r} is not a segment key "
                                  "(letters, digits, _ . : -; at most 64)")
        if self.max_batch_events >= 1 << 20:   # an event's index is 20 bits of its origin
            raise ConfigError("MLPULSE_MAX_BATCH_EVENTS: must be < 1048576")
        if self.event_loop not in ("uvloop", "asyncio"):
            raise ConfigError("MLPULSE_EVENT_LOOP: must be uvloop or asyncio")
        if self.log_format not in ("auto", "json", "text"):
            raise ConfigError("MLPULSE_LOG_FORMAT: must be auto, json or text")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR",
                                          "CRITICAL"):
            raise ConfigError("MLPULSE_LOG_LEVEL: must be debug, info, warning or error")
        if not 0 <= self.web_port <= 65535:
            raise ConfigError("MLPULSE_WEB_PORT: must be a port number")
        self._validate_security()
        from .detectors.settings import DetectorSettings
        from .rules import Rules
        DetectorSettings.from_mapping(self.detectors)   # raises ConfigError naming the field
        Rules.from_mapping({"rules": self.rules, "inhibit": self.inhibit})


    def _validate_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in PROTOCOLS:
            raise ConfigError(f"MLPULSE_KAFKA_SECURITY_PROTOCOL: must be one of "
                              f"{', '.join(PROTOCOLS)}, got {protocol!r}")
        if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"MLPULSE_KAFKA_SASL_MECHANISM: must be one of "
                              f"{', '.join(SASL_MECHANISMS)}")
        if protocol.startswith("SASL_") and not (self.kafka_sasl_username
                                                 and self.kafka_sasl_password):
            raise ConfigError(f"{protocol} needs MLPULSE_KAFKA_SASL_USERNAME and "
                              "MLPULSE_KAFKA_SASL_PASSWORD")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{_PREFIX}{name.upper()}: no such file {path!r}")
        if bool(self.web_auth_username) != bool(self.web_auth_password):
            raise ConfigError("MLPULSE_WEB_AUTH_USERNAME and MLPULSE_WEB_AUTH_PASSWORD go "
                              "together")


def _field_type(name: str) -> str:
    for f in fields(Settings):
        if f.name == name:
            return str(f.type)
    raise ConfigError(f"unknown setting {name!r}")


def _cast(name: str, value: Any, type_name: Any) -> Any:
    type_name = str(type_name)
    if isinstance(value, list) and type_name.startswith("str"):   # YAML: [region, tier]
        value = ",".join(str(v) for v in value)
    if value is None:
        if "None" in type_name:
            return None
        raise ConfigError(f"{name}: must not be empty")
    try:
        if type_name.startswith("int"):
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if type_name.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        kind = "an integer" if type_name.startswith("int") else "a number"
        raise ConfigError(f"{name}: expected {kind}, got {value!r}") from None
    if value == "" and "None" in type_name:
        return None
    return str(value)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"MLPULSE_CONFIG: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"MLPULSE_CONFIG: {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"MLPULSE_CONFIG: {path} must hold a mapping of settings")
    known = {f.name for f in fields(Settings)}
    settings = data.get("settings", data) if isinstance(data.get("settings"), dict) else data
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key in known and key not in _SECTIONS:
            out[key] = value
        elif key not in (*_SECTIONS, "settings"):
            raise ConfigError(f"MLPULSE_CONFIG: {path}: unknown setting {key!r}")
    for section in _SECTIONS:
        if data.get(section) is not None:
            out[section] = data[section]
    return out
