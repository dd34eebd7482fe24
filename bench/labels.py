"""``python -m bench.labels``: do delayed labels join, whatever their order and speed?

The stream: ``--predictions`` (default 40,000) prediction events of ``--models`` (10) models
over ``--windows`` (8) windows of ``--window-seconds`` (20) event-time seconds, as SDK-style
envelopes of 100 events keyed by model; and a label for each (80 % equal to the prediction),
stamped ``--label-delay`` (1) seconds after it, as keyed envelopes too. ``--order``:

* ``after``: predictions, then (once every window closed) the labels;
* ``prompt``: predictions, then at once their labels (the issue's backfill);
* ``before``: labels first, then the predictions.

``--backlog`` writes both before the worker starts (a backfill read by a fresh worker: both
topics are read at once, at whatever speed each partition comes). Afterwards each window's
last revision is compared with the truth: every label joined, accuracy as the data says.
Writes ``bench/results/labels-<order>[-backlog].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from bench.common import log, run_in_workdir, table, write_results
from bench.runner import SummaryReader

NAME = "labels"
T0 = 1_700_000_000.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=40_000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--window-seconds", type=float, default=20.0)
    parser.add_argument("--label-delay", type=float, default=1.0)
    parser.add_argument("--order", choices=["after", "prompt", "before"], default="prompt")
    parser.add_argument("--backlog", action="store_true")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds without a new summary before the comparison")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    return parser


Key = tuple[str, float]


def stream(args: argparse.Namespace) -> tuple[list[tuple[bytes, bytes]],
                                              list[tuple[bytes, bytes]], dict[Key, list[bool]]]:
    """(key, envelope) of predictions and of labels, and per window whether each is right."""
    rng = random.Random(args.seed)
    span_s = args.windows * args.window_seconds
    by_model: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    truth: dict[Key, list[bool]] = {}
    for k in range(args.predictions):
        model = f"model-{k % args.models}"
        t = T0 + k * span_s / args.predictions
        prediction = rng.choice(["fraud", "legit"])
        right = rng.random() < 0.8
        predictions, labels = by_model.setdefault(model, ([], []))
        predictions.append({"event_id": f"{model}-{k}", "timestamp": round(t, 6),
                            "model": model, "model_version": "v1", "prediction": prediction,
                            "latency_ms": 5.0})
        labels.append({"event_id": f"{model}-{k}", "timestamp": round(t + args.label_delay, 6),
                       "model": model, "label": prediction if right else
                       ("legit" if prediction == "fraud" else "fraud")})
        start = math.floor(t / args.window_seconds) * args.window_seconds
        truth.setdefault((model, start), []).append(right)

    def envelopes(index: int) -> list[tuple[bytes, bytes]]:
        out = []
        for model, pair in by_model.items():
            events = pair[index]
            out += [(model.encode(), msgspec.json.encode(events[i:i + 100]))
                    for i in range(0, len(events), 100)]
        return out

    return envelopes(0), envelopes(1), truth


class Latest(SummaryReader):
    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, poll_ms=200)
        self.windows: dict[Key, dict[str, Any]] = {}
        self.last_new_s = time.monotonic()

    def _add(self, record: dict[str, Any], timestamp_ms: int, seen_s: float) -> None:
        from datetime import datetime
        self.last_new_s = time.monotonic()
        if record.get("kind") != "predictions":
            return
        start = datetime.fromisoformat(record["window_start"].replace("Z", "+00:00"))
        key = (record["model"], start.timestamp())
        old = self.windows.get(key)
        if old is None or record["revision"] >= old["revision"]:
            self.windows[key] = record


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from bench.runner import Subprocess, _wait_for, worker_env
    from bench.runner import _assigned_at as assigned_at
    from mlpulse.broker import EmbeddedBroker
    from mlpulse.config import Settings
    from mlpulse.topics import Topics, ensure_topics_async

    predictions, labels, truth = stream(args)
    tag = uuid.uuid4().hex[:8]
    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"labels-{tag}.",
                            group_id=f"labels-{tag}")
        topics = Topics(settings)
        await ensure_topics_async(settings)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5,
                                    max_request_size=4 * 1024 * 1024)
        await producer.start()
        reader = Latest(broker.bootstrap, topics.windows)
        await reader.start()

        async def send(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
            for key, value in messages:
                await producer.send(topic, value, key=key)
            await producer.flush()

        first, second = ((topics.feedback, labels), (topics.predictions, predictions)) \
            if args.order == "before" else ((topics.predictions, predictions),
                                            (topics.feedback, labels))
        worker = None
        try:
            if args.backlog and args.order != "after":
                await send(*first)
                await send(*second)
            env = worker_env(settings, workdir / "w", MLPULSE_WINDOW_SECONDS=str(
                args.window_seconds), MLPULSE_LATENESS_SECONDS="1",
                MLPULSE_IDLE_CHECK_SECONDS="0.25", MLPULSE_REVISION_INTERVAL_SECONDS="1")
            worker = Subprocess([sys.executable, "-m", "mlpulse", "worker"], env,
                                workdir / "w.log")
            await _wait_for("partition assignment", lambda: assigned_at(worker.log_text()),
                            worker, timeout_s=90)
            if not args.backlog or args.order == "after":
                await send(*first)
                if args.order == "after":   # until every window closed
                    deadline = time.monotonic() + 120
                    while len(reader.windows) < len(truth) and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                await send(*second)
            ended = time.monotonic()
            while time.monotonic() - max(reader.last_new_s, ended) < args.settle:
                if time.monotonic() - ended > 300:
                    break
                await asyncio.sleep(0.5)
            metrics = _metrics(int(env["MLPULSE_WEB_PORT"]))
        finally:
            await producer.stop()
            await reader.stop()
            if worker is not None:
                worker.stop()
    return {**compare(truth, reader.windows), **metrics}


def _metrics(port: int) -> dict[str, Any]:
    """The worker's label counters (``mlpulse_labels_total`` by outcome) and the predictions
    still awaiting labels, from its ``/metrics``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mlpulse_labels_total":
                out[f"labels_{sample.labels.get('outcome')}"] = int(sample.value)
            elif sample.name == "mlpulse_predictions_awaiting_labels":
                out["predictions_awaiting_labels"] = int(sample.value)
    return out


def compare(truth: dict[Key, list[bool]], windows: dict[Key, dict[str, Any]]
            ) -> dict[str, Any]:
    exact = missing = wrong = 0
    labelled = 0
    problems = []
    for key, right in truth.items():
        w = windows.get(key)
        if w is None:
            missing += 1
            continue
        performance = w.get("performance") or {}
        labelled += int(performance.get("labelled", 0))
        accuracy = sum(right) / len(right)
        if (performance.get("labelled") == len(right)
                and performance.get("accuracy") == accuracy):
            exact += 1
        else:
            wrong += 1
            if len(problems) < 20:
                problems.append({"model": key[0], "window_start_s": key[1],
                                 "predictions": len(right), "true_accuracy": accuracy,
                                 "labelled": performance.get("labelled"),
                                 "accuracy": performance.get("accuracy"),
                                 "revision": w.get("revision")})
    labels = sum(len(r) for r in truth.values())
    return {"windows_true": len(truth), "windows_accuracy_exact": exact,
            "windows_accuracy_wrong_or_partial": wrong, "windows_missing": missing,
            "labels_true": labels, "labels_joined": labelled,
            "labels_not_joined": labels - labelled, "problem_windows": problems}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run_in_workdir(run, args, "mlpulse-labels-")
    report = {"config": {k: v for k, v in vars(args).items() if k not in ("output", "workdir")},
              **result}
    name = f"{NAME}-{args.order}" + ("-backlog" if args.backlog else "")
    path = write_results(name, report, args.output)
    log(NAME, f"{args.order}{' backlog' if args.backlog else ''}: "
              f"{result['windows_accuracy_exact']}/{result['windows_true']} windows exact")
    print(table(["measure", "value"], [[k, v] for k, v in result.items()
                                       if k != "problem_windows"]))
    print(f"(results in {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
