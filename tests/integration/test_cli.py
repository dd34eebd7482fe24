"""The command line: simulate through the SDK to the broker; schemas; clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[2]


def mlpulse(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "mlpulse", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          check=False)


async def test_simulate_sends_envelopes_and_malformed_messages(settings, topics):
    result = mlpulse("simulate", "--bootstrap", settings.kafka_bootstrap, "--models", "2",
                     "--rate", "200", "--duration", "1.5", "--malformed-rate", "0.05",
                     "--latency-spike", "model-0:5@0+10",
                     env={"MLPULSE_TOPIC_PREFIX": settings.topic_prefix})
    assert result.returncode == 0, result.stderr
    assert "0 dropped" in result.stdout
    consumer = AIOKafkaConsumer(topics.predictions, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        values = []
        batch = await consumer.getmany(timeout_ms=3000)
        while batch:
            values += [m.value for messages in batch.values() for m in messages]
            batch = await consumer.getmany(timeout_ms=500)
    finally:
        await consumer.stop()
    envelopes = [v for v in values if v.startswith(b'[{"event_id"')]
    assert envelopes, "the SDK sends envelopes"
    assert len(values) > len(envelopes), "malformed messages were sent too"
    assert b'"model-0"' in b"".join(envelopes) and b'"model-1"' in b"".join(envelopes)


def test_schemas_command_writes_the_committed_schemas(tmp_path):
    result = mlpulse("schemas", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for path in (ROOT / "schemas").glob("*.json"):
        assert (tmp_path / path.name).read_text() == path.read_text(), path.name


def test_bad_setting_is_a_clear_error_not_a_traceback():
    result = mlpulse("worker", env={"MLPULSE_WINDOW_SECONDS": "soon"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mlpulse: error: MLPULSE_WINDOW_SECONDS: expected a number, got 'soon'")


def test_bad_simulate_flag_is_a_clear_error():
    result = mlpulse("simulate", "--bootstrap", "127.0.0.1:1", "--drift", "nonsense")
    assert result.returncode == 1
    assert "expected MODEL:FEATURE:SIGMA@START" in result.stderr
