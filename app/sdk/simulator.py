"""Realistic prediction and log traffic for N models, with injectable trouble.

Each model has numeric features (log-normal ``amount``, normal ``age``,
``score``), a categorical ``country``, a classifier's prediction and confidence,
log-normal latency, a small error rate and LLM-style token counts and cost.
Injections change one model for a time span: ``drift`` shifts a numeric feature
by ``magnitude`` standard deviations, ``latency`` multiplies latency,
``errors`` sets the error rate, ``accuracy`` sets how often the ground truth
agrees with the prediction (default 0.9), ``canary`` sends ``CANARY_SHARE`` of the model's
events as version ``CANARY_VERSION``, with latency × ``magnitude`` and 5 % errors (a bad
canary, from its first event); ``malformed_rate`` sends broken messages too. ``run`` also
sends ground-truth labels (feedback) of ``label_rate`` of the predictions,
``label_delay_s`` after them.

>>> sim = Simulator(n_models=2, seed=1)
>>> events = list(sim.events(start_s=0, duration_s=1, rate_per_s=4))
>>> len(events), sorted({e["model"] for e in events})
(4, ['model-0', 'model-1'])
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .producer import Telemetry

__all__ = ["CANARY_SHARE", "CANARY_VERSION", "MALFORMED_SAMPLES", "Injection", "Simulator"]

COUNTRIES = ("US", "DE", "FR", "GB", "IN", "BR")
CANARY_SHARE = 0.4
CANARY_VERSION = "v2-canary"
FEATURE_BASE = {"amount": (4.0, 0.6), "age": (40.0, 12.0), "score": (0.0, 1.0)}

MALFORMED_SAMPLES: tuple[bytes, ...] = (
    b"not json at all",
    b'{"event_id": "x", "model": "model-0"}',
    b'{"event_id": "x", "timestamp": "yesterday", "model": "model-0"}',
    b'{"event_id": "x", "timestamp": 1, "model": "bad model name!"}',
    b'{"event_id": "x", "timestamp": 1, "model": "m", "latency_ms": -5}',
    b'{"event_id": "x", "timestamp": 1, "model": "m", "confidence": 1.5}',
    b'{"event_id": "x", "timestamp": 1, "model": "m", "features": {"a": 1e999}}',
    b'\xff\xfe{"event_id": 1}',
    b"[1, 2, 3]",
    b'{"event_id": "x", "timestamp": 1, "model": "m", "status": "maybe"}',
)


@dataclass(frozen=True)
class Injection:
    """Trouble for ``model`` from ``start_s`` for ``duration_s`` seconds of event time."""

    kind: Literal["drift", "latency", "errors", "accuracy", "canary"]
    model: str
    start_s: float
    duration_s: float = float("inf")
    feature: str = "amount"
    magnitude: float = 2.0

    def active(self, model: str, t: float) -> bool:
        return model == self.model and self.start_s <= t < self.start_s + self.duration_s


class Simulator:
    """Deterministic (seeded) traffic generator."""

    def __init__(
        self, n_models: int = 3, seed: int = 0, injections: Sequence[Injection] = (),
        malformed_rate: float = 0.0, versions: Sequence[str] = ("v1",), *,
        label_rate: float = 0.5, label_delay_s: float = 5.0,
    ) -> None:
        self.label_rate = label_rate
        self.label_delay_s = label_delay_s
        self.models = [f"model-{i}" for i in range(n_models)]
        self.versions = list(versions)
        self.rng = np.random.default_rng(seed)
        self.injections = list(injections)
        self.malformed_rate = malformed_rate
        self._counter = 0
        self.origin_s = 0.0
        """Injection times are relative to this (``run`` sets it to its start)."""

    def events(
        self, start_s: float, duration_s: float, rate_per_s: float
    ) -> Iterator[dict[str, Any]]:
        """Events with event times evenly spread over ``[start_s, start_s + duration_s)``."""
        total = round(duration_s * rate_per_s)
        for i in range(total):
            t = start_s + i / rate_per_s
            yield self.event(self.models[i % len(self.models)], t)

    def event(self, model: str, t: float) -> dict[str, Any]:
        rng = self.rng
        self._counter += 1
        rel = t - self.origin_s
        drift = {inj.feature: inj.magnitude for inj in self.injections
                 if inj.kind == "drift" and inj.active(model, rel)}
        latency_factor = np.prod([inj.magnitude for inj in self.injections
                                  if inj.kind == "latency" and inj.active(model, rel)] or [1.0])
        error_rate = max([inj.magnitude for inj in self.injections
                          if inj.kind == "errors" and inj.active(model, rel)] or [0.01])
        version = self.versions[self._counter % len(self.versions)]
        canary = [inj.magnitude for inj in self.injections
                  if inj.kind == "canary" and inj.active(model, rel)]
        if canary and rng.random() < CANARY_SHARE:
            version, latency_factor, error_rate = (CANARY_VERSION, latency_factor * canary[0],
                                                   max(error_rate, 0.05))
        features: dict[str, Any] = {}
        for name, (mu, sigma) in FEATURE_BASE.items():
            value = rng.normal(mu + drift.get(name, 0.0) * sigma, sigma)
            features[name] = round(float(np.exp(value) if name == "amount" else value), 4)
        features["country"] = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
        confidence = float(rng.beta(8, 2))
        failed = bool(rng.random() < error_rate)
        tokens_in = int(rng.integers(50, 500))
        tokens_out = int(rng.integers(10, 200))
        event: dict[str, Any] = {
            "event_id": f"{model}-{self._counter}",
            "timestamp": round(t, 6),
            "model": model,
            "model_version": version,
            "latency_ms": round(float(rng.lognormal(3.0, 0.4) * latency_factor), 3),
            "status": "error" if failed else "ok",
            "prediction": int(confidence > 0.75),
            "confidence": round(confidence, 4),
            "features": features,
            "segment": {"region": "eu" if features["country"] in ("DE", "FR", "GB") else "other"},
            "trace_id": f"{int(rng.integers(2**63)):016x}{self._counter:016x}",
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost_usd": round((tokens_in + 3 * tokens_out) * 1e-6, 8),
            "cache_hit": bool(rng.random() < 0.3),
        }
        if failed:
            event["error_type"] = "Timeout"
            event["prediction"] = None
        return event

    def label(self, event: dict[str, Any]) -> int | None:
        """The ground truth of ``event`` (None for a failed prediction)."""
        if event["prediction"] is None:
            return None
        rel = event["timestamp"] - self.origin_s
        accuracy = min([inj.magnitude for inj in self.injections
                        if inj.kind == "accuracy" and inj.active(event["model"], rel)] or [0.9])
        right = self.rng.random() < accuracy
        return int(event["prediction"] if right else 1 - event["prediction"])

    def malformed(self) -> bytes:
        return MALFORMED_SAMPLES[int(self.rng.integers(len(MALFORMED_SAMPLES)))]

    def run(
        self, telemetry: Telemetry, *, duration_s: float, rate_per_s: float,
        stop: Any = None,
    ) -> int:
        """Send real-time traffic (event time = now) for ``duration_s``; return events sent."""
        sent = 0
        started = self.origin_s = time.time()
        tick_s = 0.1
        labels: collections.deque[tuple[float, str, str, int]] = collections.deque()
        while time.time() - started < duration_s and not (stop is not None and stop.is_set()):
            tick_started = time.time()
            while labels and labels[0][0] <= tick_started:
                due_s, model, event_id, label = labels.popleft()
                telemetry.feedback(model=model, event_id=event_id, label=label,
                                   timestamp=due_s)
            for i in range(max(1, int(rate_per_s * tick_s))):
                model = self.models[(sent + i) % len(self.models)]
                event = self.event(model, time.time())
                telemetry.log_prediction(**event)
                truth = self.label(event)
                if truth is not None and self.rng.random() < self.label_rate:
                    labels.append((event["timestamp"] + self.label_delay_s, model,
                                   event["event_id"], truth))
                if i % 20 == 0:
                    level = "ERROR" if event["status"] == "error" else "INFO"
                    telemetry.log(service=f"{model}-api", level=level,
                                  message=f"served {event['event_id']}", model=model,
                                  trace_id=event["trace_id"])
                if self.malformed_rate and self.rng.random() < self.malformed_rate:
                    telemetry.send_raw("predictions", self.malformed())
            sent += max(1, int(rate_per_s * tick_s))
            time.sleep(max(0.0, tick_s - (time.time() - tick_started)))
        return sent
