"""Fixtures for tests on a real Kafka-protocol broker (Tansu) and real worker processes.

One broker per test session; each test gets its own topic prefix and consumer group, so
tests never see each other's data. Workers run as ``python -m app worker`` subprocesses
with their output in ``test-artifacts/``. `make test` runs these one after another, each
with the machine to itself (their rebalances and restarts are timed by the group), after
the other tests on two processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from mlpulse.broker import EmbeddedBroker, free_port
from mlpulse.config import Settings
from mlpulse.topics import Topics, ensure_topics

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def settings(broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Settings:
    tag = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40] + "-" + uuid.uuid4().hex[:6]
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t-{tag}.",
        group_id=f"g-{tag}",
        window_seconds=2.0,
        lateness_seconds=1.0,
        max_future_skew_seconds=1e12,
        idle_check_seconds=0.25,
        # input partitions without traffic stop holding windows back 1 s after assignment
        # (default 5 s): the tests' timings assume windows close soon after the stream
        idle_partition_seconds=1.0,
        # a worker's group forms in 2 s, not 5: Tansu waits half the session timeout for
        # members to join, at every worker's start and every rebalance (heartbeats every
        # 1.3 s; a worker stalled 4 s would lose its partitions)
        group_session_timeout_seconds=4.0,
    )
    ensure_topics(settings)
    return settings


class WorkerProcess:
    """``python -m mlpulse worker`` in a subprocess, with its log file."""

    def __init__(self, settings: Settings, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{settings.group_id}-{name}.log"
        self.data_dir = ARTIFACTS / f"{settings.group_id}-{name}-data"
        self.web_port = free_port()
        env = {**os.environ, **_env(settings), "MLPULSE_WEB_PORT": str(self.web_port),
               "MLPULSE_DATA_DIR": str(self.data_dir)}
        sections = {k: getattr(settings, k) for k in ("detectors", "rules", "inhibit")
                     if getattr(settings, k) is not None}
        if sections:
            config = ARTIFACTS / f"{settings.group_id}-{name}.yaml"
            config.write_text(yaml.safe_dump(sections))
            env["MLPULSE_CONFIG"] = str(config)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlpulse", "worker"], env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample of the worker's ``/metrics`` (None when absent)."""
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == (labels or {}):
                    return float(sample.value)
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assignments(self) -> list[str]:
        return re.findall(r"mlpulse assigned (\[.*\])", self.log())

    def wait_assigned(self, timeout_s: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log()[-3000:]}")
            if len(self.assignments()) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"worker got no partitions in {timeout_s} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        stop_process_group(self.process, grace_s=15)
        self._log.close()


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 10) -> None:
    """SIGTERM a child started in its own session, SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _env(settings: Settings) -> dict[str, str]:
    out = {}
    for name, value in vars(settings).items():
        if value is not None and name not in ("config_file", "detectors", "rules", "inhibit"):
            out[f"MLPULSE_{name.upper()}"] = str(value)
    return out


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(name: str = "w1", **overrides: Any) -> WorkerProcess:
        worker = WorkerProcess(settings.replace(**overrides) if overrides else settings, name)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


async def produce(settings: Settings, topic: str, values: list[bytes],
                  keys: list[bytes | None] | None = None,
                  headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=(keys[i] if keys else None),
                                headers=headers)
            for i, value in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(settings: Settings, topic: str, done: Callable[[list[Any]], bool],
                  timeout_s: float = 60.0, settle_s: float = 0.0) -> list[Any]:
    """Decoded JSON records of ``topic`` from the start, until ``done(records)``.

    ``settle_s`` keeps reading that much longer to catch unexpected extra records.
    """
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(msgspec.json.decode(m.value) for m in messages)
            if done(records):
                if settle_s:
                    end = time.monotonic() + settle_s
                    while time.monotonic() < end:
                        batch = await consumer.getmany(timeout_ms=200)
                        for messages in batch.values():
                            records.extend(msgspec.json.decode(m.value) for m in messages)
                return records
        raise AssertionError(f"timed out on {topic} with {len(records)} records: {records[-3:]}")
    finally:
        await consumer.stop()


@pytest.fixture
def topics(settings: Settings) -> Topics:
    return Topics(settings)
