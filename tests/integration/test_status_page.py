"""The live status page in real headless Chromium, against a worker on the real broker."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.request

import msgspec
import pytest

from mlpulse.config import Settings
from mlpulse.sdk.simulator import Injection, Simulator

from .conftest import ARTIFACTS, consume, produce

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
T0 = 1_700_000_000.0
RULES = [{"name": "slow", "expr": "latency_ms.p99 > 300", "severity": "critical"}]
DETECTORS = {"comparison": {"min_events": 50}}   # the canary has ~120 events a window


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(.ci/run installs it: apt-get install chromium)")
def test_status_page_renders_models_and_an_injected_alert(settings: Settings, start_worker,
                                                          topics):
    settings = settings.replace(rules=RULES, detectors=DETECTORS)
    worker = start_worker(rules=RULES, detectors=DETECTORS, segment_keys="region")
    worker.wait_assigned()
    simulator = Simulator(n_models=2, seed=3, injections=[
        Injection("latency", "model-1", T0 + 4, magnitude=20.0),
        Injection("canary", "model-0", T0, magnitude=3.0)])
    events = list(simulator.events(T0, 6.0, rate_per_s=300))
    asyncio.run(produce(settings, topics.predictions,
                        [msgspec.json.encode(events[i:i + 150])
                         for i in range(0, len(events), 150)]))
    asyncio.run(consume(settings, topics.alerts, lambda r: any(a["rule"] == "slow" for a in r),
                        timeout_s=60))
    asyncio.run(consume(settings, topics.windows,
                        lambda r: sum(w["kind"] == "predictions" for w in r) >= 6))
    base = f"http://127.0.0.1:{worker.web_port}"
    with urllib.request.urlopen(f"{base}/api/status", timeout=10) as response:
        status = json.load(response)
    assert {m["model"] for m in status["models"]} == {"model-0", "model-1"}
    assert {s["segment"] for s in status["slices"]} == {"region=eu", "region=other"}
    canary = [m["latest"]["comparison"] for m in status["models"]
              if m["model_version"] == "v2-canary" and m["latest"]]
    assert canary and canary[0]["baseline_version"] == "v1"

    dom = chromium("--dump-dom", f"{base}/status")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-loaded="true"' in html, html[-3000:]
    assert 'data-model="model-0"' in html and 'data-model="model-1"' in html
    assert 'data-rule="slow"' in html and "model=model-1" in html
    slow = next(a for a in status["alerts"] if a["rule"] == "slow")
    assert slow["trace_ids"] and slow["trace_ids"][0] in html     # the way to the traces
    assert 'data-chart="p99_ms"' in html and "<polyline" in html   # the charts drew lines
    assert 'id="error"></span>' in html                            # no fetch error shown
    assert 'data-segment="region=eu"' in html                      # the slices' table
    assert "vs v1: latency_ms.p50 worse" in html                   # the canary's comparison

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1400,1000", f"{base}/status")
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
