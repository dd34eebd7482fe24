"""References: range, rolling and file references; a missing file does not stop the worker."""


from __future__ import annotations

import json

import msgspec
import numpy as np

from mlpulse.config import Settings
from mlpulse.detect import load_reference_file
from mlpulse.detectors.monitor import ModelMonitor
from tests.unit.detectors.streams import WINDOW_S, config, events, firing, run_window


def test_range_reference_uses_only_its_time_span():
    rng = np.random.default_rng(14)
    cfg = config(reference={"mode": "range", "start": 2 * WINDOW_S, "end": 4 * WINDOW_S},
                 adwin={"enabled": False})
    monitor = ModelMonitor("m", "v1", cfg, WINDOW_S)
    for w in range(5):
        run_window(monitor, events(rng, 400, w * WINDOW_S, shift=3.0 if w < 2 else 0.0), w)
    assert monitor.reference is not None and monitor.reference.windows == 2
    assert abs(monitor.reference.numeric["f:x"].mean) < 0.2


def test_rolling_reference_follows_the_stream():
    rng = np.random.default_rng(15)
    cfg = config(reference={"mode": "rolling", "windows": 2, "lag_windows": 1, "min_events": 1},
                 adwin={"enabled": False})
    monitor = ModelMonitor("m", "v1", cfg, WINDOW_S)
    fired = [firing(run_window(monitor, events(rng, 400, w * WINDOW_S,
                                               shift=2.0 if w >= 4 else 0.0), w))
             for w in range(9)]
    assert ("feature_drift", "x") in fired[4]
    assert fired[8] == []                       # the new level became the reference
    assert monitor.reference is not None and monitor.reference.numeric["f:x"].mean > 1.5


def test_file_reference(tmp_path):
    rng = np.random.default_rng(16)
    path = tmp_path / "ref.ndjson"
    path.write_bytes(b"\n".join(msgspec.json.encode(e) for e in events(rng, 1000, 0.0)))
    cfg = config(reference={"mode": "file", "path": str(path)}, adwin={"enabled": False})
    ref = load_reference_file(path, "m", cfg, Settings())
    monitor = ModelMonitor("m", "v1", cfg, WINDOW_S, reference=ref)
    assert firing(run_window(monitor, events(rng, 400, 0.0, shift=1.0), 0)) == [
        ("feature_drift", "x")]
    as_array = tmp_path / "ref.json"
    as_array.write_text(json.dumps([json.loads(line) for line in path.read_text().splitlines()]))
    assert load_reference_file(as_array, "m", cfg, Settings()).events == 1000


def test_a_missing_reference_file_does_not_stop_the_worker(tmp_path):
    from mlpulse.detect import Detect

    settings = Settings(detectors={"reference": {"mode": "file",
                                                 "path": str(tmp_path / "gone.json")}})
    detect = Detect(settings)
    profile = detect.new_profile(0, ("m", "v1"))
    assert profile is not None and profile.edges == {}
