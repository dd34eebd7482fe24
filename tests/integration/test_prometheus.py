"""A real Prometheus (Debian's ``prometheus``) scrapes a worker on the real broker; what it
stores is what the windows said. promtool lints the exposition and the shipped rules."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import msgspec
import pytest

from mlpulse.broker import free_port
from mlpulse.config import Settings
from mlpulse.sdk.simulator import Injection, Simulator

from .conftest import ARTIFACTS, consume, produce
from .test_alertmanager import Process

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
T0 = 1_700_000_000.0
RULES = [{"name": "slow", "expr": "latency_ms.p99 > 300", "severity": "critical"}]

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus is not installed (.ci/run installs it: apt-get install prometheus)")


def start_prometheus(port: int, target: str, workdir: Path) -> Process:
    assert PROMETHEUS is not None
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", workdir / "rules.yml")
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n  - job_name: mlpulse\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n")
    return Process([PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}"], workdir / "prometheus.log"
                   ).ready(port)


def query(port: int, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Instant query: value per label set (without __name__, job, instance)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return {tuple(sorted((k, v) for k, v in r["metric"].items()
                         if k not in ("__name__", "job", "instance"))): float(r["value"][1])
            for r in body["data"]["result"]}


def wait_for(check, timeout_s: float = 45.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out; last: {last}")


@needs_prometheus
def test_prometheus_scrapes_the_model_view_and_loads_the_shipped_rules(
        settings: Settings, start_worker, topics):
    settings = settings.replace(rules=RULES)
    worker = start_worker(rules=RULES)
    worker.wait_assigned()
    port = free_port()
    prometheus = start_prometheus(port, f"127.0.0.1:{worker.web_port}",
                                  ARTIFACTS / f"{settings.group_id}-prometheus")
    try:
        simulator = Simulator(n_models=2, seed=9, injections=[
            Injection("latency", "model-0", T0 + 4, magnitude=20.0)])
        events = list(simulator.events(T0, 6.0, rate_per_s=400))   # 3 windows of 2 s
        asyncio.run(produce(settings, topics.predictions,
                            [msgspec.json.encode(events[i:i + 200])
                             for i in range(0, len(events), 200)]))
        windows = asyncio.run(consume(settings, topics.windows,
                                      lambda r: sum(w["kind"] == "predictions"
                                                    for w in r) >= 6, timeout_s=60,
                                      settle_s=4.0))   # and any idle-closed last one
        latest = {w["model"]: w for w in windows if w["kind"] == "predictions"}

        up = wait_for(lambda: query(port, 'up{job="mlpulse"}'))
        assert list(up.values()) == [1.0]
        accepted = wait_for(lambda: query(
            port, 'sum(mlpulse_events_total{outcome="accepted", topic=~".*predictions"})')
            .get((), 0) == len(events) or None)
        assert accepted
        # the scrape shows the latest window once Prometheus scraped after it closed
        expected_count = {(("model", m), ("model_version", "v1")): float(w["count"])
                          for m, w in latest.items()}
        expected_p99 = {(("model", m), ("model_version", "v1"), ("percentile", "99")):
                        pytest.approx(w["latency_ms"]["p99"] / 1000) for m, w in latest.items()}
        assert wait_for(lambda: query(port, "mlpulse_model_window_events") == expected_count)
        assert wait_for(lambda: query(
            port, 'mlpulse_model_latency_seconds{percentile="99"}') == expected_p99)
        firing = wait_for(lambda: query(port, "mlpulse_alerts_firing"))
        assert firing == {(("rule", "slow"), ("severity", "critical")): 1.0}
        assert query(port, "mlpulse_consumer_lag_messages")   # per input partition
        assert query(port, "sum(mlpulse_batch_messages_count)")[()] > 0

        # the shipped rules load and evaluate; mlpulse's own health is fine
        url = f"http://127.0.0.1:{port}/api/v1/rules"
        with urllib.request.urlopen(url, timeout=5) as response:
            groups = json.load(response)["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        assert {"MlpulseWorkerDown", "MlpulseConsumerLagHigh", "mlpulse:events:rate5m"} <= set(
            rules)
        assert all(r["health"] != "err" for r in rules.values()), rules
        assert rules["MlpulseWorkerDown"]["state"] == "inactive"

        # every query of the shipped Grafana dashboard is valid PromQL; the model panels
        # have data from this worker
        dashboard = json.loads((DEPLOY / "grafana/dashboards/mlpulse.json").read_text())

        def empty_panels() -> list[str]:
            empty = []
            for panel in dashboard["panels"]:
                for target in panel.get("targets", []):
                    expr = (target["expr"].replace("$model", ".*").replace("$version", ".*")
                            .replace("$__rate_interval", "1m"))
                    if not query(port, expr):   # asserts the query is valid
                        empty.append(panel["title"])
            return empty

        wanted = {"Throughput", "Error ratio", "Latency p50 / p95 / p99", "Alerts firing",
                  "Input events by outcome", "Batch duration p99 by stage"}
        assert wait_for(lambda: not wanted & set(empty_panels()) or None)

        # promtool lints the exposition itself
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics") as r:
            exposition = r.read()
        assert PROMTOOL is not None
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition,
                              capture_output=True, check=False)
        assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    finally:
        prometheus.stop()


@needs_prometheus
def test_shipped_prometheus_and_alertmanager_configs_are_valid():
    assert PROMTOOL is not None
    for args in (["check", "rules", str(DEPLOY / "prometheus" / "rules.yml")],
                 ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")]):
        result = subprocess.run([PROMTOOL, *args], capture_output=True, check=False)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
