"""docker-compose.yml is valid Compose and configures only settings that exist.

There is no Docker engine here; the file is checked against the Compose
specification's JSON Schema (vendored by check-jsonschema), which is what
``docker compose config`` validates too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import yaml

from mlpulse.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose_spec() -> dict:
    # the schema file only: importing check_jsonschema's CLI clashes with Faust's click pin
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "builtin_schemas/vendor/compose-spec.json"
    return json.loads(path.read_text())


def test_compose_file_matches_the_compose_spec():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(compose_spec()).iter_errors(compose)]
    assert not errors, errors


def test_the_compose_check_catches_mistakes():
    broken = {"services": {"worker": {"image": "x", "ports": "6066"}}}
    assert list(jsonschema.Draft202012Validator(compose_spec()).iter_errors(broken))


def test_compose_sets_only_known_mlpulse_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = {f"MLPULSE_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    for name, service in compose["services"].items():
        for var in service.get("environment", {}):
            if var.startswith("MLPULSE_"):
                assert var in known, f"{name}: unknown setting {var}"
    assert {"kafka", "worker-1", "worker-2", "simulator", "prometheus", "alertmanager",
            "grafana", "alertmanager-bridge"} <= compose["services"].keys()


def test_compose_mounts_files_that_exist_and_prometheus_scrapes_the_workers():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}
    port = compose["x-mlpulse-env"]["MLPULSE_WEB_PORT"]
    assert targets == {f"{w}:{port}" for w in ("worker-1", "worker-2")}


def test_grafana_dashboard_queries_only_metrics_a_worker_exposes():
    from mlpulse.pipeline import Pipeline

    exposed = set()
    pipeline = Pipeline(Settings(kafka_bootstrap="localhost:9092"))
    for family in pipeline.registry.collect():
        exposed.add(family.name)
        exposed.update(sample.name for sample in family.samples)
    for metric in list(exposed):   # families without samples yet still name their series
        exposed.update({metric + "_total", metric + "_bucket"})
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/mlpulse.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    for expr in exprs:
        names = set(re.findall(r"\b(mlpulse_[a-z_]+)", expr))
        assert names and names <= exposed, (expr, names - exposed)
