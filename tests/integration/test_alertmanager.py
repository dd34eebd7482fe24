"""The Alertmanager bridge against a real Alertmanager (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest

from mlpulse.broker import free_port

from .conftest import ARTIFACTS, _env, produce, stop_process_group

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CONFIG = """\
route:
  receiver: "null"
  group_by: [model, model_version]
  group_wait: 1s
receivers:
  - name: "null"
"""


class Process:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("wb")
        self.log_path = log
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)

    def stop(self) -> None:
        stop_process_group(self.process)
        self._log.close()

    def ready(self, port: int, timeout_s: float = 30.0) -> Process:
        """Wait for ``/-/ready`` on ``port`` (Prometheus and Alertmanager both serve it)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"{self.log_path.name} did not start:\n"
                             f"{self.log_path.read_text()[-2000:]}")


def start_alertmanager(port: int, workdir: Path) -> Process:
    assert BINARY is not None
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(CONFIG)
    return Process([BINARY, f"--config.file={workdir / 'alertmanager.yml'}",
                    f"--storage.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                   workdir / "alertmanager.log").ready(port)


def active_alerts(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/alerts", timeout=5) as r:
        return [a for a in json.load(r) if a["status"]["state"] == "active"]


def wait_for(check, timeout_s: float = 40.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError("timed out")


def alert(status: str) -> bytes:
    return msgspec.json.encode({
        "alert_id": "f00d-1700000000", "fingerprint": "f00d", "status": status,
        "severity": "critical", "rule": "high_latency", "kind": "threshold",
        "labels": {"model": "fraud", "model_version": "v3"},
        "annotations": {"summary": "p99 latency 812 ms on fraud v3",
                        "description": "fraud v3: p99 latency 812 ms",
                        "runbook_url": "https://runbooks.example/latency"},
        "value": 812.0, "threshold": 500.0, "starts_at": "2026-11-23T10:00:00Z",
        "ends_at": "2026-11-23T10:03:00Z" if status == "resolved" else None,
        "window_start": "2026-11-23T10:02:00Z", "window_end": "2026-11-23T10:03:00Z",
        "evidence": {}, "trace_ids": []})


@pytest.mark.skipif(BINARY is None, reason="prometheus-alertmanager is not installed "
                    "(.ci/run installs it: apt-get install prometheus-alertmanager)")
def test_bridge_delivers_firing_then_resolved_and_waits_out_an_outage(settings, topics,
                                                                      tmp_path):
    port = free_port()
    workdir = ARTIFACTS / f"{settings.group_id}-alertmanager"
    env = {**os.environ, **_env(settings), "MLPULSE_ALERTMANAGER_URL": f"http://127.0.0.1:{port}"}
    bridge = Process([sys.executable, "-m", "mlpulse", "alertmanager-bridge"],
                     ARTIFACTS / f"{settings.group_id}-bridge.log", env)
    am = None
    try:
        # Alertmanager is down: the alert waits in Kafka, the bridge retries
        asyncio.run(produce(settings, topics.alerts, [alert("firing")], [b"fraud"]))
        wait_for(lambda: "unreachable" in bridge.log_path.read_text(), 30)
        am = start_alertmanager(port, workdir)
        (found,) = wait_for(lambda: active_alerts(port))
        assert found["labels"] == {"alertname": "high_latency", "severity": "critical",
                                   "kind": "threshold", "model": "fraud",
                                   "model_version": "v3"}
        assert found["annotations"]["runbook_url"] == "https://runbooks.example/latency"
        assert found["startsAt"].startswith("2026-11-23T10:00:00")
        asyncio.run(produce(settings, topics.alerts, [alert("resolved")], [b"fraud"]))
        wait_for(lambda: active_alerts(port) == [])
        assert bridge.process.poll() is None
    finally:
        bridge.stop()
        if am is not None:
            am.stop()
