"""``python -m bench.sending``: what handing a message to the producer costs, through Faust's
``Topic.send`` (what the worker did) and straight to aiokafka's producer (what it does:
``pipeline.Pipeline._send``).

The same 20,000 messages of 1,500 bytes (a window summary's size), keyed by 10 models, to
a topic of 4 partitions on the embedded broker, in turn through each path, each round
flushed; CPU time of the process per message (the producer's own sending included), the
best of ``--repeat`` rounds. Writes ``bench/results/sending.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from mlpulse.broker import EmbeddedBroker
from mlpulse.pipeline import KeyPartitioner

from .common import write_results

MESSAGES = 20_000
VALUE = b"x" * 1500


async def measure(bootstrap: str, repeat: int) -> dict[str, float]:
    """Best CPU µs per message of each path."""
    import faust
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("sending", 4, 1)])
    finally:
        await admin.close()
    app = faust.App("bench-sending", broker=f"kafka://{bootstrap}", producer_linger=0.005,
                    producer_partitioner=KeyPartitioner(),
                    producer_max_request_size=1024 * 1024,
                    producer_max_batch_size=1024 * 1024)
    topic = app.topic("sending", key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")
    producer: Any = app.producer
    await producer.maybe_start()
    keys = [f"model-{i % 10}".encode() for i in range(MESSAGES)]
    best: dict[str, float] = {}
    try:
        for _ in range(repeat):
            started = time.process_time()
            for key in keys:
                await topic.send(key=key, value=VALUE)
            await producer.flush()
            best["faust_topic_send"] = min(best.get("faust_topic_send", 1e9),
                                           time.process_time() - started)
            send = producer._ensure_producer().send
            started = time.process_time()
            for key in keys:
                await send("sending", VALUE, key=key)
            await producer.flush()
            best["aiokafka_send"] = min(best.get("aiokafka_send", 1e9),
                                        time.process_time() - started)
    finally:
        await producer.stop()
    return {name: round(seconds / MESSAGES * 1e6, 1) for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sending", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with EmbeddedBroker() as broker:
        us = asyncio.run(measure(broker.bootstrap, args.repeat))
    for name, value in us.items():
        print(f"{name:<18} {value:6.1f} µs of CPU a message")
    report = {"messages": MESSAGES, "value_bytes": len(VALUE), "cpu_us_per_message": us}
    print(f"(results in {write_results('sending', report)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
