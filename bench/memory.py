"""``python -m bench.memory``: resident memory of a worker's state, 1,000 series × 20 features.

What is measured: the RSS (``/proc/self/status`` ``VmRSS``) of a Python process that runs
the whole pipeline in memory (:class:`mlpulse.testing.LocalPipeline`: the worker's own ingest,
summarizer, detectors, label join and status view, no Kafka), before and after it was
fed, with ``gc.collect()`` before each reading. Each case runs in a fresh subprocess:

* the input: ``--models`` models × ``--versions`` versions (default 500 × 2 = 1,000
  (model, version) series), each event with 20 features (14 numbers, 6 categories of 3 to
  50 values), ``--events-per-window`` events per series per 60 s window (default 100),
  over ``--windows`` windows (default 5) of event time, one envelope per model per window;
* after it: the first windows closed (the reference of every series is built from its
  first 3 windows and ≥ 300 events, the later closed windows are tested against it, ADWIN,
  anomaly history and alert states exist), the last window still open (being aggregated),
  as in a worker in steady state;
* "before": the interpreter, every import and an empty pipeline, after a warm-up on a
  throwaway pipeline (so lazily loaded code is not counted as state); "after": the same
  process holding the state of all the series.

Cases: the worker's defaults (detectors on, label join on: the join keeps every
prediction's id for an hour of event time, up to ``MLPULSE_FEEDBACK_MAX_PREDICTIONS``,
whatever the number of series); the label join off (``MLPULSE_FEEDBACK_HORIZON_SECONDS=0``):
what the series themselves cost; detectors off (label join on).

The default shape does not reach the window-anomaly warm-up (10 windows): ``--windows 13
--later-events 25`` does (the steady state: anomaly history filling, the window
HalfSpaceTrees of ``hst_max_series`` series built, 12 closed windows awaiting labels per
series; its later windows are 4x quieter, which the anomaly detector duly reports as
throughput drops). ``make bench`` runs both, the second into
``bench/results/memory-steady.json``.

The window summaries and alerts the test pipeline collects are dropped as they come (a
worker publishes and forgets them). ``--worker`` adds the RSS of a real ``python -m app
worker`` process on the embedded broker fed the same events (its RSS with no input, after
the partition assignment, and once it has closed the same windows; no ``gc.collect()``
there: what the operating system sees).

Goal: ≤ 300 MB RSS for 1,000 series × 20 features. Writes ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench.common import display, log, rss_bytes, table, write_results

NAME = "memory"
GOAL_MB = 300.0
T0 = 1_699_999_980.0  # a multiple of 60 s: each window of the input is one window
WINDOW_S = 60.0
NUMERIC = [f"num_{i:02d}" for i in range(14)]
CATEGORIES = {f"cat_{i}": [f"c{i}_{j}" for j in range(n)]
              for i, n in enumerate((3, 5, 8, 12, 20, 50))}
MB = 1024 * 1024
REFERENCE_WINDOWS = 3   # the detectors' default reference: the first 3 windows

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("defaults: detectors on, label join on", {}),
    "no_label_join": ("label join off (horizon 0)", {"feedback_horizon_seconds": 0.0}),
    "no_detectors": ("detectors off, label join on",
                     {"detectors": {"enabled": False, "logs": {"enabled": False}}}),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--versions", type=int, default=2, help="versions per model")
    parser.add_argument("--events-per-window", type=int, default=100,
                        help="events per series per window")
    parser.add_argument("--windows", type=int, default=5,
                        help="windows of event time (the last one stays open)")
    parser.add_argument("--later-events", type=int, default=None,
                        help="events per series per window after the first 3 (default: "
                             "--events-per-window); e.g. --windows 13 --later-events 25 "
                             "reaches the window-anomaly warm-up (10 windows) cheaply")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--worker", action="store_true",
                        help="also measure a real worker process on the embedded broker")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------- input


class Traffic:
    """Seeded events of ``models`` × ``versions`` series with 20 features, per window."""

    def __init__(self, models: int, versions: int, events_per_window: int,
                 later_events: int | None = None, seed: int = 7) -> None:
        self.models = [f"svc-{i:04d}" for i in range(models)]
        self.versions = [f"v{j + 1}" for j in range(versions)]
        self.per_window = events_per_window
        self.later = events_per_window if later_events is None else later_events
        self.rng = np.random.default_rng(seed)
        # every numeric feature its own location and scale (the same in every series)
        self.loc = np.linspace(-5.0, 50.0, len(NUMERIC))
        self.scale = np.linspace(0.5, 10.0, len(NUMERIC))

    @property
    def series(self) -> int:
        return len(self.models) * len(self.versions)

    def per_series(self, window: int) -> int:
        """Events per series in ``window``: ``events_per_window`` in the reference's
        windows (the first 3), ``later_events`` after them."""
        return self.per_window if window < REFERENCE_WINDOWS else self.later

    def events(self, windows: int) -> int:
        return sum(self.per_series(w) for w in range(windows)) * self.series

    def envelope(self, model: str, window: int) -> list[dict[str, Any]]:
        """Every event of ``model`` (all its versions) in window ``window``, in time order."""
        rng = self.rng
        n = self.per_series(window) * len(self.versions)
        start = T0 + window * WINDOW_S
        times = np.sort(start + rng.random(n) * WINDOW_S).round(6).tolist()
        numbers = (rng.standard_normal((n, len(NUMERIC))) * self.scale + self.loc)
        rows = numbers.round(4).tolist()
        cats = [[values[k] for k in rng.integers(len(values), size=n).tolist()]
                for values in CATEGORIES.values()]
        latency = rng.lognormal(3.0, 0.4, n).round(3).tolist()
        confidence = rng.beta(8, 2, n).round(4).tolist()
        failed = (rng.random(n) < 0.01).tolist()
        cat_names = list(CATEGORIES)
        events = []
        for i in range(n):
            features: dict[str, Any] = dict(zip(NUMERIC, rows[i], strict=True))
            for name, column in zip(cat_names, cats, strict=True):
                features[name] = column[i]
            version = self.versions[i % len(self.versions)]
            event: dict[str, Any] = {
                "event_id": f"{model}-{version}-{window}-{i}", "timestamp": times[i],
                "model": model, "model_version": version, "latency_ms": latency[i],
                "confidence": confidence[i], "features": features,
            }
            if failed[i]:
                event["status"] = "error"
                event["error_type"] = "Timeout"
            else:
                event["prediction"] = int(confidence[i] > 0.75)
            events.append(event)
        return events

    def messages(self, windows: int) -> Iterator[tuple[int, str, bytes]]:
        """(window, model, envelope JSON), window after window, model after model."""
        for window in range(windows):
            for model in self.models:
                yield window, model, msgspec.json.encode(self.envelope(model, window))


# ---------------------------------------------------------------- in process (child)


def _warm_up() -> None:
    """Run every code path once on a throwaway pipeline (lazy imports, caches)."""
    from mlpulse.testing import LocalPipeline

    pipe = LocalPipeline()
    traffic = Traffic(2, 1, 120, seed=99)
    for _window, _model, payload in traffic.messages(5):
        pipe.send("predictions", payload)
    pipe.advance(3 * WINDOW_S)
    del pipe


def run_child(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Feed a fresh LocalPipeline; RSS before and after, and what the state holds."""
    from mlpulse.config import Settings
    from mlpulse.testing import LocalPipeline

    overrides = CASES[case][1]
    _warm_up()
    traffic = Traffic(args.models, args.versions, args.events_per_window, args.later_events)
    pipe = LocalPipeline(Settings(max_future_skew_seconds=1e12), **overrides)
    gc.collect()
    before = rss_bytes() or 0
    started = time.perf_counter()
    events = windows = 0
    alerts: dict[str, int] = {}
    current = 0
    for window, _model, payload in traffic.messages(args.windows):
        if window != current:   # a window of event time is a window of (fake) wall clock;
            pipe.advance(WINDOW_S)   # the worker's timer: idle close, no data, revisions
            pipe.checkpoint()   # as a worker does (the label index's new records go out)
            pipe.checkpoints.clear()   # ... to the broker
            current = window
        pipe.send("predictions", payload)
        events += traffic.per_series(window) * len(traffic.versions)
        windows += len(pipe.windows)
        for alert in pipe.alerts:
            if alert.status == "firing":
                alerts[alert.rule] = alerts.get(alert.rule, 0) + 1
        pipe.windows.clear()   # a worker publishes them and forgets
        pipe.alerts.clear()
    seconds = time.perf_counter() - started
    gc.collect()
    after = rss_bytes() or 0
    monitors = [state.monitor for models in pipe.detect._models.values()
                for state in models.values()]
    join = pipe.summarizer.join
    snapshots = [len(v) for part in pipe.store.data.values() for v in part.values()]
    return {
        "case": case,
        "label": CASES[case][0],
        "overrides": overrides,
        "series": traffic.series,
        "events": events,
        "feed_seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "windows_closed": windows,
        "open_windows": pipe.summarizer.open_windows,
        "alerts_fired": sum(alerts.values()),
        "alerts_by_rule": alerts,
        "monitors": len(monitors),
        "references_built": sum(1 for m in monitors if m.reference is not None),
        "label_index_predictions": join.size if join is not None else 0,
        "snapshot_bytes_total": sum(snapshots),
        "snapshot_bytes_mean": round(sum(snapshots) / len(snapshots)) if snapshots else 0,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_peak_bytes": rss_bytes(field="VmHWM"),
        "growth_bytes": after - before,
        "growth_bytes_per_series": round((after - before) / traffic.series),
    }


def _child_command(case: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "bench.memory", "--child", case,
            "--models", str(args.models), "--versions", str(args.versions),
            "--events-per-window", str(args.events_per_window), "--windows", str(args.windows),
            *(["--later-events", str(args.later_events)] if args.later_events is not None
              else [])]


# ---------------------------------------------------------------- a real worker (optional)


async def _run_worker(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The same traffic through a real worker on the embedded broker; its RSS."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from bench.runner import Subprocess, _wait_for, worker_env
    from bench.runner import _assigned_at as assigned_at
    from mlpulse.broker import EmbeddedBroker
    from mlpulse.config import Settings
    from mlpulse.topics import Topics, ensure_topics_async

    traffic = Traffic(args.models, args.versions, args.events_per_window, args.later_events)
    closed_expected = traffic.series * (args.windows - 1)
    tag = uuid.uuid4().hex[:8]
    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"mem-{tag}.",
                            group_id=f"mem-{tag}")
        topics = Topics(settings)
        await ensure_topics_async(settings)
        env = worker_env(settings, workdir / "worker-data")
        worker = Subprocess([sys.executable, "-m", "mlpulse", "worker"], env,
                            workdir / "memory-worker.log")
        consumer = AIOKafkaConsumer(topics.windows, bootstrap_servers=broker.bootstrap,
                                    group_id=None, auto_offset_reset="earliest")
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20,
                                    max_request_size=16 * MB)
        try:
            await _wait_for("memory worker: partition assignment",
                            lambda: assigned_at(worker.log_text()), worker, timeout_s=90)
            await asyncio.sleep(2.0)
            idle = rss_bytes(worker.process.pid) or 0
            await consumer.start()
            await producer.start()
            started = time.perf_counter()
            futures = []
            for _window, model, payload in traffic.messages(args.windows):
                futures.append(await producer.send(topics.predictions, payload,
                                                   key=model.encode()))
            await asyncio.gather(*futures)
            produced_s = time.perf_counter() - started
            closed = 0
            deadline = time.monotonic() + 600
            while closed < closed_expected:
                if not worker.alive or time.monotonic() > deadline:
                    raise RuntimeError(f"worker closed {closed} of {closed_expected} windows:\n"
                                       f"{worker.log_tail()}")
                batch = await consumer.getmany(timeout_ms=500)
                closed += sum(1 for msgs in batch.values() for m in msgs
                              if json.loads(m.value).get("kind") == "predictions")
            seconds = time.perf_counter() - started
            await asyncio.sleep(2.0)   # the snapshots of the last closes are written
            loaded = rss_bytes(worker.process.pid) or 0
            peak = rss_bytes(worker.process.pid, "VmHWM")
            broker_rss = (rss_bytes(broker.process.pid)
                          if broker.process is not None else None)
        finally:
            await producer.stop()
            await consumer.stop()
            worker.stop()
    return {
        "case": "worker",
        "label": "real worker process (defaults), python -m mlpulse worker",
        "series": traffic.series,
        "events": traffic.events(args.windows),
        "windows_closed": closed,
        "produce_seconds": round(produced_s, 2),
        "feed_seconds": round(seconds, 2),
        "rss_before_bytes": idle,
        "rss_after_bytes": loaded,
        "rss_peak_bytes": peak,
        "growth_bytes": loaded - idle,
        "growth_bytes_per_series": round((loaded - idle) / traffic.series),
        "broker_rss_bytes": broker_rss,
    }


# ---------------------------------------------------------------- parent


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args)), flush=True)
        return 0
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"bench.memory: unknown case(s) {unknown}; known: {list(CASES)}", file=sys.stderr)
        return 2
    series = args.models * args.versions
    later = args.events_per_window if args.later_events is None else args.later_events
    shape = (f"{args.events_per_window} events/series/window" if later == args.events_per_window
             else f"{args.events_per_window} events/series in each of the first "
                  f"{REFERENCE_WINDOWS} windows, {later} in the later ones")
    total = Traffic(args.models, args.versions, args.events_per_window, later).events(
        args.windows)
    log(NAME, f"{series} series ({args.models} models x {args.versions} versions) x 20 "
              f"features, {shape}, {args.windows} windows: {total:,} events per case")
    results: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for case in cases:
        log(NAME, f"case {case}: {CASES[case][0]} (fresh process)")
        done = subprocess.run(_child_command(case, args), capture_output=True, text=True,
                              env=env, check=False, timeout=1800)
        if done.returncode != 0:
            failures[case] = done.stderr[-2000:]
            log(NAME, f"case {case} FAILED:\n{done.stderr[-2000:]}")
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        log(NAME, f"case {case}: RSS {r['rss_after_bytes'] / MB:.0f} MB "
                  f"(+{r['growth_bytes'] / MB:.0f} MB) in {r['feed_seconds']:.0f} s")
    if args.worker:
        log(NAME, "case worker: a real worker process on the embedded broker")
        try:
            with tempfile.TemporaryDirectory(prefix="mlpulse-bench-memory-") as tmp:
                results.append(asyncio.run(_run_worker(args, Path(tmp))))
        except Exception as exc:
            failures["worker"] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
            log(NAME, f"case worker FAILED: {failures['worker']}")

    rows = []
    for r in results:
        rows.append([r["label"], r["rss_after_bytes"] / MB, r["rss_before_bytes"] / MB,
                     r["growth_bytes"] / MB, r["growth_bytes_per_series"] / 1024,
                     (r["rss_peak_bytes"] or 0) / MB,
                     "yes" if r["rss_after_bytes"] / MB <= GOAL_MB else "NO"])
    print(f"Memory: {series:,} (model, version) series x 20 features ({len(NUMERIC)} numeric, "
          f"{len(CATEGORIES)} categorical), {shape}, {args.windows} windows of 60 s "
          f"({args.windows - 1} closed, 1 open)")
    print("RSS (VmRSS, after gc.collect()) of one process running the whole pipeline in "
          "memory (LocalPipeline), each case in a fresh process; 'before' = imports + empty "
          "pipeline")
    print(table(["case", "RSS MB", "before MB", "growth MB", "KB/series", "peak MB",
                 f"<= {GOAL_MB:.0f} MB"], rows))
    for r in results:
        if r["case"] == "worker":
            print(f"  worker: {r['windows_closed']} windows closed, no gc.collect(); broker RSS "
                  f"{(r['broker_rss_bytes'] or 0) / MB:.0f} MB")
            continue
        print(f"  {r['case']}: {r['events']:,} events in {r['feed_seconds']} s "
              f"({r['events_per_s']:,.0f}/s); {r['windows_closed']} windows closed, "
              f"{r['open_windows']} open; references {r['references_built']}/{r['monitors']}; "
              f"label index {r['label_index_predictions']:,} predictions; detector snapshots "
              f"{r['snapshot_bytes_total'] / MB:.1f} MB ({r['snapshot_bytes_mean']:,} B each); "
              f"alerts fired {r['alerts_by_rule'] or 0}")
    for case, reason in failures.items():
        print(f"  {case}: FAILED: {reason.strip().splitlines()[-1] if reason.strip() else ''}")
    path = write_results(NAME, {
        "goal_rss_mb": GOAL_MB,
        "config": {"models": args.models, "versions": args.versions, "series": series,
                   "features": {"numeric": len(NUMERIC), "categorical": len(CATEGORIES)},
                   "events_per_series_per_window": args.events_per_window,
                   "events_per_series_per_later_window": later,
                   "windows": args.windows, "window_seconds": WINDOW_S},
        "method": ("VmRSS of a fresh process running mlpulse.testing.LocalPipeline (defaults but "
                   "the case's overrides), after gc.collect(), before (imports + empty "
                   "pipeline, after a warm-up on a throwaway one) and after feeding the "
                   "series; the last window stays open. Worker case (--worker): VmRSS of "
                   "'python -m mlpulse worker' after its partition assignment and after it "
                   "closed the same windows, no gc.collect()."),
        "cases": results,
        "failures": failures,
    }, args.output)
    print(f"(results in {display(path)})")
    return 1 if failures and not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
