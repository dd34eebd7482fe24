"""Helpers shared by the single-purpose benchmarks (memory, latency, scale-out, SDK).

>>> percentile([1.0, 2.0, 3.0, 4.0], 50)
2.5
>>> table(["a", "b"], [["x", 1.5], ["yy", 10]])
'a       b\\n--  -----\\nx   1.500\\nyy     10'
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["RESULTS_DIR", "best_alternating", "display", "host_info", "log",
           "log_assignments", "model_stream", "percentile", "rss_bytes", "table", "timed_feed",
           "topic_records", "write_results"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def log(name: str, message: str) -> None:
    """A progress line on stderr (stdout is for the table)."""
    print(f"[bench.{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_bytes(pid: int | str = "self", field: str = "VmRSS") -> int | None:
    """``VmRSS`` (or another ``Vm*`` field, e.g. ``VmHWM``, the peak) of a process, in bytes."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


async def topic_records(bootstrap: str, topic: str, timeout_s: float = 60.0,
                        **options: Any) -> AsyncIterator[Any]:
    """Every record of ``topic`` (all its partitions, each in order), from its oldest to
    the end offsets it had when asked; for ``timeout_s`` at most. ``options``: the
    consumer's (e.g. ``max_partition_fetch_bytes``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, **options)
    await consumer.start()
    try:
        await consumer.topics()   # (metadata of every topic)
        tps = [TopicPartition(topic, p) for p in sorted(
            consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(
                [await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=500,
                                                   max_records=10_000)).values():
                for record in records:
                    yield record
    finally:
        await consumer.stop()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table: text left-aligned, numbers right-aligned."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return "-" if value is None else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
               for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(list(header)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def display(path: Path) -> str:
    """``path`` relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def git_commit() -> str | None:
    """Short hash of the checked-out commit (None outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def _app_dirty() -> bool | None:
    """Whether ``app/`` has uncommitted changes (the commit alone does not say what ran)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "app"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return bool(out.stdout.strip())


def host_info() -> dict[str, Any]:
    """Machine, Python and load, for the JSON results."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def run_in_workdir(run: Callable[[Any, Path], Awaitable[T]], args: Any, prefix: str) -> T:
    """``asyncio.run(run(args, dir))`` in ``args.workdir`` (created) if given, else in a
    temporary directory removed afterwards."""
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args, args.workdir))
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return asyncio.run(run(args, Path(tmp)))


def write_results(name: str, report: dict[str, Any], output: Path | None = None) -> Path:
    """Write ``report`` (with date, commit and host added) to ``bench/results/<name>.json``."""
    path = output or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"benchmark": f"bench.{name}",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(), "app_dirty": _app_dirty(), "host": host_info(),
            **report}
    path.write_text(json.dumps(full, indent=2) + "\n")
    return path


_ASSIGN = re.compile(r"mlpulse (assigned|ingest reads) \[(.*)\]$")


def log_assignments(log_text: str) -> list[tuple[float, str, list[int]]]:
    """Every ``mlpulse assigned [...]`` / ``mlpulse ingest reads [...]`` JSON log line of a
    worker: (log time, ``"assigned"`` or ``"ingest"``, the partition numbers of the
    list; for ``assigned`` those of the internal predictions topic only)."""
    out: list[tuple[float, str, list[int]]] = []
    for line in log_text.splitlines():
        if "mlpulse assigned" not in line and "mlpulse ingest reads" not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        message = str(record.get("message", ""))
        match = _ASSIGN.search(message)
        if match is None or "time" not in record:
            continue
        when = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()
        pairs = re.findall(r"\('([^']*)', (\d+)\)", match.group(2))
        if match.group(1) == "assigned":
            parts = sorted(int(p) for topic, p in pairs if topic.endswith("predictions.by-model"))
            out.append((when, "assigned", parts))
        else:
            parts = sorted(int(p) for topic, p in pairs if topic.endswith("predictions"))
            out.append((when, "ingest", parts))
    return out


def model_stream(per_window: int, windows: int, *, models: int = 10, window_s: float = 10.0,
                 seed: int = 1,
                 extra: Callable[[random.Random], dict[str, Any]] = lambda rng: {},
                 ) -> list[bytes]:
    """Envelopes of 500 prediction events in time order: ``models`` models, ``per_window``
    events per model-window, each with a latency, a class prediction and 10 numeric
    features, plus the fields ``extra`` draws (the in-process on/off benchmarks)."""
    import msgspec

    rng = random.Random(seed)
    events = []
    for w in range(windows):
        for m in range(models):
            for i in range(per_window):
                events.append({
                    "event_id": f"{w}-{m}-{i}", "model": f"model-{m}", "model_version": "v1",
                    "timestamp": 1_000_000.0 + w * window_s + i * window_s / per_window,
                    "latency_ms": rng.random() * 50, "prediction": rng.choice("ab"),
                    "features": {f"f{j}": rng.random() for j in range(10)}, **extra(rng)})
    events.sort(key=lambda e: e["timestamp"])
    return [msgspec.json.encode(events[i:i + 500]) for i in range(0, len(events), 500)]


def timed_feed(pipe: Any, payloads: Sequence[bytes],
               each: Callable[[Any], None] | None = None) -> float:
    """Seconds an in-memory pipeline (``mlpulse.testing.LocalPipeline``) takes to read
    ``payloads`` as prediction messages; its outputs are dropped as they come, after
    ``each(pipe)`` saw them."""
    started = time.perf_counter()
    for payload in payloads:
        pipe.send("predictions", payload)
        if each is not None:
            each(pipe)
        pipe.windows.clear()
        pipe.alerts.clear()
    return time.perf_counter() - started


def best_alternating(repeat: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The fastest of ``repeat`` runs of each case, the cases run in turn (a slow spell of
    the machine hits them alike)."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, run in runs.items():
            seconds = run()
            best[name] = min(best.get(name, seconds), seconds)
    return best
