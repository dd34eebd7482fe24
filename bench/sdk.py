"""``python -m bench.sdk``: the producer SDK's throughput and the cost it adds to a serving call.

On the embedded broker, from one process, ``--events`` prediction events (default 200,000;
5 models, a serving call's fields: version, latency, prediction, confidence, 4 features)
are sent two ways, each to topics of its own, after a warm-up (connection made, 100 events
delivered):

* **SDK**: ``Telemetry.log_prediction(model=..., **fields)`` with the SDK's defaults
  (``event_id`` and ``timestamp`` filled in by the SDK; buffer of 100,000 events; a
  background thread sends envelopes of up to 1,000 events keyed by model). Timed from the
  first call to ``flush()`` returning; the time of each call is taken too (what
  ``log_prediction`` adds to a serving call: the mean, and its p50/p99/max, as the
  sender thread competes for the GIL).
* **plain aiokafka**: the same event dicts made the same way (uuid4 id, ``time.time()``),
  msgspec-encoded, one message each, ``await producer.send(...)`` without awaiting each
  delivery (``linger_ms=5`` as the SDK), then ``flush()``; the time of each ``send`` call
  (with its encode) too.

Afterwards every message on both topics is read back and the events counted: delivered =
what the broker has; the SDK's ``sent_events`` and ``dropped`` counters are reported beside
it. Writes ``bench/results/sdk.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaProducer

from bench.common import display, log, percentile, table, topic_records, write_results

NAME = "sdk"
WARMUP = 100


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    return parser


def serving_calls(n: int, models: int, seed: int = 11) -> list[dict[str, Any]]:
    """Keyword arguments of ``n`` ``log_prediction`` calls (what a serving call knows)."""
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(3.0, 0.4, n).round(3).tolist()
    confidence = rng.beta(8, 2, n).round(4).tolist()
    amount = rng.lognormal(4.0, 0.6, n).round(2).tolist()
    age = rng.normal(40.0, 12.0, n).round(1).tolist()
    score = rng.normal(0.0, 1.0, n).round(4).tolist()
    country = rng.integers(6, size=n).tolist()
    names = [f"sdk-model-{i}" for i in range(models)]
    return [{"model": names[i % models], "model_version": "v1", "latency_ms": latency[i],
             "prediction": int(confidence[i] > 0.75), "confidence": confidence[i],
             "features": {"amount": amount[i], "age": age[i], "score": score[i],
                          "country": ("US", "DE", "FR", "GB", "IN", "BR")[country[i]]}}
            for i in range(n)]


def _call_stats(durations_ns: list[int]) -> dict[str, float]:
    us = [d / 1000 for d in durations_ns]
    return {"mean_us": sum(us) / len(us), "p50_us": percentile(us, 50),
            "p99_us": percentile(us, 99), "max_us": max(us)}


def run_sdk(bootstrap: str, prefix: str, warm: list[dict[str, Any]],
            calls: list[dict[str, Any]]) -> dict[str, Any]:
    from mlpulse.sdk.producer import Telemetry

    telemetry = Telemetry(bootstrap, topic_prefix=prefix)
    try:
        for kw in warm:
            telemetry.log_prediction(**kw)
        if not telemetry.flush(60):
            raise RuntimeError(f"SDK warm-up not delivered (error: {telemetry.error!r})")
        sent0, dropped0 = telemetry.sent_events, telemetry.dropped
        durations = [0] * len(calls)
        clock = time.perf_counter_ns
        log_prediction = telemetry.log_prediction
        gc.collect()
        started = time.perf_counter()
        for i, kw in enumerate(calls):
            t0 = clock()
            log_prediction(**kw)
            durations[i] = clock() - t0
        calls_done = time.perf_counter()
        flushed = telemetry.flush(120)
        done = time.perf_counter()
        sent, dropped = telemetry.sent_events - sent0, telemetry.dropped - dropped0
        messages = telemetry.sent_messages
    finally:
        telemetry.close()
    seconds = done - started
    return {"case": "sdk", "label": "SDK Telemetry.log_prediction (defaults)",
            "events": len(calls), "seconds": round(seconds, 4),
            "events_per_s": round(len(calls) / seconds, 1),
            "calls_seconds": round(calls_done - started, 4),
            "flush_seconds": round(done - calls_done, 4), "flushed": flushed,
            "sent_events": sent, "dropped": dropped, "messages_incl_warmup": messages,
            "call": _call_stats(durations)}


async def run_plain(bootstrap: str, topic: str, warm: list[dict[str, Any]],
                    calls: list[dict[str, Any]]) -> dict[str, Any]:
    encode = msgspec.json.Encoder().encode
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        def event(kw: dict[str, Any]) -> dict[str, Any]:
            return {"event_id": uuid.uuid4().hex, "timestamp": time.time(), **kw}

        for kw in warm:
            await producer.send(topic, encode(event(kw)), key=kw["model"].encode())
        await producer.flush()
        durations = [0] * len(calls)
        futures = []
        clock = time.perf_counter_ns
        send = producer.send
        gc.collect()
        started = time.perf_counter()
        for i, kw in enumerate(calls):
            t0 = clock()
            futures.append(await send(topic, encode(event(kw)), key=kw["model"].encode()))
            durations[i] = clock() - t0
        calls_done = time.perf_counter()
        await producer.flush()
        done = time.perf_counter()
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = sum(1 for r in results if isinstance(r, BaseException))
    finally:
        await producer.stop()
    seconds = done - started
    return {"case": "plain", "label": "plain aiokafka, one message per event",
            "events": len(calls), "seconds": round(seconds, 4),
            "events_per_s": round(len(calls) / seconds, 1),
            "calls_seconds": round(calls_done - started, 4),
            "flush_seconds": round(done - calls_done, 4), "flushed": True,
            "sent_events": len(calls) - failed, "dropped": failed,
            "call": _call_stats(durations)}


async def delivered(bootstrap: str, topic: str) -> tuple[int, int]:
    """(messages, events) on ``topic``: every message read, JSON arrays counted per item."""
    decode = msgspec.json.Decoder().decode
    messages = events = 0
    async for record in topic_records(bootstrap, topic, 120,
                                      max_partition_fetch_bytes=16 << 20):
        messages += 1
        value = decode(record.value)
        events += len(value) if isinstance(value, list) else 1
    return messages, events


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.events <= WARMUP or args.models <= 0:
        print(f"bench.sdk: --events must be > {WARMUP}", file=sys.stderr)
        return 2
    from mlpulse.broker import EmbeddedBroker
    from mlpulse.config import Settings
    from mlpulse.topics import Topics, ensure_topics

    calls = serving_calls(args.events, args.models)
    warm = serving_calls(WARMUP, args.models, seed=12)
    results: list[dict[str, Any]] = []
    tag = uuid.uuid4().hex[:8]
    with EmbeddedBroker() as broker:
        sdk_settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"sdk-{tag}.")
        plain_settings = Settings(kafka_bootstrap=broker.bootstrap,
                                  topic_prefix=f"plain-{tag}.")
        for settings in (sdk_settings, plain_settings):
            ensure_topics(settings)
        log(NAME, f"SDK: {args.events:,} log_prediction calls")
        sdk = run_sdk(broker.bootstrap, sdk_settings.topic_prefix, warm, calls)
        log(NAME, f"plain aiokafka: {args.events:,} sends")
        plain_topic = Topics(plain_settings).predictions
        plain = asyncio.run(run_plain(broker.bootstrap, plain_topic, warm, calls))
        for result, settings in ((sdk, sdk_settings), (plain, plain_settings)):
            messages, events = asyncio.run(delivered(broker.bootstrap,
                                                     Topics(settings).predictions))
            result["delivered_messages"] = messages
            result["delivered_events"] = events - WARMUP
            results.append(result)
    print(f"SDK producer: {args.events:,} prediction events ({args.models} models, 4 features "
          f"each) from one process into the embedded broker; seconds from the first call to "
          f"flush() returning; µs per call = the time of each log_prediction / send call")
    print(table(["producer", "events/s", "seconds", "µs/call mean", "p50", "p99", "max",
                 "delivered", "dropped"],
                [[r["label"], r["events_per_s"], r["seconds"], r["call"]["mean_us"],
                  r["call"]["p50_us"], r["call"]["p99_us"], r["call"]["max_us"],
                  r["delivered_events"], r["dropped"]] for r in results]))
    for r in results:
        print(f"  {r['label']}: the calls took {r['calls_seconds']:.2f} s, then flush() "
              f"{r['flush_seconds']:.2f} s; {r['delivered_messages']:,} messages on the topic "
              f"(with the {WARMUP} warm-up events)")
    lost = [r for r in results if r["delivered_events"] != r["events"]]
    for r in lost:
        print(f"  WARNING {r['label']}: {r['events'] - r['delivered_events']:,} events not "
              f"delivered (counted dropped: {r['dropped']:,})")
    path = write_results(NAME, {
        "config": {"events": args.events, "models": args.models, "warmup_events": WARMUP,
                   "sdk": "Telemetry defaults (max_buffer_events 100000, max_batch_events "
                          "1000, linger 50 ms)",
                   "plain": "AIOKafkaProducer(linger_ms=5), one message per event"},
        "method": ("one process; timed from the first call to flush() returning; per-call "
                   "times with perf_counter_ns around each call; delivered events counted "
                   "by reading the topic back"),
        "cases": results,
    }, args.output)
    print(f"(results in {display(path)})")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
