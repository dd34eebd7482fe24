"""``python -m bench.soak``: a soak test of one real worker under steady load: memory, lag.

Setup: the embedded broker and ONE real worker process (``python -m mlpulse worker``, defaults:
detectors on, label join on) with ``--window-seconds`` windows (default 10 s, so windows
close often) and its default 10 s lateness. Once the worker owns its partitions (its
``mlpulse assigned`` and ``mlpulse ingest reads`` log lines), this process produces a
steady ``--rate`` events/s (default 20,000) for ``--duration-seconds`` (default 600 = 10
minutes; ``--duration-seconds 3600`` is the long, one-hour run) with a plain aiokafka
producer (``linger_ms=5``), as an SDK does: one Kafka message = a JSON array of
``--envelope`` events (default 100) of one model, keyed by the model; ``--models`` models
(default 20) × 2 versions, 6 numeric and 3 categorical features, latency, prediction and
confidence, 1 % failed predictions. Event times are the wall clock (spread evenly since the
model's previous envelope), so windows close in real time. The envelopes are paced against
the wall clock (each is sent when it is due; when the producer falls behind its schedule it
says so: ``behind s`` in the timeline, ``producer`` in the JSON). Envelopes are built from
pre-encoded event templates (only the id and the timestamp are filled in per event): the
producer costs ~0.1 ms of CPU per envelope.

Sampled every ``--sample-seconds`` (default 10) from the start of the load: the worker's RSS
(``/proc/PID/status`` ``VmRSS``, no ``gc.collect()``: what the operating system sees) and its
CPU share (1.0 = one core); from its ``/metrics`` page: ``mlpulse_events_total{outcome=
"accepted"}`` of the input topic (events processed, hence the throughput over the interval)
and ``mlpulse_consumer_lag_messages`` summed over partitions, per topic (input topic:
envelopes not read yet; internal by-model topic: repartitioned messages not aggregated yet;
with one worker owning every partition, events keyed by model skip that hop, so it usually
has no lag series: ``-``); the events produced so far; the broker's RSS; the machine's
``MemAvailable``. After the load the worker gets up to ``--drain-seconds`` (default 60) to
catch up (samples of phase ``drain``).

Warm-up: the first ``--warmup-seconds`` (default 120, at most a third of the duration) are
excluded: the worker fills its windows, its label index (capped at
``MLPULSE_FEEDBACK_MAX_PREDICTIONS``, 250,000 predictions: reached in 12.5 s at 20,000/s),
its detector references. Reported: RSS at the end of the warm-up (the first sample after
it), at the end of the load, the maximum, the growth after the warm-up in per cent (and a
least-squares slope in MB/hour, meaningful on long runs only); goal: growth < 10 %. Also
the mean throughput after the warm-up (processed events/s), the maximum and final lag,
warnings and errors of the worker's log, and the whole timeline. PASS/FAIL is printed; the
exit code is 0 either way (1 if the worker or the run crashed, 130 on Ctrl-C; what was
sampled so far is written in every case). Writes ``bench/results/soak.json``.

The embedded broker (Tansu, in-memory storage) keeps every message for as long as it runs:
no retention, no DeleteRecords. At ~320 bytes per event that is ~7.5 MB/s at 20,000
events/s, ~4.5 GB for 10 minutes, ~27 GB for an hour: more than most machines have. The run
warns up front when the estimate exceeds the available memory and ends the load early when
``MemAvailable`` falls below ``--min-available-mb`` (the JSON says so); for the one-hour run
at full rate use a real Kafka (``--bootstrap HOST:PORT``) or a lower ``--rate``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench.common import display, log, rss_bytes, table, write_results

NAME = "soak"
GOAL_GROWTH_PERCENT = 10.0
MB = 1024 * 1024
VERSIONS = ("v1", "v2")
NUMERIC = ("amount", "age", "tenure_days", "score_a", "score_b", "items")
CATEGORIES = {"country": ("US", "DE", "FR", "GB", "IN", "BR", "JP", "CA"),
              "channel": ("web", "ios", "android", "partner"),
              "plan": ("free", "basic", "pro")}
TEMPLATES_PER_MODEL = 512
MAX_TABLE_ROWS = 60
LATE_S = 0.05
"""An envelope sent this much after it was due counts as late."""
BROKER_BYTES_FACTOR = 1.25
"""The embedded broker's memory per byte of payload it holds (measured: ~1.2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20_000.0, help="events per second, total")
    parser.add_argument("--duration-seconds", type=float, default=600.0,
                        help="seconds of load (3600 for the one-hour run)")
    parser.add_argument("--warmup-seconds", type=float, default=120.0,
                        help="excluded from the growth (at most a third of the duration)")
    parser.add_argument("--sample-seconds", type=float, default=10.0,
                        help="sampling interval")
    parser.add_argument("--drain-seconds", type=float, default=60.0,
                        help="after the load, wait up to this long for the worker to catch up")
    parser.add_argument("--window-seconds", type=float, default=10.0,
                        help="MLPULSE_WINDOW_SECONDS of the worker")
    parser.add_argument("--envelope", type=int, default=100, help="events per Kafka message")
    parser.add_argument("--models", type=int, default=20, help="models (2 versions each)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--keep-log", type=Path, default=None, metavar="FILE",
                        help="copy the worker's log to FILE")
    parser.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                        help="use this Kafka instead of starting the embedded broker (which "
                             "keeps every message in memory: see above)")
    parser.add_argument("--min-available-mb", type=float, default=1024.0,
                        help="end the load early when the machine's MemAvailable falls "
                             "below this")
    return parser


# ---------------------------------------------------------------- input


class Traffic:
    """Envelopes of real-time events, from pre-encoded templates (cheap to produce)."""

    def __init__(self, models: int, seed: int = 11) -> None:
        self.models = [f"soak-model-{i:02d}" for i in range(models)]
        rng = np.random.default_rng(seed)
        loc = np.array([80.0, 40.0, 400.0, 0.0, 5.0, 3.0])
        scale = np.array([30.0, 12.0, 200.0, 1.0, 2.0, 1.5])
        self.templates: dict[str, list[bytes]] = {}
        for model in self.models:
            n = TEMPLATES_PER_MODEL
            numbers = (rng.standard_normal((n, len(NUMERIC))) * scale + loc).round(3).tolist()
            cats = [[values[k] for k in rng.integers(len(values), size=n).tolist()]
                    for values in CATEGORIES.values()]
            latency = rng.lognormal(3.0, 0.4, n).round(3).tolist()
            confidence = rng.beta(8, 2, n).round(4).tolist()
            failed = (rng.random(n) < 0.01).tolist()
            rests = []
            for i in range(n):
                features: dict[str, Any] = dict(zip(NUMERIC, numbers[i], strict=True))
                features["items"] = max(0, round(features["items"]))
                for name, column in zip(CATEGORIES, cats, strict=True):
                    features[name] = column[i]
                body: dict[str, Any] = {"model": model, "model_version": VERSIONS[i % 2],
                                        "latency_ms": latency[i], "confidence": confidence[i],
                                        "features": features}
                if failed[i]:
                    body["status"] = "error"
                    body["error_type"] = "Timeout"
                else:
                    body["prediction"] = "fraud" if confidence[i] > 0.9 else "ok"
                rests.append(msgspec.json.encode(body)[1:])   # without the opening brace
            self.templates[model] = rests
        self.last_t: dict[str, float] = {}
        self.next_template = dict.fromkeys(self.models, 0)
        self.counter = 0

    def envelope(self, model: str, n: int, now: float, interval: float) -> bytes:
        """``n`` events of ``model`` stamped evenly over (its previous envelope, now]."""
        since = self.last_t.get(model, now - interval)
        self.last_t[model] = now
        span = now - since
        templates = self.templates[model]
        start = self.next_template[model]
        self.next_template[model] = (start + n) % len(templates)
        tag = model.encode()
        parts = []
        for i in range(n):
            self.counter += 1
            parts.append(b'{"event_id":"%s-%d","timestamp":%.6f,%s' % (
                tag, self.counter, since + span * (i + 1) / n,
                templates[(start + i) % len(templates)]))
        return b"[" + b",".join(parts) + b"]"


# ---------------------------------------------------------------- the run


@dataclass
class Soak:
    """What the run collects; kept outside ``run`` so an interrupted run still reports."""

    args: argparse.Namespace
    warmup_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    produced: int = 0
    """Events handed to the producer."""
    acked: int = 0
    """Events the broker acknowledged."""
    send_errors: int = 0
    envelopes: int = 0
    behind_s: float = 0.0
    """How far the producer is behind its schedule right now (0 when on time)."""
    max_behind_s: float = 0.0
    late_envelopes: int = 0
    """Envelopes sent more than ``LATE_S`` after they were due."""
    stop_load: str | None = None
    """Why the load was ended early (None: it ran its duration)."""
    started_at: float | None = None
    load_ended_at: float | None = None
    drained_after_s: float | None = None
    startup_s: float | None = None
    scrape_failures: int = 0
    log_findings: dict[str, Any] = field(default_factory=dict)
    worker_exit: int | None = None
    topics: dict[str, str] = field(default_factory=dict)
    event_bytes: float | None = None
    broker_estimate_mb: float | None = None
    """Memory the embedded broker needs to hold the whole run (None: external Kafka)."""

    def on_ack(self, events: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.send_errors += 1
        else:
            self.acked += events


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _read_metrics(text: str, input_topic: str) -> dict[str, Any]:
    """Accepted and dead-lettered input events, lag per topic, open windows, late events."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"accepted": 0, "dead_lettered": 0, "lag": {}, "open_windows": None,
                           "late_events": 0, "windows_closed": 0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "mlpulse_events_total" and labels.get("topic") == input_topic:
                if labels.get("outcome") in ("accepted", "dead_lettered"):
                    out[labels["outcome"]] += int(sample.value)
            elif sample.name == "mlpulse_consumer_lag_messages":
                topic = labels.get("topic", "?")
                out["lag"][topic] = out["lag"].get(topic, 0) + int(sample.value)
            elif sample.name == "mlpulse_open_windows":
                out["open_windows"] = int(sample.value)
            elif sample.name == "mlpulse_late_events_total":
                out["late_events"] += int(sample.value)
            elif (sample.name == "mlpulse_windows_closed_total"
                  and labels.get("kind") == "predictions"):
                out["windows_closed"] += int(sample.value)
    return out


async def _sample(state: Soak, worker: Any, broker_pid: int | None, port: int, *,
                  phase: str, previous: dict[str, Any] | None) -> dict[str, Any]:
    from bench.runner import process_cpu_seconds

    assert state.started_at is not None
    now = time.time()
    produced, acked, behind = state.produced, state.acked, state.behind_s
    pid = worker.process.pid
    metrics: dict[str, Any] | None
    try:
        metrics = _read_metrics(await asyncio.to_thread(_scrape, port),
                                state.topics["predictions"])
    except Exception as exc:   # a slow or restarting worker: keep sampling the rest
        state.scrape_failures += 1
        log(NAME, f"scraping /metrics failed: {exc!r}")
        metrics = None
    scraped = time.time()   # the worker's web server shares its event loop: may be late
    rss = rss_bytes(pid)
    sample: dict[str, Any] = {
        "t": round(now - state.started_at, 2), "phase": phase,
        "rss_mb": round(rss / MB, 1) if rss is not None else None,
        "produced": produced, "acked": acked, "scrape_s": round(scraped - now, 3),
        "processed": metrics["accepted"] if metrics else None,
        "dead_lettered": metrics["dead_lettered"] if metrics else None,
        "lag_input": (metrics["lag"].get(state.topics["predictions"]) if metrics else None),
        "lag_by_model": (metrics["lag"].get(state.topics["predictions_by_model"])
                         if metrics else None),
        "lag_total": sum(metrics["lag"].values()) if metrics else None,
        "open_windows": metrics["open_windows"] if metrics else None,
        "windows_closed": metrics["windows_closed"] if metrics else None,
        "late_events": metrics["late_events"] if metrics else None,
        "behind_s": round(behind, 3),
        "_wall": now, "_scraped": scraped, "_cpu": process_cpu_seconds(pid),
        "_bench_cpu": time.process_time(),
        "_broker_cpu": process_cpu_seconds(broker_pid) if broker_pid else None,
    }
    broker_rss = rss_bytes(broker_pid) if broker_pid else None
    available = _mem_available_mb()
    sample["mem_available_mb"] = round(available) if available is not None else None
    sample["broker_rss_mb"] = round(broker_rss / MB, 1) if broker_rss is not None else None
    sample["throughput"] = None
    sample["cpu_worker"] = sample["cpu_broker"] = sample["cpu_bench"] = None
    dt = scraped - previous["_scraped"] if previous is not None else 0.0
    if previous is not None and dt > 0:   # all read after the scrape
        if sample["processed"] is not None and previous["processed"] is not None:
            sample["throughput"] = round((sample["processed"] - previous["processed"]) / dt, 1)
        for key, raw in (("cpu_worker", "_cpu"), ("cpu_broker", "_broker_cpu"),
                         ("cpu_bench", "_bench_cpu")):
            if sample[raw] is not None and previous[raw] is not None:
                sample[key] = round((sample[raw] - previous[raw]) / dt, 2)
    return sample


async def _produce(state: Soak, producer: Any, topic: str, traffic: Traffic) -> None:
    """Send envelopes on the wall-clock schedule for the duration of the load."""
    args = state.args
    interval = args.envelope / args.rate
    assert state.started_at is not None
    started = state.started_at
    tick = 0
    while True:
        due = started + tick * interval
        if due - started >= args.duration_seconds or state.stop_load:
            break
        wait = due - time.time()
        if wait > 0:
            state.behind_s = 0.0
            await asyncio.sleep(wait)
        else:
            state.behind_s = -wait
            state.max_behind_s = max(state.max_behind_s, -wait)
            if -wait > LATE_S:
                state.late_envelopes += 1
        model = traffic.models[tick % len(traffic.models)]
        payload = traffic.envelope(model, args.envelope, time.time(), interval * len(
            traffic.models))
        future = await producer.send(topic, payload, key=model.encode())
        future.add_done_callback(lambda f, n=args.envelope: state.on_ack(n, f))
        state.produced += args.envelope
        state.envelopes += 1
        tick += 1
        if tick % 64 == 0:
            await asyncio.sleep(0)   # let the sampler in even when behind
    await producer.flush()


def _mem_available_mb() -> float | None:
    """The machine's ``MemAvailable`` (``/proc/meminfo``), in MB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


async def _pause_until(when: float, worker: Any, task: asyncio.Task[Any] | None = None) -> None:
    """Sleep until ``when``; return early when ``task`` is done; raise if the worker died."""
    while True:
        if not worker.alive:
            raise RuntimeError(f"the worker exited with code {worker.process.returncode}:\n"
                               f"{worker.log_tail()}")
        left = when - time.time()
        if left <= 0 or (task is not None and task.done()):
            return
        if task is not None:
            await asyncio.wait([task], timeout=min(left, 0.5))
        else:
            await asyncio.sleep(min(left, 0.5))


def _log_findings(text: str) -> dict[str, Any]:
    """Warnings and errors of the worker's JSON log (and non-JSON lines such as tracebacks)."""
    counts: dict[str, int] = {}
    examples: list[str] = []
    other = 0
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if line.strip():
                other += 1
                if ("Traceback" in line or "Error" in line) and len(examples) < 10:
                    examples.append(line.strip()[:300])
            continue
        if not isinstance(record, dict):
            continue
        level = str(record.get("level", "")).lower()
        if level in ("warning", "error", "critical"):
            counts[level] = counts.get(level, 0) + 1
            message = f"{level}: {record.get('logger', '')}: {record.get('message', '')}"[:300]
            if len(examples) < 10 and message not in examples:
                examples.append(message)
    return {"by_level": counts, "non_json_lines": other, "examples": examples}


async def run(state: Soak, workdir: Path) -> None:
    from aiokafka import AIOKafkaProducer

    from bench.runner import Subprocess, wait_reading, worker_env
    from mlpulse.broker import EmbeddedBroker, free_port
    from mlpulse.config import Settings
    from mlpulse.topics import Topics, ensure_topics_async

    args = state.args
    tag = uuid.uuid4().hex[:8]
    traffic = Traffic(args.models)
    event_bytes = len(traffic.envelope(traffic.models[0], args.envelope, time.time(), 1.0)) \
        / args.envelope
    traffic.last_t.clear()
    state.event_bytes = round(event_bytes, 1)
    if args.bootstrap is None:
        need = args.rate * args.duration_seconds * event_bytes * BROKER_BYTES_FACTOR / MB
        state.broker_estimate_mb = round(need)
        available = _mem_available_mb()
        if available is not None and need > available - args.min_available_mb:
            log(NAME, f"WARNING: the embedded broker keeps every message in memory: "
                      f"~{need:,.0f} MB for this run ({event_bytes:.0f} B/event), "
                      f"{available:,.0f} MB available; the load ends early if MemAvailable "
                      f"falls below {args.min_available_mb:g} MB (use --bootstrap, a lower "
                      f"--rate or a shorter run)")
    broker = EmbeddedBroker() if args.bootstrap is None else None
    with broker if broker is not None else contextlib.nullcontext():
        bootstrap = broker.bootstrap if broker is not None else args.bootstrap
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"soak-{tag}.",
                            group_id=f"soak-{tag}", window_seconds=args.window_seconds,
                            max_future_skew_seconds=1e12)
        topics = Topics(settings)
        state.topics = {"predictions": topics.predictions,
                        "predictions_by_model": topics.predictions_by_model}
        await ensure_topics_async(settings)
        port = free_port()
        env = worker_env(settings, workdir / "data",
                         MLPULSE_WINDOW_SECONDS=str(args.window_seconds),
                         MLPULSE_WEB_PORT=str(port))
        worker = Subprocess([sys.executable, "-m", "mlpulse", "worker"], env,
                            workdir / "soak-worker.log")
        broker_pid = (broker.process.pid if broker is not None and broker.process is not None
                      else None)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                    max_request_size=4 * MB)
        produce_task: asyncio.Task[None] | None = None
        try:
            await wait_reading(worker, "soak worker", timeout_s=120)
            state.startup_s = round(time.time() - worker.started_at, 2)
            await producer.start()
            log(NAME, f"worker owns its partitions after {state.startup_s:.1f} s; producing "
                      f"{args.rate:,.0f} events/s for {args.duration_seconds:g} s "
                      f"(warm-up {state.warmup_s:g} s), sampling every "
                      f"{args.sample_seconds:g} s")
            state.started_at = time.time()
            previous = await _sample(state, worker, broker_pid, port, phase="warmup",
                                     previous=None)
            state.samples.append(previous)
            produce_task = asyncio.create_task(
                _produce(state, producer, topics.predictions, traffic))
            k = 1
            while not produce_task.done():
                due = state.started_at + k * args.sample_seconds
                if due > state.started_at + args.duration_seconds - 1.0:
                    due = math.inf   # the sample at the end of the load is taken below
                await _pause_until(due, worker, produce_task)
                if produce_task.done():
                    break
                phase = "warmup" if time.time() - state.started_at < state.warmup_s else "load"
                previous = await _sample(state, worker, broker_pid, port, phase=phase,
                                         previous=previous)
                state.samples.append(previous)
                _progress(state, previous)
                k += 1
                available = _mem_available_mb()
                if available is not None and available < args.min_available_mb:
                    state.stop_load = (f"MemAvailable {available:.0f} MB < "
                                       f"{args.min_available_mb:g} MB at t={previous['t']:.0f} s")
                    log(NAME, f"ending the load early: {state.stop_load}")
            produce_task.result()   # raises if producing failed
            state.load_ended_at = time.time()
            phase = "warmup" if time.time() - state.started_at < state.warmup_s else "load"
            previous = await _sample(state, worker, broker_pid, port, phase=phase,
                                     previous=previous)
            state.samples.append(previous)
            _progress(state, previous)
            log(NAME, f"load done: {state.produced:,} events produced, "
                      f"{previous['processed'] or 0:,} processed; waiting up to "
                      f"{args.drain_seconds:g} s for the worker to catch up")
            deadline = state.load_ended_at + args.drain_seconds
            while not _drained(state, previous) and time.time() < deadline:
                await _pause_until(min(time.time() + args.sample_seconds, deadline), worker)
                previous = await _sample(state, worker, broker_pid, port, phase="drain",
                                         previous=previous)
                state.samples.append(previous)
                _progress(state, previous)
            if state.drained_after_s is None:
                log(NAME, f"not drained {args.drain_seconds:g} s after the load")
        finally:
            if produce_task is not None and not produce_task.done():
                produce_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await produce_task
            with contextlib.suppress(Exception):
                await producer.stop()
            if not worker.alive:   # it ended by itself
                state.worker_exit = worker.process.returncode
            worker.stop()
            state.log_findings = _log_findings(worker.log_text())
            if args.keep_log is not None:
                args.keep_log.parent.mkdir(parents=True, exist_ok=True)
                args.keep_log.write_bytes(worker.log_path.read_bytes())


def _drained(state: Soak, sample: dict[str, Any]) -> bool:
    """Whether the worker processed everything produced (or dead-lettered it), lag 0."""
    if sample["processed"] is None or state.load_ended_at is None:
        return False
    done = sample["processed"] + (sample["dead_lettered"] or 0) >= state.acked
    if done and not sample["lag_total"]:
        state.drained_after_s = round(sample["_wall"] - state.load_ended_at, 1)
        return True
    return False


def _progress(state: Soak, s: dict[str, Any]) -> None:
    log(NAME, f"t={s['t']:.0f}s {s['phase']}: RSS {s['rss_mb']} MB, processed "
              f"{s['processed'] or 0:,}/{s['produced']:,}, "
              f"{(s['throughput'] or 0):,.0f}/s, lag {s['lag_input']}+{s['lag_by_model']}, "
              f"worker CPU {s['cpu_worker']}, behind {s['behind_s']:.2f} s")


# ---------------------------------------------------------------- report


def _slope_mb_per_hour(samples: list[dict[str, Any]]) -> float | None:
    points = [(s["t"], s["rss_mb"]) for s in samples if s["rss_mb"] is not None]
    if len(points) < 3:
        return None
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    if float(t.max() - t.min()) <= 0:
        return None
    return round(float(np.polyfit(t, y, 1)[0]) * 3600.0, 1)


def summarize(state: Soak) -> dict[str, Any]:
    """RSS, throughput and lag figures from the samples."""
    samples = state.samples
    load = [s for s in samples if s["phase"] in ("warmup", "load")]
    after = [s for s in load if s["t"] >= state.warmup_s - 1e-6]
    warm_end = after[0] if after else None
    end = load[-1] if load else None
    rss_values = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    out: dict[str, Any] = {"samples": len(samples)}
    rss_warm = warm_end["rss_mb"] if warm_end else None
    rss_end = end["rss_mb"] if end else None
    out["rss_warmup_end_mb"] = rss_warm
    out["rss_end_mb"] = rss_end
    out["rss_max_mb"] = max(rss_values) if rss_values else None
    out["rss_after_warmup_max_mb"] = max(
        (s["rss_mb"] for s in after if s["rss_mb"] is not None), default=None)
    growth = None
    if rss_warm and rss_end is not None and warm_end is not end:
        growth = round(100.0 * (rss_end - rss_warm) / rss_warm, 2)
    out["rss_growth_percent"] = growth
    out["rss_slope_mb_per_hour"] = _slope_mb_per_hour(after)
    out["goal_growth_percent"] = GOAL_GROWTH_PERCENT
    out["goal_met"] = growth is not None and growth < GOAL_GROWTH_PERCENT
    # throughput after the warm-up (and over the whole load), processed events per second
    def mean_rate(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
        if a is None or b is None or a["processed"] is None or b["processed"] is None:
            return None
        dt = b["_scraped"] - a["_scraped"]
        return round((b["processed"] - a["processed"]) / dt, 1) if dt > 0 else None

    out["throughput_after_warmup"] = mean_rate(warm_end, end)
    out["throughput_load"] = mean_rate(load[0] if load else None, end)
    produced_rate = None
    if warm_end is not None and end is not None and end["_wall"] > warm_end["_wall"]:
        produced_rate = round((end["produced"] - warm_end["produced"])
                              / (end["_wall"] - warm_end["_wall"]), 1)
    out["produced_rate_after_warmup"] = produced_rate
    lags = [s["lag_total"] for s in after if s["lag_total"] is not None]
    out["lag_max_after_warmup"] = max(lags) if lags else None
    all_lags = [s["lag_total"] for s in load if s["lag_total"] is not None]
    out["lag_max"] = max(all_lags) if all_lags else None
    out["lag_end"] = end["lag_total"] if end else None
    out["lag_end_input"] = end["lag_input"] if end else None
    out["lag_end_by_model"] = end["lag_by_model"] if end else None
    out["backlog_end_events"] = (end["produced"] - end["processed"]
                                 if end and end["processed"] is not None else None)
    last = samples[-1] if samples else None
    out["processed_final"] = last["processed"] if last else None
    out["dead_lettered_final"] = last["dead_lettered"] if last else None
    out["late_events_final"] = last["late_events"] if last else None
    out["windows_closed_final"] = last["windows_closed"] if last else None
    out["drained_after_seconds"] = state.drained_after_s
    out["scrape_max_seconds"] = max((s["scrape_s"] for s in samples), default=None)
    cpu = [s["cpu_worker"] for s in after if s["cpu_worker"] is not None]
    out["worker_cpu_mean_after_warmup"] = round(sum(cpu) / len(cpu), 2) if cpu else None
    bench = [s["cpu_bench"] for s in load if s["cpu_bench"] is not None]
    out["bench_cpu_mean"] = round(sum(bench) / len(bench), 2) if bench else None
    broker = [s["broker_rss_mb"] for s in samples if s["broker_rss_mb"] is not None]
    out["broker_rss_first_mb"] = broker[0] if broker else None
    out["broker_rss_last_mb"] = broker[-1] if broker else None
    return out


def _print_report(state: Soak, summary: dict[str, Any], status: str) -> None:
    args = state.args
    print(f"Soak: 1 worker, window {args.window_seconds:g} s; {args.models} models x "
          f"{len(VERSIONS)} versions, {args.rate:,.0f} events/s in envelopes of "
          f"{args.envelope} every {1000 * args.envelope / args.rate:.1f} ms, "
          f"{args.duration_seconds:g} s of load (warm-up {state.warmup_s:g} s), sampled every "
          f"{args.sample_seconds:g} s; {status}")
    samples = state.samples
    step = max(1, math.ceil(len(samples) / MAX_TABLE_ROWS))
    shown = [s for i, s in enumerate(samples) if i % step == 0 or i == len(samples) - 1]
    if step > 1:
        print(f"(every {step}th sample of {len(samples)}; all of them in the JSON)")
    rows = [[s["t"], s["phase"], s["produced"], s["processed"], s["throughput"],
             s["lag_input"], s["lag_by_model"], s["rss_mb"], s["cpu_worker"],
             s["broker_rss_mb"], s["behind_s"]] for s in shown]
    print(table(["t s", "phase", "produced", "processed", "events/s", "lag in", "lag by-model",
                 "RSS MB", "CPU", "broker MB", "behind s"], rows))
    p = summary

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    producer = (f"producer max {state.max_behind_s:.2f} s behind schedule, "
                f"{state.late_envelopes:,} envelopes sent > {LATE_S * 1000:.0f} ms late, "
                f"{state.send_errors} send errors, bench CPU {p['bench_cpu_mean']}")
    print(f"throughput after warm-up {rate(p['throughput_after_warmup'])} events/s "
          f"(produced {rate(p['produced_rate_after_warmup'])}/s); lag (messages, input + "
          f"by-model) max {p['lag_max_after_warmup']} after warm-up, at the end "
          f"{p['lag_end']} ({p['backlog_end_events']} events behind); drained after "
          f"{p['drained_after_seconds']} s; worker CPU {p['worker_cpu_mean_after_warmup']}")
    if state.broker_estimate_mb is not None:
        print(f"embedded broker: {p['broker_rss_last_mb']} MB RSS at the end, it keeps every "
              f"message in memory (~{state.broker_estimate_mb:,.0f} MB for the whole run at "
              f"{state.event_bytes} B/event)")
    print(f"{producer}; dead-lettered {p['dead_lettered_final']}, late events "
          f"{p['late_events_final']}, windows closed {p['windows_closed_final']}")
    findings = state.log_findings
    if findings.get("by_level") or findings.get("examples"):
        print(f"worker log: {findings.get('by_level')}, {findings.get('non_json_lines')} "
              f"non-JSON lines; e.g.:")
        for example in findings.get("examples", [])[:5]:
            print(f"  {example}")
    growth = p["rss_growth_percent"]
    verdict = "PASS" if p["goal_met"] else "FAIL"
    if growth is None:
        verdict = "FAIL (not measured: no sample after the warm-up)"
    print(f"{verdict}: RSS {p['rss_warmup_end_mb']} MB at the end of the warm-up -> "
          f"{p['rss_end_mb']} MB at the end (max {p['rss_max_mb']} MB): growth "
          f"{'-' if growth is None else f'{growth:+.1f}'} % (goal < {GOAL_GROWTH_PERCENT:g} %),"
          f" slope {p['rss_slope_mb_per_hour']} MB/h")


def main(argv: list[str] | None = None) -> int:
    from mlpulse.config import Settings

    args = _parser().parse_args(argv)
    if args.rate <= 0 or args.duration_seconds <= 0 or args.sample_seconds <= 0:
        print("bench.soak: --rate, --duration-seconds and --sample-seconds must be > 0",
              file=sys.stderr)
        return 2
    warmup = min(max(args.warmup_seconds, 0.0), args.duration_seconds / 3.0)
    state = Soak(args=args, warmup_s=warmup)
    status = "completed"
    error: str | None = None
    code = 0
    try:
        with tempfile.TemporaryDirectory(prefix="mlpulse-bench-soak-") as tmp:
            asyncio.run(run(state, Path(tmp)))
    except KeyboardInterrupt:
        status, code = "interrupted", 130
        log(NAME, "interrupted: reporting what was sampled")
    except Exception as exc:
        status, code = "crashed", 1
        error = f"{type(exc).__name__}: {str(exc)[-3000:]}"
        log(NAME, f"FAILED: {error}")
    if state.stop_load and status == "completed":
        status = f"load ended early ({state.stop_load})"
    summary = summarize(state)
    if state.samples:
        _print_report(state, summary, status)
    timeline = [{k: v for k, v in s.items() if not k.startswith("_")} for s in state.samples]
    path = write_results(NAME, {
        "status": status,
        "error": error,
        "config": {"rate_events_per_s": args.rate, "duration_seconds": args.duration_seconds,
                   "warmup_seconds": warmup, "sample_seconds": args.sample_seconds,
                   "drain_seconds": args.drain_seconds, "window_seconds": args.window_seconds,
                   "lateness_seconds": Settings().lateness_seconds,
                   "envelope_events": args.envelope, "models": args.models,
                   "versions": len(VERSIONS),
                   "features": {"numeric": len(NUMERIC), "categorical": len(CATEGORIES)},
                   "workers": 1},
        "method": ("one real worker (python -m mlpulse worker, defaults but the window) on the "
                   "embedded broker; events stamped with the wall clock, sent as JSON-array "
                   "envelopes keyed by model at a steady rate paced on the wall clock; every "
                   "sample: the worker's VmRSS, mlpulse_events_total{outcome=accepted} of the "
                   "input topic and mlpulse_consumer_lag_messages summed over partitions from "
                   "its /metrics; growth = RSS at the end of the load vs. the first sample "
                   "after the warm-up"),
        "goal_growth_percent": GOAL_GROWTH_PERCENT,
        "goal_met": summary["goal_met"],
        "summary": summary,
        "producer": {"events": state.produced, "acked": state.acked,
                     "envelopes": state.envelopes, "send_errors": state.send_errors,
                     "max_behind_seconds": round(state.max_behind_s, 3),
                     "late_envelopes": state.late_envelopes},
        "event_bytes": state.event_bytes,
        "broker": {"embedded": args.bootstrap is None,
                   "memory_estimate_mb": state.broker_estimate_mb},
        "load_ended_early": state.stop_load,
        "startup_seconds": state.startup_s,
        "scrape_failures": state.scrape_failures,
        "worker_exit_code": state.worker_exit,
        "worker_log": state.log_findings,
        "timeline": timeline,
    }, args.output)
    print(f"(results in {display(path)})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
