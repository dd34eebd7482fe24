"""``python -m bench.latency``: end-to-end latency from a window's last event to its summary.

Setup: the embedded broker and ONE real worker process (``python -m mlpulse worker``, detectors
on) with 2 s windows, 1 s lateness and ``MLPULSE_IDLE_CHECK_SECONDS=0.25``. Once the worker
owns its partitions, this process produces events in real time (event time = the wall
clock when the event is made) for 3 models at a steady 2,000 events/s in total: every
25 ms one envelope of 50 events of the next model in turn (keyed by model, plain aiokafka
producer), its events' times spread evenly since that model's previous envelope, as a
batching producer sends them. It runs for 40 s, then waits for the last summaries.

Measured, per (model, window): ``last sent`` = when the envelope holding the window's
last event was handed to the producer (``send``; its broker acknowledgement time is
recorded too); ``received`` = when this process's consumer of the windows topic got the
window's summary; ``created`` = the summary message's timestamp (set by the worker's
producer when it sent it). Latency = ``received - last sent`` (and ``created - last sent``).
Measured: the windows closed by the watermark, i.e. every window but the first (partial)
and the last one or two of each model (those whose end + lateness comes after the traffic
stopped: they close by the idle timer, window + lateness of wall clock after their last
event; reported apart).

Floor: a window closes when its key's watermark (newest event time − lateness) passes its
end, i.e. when an event stamped ≥ end + 1 s is processed; events arrive in envelopes every
75 ms per model: so ≈ lateness (1 s) is the least any pipeline with this watermark can do.
Goal: ≤ lateness + 2 s = 3 s. Writes ``bench/results/latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaProducer

from bench.common import display, log, percentile, table, write_results
from bench.runner import SummaryReader

NAME = "latency"
Key = tuple[str, float]   # (model, window start)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second, total")
    parser.add_argument("--envelope", type=int, default=50, help="events per envelope")
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--window", type=float, default=2.0, help="MLPULSE_WINDOW_SECONDS")
    parser.add_argument("--lateness", type=float, default=1.0, help="MLPULSE_LATENESS_SECONDS")
    parser.add_argument("--idle-check", type=float, default=0.25,
                        help="MLPULSE_IDLE_CHECK_SECONDS")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--keep-log", type=Path, default=None, metavar="FILE",
                        help="copy the worker's log to FILE")
    return parser


class Summaries(SummaryReader):
    """Reads the windows topic in the background: receive and create time per window."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, poll_ms=50, fetch_max_wait_ms=20)
        self.seen: dict[Key, dict[str, Any]] = {}
        self.duplicates = 0

    def _add(self, record: dict[str, Any], timestamp_ms: int, seen_s: float) -> None:
        if record.get("kind") != "predictions":
            return
        start = datetime.fromisoformat(record["window_start"].replace("Z", "+00:00")).timestamp()
        key = (str(record["model"]), start)
        if key in self.seen:
            self.duplicates += 1
            return
        self.seen[key] = {"received": seen_s, "created": timestamp_ms / 1000,
                          "count": int(record["count"]),
                          "late_events": int(record.get("late_events") or 0)}


class Traffic:
    """Real-time events of ``models`` models; what was sent when, per window."""

    def __init__(self, models: int, window_s: float, seed: int = 3) -> None:
        self.models = [f"lat-model-{i}" for i in range(models)]
        self.window_s = window_s
        self.rng = np.random.default_rng(seed)
        self.last_t: dict[str, float] = {}
        self.last_sent: dict[Key, float] = {}
        """(model, window start) → when the envelope with its newest event was sent."""
        self.last_envelope: dict[Key, int] = {}
        self.events: dict[Key, int] = {}
        self.acked: dict[int, float] = {}
        self.counter = 0

    def envelope(self, model: str, n: int, now: float) -> tuple[bytes, list[float]]:
        """``n`` events of ``model`` stamped evenly over (previous envelope, now]."""
        rng = self.rng
        since = self.last_t.get(model, now - 0.075)
        self.last_t[model] = now
        times = [since + (now - since) * (i + 1) / n for i in range(n)]
        latency = rng.lognormal(3.0, 0.4, n).round(3).tolist()
        confidence = rng.beta(8, 2, n).round(4).tolist()
        amount = rng.lognormal(4.0, 0.6, n).round(2).tolist()
        age = rng.normal(40.0, 12.0, n).round(1).tolist()
        events = []
        for i in range(n):
            self.counter += 1
            events.append({
                "event_id": f"{model}-{self.counter}", "timestamp": round(times[i], 6),
                "model": model, "model_version": "v1", "latency_ms": latency[i],
                "prediction": int(confidence[i] > 0.75), "confidence": confidence[i],
                "features": {"amount": amount[i], "age": age[i],
                             "country": ("US", "DE", "FR")[i % 3]},
            })
        return msgspec.json.encode(events), times

    def sent(self, model: str, times: list[float], sent_at: float, envelope: int) -> None:
        for t in times:
            key = (model, math.floor(t / self.window_s) * self.window_s)
            self.last_sent[key] = sent_at
            self.last_envelope[key] = envelope
            self.events[key] = self.events.get(key, 0) + 1


async def _produce(bootstrap: str, topic: str, traffic: Traffic, args: argparse.Namespace
                   ) -> tuple[float, float, int]:
    """Send envelopes on schedule for ``args.duration`` s; (first, last send, late ticks)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    await producer.start()
    interval = args.envelope / args.rate
    behind = 0
    futures = []
    try:
        started = time.time()
        tick = 0
        while True:
            due = started + tick * interval
            if due - started >= args.duration:
                break
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -interval:
                behind += 1
            model = traffic.models[tick % len(traffic.models)]
            now = time.time()
            payload, times = traffic.envelope(model, args.envelope, now)
            sent_at = time.time()
            future = await producer.send(topic, payload, key=model.encode())
            index = tick
            future.add_done_callback(
                lambda _f, i=index: traffic.acked.__setitem__(i, time.time()))
            futures.append(future)
            traffic.sent(model, times, sent_at, tick)
            tick += 1
        await asyncio.gather(*futures)
        return started, time.time(), behind
    finally:
        await producer.stop()


def _cpu_timeline(cpu: Any, since: float) -> dict[str, list[list[float]]]:
    """Per process: [seconds since ``since``, CPU share over the sample interval] (1.0 = one
    core), to place stalls."""
    out: dict[str, list[list[float]]] = {}
    for name, samples in cpu.samples.items():
        out[name] = [[round(b[0] - since, 2), round((b[1] - a[1]) / (b[0] - a[0]), 2)]
                     for a, b in itertools.pairwise(samples) if b[0] > a[0]]
    return out


def _stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else math.nan,
            "mean": sum(values) / len(values) if values else math.nan}


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bench.runner import CpuSampler, Subprocess, _clean_env, wait_reading
    from mlpulse.broker import EmbeddedBroker, free_port
    from mlpulse.config import Settings
    from mlpulse.topics import Topics, ensure_topics_async

    tag = uuid.uuid4().hex[:8]
    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"lat-{tag}.",
                            group_id=f"lat-{tag}", window_seconds=args.window,
                            lateness_seconds=args.lateness)
        topics = Topics(settings)
        await ensure_topics_async(settings)
        env = _clean_env(
            MLPULSE_KAFKA_BOOTSTRAP=broker.bootstrap, MLPULSE_TOPIC_PREFIX=settings.topic_prefix,
            MLPULSE_GROUP_ID=settings.group_id, MLPULSE_WINDOW_SECONDS=str(args.window),
            MLPULSE_LATENESS_SECONDS=str(args.lateness),
            MLPULSE_IDLE_CHECK_SECONDS=str(args.idle_check),
            MLPULSE_WEB_PORT=str(free_port()), MLPULSE_DATA_DIR=str(workdir / "data"),
            MLPULSE_LOG_LEVEL="info", MLPULSE_LOG_FORMAT="json")
        worker = Subprocess([sys.executable, "-m", "mlpulse", "worker"], env,
                            workdir / "latency-worker.log")
        summaries = Summaries(broker.bootstrap, topics.windows)
        pids = {"worker": worker.process.pid}
        if broker.process is not None:
            pids["broker"] = broker.process.pid
        cpu = CpuSampler(pids, interval_s=0.5)
        try:
            await wait_reading(worker, "latency worker", timeout_s=90)
            log(NAME, f"worker owns its partitions after {time.time() - worker.started_at:.1f} "
                      f"s; producing {args.rate:g} events/s for {args.duration:g} s")
            await summaries.start()
            cpu.start()
            traffic = Traffic(args.models, args.window)
            first, last, behind = await _produce(broker.bootstrap, topics.predictions,
                                                 traffic, args)
            cpu.sample()
            produced_at = time.time()
            # every window but the last closes by watermark; the last ones by idle close
            # (window + lateness of wall clock): wait for those too, and a margin
            last_starts = {m: max(s for mm, s in traffic.last_sent if mm == m)
                           for m in traffic.models}
            deadline = time.time() + args.window + args.lateness + 10.0
            while time.time() < deadline:
                if all((m, s) in summaries.seen for m, s in last_starts.items()):
                    break
                if not worker.alive:
                    raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            shares = cpu.shares(first, produced_at)
            timeline = _cpu_timeline(cpu, first)
        finally:
            await cpu.stop()
            await summaries.stop()
            worker.stop()
            if args.keep_log is not None:
                args.keep_log.write_bytes(worker.log_path.read_bytes())
    first_full = math.ceil(first / args.window) * args.window
    included, missing, wrong_count = [], [], []
    idle_closed: list[dict[str, Any]] = []
    for key, sent_at in sorted(traffic.last_sent.items(), key=lambda kv: kv[0][1]):
        model, start = key
        if start < first_full:   # partial: traffic started inside it
            continue
        # closed by the watermark only if the model's newest event is >= end + lateness;
        # the windows at the end of the traffic close by the idle timer instead
        by_watermark = start + args.window + args.lateness <= traffic.last_t[model]
        seen = summaries.seen.get(key)
        if not by_watermark:
            if seen is not None:
                idle_closed.append({"model": model, "window_start": start,
                                    "latency_s": seen["received"] - sent_at,
                                    "count": seen["count"], "sent": traffic.events[key]})
            continue
        seen = summaries.seen.get(key)
        if seen is None:
            missing.append(key)
            continue
        if seen["count"] != traffic.events[key]:
            wrong_count.append({"model": model, "window_start": start,
                                "summary_count": seen["count"], "sent": traffic.events[key]})
        ack = traffic.acked.get(traffic.last_envelope[key])
        included.append({
            "model": model, "window_start": start, "window_end": start + args.window,
            "last_sent": sent_at, "last_acked": ack, "received": seen["received"],
            "created": seen["created"], "latency_s": seen["received"] - sent_at,
            "created_latency_s": seen["created"] - sent_at,
            "from_ack_s": seen["received"] - ack if ack is not None else None,
            "after_window_end_s": seen["received"] - (start + args.window),
            "count": seen["count"], "late_events": seen["late_events"],
        })
    return {
        "windows": included, "idle_closed": idle_closed,
        "missing": [list(k) for k in missing], "wrong_count": wrong_count,
        "duplicates": summaries.duplicates, "producer_late_ticks": behind,
        "produce_seconds": round(last - first, 2),
        "events_sent": sum(traffic.events.values()),
        "cpu_share": shares, "cpu_timeline": timeline, "started_at": first,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    goal = args.lateness + 2.0
    with tempfile.TemporaryDirectory(prefix="mlpulse-bench-latency-") as tmp:
        outcome = asyncio.run(run(args, Path(tmp)))
    windows = outcome["windows"]
    if not windows:
        print("bench.latency: no complete window summary was received", file=sys.stderr)
        return 1
    measures = {
        "received - last event sent": [w["latency_s"] for w in windows],
        "summary created - last event sent": [w["created_latency_s"] for w in windows],
        "received - last event acked": [w["from_ack_s"] for w in windows
                                        if w["from_ack_s"] is not None],
        "received - window end": [w["after_window_end_s"] for w in windows],
    }
    stats = {name: _stats(values) for name, values in measures.items()}
    main_stats = stats["received - last event sent"]
    print(f"Latency: 1 worker, window {args.window:g} s, lateness {args.lateness:g} s, idle "
          f"check {args.idle_check:g} s; {args.models} models, {args.rate:,.0f} events/s in "
          f"envelopes of {args.envelope} every {1000 * args.envelope / args.rate:.0f} ms, "
          f"{args.duration:g} s of real-time traffic ({outcome['events_sent']:,} events)")
    print(f"{len(windows)} windows closed by the watermark measured (the first, partial, and "
          f"the last ones, closed by the idle timer after the traffic stopped, apart); "
          f"seconds:")
    print(table(["from → to", "p50", "p95", "p99", "max", "mean"],
                [[name, s["p50"], s["p95"], s["p99"], s["max"], s["mean"]]
                 for name, s in stats.items()]))
    met = main_stats["max"] <= goal
    print(f"goal: <= lateness + 2 s = {goal:g} s from the last event sent to the summary: "
          f"{'met' if met else 'NOT met'} (p99 {main_stats['p99']:.2f} s, max "
          f"{main_stats['max']:.2f} s); floor of this watermark ≈ lateness = "
          f"{args.lateness:g} s")
    idle = [w["latency_s"] for w in outcome["idle_closed"]]
    if idle:
        print(f"windows closed by the idle timer after the traffic stopped ({len(idle)}): "
              f"{min(idle):.2f}-{max(idle):.2f} s from their last event sent (expected ≈ "
              f"window + lateness = {args.window + args.lateness:g} s + up to the "
              f"{args.idle_check:g} s idle check)")
    problems = []
    if outcome["missing"]:
        problems.append(f"{len(outcome['missing'])} windows without a summary")
    if outcome["wrong_count"]:
        problems.append(f"{len(outcome['wrong_count'])} summaries whose count differs from "
                        f"the events sent")
    if outcome["duplicates"]:
        problems.append(f"{outcome['duplicates']} duplicate summaries")
    if outcome["producer_late_ticks"]:
        problems.append(f"the producer fell > 1 interval behind {outcome['producer_late_ticks']}"
                        f" times")
    slow = [w for w in windows if w["latency_s"] > goal]
    if slow:
        problems.append(f"{len(slow)} windows over {goal:g} s: " + ", ".join(
            f"{w['model']} at +{w['window_start'] - outcome['started_at']:.0f} s "
            f"({w['latency_s']:.2f} s)" for w in slow[:6]))
    shares = {k: v for k, v in (outcome["cpu_share"] or {}).items() if v is not None}
    print("CPU (1.0 = one core) while producing: "
          + ", ".join(f"{k} {v:.2f}" for k, v in shares.items())
          + (f"; problems: {'; '.join(problems)}" if problems else "; no missing, duplicate "
             "or miscounted windows"))
    path = write_results(NAME, {
        "config": {"window_seconds": args.window, "lateness_seconds": args.lateness,
                   "idle_check_seconds": args.idle_check, "models": args.models,
                   "events_per_s": args.rate, "envelope_events": args.envelope,
                   "duration_seconds": args.duration, "workers": 1},
        "goal_seconds": goal, "goal_met": met,
        "method": ("one real worker on the embedded broker; events stamped with the wall "
                   "clock and sent in real time; latency = time this process received the "
                   "window summary - time the envelope with the window's last event was "
                   "handed to the aiokafka producer; windows closed by the watermark only "
                   "(the first, partial, and those closed by the idle timer after the "
                   "traffic stopped are excluded; the latter are listed in idle_closed)"),
        "latency_seconds": stats,
        **outcome,
    }, args.output)
    print(f"(results in {display(path)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
