"""The ceiling: raw aiokafka fetch + msgspec decode of a pre-filled topic, nothing else.

No consumer group (partitions assigned by hand, read from the earliest offset,
no commits), ``getmany`` with large ``max_records`` and fetch sizes, and every
message value decoded into :class:`mlpulse.events.PredictionEvent` structs with one
msgspec call (``list[PredictionEvent]`` for envelopes); the events are then
dropped. No Python streaming framework can do less per message and still look
at every event, so this bounds what mlpulse's consumer can reach on this broker.
Run as ``python -m bench.ceiling`` with its settings in environment variables:

``BENCH_CEILING_BOOTSTRAP``  broker, ``host:port``
``BENCH_CEILING_TOPIC``      topic to read (pre-filled)
``BENCH_CEILING_MODE``       ``envelopes`` (JSON arrays) or ``single`` (one event per message)
``BENCH_CEILING_MESSAGES``   messages to read before finishing
``BENCH_CEILING_RESULT``     JSON file written when done
``BENCH_CEILING_TIMEOUT``    seconds allowed for reading (default 300)

Timed from the manual partition assignment (just before the offset reset and the first
fetch) to the moment the last event is decoded.
Uses uvloop when it is installed, as the mlpulse worker does by default.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from mlpulse.events import PredictionEvent

__all__ = ["consume", "main"]

MAX_RECORDS = 10_000
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_BYTES = 16 * 1024 * 1024


def _counter(mode: str) -> Callable[[bytes], int]:
    """Decodes one message value; returns how many events it held."""
    if mode == "envelopes":
        many = msgspec.json.Decoder(list[PredictionEvent])
        return lambda value: len(many.decode(value))
    if mode == "single":
        one = msgspec.json.Decoder(PredictionEvent)

        def decode_one(value: bytes) -> int:
            one.decode(value)
            return 1

        return decode_one
    raise ValueError(f"mode must be envelopes or single, not {mode!r}")


async def consume(bootstrap: str, topic: str, mode: str, messages: int,
                  timeout_s: float = 300.0) -> dict[str, Any]:
    """Read ``messages`` messages of ``topic`` from the start, decoding every one."""
    decode = _counter(mode)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
    )
    started_at = time.time()
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise SystemExit(f"topic {topic} not found")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        assigned_at = time.time()  # the timed span starts here: offset reset, fetches, decode
        cpu_assigned = time.process_time()
        await consumer.seek_to_beginning(*tps)
        seen = events = 0
        first_at: float | None = None
        deadline = time.monotonic() + timeout_s
        fetch_at = time.time()
        while seen < messages:
            if time.monotonic() > deadline:
                raise SystemExit(f"read {seen} of {messages} messages in {timeout_s:g} s")
            batch = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            for records in batch.values():
                if records and first_at is None:
                    first_at = time.time()
                for record in records:
                    events += decode(record.value)  # type: ignore[arg-type]
                seen += len(records)
        done_at = time.time()
        return {"messages": seen, "events": events, "started_at": started_at,
                "assigned_at": assigned_at, "fetch_at": fetch_at, "first_at": first_at,
                "done_at": done_at, "cpu_assigned": cpu_assigned,
                "cpu_done": time.process_time()}
    finally:
        await consumer.stop()


def main() -> None:
    env = os.environ
    coroutine = consume(env["BENCH_CEILING_BOOTSTRAP"], env["BENCH_CEILING_TOPIC"],
                        env["BENCH_CEILING_MODE"], int(env["BENCH_CEILING_MESSAGES"]),
                        float(env.get("BENCH_CEILING_TIMEOUT", "300")))
    try:
        import uvloop
    except ImportError:
        record = asyncio.run(coroutine)
        record["event_loop"] = "asyncio"
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            record = runner.run(coroutine)
        record["event_loop"] = "uvloop"
    result = Path(env["BENCH_CEILING_RESULT"])
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(result)


if __name__ == "__main__":
    main()
