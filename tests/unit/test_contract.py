"""The public contract: generated schemas match the files; no pickle anywhere; exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlpulse
from mlpulse.config import Settings
from mlpulse.events import schemas

ROOT = Path(__file__).resolve().parents[2]


def test_schema_files_match_the_wire_types():
    for name, schema in schemas().items():
        on_disk = json.loads((ROOT / "schemas" / name).read_text())
        assert on_disk == json.loads(json.dumps(schema)), f"run `make schemas`: {name} is stale"


def test_window_schema_covers_both_kinds():
    text = (ROOT / "schemas" / "window.schema.json").read_text()
    assert '"predictions"' in text and '"logs"' in text


def test_no_pickle_or_eval_in_the_code():
    pattern = re.compile(r"(import\s+(pickle|cPickle|dill|marshal|shelve)\b|\b(eval|exec)\s*\()")
    for path in (ROOT / "app").rglob("*.py"):
        assert not pattern.search(path.read_text()), path


def test_faust_app_uses_raw_serialisers():
    from mlpulse.pipeline import Pipeline

    pipeline = Pipeline(Settings(kafka_bootstrap="127.0.0.1:1"))
    conf = pipeline.app.conf
    assert (conf.value_serializer, conf.key_serializer) == ("raw", "raw")
    for topic in pipeline.app.topics:
        assert topic.value_serializer in ("raw", None)


def test_version_exported():
    assert mlpulse.__version__
