"""Streams and helpers the detector tests share."""


from __future__ import annotations

import msgspec
import numpy as np

from mlpulse.aggregates import PredictionAggregate
from mlpulse.detectors.anomaly import WindowAnomaly
from mlpulse.detectors.settings import DetectorSettings
from mlpulse.events import PredictionEvent
from mlpulse.timefmt import rfc3339

WINDOW_S = 60.0


def config(**overrides):
    return DetectorSettings.from_mapping(
        {"reference": {"windows": 3, "min_events": 300}, **overrides}).for_model("m")


def events(rng, n, start_s, shift=0.0, *, features=("x", "z"), country=None):
    out = []
    for i in range(n):
        f: dict = {name: float(rng.normal(shift if name == "x" else 0.0, 1.0))
                   for name in features}
        if country is not None:
            f["country"] = country(rng)
        out.append(PredictionEvent(
            event_id=str(i), timestamp=start_s + i * WINDOW_S / n, model="m",
            latency_ms=float(rng.lognormal(3, 0.3)), confidence=float(rng.beta(8, 2)),
            prediction=float(rng.random() < 0.3), status="error" if rng.random() < 0.01 else "ok",
            features=f))
    return out


def run_window(monitor, batch, index):
    start = index * WINDOW_S
    profile = monitor.new_profile()
    aggregate = PredictionAggregate(profile=profile)
    aggregate.add_batch(batch)
    summary = aggregate.result(model="m", model_version="v1", window_start=rfc3339(start),
                               window_end=rfc3339(start + WINDOW_S), late_events=0)
    return monitor.on_window(aggregate, profile, start, start + WINDOW_S, summary)


def firing(findings):
    return sorted({(f.rule, f.labels.get("feature", f.labels.get("signal", "")))
                   for f in findings if f.firing})


def msgpack_round_trip(data):
    return msgspec.msgpack.decode(msgspec.msgpack.encode(data))


def stationary_errors(seed, windows=30, n=200, p=0.02):
    rng = np.random.default_rng(seed)
    anomaly = WindowAnomaly(warmup_windows=10, use_hst=False)
    fired = 0
    for _ in range(windows):
        errors = int(rng.binomial(n, p))
        finding = anomaly.observe({"error_rate": errors / n, "throughput_per_s": n / 60},
                                  {"error_rate": n, "throughput_per_s": 60})
        fired += bool(finding is not None and finding.firing)
    return fired
