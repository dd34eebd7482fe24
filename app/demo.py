"""``mlpulse demo`` (``make run``): an embedded broker, a worker and a simulator, told as a
story on stdout (logs go to stderr).

What a newcomer should see in the first minute: where things are, references building,
the first injected incident raising an alert, alerts set apart from the windows, one line
per round of windows however many models run.

>>> story = Story(models=2, reference_windows=2, reference_min_events=10, color=False)
>>> def window(model, start, n=100): return {"kind": "predictions", "model": model,
...     "model_version": "v1", "window_start": start, "count": n, "error_count": 1,
...     "latency_ms": {"p99": 40.0}, "late_events": 0}
>>> story.window(window("model-0", "2026-01-01T00:00:05Z"))
[]
>>> for line in story.window(window("model-1", "2026-01-01T00:00:05Z")): print(line)
window 00:00:05  2 models  200 events  2 errors  p99 40-40 ms
  references: 1 of 2 windows
>>> _ = story.window(window("model-0", "2026-01-01T00:00:10Z"))
>>> for line in story.window(window("model-1", "2026-01-01T00:00:10Z")): print(line)
window 00:00:10  2 models  200 events  2 errors  p99 40-40 ms
  references ready (model-0/v1, model-1/v1): drift and anomalies are judged from now on
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from .config import Settings

__all__ = ["Story", "cmd_demo"]


class Story:
    """What the output topics say, for a person: window rounds, references, alerts."""

    def __init__(self, *, models: int, reference_windows: int, reference_min_events: int,
                 color: bool) -> None:
        self.models = models
        self.reference_windows = reference_windows
        self.reference_min_events = reference_min_events
        self.color = color
        self._rounds: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._printed: set[str] = set()
        self._seen: dict[str, list[int]] = defaultdict(list)
        """model/version → event counts of its windows so far (for the reference)."""
        self._ready: set[str] = set()
        self._dead: dict[str, int] = defaultdict(int)
        self._accuracy: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
        """window start → model → accuracy and labels of its latest revision."""

    def window(self, record: dict[str, Any]) -> list[str]:
        """Lines to print for a window summary (a round prints once all models are in, or
        once a later round starts)."""
        if record.get("kind") == "logs":
            return []
        start = record["window_start"]
        if record.get("revision"):
            return self._revision(record)
        if start in self._printed:
            return []
        self._rounds[start].append(record)
        lines: list[str] = []
        for older in sorted(s for s in self._rounds if s < start):
            lines += self._round(older)
        if len(self._rounds[start]) >= self.models:
            lines += self._round(start)
        return lines

    def alert(self, record: dict[str, Any]) -> list[str]:
        labels = record.get("labels", {})
        who = "/".join(v for v in (labels.get("model") or labels.get("service"),
                                   labels.get("model_version")) if v)
        status = record["status"].upper()
        text = (f">>> ALERT {status} {record['rule']} ({record['severity']}) {who}: "
                f"{record['annotations']['summary']}")
        if self.color:
            text = ("\033[1;31m" if status == "FIRING" else "\033[1;32m") + text + "\033[0m"
        return ["", text]

    def dead_letter(self, record: dict[str, Any]) -> list[str]:
        """Dead letters are counted into the next round's line."""
        self._dead[record["error"].split(":")[0][:40]] += 1
        return []

    def _round(self, start: str) -> list[str]:
        records = self._rounds.pop(start, [])
        if not records or start in self._printed:
            return []
        self._printed.add(start)
        count = sum(r["count"] for r in records)
        errors = sum(r["error_count"] for r in records)
        late = sum(r["late_events"] for r in records)
        p99 = [r["latency_ms"]["p99"] for r in records if r.get("latency_ms")]
        line = (f"window {start[11:19]}  {len(records)} models  {count} events  "
                f"{errors} errors  p99 {min(p99, default=0):.0f}-{max(p99, default=0):.0f} ms")
        if late:
            line += f"  {late} late"
        if self._dead:
            line += "  dead letters: " + ", ".join(f"{n} {why}" for why, n in self._dead.items())
            self._dead.clear()
        return [line, *self._references(records), *self._labels(start)]

    def _references(self, records: list[dict[str, Any]]) -> list[str]:
        ready = []
        for r in records:
            key = f"{r['model']}/{r['model_version']}"
            if key in self._ready:
                continue
            self._seen[key].append(r["count"])
            seen = self._seen[key]
            if (len(seen) >= self.reference_windows
                    and sum(seen) >= self.reference_min_events):
                self._ready.add(key)
                ready.append(key)
        if ready:
            return [f"  references ready ({', '.join(sorted(ready))}): drift and anomalies "
                    f"are judged from now on"]
        building = [len(self._seen[k]) for k in self._seen if k not in self._ready]
        if building:
            return [f"  references: {min(building)} of {self.reference_windows} windows"]
        return []

    def _revision(self, record: dict[str, Any]) -> list[str]:
        """Labels revise windows one model at a time: kept, and told in the round line
        two rounds later (when most of that window's labels are in)."""
        performance = record.get("performance") or {}
        if performance.get("accuracy") is not None:
            self._accuracy[record["window_start"]][record["model"]] = (
                performance["accuracy"], performance.get("labelled", 0))
        return []

    def _labels(self, start: str) -> list[str]:
        older = sorted(s for s in self._accuracy if s < start)
        if len(older) < 2:
            return []
        told = older[-2]
        for done in older[:-1]:
            scores = self._accuracy.pop(done)
            if done == told:
                return ["  accuracy of window " + told[11:19] + ": " + ", ".join(
                    f"{model} {acc:.2f} ({n} labelled)" for model, (acc, n)
                    in sorted(scores.items()))]
        return []


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from .broker import EmbeddedBroker
    from .cli import run_worker, setup_logging
    from .detectors.settings import DetectorSettings
    from .sdk.producer import Telemetry
    from .sdk.simulator import Injection, Simulator
    from .topics import Topics

    if "MLPULSE_LOG_LEVEL" not in os.environ:   # the story counts the dead letters itself
        settings = settings.replace(log_level="error")
    setup_logging(settings.log_level, settings.log_format)
    if "MLPULSE_WINDOW_SECONDS" not in os.environ:
        settings = settings.replace(window_seconds=args.window_seconds, lateness_seconds=1.0)
    window_s = settings.window_seconds
    reference = DetectorSettings.from_mapping(settings.detectors).defaults.reference
    # after the references are built (3 windows): a latency spike, drift, worse accuracy,
    # then a canary version of model-0, slower and failing more than v1 from its first event
    injections = [
        Injection("latency", "model-0", start_s=(reference.windows + 1) * window_s,
                  duration_s=2 * window_s, magnitude=4.0),
        Injection("drift", "model-1", start_s=(reference.windows + 3) * window_s,
                  feature="amount", magnitude=2.0),
        Injection("accuracy", "model-2", start_s=(reference.windows + 5) * window_s,
                  magnitude=0.6),
        Injection("canary", "model-0", start_s=(reference.windows + 7) * window_s,
                  magnitude=1.5)]
    # demo windows are small (~130 canary events each): compare from 100 events a side
    detectors = dict(settings.detectors or {})
    detectors.setdefault("comparison", {"min_events": 100})
    settings = settings.replace(detectors=detectors)
    with EmbeddedBroker() as broker:
        settings = settings.replace(kafka_bootstrap=broker.bootstrap)
        topics = Topics(settings)
        print(f"mlpulse demo: {args.models} models at {args.rate:g} events/s, windows of "
              f"{window_s:g} s, on an embedded Kafka at {broker.bootstrap}\n"
              f"  status page  http://{settings.web_host}:{settings.web_port}/status "
              f"(metrics: /metrics)\n"
              f"  topics       in: {topics.predictions}, {topics.feedback}; "
              f"out: {topics.windows}, {topics.alerts}, {topics.deadletter}\n"
              f"  incidents    " + "; ".join(
                  f"{i.kind} on {i.model} at +{i.start_s:g} s" for i in injections)
              + "\n  Ctrl-C stops. Logs go to stderr.\n", flush=True)
        stop = threading.Event()
        simulator = Simulator(n_models=args.models, seed=int(time.time()),
                              malformed_rate=0.002, injections=injections,
                              label_delay_s=window_s * 1.5)

        def simulate() -> None:
            time.sleep(3)
            with Telemetry(broker.bootstrap, topic_prefix=settings.topic_prefix) as telemetry:
                simulator.run(telemetry, duration_s=args.duration, rate_per_s=args.rate,
                              stop=stop)

        threading.Thread(target=simulate, name="simulator", daemon=True).start()
        if args.duration != float("inf"):
            def _stop_later() -> None:
                time.sleep(args.duration + window_s + settings.lateness_seconds + 5)
                os.kill(os.getpid(), signal.SIGTERM)
            threading.Thread(target=_stop_later, daemon=True).start()
        story = Story(models=min(args.models, len(simulator.models)),
                      reference_windows=reference.windows,
                      reference_min_events=reference.min_events, color=sys.stdout.isatty())

        async def tell() -> None:
            await _tell(settings, story)

        try:
            return run_worker(settings, extra_tasks=[tell])
        finally:
            stop.set()


async def _tell(settings: Settings, story: Story) -> None:
    from aiokafka import AIOKafkaConsumer

    from .security import kafka_options
    from .topics import Topics

    topics = Topics(settings)
    consumer = AIOKafkaConsumer(topics.windows, topics.alerts, topics.deadletter,
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=None,
                                **kafka_options(settings))
    await consumer.start()
    tell = {topics.windows: story.window, topics.alerts: story.alert,
            topics.deadletter: story.dead_letter}
    try:
        async for message in consumer:
            for line in tell[message.topic](json.loads(message.value)):
                print(line, flush=True)
    except asyncio.CancelledError:
        pass
    finally:
        await consumer.stop()
