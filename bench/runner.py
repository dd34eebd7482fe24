"""Run and time one benchmark case: an mlpulse worker or the naive Faust agent.

Both run as subprocesses against the embedded broker, on input that is already
on the broker when they start. A case is timed from the moment the worker owns
its partitions (mlpulse: its ``mlpulse assigned`` log line, or its later ``mlpulse
ingest assigned``/``reads`` line where the ingest stage is a consumer of its own; naive
agent: its ``on_partitions_assigned`` signal) to the moment it is done (mlpulse: the
broker timestamp of the window summary that completes the expected event count;
naive agent: the moment it counted the last message). All times are wall-clock
``time.time()`` of processes on this one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.workload import Message, produce
from mlpulse.broker import free_port
from mlpulse.config import Settings
from mlpulse.topics import Topics, ensure_topics_async

__all__ = ["CaseFailed", "CaseResult", "run_mlpulse", "run_naive"]

ROOT = Path(__file__).resolve().parents[1]
_ASSIGNED = re.compile(r"^(.*)mlpulse assigned \[(.*)\]", re.MULTILINE)
_INGEST_ASSIGNED = re.compile(r"^(.*)mlpulse ingest (?:assigned|reads) \[(.*)\]", re.MULTILINE)
"""Workers whose ingest stage is a consumer of its own log when it gets its partitions
(``mlpulse ingest assigned [...]`` for a group of its own, ``mlpulse ingest reads [...]``)."""
_LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d{3})")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CaseFailed(RuntimeError):
    """A case could not be measured; the message says why, with the worker's log tail."""


@dataclass
class CaseResult:
    """One measured case."""

    case: str
    events: int
    """Events the worker processed in the timed span (sentinels excluded for mlpulse)."""
    messages: int
    """Input messages on the topic, sentinels included."""
    seconds: float
    """From partition assignment to done."""
    startup_seconds: float
    """From process start to partition assignment (not part of ``seconds``)."""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.inf

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "events": self.events, "messages": self.messages,
                "seconds": round(self.seconds, 4), "events_per_s": round(self.events_per_s, 1),
                "startup_seconds": round(self.startup_seconds, 3), **self.details}


# ---------------------------------------------------------------- processes


class Subprocess:
    """A child process in its own session, output to a log file; ``stop`` always ends it."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.started_at = time.time()
        self.process = subprocess.Popen(
            list(args), env=env, cwd=cwd or ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the child's process group, then SIGKILL if it lingers."""
        try:
            if self.process.poll() is None:
                _signal_group(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    _signal_group(self.process.pid, signal.SIGKILL)
                    self.process.wait(5)
        finally:
            self._log.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the child's own session: pgid == pid


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux ``/proc``), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class CpuSampler:
    """Samples the CPU time of some processes every ``interval_s`` in the background.

    ``share(name, t0, t1)``: CPU seconds the process used between wall-clock
    times ``t0`` and ``t1`` (nearest samples), divided by ``t1 - t0``; 1.0 = one core.
    """

    def __init__(self, pids: dict[str, int], interval_s: float = 0.05) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def sample(self) -> None:
        now = time.time()
        for name, pid in self.pids.items():
            cpu = process_cpu_seconds(pid)
            if cpu is not None:
                self.samples[name].append((now, cpu))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def share(self, name: str, t0: float, t1: float) -> float | None:
        samples = self.samples.get(name) or []
        if t1 <= t0 or len(samples) < 2:
            return None
        a = min(samples, key=lambda sample: abs(sample[0] - t0))
        b = min(samples, key=lambda sample: abs(sample[0] - t1))
        if b[0] <= a[0]:
            return None
        return round((b[1] - a[1]) / (b[0] - a[0]), 3)

    def shares(self, t0: float, t1: float) -> dict[str, float | None]:
        return {name: self.share(name, t0, t1) for name in self.pids}


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLPULSE_* / BENCH_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLPULSE_", "BENCH_"))}
    env.update(extra)
    return env


def worker_env(settings: Settings, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m mlpulse worker`` of ``settings`` (broker, topic prefix,
    group) on a free web port, logging JSON at info level, accepting any event time;
    ``extra`` adds or overrides ``MLPULSE_*`` variables."""
    return _clean_env(**{
        "MLPULSE_KAFKA_BOOTSTRAP": settings.bootstrap_or_error,
        "MLPULSE_TOPIC_PREFIX": settings.topic_prefix, "MLPULSE_GROUP_ID": settings.group_id,
        "MLPULSE_MAX_FUTURE_SKEW_SECONDS": "1e12", "MLPULSE_WEB_PORT": str(free_port()),
        "MLPULSE_DATA_DIR": str(data_dir), "MLPULSE_LOG_LEVEL": "info",
        "MLPULSE_LOG_FORMAT": "json", **extra})


async def _wait_for(what: str | Callable[[], str], check: Callable[[], Any], proc: Subprocess,
                    timeout_s: float, interval_s: float = 0.02) -> Any:
    """Poll ``check()`` until it returns something truthy; fail on timeout or a dead process.

    ``what`` (or what it returns, at failure time) describes the wait in the error.
    """
    def describe() -> str:
        return what() if callable(what) else what

    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if not proc.alive:
            value = check()
            if value:
                return value
            raise CaseFailed(f"{describe()}: the process exited with code "
                             f"{proc.process.returncode}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise CaseFailed(f"{describe()}: timed out after {timeout_s:g} s:\n"
                             f"{proc.log_tail()}")
        await asyncio.sleep(interval_s)


async def wait_reading(worker: Subprocess, name: str, timeout_s: float) -> None:
    """Until ``worker`` logged both its Faust partitions and its ingest assignment (it reads
    input); ``name`` names the worker in the error."""
    from bench.common import log_assignments

    def ready() -> bool:
        kinds = {kind for _, kind, parts in log_assignments(worker.log_text()) if parts}
        return kinds >= {"assigned", "ingest"}

    await _wait_for(f"{name}: partition assignment (Faust and ingest)", ready, worker,
                    timeout_s=timeout_s, interval_s=0.1)


def _sampler(worker: Subprocess, broker_pid: int | None) -> CpuSampler:
    pids = {"worker": worker.process.pid}
    if broker_pid is not None:
        pids["broker"] = broker_pid
    sampler = CpuSampler(pids)
    sampler.start()
    return sampler


# ---------------------------------------------------------------- mlpulse


class SummaryReader:
    """Reads the window summaries of ``topic`` from its start in the background; each
    record goes to :meth:`_add` with its broker timestamp and the time it was read."""

    def __init__(self, bootstrap: str, topic: str, poll_ms: int = 100,
                 **consumer_options: Any) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                         auto_offset_reset="earliest", **consumer_options)
        self.poll_ms = poll_ms
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=self.poll_ms)
            seen = time.time()
            for messages in batch.values():
                for message in messages:
                    self._add(json.loads(message.value), message.timestamp, seen)

    def _add(self, record: dict[str, Any], timestamp_ms: int, seen_s: float) -> None:
        raise NotImplementedError

    def failure(self) -> BaseException | None:
        """Why reading stopped, if it failed."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            return task.exception()
        return None

    async def stop(self) -> None:
        task, self._task = self._task, None
        try:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await self.consumer.stop()


class WindowCounter(SummaryReader):
    """Adds up the counts of the window summaries.

    Windows starting at or after ``cutoff_s`` belong to the sentinels: not counted.
    """

    def __init__(self, bootstrap: str, topic: str, cutoff_s: float) -> None:
        super().__init__(bootstrap, topic)
        self.cutoff_s = cutoff_s
        self.events = 0
        self.windows = 0
        self.late_events = 0
        self.other_records = 0
        self.last_timestamp_s = 0.0
        """Broker (create) timestamp of the newest counted summary."""
        self.last_seen_s = 0.0
        """When this process read the newest counted summary."""

    def _add(self, record: dict[str, Any], timestamp_ms: int, seen_s: float) -> None:
        # a slice's summary counts events its model version's counts already
        if record.get("kind") != "predictions" or record.get("segment"):
            self.other_records += 1
            return
        start = datetime.fromisoformat(record["window_start"]).timestamp()
        if start >= self.cutoff_s:
            self.other_records += 1
            return
        self.events += int(record["count"])
        self.windows += 1
        self.late_events += int(record.get("late_events") or 0)
        self.last_timestamp_s = max(self.last_timestamp_s, timestamp_ms / 1000)
        self.last_seen_s = seen_s

    def reached(self, events: int) -> bool:
        """Whether ``events`` events were counted; raises if reading failed."""
        failure = self.failure()
        if failure is not None:
            raise CaseFailed(f"reading window summaries failed: {failure!r}")
        return self.events >= events


def _assigned_at(log: str, pattern: re.Pattern[str] = _ASSIGNED, *,
                 last: bool = False) -> float | None:
    r"""Wall-clock time of the worker's first (``last``: last) non-empty ``mlpulse
    assigned`` line.

    (Or of another ``pattern`` with the same two groups: the line's prefix, the list.)

    Read from the line's log timestamp (JSON lines: UTC; text lines: local time;
    millisecond resolution) when it has one, else the time the line is first seen here
    (polled every 50 ms).

    >>> log = ('{"time":"2026-12-06T09:29:08.485Z","message":"mlpulse ingest reads [(0)]"}\n'
    ...        '{"time":"2026-12-06T09:29:11.159Z","message":"mlpulse ingest reads []"}\n')
    >>> _assigned_at(log, _INGEST_ASSIGNED, last=True)
    1796549348.485
    """
    matches = list(pattern.finditer(log))
    for match in reversed(matches) if last else matches:
        if not match.group(2).strip() or match.group(2).strip() == "]":
            continue
        if match.group(1).startswith("{"):
            end = log.find("\n", match.start())
            line = log[match.start():end if end >= 0 else None]
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("message", "").endswith("[]"):
                    continue
                return datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
        stamp = _LOG_TIME.search(match.group(1))
        if stamp is None:
            return time.time()
        text = stamp.group(1).replace("T", " ").replace(".", ",")
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


async def _topic_span(bootstrap: str, topic: str,
                      timeout_s: float = 10.0) -> tuple[float, float] | None:
    """Broker timestamps of the earliest and the latest message of ``topic`` (all partitions)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return None
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        nonempty = [tp for tp in tps if end[tp] > begin[tp]]
        if not nonempty:
            return None
        firsts = await _one_each(consumer, {tp: begin[tp] for tp in nonempty}, timeout_s)
        lasts = await _one_each(consumer, {tp: end[tp] - 1 for tp in nonempty}, timeout_s)
        if firsts is None or lasts is None:
            return None
        return min(firsts), max(lasts)
    finally:
        await consumer.stop()


async def _one_each(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int],
                    timeout_s: float) -> list[float] | None:
    """Timestamps of the messages at ``offsets``, one per partition (None on timeout)."""
    found: dict[TopicPartition, float] = {}
    for tp, offset in offsets.items():
        consumer.seek(tp, offset)
    consumer.resume(*offsets)
    deadline = time.monotonic() + timeout_s
    while len(found) < len(offsets) and time.monotonic() < deadline:
        batch = await consumer.getmany(*[tp for tp in offsets if tp not in found],
                                       timeout_ms=500)
        for tp, messages in batch.items():
            if messages and tp not in found:
                found[tp] = messages[0].timestamp / 1000
                consumer.pause(tp)
    return list(found.values()) if len(found) == len(offsets) else None


async def run_mlpulse(
    bootstrap: str, case: str, *, messages: Sequence[Message], expected_events: int,
    cutoff_s: float, workdir: Path, timeout_s: float = 300.0,
    window_seconds: float = 60.0, lateness_seconds: float = 10.0,
    profile_dir: Path | None = None, broker_pid: int | None = None,
    detectors: dict[str, Any] | None = None, root: Path | None = None,
    extra_env: dict[str, str] | None = None, stages: bool = False,
) -> CaseResult:
    """Pre-fill a fresh input topic with ``messages``, then time a worker processing them.

    ``stages``: the worker times its engine's steps (``python -m bench.stages``), reported
    as ``details["stages"]``.

    ``extra_env``: more ``MLPULSE_*`` settings of the worker (e.g. ``MLPULSE_SEGMENT_KEYS``).

    ``root``: a checkout whose ``app`` the worker runs (default: this one's), for A/B runs
    against another commit.
    With ``profile_dir`` the worker runs under cProfile (slower: not a fair measurement)
    and leaves ``<profile_dir>/mlpulse-<tag>.prof``. ``detectors`` is the worker's
    ``detectors:`` configuration (default: all detectors on, at their defaults).
    """
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=bootstrap, topic_prefix=f"bench-{tag}.", group_id=f"bench-{tag}",
        window_seconds=window_seconds, lateness_seconds=lateness_seconds,
        max_future_skew_seconds=1e12,
    )
    topics = Topics(settings)
    await ensure_topics_async(settings)
    produced = time.perf_counter()
    await produce(bootstrap, topics.predictions, messages)
    produce_s = time.perf_counter() - produced

    counter = WindowCounter(bootstrap, topics.windows, cutoff_s)
    await counter.start()
    env = _clean_env(
        MLPULSE_KAFKA_BOOTSTRAP=bootstrap,
        MLPULSE_TOPIC_PREFIX=settings.topic_prefix,
        MLPULSE_GROUP_ID=settings.group_id,
        MLPULSE_WINDOW_SECONDS=str(window_seconds),
        MLPULSE_LATENESS_SECONDS=str(lateness_seconds),
        MLPULSE_MAX_FUTURE_SKEW_SECONDS="1e12",
        MLPULSE_WEB_PORT=str(free_port()),
        MLPULSE_DATA_DIR=str(workdir / f"mlpulse-{tag}-data"),
        MLPULSE_LOG_LEVEL="info",  # for the "mlpulse assigned" line
    )
    if extra_env:
        env.update(extra_env)
    if detectors is not None:
        config = workdir / f"mlpulse-{tag}.yaml"
        config.write_text(json.dumps({"detectors": detectors}))   # JSON is YAML
        env["MLPULSE_CONFIG"] = str(config)
    # another checkout's worker runs from its source directory (commits before the package
    # imported as mlpulse had only app/; app/ of later ones runs too: relative imports)
    command = [sys.executable, "-m", "mlpulse" if root is None else "app", "worker"]
    stages_path = workdir / f"mlpulse-{tag}-stages.json"
    if stages:
        if root is not None:
            raise ValueError("stages are timed by this checkout's worker only")
        command[2] = "bench.stages"
        env["BENCH_STAGES_OUT"] = str(stages_path)
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        command[1:1] = ["-m", "cProfile", "-o", str(profile_dir / f"mlpulse-{tag}.prof")]
    if root is not None:
        env["PYTHONPATH"] = str(root)
    worker = Subprocess(command, env, workdir / f"mlpulse-{tag}.log", cwd=root)
    cpu = _sampler(worker, broker_pid)
    try:
        assigned_at = await _wait_for(
            f"{case}: waiting for partition assignment", lambda: _assigned_at(worker.log_text()),
            worker, timeout_s=60.0, interval_s=0.05)
        await _wait_for(
            lambda: (f"{case}: waiting for summaries of {expected_events} events "
                     f"(got {counter.events} in {counter.windows} windows)"),
            lambda: counter.reached(expected_events), worker, timeout_s=timeout_s)
        cpu.sample()
    finally:
        await cpu.stop()
        worker.stop()
        await counter.stop()
    if counter.events != expected_events:
        raise CaseFailed(f"{case}: window summaries count {counter.events} events, "
                         f"expected {expected_events}")
    done_at = counter.last_timestamp_s
    if abs(counter.last_seen_s - done_at) > 1.0:  # implausible broker timestamp: use our own
        done_at = counter.last_seen_s
    # A worker whose ingest stage is a consumer of its own reads no input before that
    # consumer has its partitions (a group of its own: on Tansu a join waits half a session
    # timeout): start there if it is later.
    faust_assigned_at = assigned_at
    ingest_assigned_at = _assigned_at(worker.log_text(), _INGEST_ASSIGNED)
    if ingest_assigned_at is not None and ingest_assigned_at > assigned_at:
        assigned_at = ingest_assigned_at
    seconds = done_at - assigned_at
    internal = await _topic_span(bootstrap, topics.predictions_by_model)
    details: dict[str, Any] = {
        "input_topic": topics.predictions,
        "windows": counter.windows,
        "late_events": counter.late_events,
        "produce_seconds": round(produce_s, 3),
        # the internal (repartitioned) topic: when ingest wrote its first and last message
        "seconds_from_first_output": (round(done_at - internal[0], 4)
                                      if internal is not None else None),
        "ingest_done_seconds": (round(internal[1] - assigned_at, 4)
                                if internal is not None else None),
        "log": str(worker.log_path),
    }
    if ingest_assigned_at is not None:
        details["ingest_assigned_after_seconds"] = round(ingest_assigned_at - faust_assigned_at, 3)
    details["cpu_share"] = cpu.shares(assigned_at, done_at)
    if stages and stages_path.exists():   # written as the worker exits
        details["stages"] = json.loads(stages_path.read_text())
    return CaseResult(case=case, events=expected_events, messages=len(messages),
                      seconds=seconds, startup_seconds=assigned_at - worker.started_at,
                      details=details)


# ---------------------------------------------------------------- naive Faust agent


async def run_naive(bootstrap: str, case: str, *, topic: str, messages: int, workdir: Path,
                    timeout_s: float = 300.0, broker_pid: int | None = None) -> CaseResult:
    """Time the naive agent counting the ``messages`` messages already on ``topic``."""
    tag = uuid.uuid4().hex[:8]
    result = workdir / f"naive-{tag}.json"
    env = _clean_env(
        BENCH_NAIVE_BOOTSTRAP=bootstrap,
        BENCH_NAIVE_TOPIC=topic,
        BENCH_NAIVE_GROUP=f"bench-naive-{tag}",
        BENCH_NAIVE_EXPECTED=str(messages),
        BENCH_NAIVE_RESULT=str(result),
        BENCH_NAIVE_WEB_PORT=str(free_port()),
        BENCH_NAIVE_DATA_DIR=str(workdir / f"naive-{tag}-data"),
    )
    agent = Subprocess([sys.executable, "-m", "bench.naive_agent"], env,
                       workdir / f"naive-{tag}.log")
    cpu = _sampler(agent, broker_pid)
    try:
        await _wait_for(f"{case}: waiting for {messages} messages to be counted",
                        result.exists, agent, timeout_s=timeout_s + 60.0, interval_s=0.05)
    finally:
        await cpu.stop()
        agent.stop()
    record = json.loads(result.read_text())
    if "assigned_at" not in record:
        raise CaseFailed(f"{case}: the agent never saw a partition assignment")
    seconds = record["done_at"] - record["assigned_at"]
    details: dict[str, Any] = {
        "seconds_from_first_message": round(record["done_at"] - record["first_at"], 4),
        "counts_per_model": record["counts"],
        "log": str(agent.log_path),
    }
    details["cpu_share"] = cpu.shares(record["assigned_at"], record["done_at"])
    if seconds > 0:  # the agent's own account, exact
        details["cpu_share"]["worker"] = round(
            (record["cpu_done"] - record["cpu_assigned"]) / seconds, 3)
    return CaseResult(case=case, events=int(record["total"]), messages=messages,
                      seconds=seconds, startup_seconds=record["assigned_at"] - agent.started_at,
                      details=details)
