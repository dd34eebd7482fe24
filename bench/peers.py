"""Peer cases beside the mlpulse worker: the raw-consumer ceiling and Quix Streams.

Both run as subprocesses (their CPU apart from the harness's) on the same
embedded broker and the same generated messages as the mlpulse cases:

* :func:`run_ceiling` (:mod:`bench.ceiling`): raw aiokafka ``getmany`` + msgspec decode
  of a topic the mlpulse case already filled; timed from the manual partition
  assignment to the last event decoded.
* :func:`run_quix` (:mod:`bench.quix_app`): a Quix Streams application computing
  the same per-model 60 s event-time windows, on its own topic (created here with
  the ``retention.ms``/``retention.bytes`` configs Quix needs, filled with the same
  messages); timed from its first partition assignment to the closed window that
  completes the event count.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.runner import CaseFailed, CaseResult, Subprocess, _clean_env, _sampler, _wait_for
from bench.workload import Message, produce

__all__ = ["QUIX_TOPIC_CONFIGS", "create_topic", "quix_available", "run_ceiling", "run_quix",
           "topic_partitions"]

QUIX_TOPIC_CONFIGS = {"retention.ms": "604800000", "retention.bytes": "-1"}
"""Quix reads these of its input topics (KeyError without them on Tansu) and copies them
to the repartition and changelog topics it creates."""
_TOPIC_ALREADY_EXISTS = 36


def quix_available() -> bool:
    """Whether Quix Streams is installed (the ``bench`` extra)."""
    return importlib.util.find_spec("quixstreams") is not None


async def topic_partitions(bootstrap: str, topic: str) -> int:
    """How many partitions ``topic`` has (fails if it does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata
        partitions = consumer.partitions_for_topic(topic)
    finally:
        await consumer.stop()
    if not partitions:
        raise CaseFailed(f"topic {topic} not found")
    return len(partitions)


async def create_topic(bootstrap: str, name: str, partitions: int,
                       configs: dict[str, str]) -> None:
    """Create ``name`` with ``partitions`` and topic ``configs`` (fails if it cannot)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1,
                                                       topic_configs=configs)])
        for topic, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise CaseFailed(f"cannot create topic {topic}: {message} (code {code})")
    finally:
        await admin.close()


# ---------------------------------------------------------------- ceiling


async def run_ceiling(bootstrap: str, case: str, *, topic: str, mode: str, messages: int,
                      events: int, total_events: int, workdir: Path,
                      timeout_s: float = 300.0, broker_pid: int | None = None) -> CaseResult:
    """Time :mod:`bench.ceiling` reading the ``messages`` messages already on ``topic``.

    ``events`` is what the rate counts (sentinels excluded, as for mlpulse);
    ``total_events`` is every event on the topic, which the decoder must see.
    """
    tag = uuid.uuid4().hex[:8]
    result = workdir / f"ceiling-{tag}.json"
    env = _clean_env(
        BENCH_CEILING_BOOTSTRAP=bootstrap,
        BENCH_CEILING_TOPIC=topic,
        BENCH_CEILING_MODE=mode,
        BENCH_CEILING_MESSAGES=str(messages),
        BENCH_CEILING_RESULT=str(result),
        BENCH_CEILING_TIMEOUT=str(timeout_s),
    )
    reader = Subprocess([sys.executable, "-m", "bench.ceiling"], env,
                        workdir / f"ceiling-{tag}.log")
    cpu = _sampler(reader, broker_pid)
    try:
        await _wait_for(f"{case}: waiting for {messages} messages to be decoded",
                        result.exists, reader, timeout_s=timeout_s + 60.0, interval_s=0.05)
    finally:
        await cpu.stop()
        reader.stop()
    record = json.loads(result.read_text())
    if record["events"] != total_events:
        raise CaseFailed(f"{case}: decoded {record['events']} events, expected {total_events}")
    seconds = record["done_at"] - record["assigned_at"]
    details: dict[str, Any] = {
        "input_topic": topic,
        "process": "subprocess (python -m bench.ceiling)",
        "event_loop": record.get("event_loop"),
        "decoded_events": record["events"],
        "seconds_from_first_message": (round(record["done_at"] - record["first_at"], 4)
                                       if record.get("first_at") else None),
        "log": str(reader.log_path),
    }
    details["cpu_share"] = cpu.shares(record["assigned_at"], record["done_at"])
    if seconds > 0:  # the reader's own account, exact
        details["cpu_share"]["worker"] = round(
            (record["cpu_done"] - record["cpu_assigned"]) / seconds, 3)
    return CaseResult(case=case, events=events, messages=messages, seconds=seconds,
                      startup_seconds=record["assigned_at"] - reader.started_at,
                      details=details)


# ---------------------------------------------------------------- Quix Streams


async def run_quix(bootstrap: str, case: str, *, mode: str, messages: Sequence[Message],
                   expected_events: int, total_events: int, cutoff_s: float, workdir: Path,
                   like_topic: str, timeout_s: float = 300.0,
                   window_seconds: float = 60.0, lateness_seconds: float = 10.0,
                   broker_pid: int | None = None) -> CaseResult:
    """Pre-fill a fresh topic with ``messages``, then time :mod:`bench.quix_app` on it.

    ``expected_events``: events the closed windows must count (sentinels excluded);
    ``total_events``: every event on the topic (each must reach the window step).
    Windows starting at or after ``cutoff_s`` are the sentinels' and not counted. The
    topic gets as many partitions as ``like_topic`` (the mlpulse case's input topic).
    """
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-quix-{tag}.predictions"
    partitions = await topic_partitions(bootstrap, like_topic)
    await create_topic(bootstrap, topic, partitions, QUIX_TOPIC_CONFIGS)
    await produce(bootstrap, topic, messages)
    result = workdir / f"quix-{tag}.json"
    env = _clean_env(
        BENCH_QUIX_BOOTSTRAP=bootstrap,
        BENCH_QUIX_TOPIC=topic,
        BENCH_QUIX_MODE=mode,
        BENCH_QUIX_GROUP=f"bench-quix-{tag}",
        BENCH_QUIX_STATE_DIR=str(workdir / f"quix-{tag}-state"),  # fresh: no stale offsets
        BENCH_QUIX_EXPECTED_ROWS=str(total_events),
        BENCH_QUIX_EXPECTED_EVENTS=str(expected_events),
        BENCH_QUIX_CUTOFF_MS=str(round(cutoff_s * 1000)),
        BENCH_QUIX_WINDOW_MS=str(round(window_seconds * 1000)),
        BENCH_QUIX_GRACE_MS=str(round(lateness_seconds * 1000)),
        BENCH_QUIX_RESULT=str(result),
    )
    app = Subprocess([sys.executable, "-m", "bench.quix_app"], env, workdir / f"quix-{tag}.log")
    cpu = _sampler(app, broker_pid)
    try:
        await _wait_for(f"{case}: waiting for closed windows of {expected_events} events",
                        result.exists, app, timeout_s=timeout_s + 120.0, interval_s=0.05)
    finally:
        await cpu.stop()
        app.stop()
    record = json.loads(result.read_text())
    if "assigned_at" not in record:
        raise CaseFailed(f"{case}: the application never saw a partition assignment")
    if record["window_events"] != expected_events or record["rows"] != total_events:
        raise CaseFailed(f"{case}: closed windows count {record['window_events']} events "
                         f"(expected {expected_events}); {record['rows']} events windowed "
                         f"(expected {total_events})")
    seconds = record["done_at"] - record["assigned_at"]
    details: dict[str, Any] = {
        "input_topic": topic,
        "partitions": partitions,
        "process": "subprocess (python -m bench.quix_app)",
        "windows": record["windows"],
        "seconds_from_first_message": round(record["done_at"] - record["first_at"], 4),
        "all_events_windowed_seconds": round(record["rows_done_at"] - record["assigned_at"], 4),
        "counts_per_key": record["counts"],
        "log": str(app.log_path),
    }
    details["cpu_share"] = cpu.shares(record["assigned_at"], record["done_at"])
    if seconds > 0:  # the application's own account, exact
        details["cpu_share"]["worker"] = round(
            (record["cpu_done"] - record["cpu_assigned"]) / seconds, 3)
    return CaseResult(case=case, events=expected_events, messages=len(messages),
                      seconds=seconds, startup_seconds=record["assigned_at"] - app.started_at,
                      details=details)
