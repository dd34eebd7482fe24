"""Benchmark input: simulated prediction events, as envelopes or single messages.

Every model's stream ends with one *sentinel* event stamped an hour after the
model's last event. Its watermark closes all the model's earlier windows, so
the worker publishes a summary for every benchmark event without waiting for
the wall-clock idle close; the sentinel's own window is not counted.

>>> events = generate(20, n_models=2, rate_per_s=10)
>>> messages = envelope_messages(events, size=4)
>>> [(key, len(msgspec.json.decode(value))) for key, value in messages]
... # doctest: +NORMALIZE_WHITESPACE
[(b'model-0', 4), (b'model-1', 4), (b'model-0', 4), (b'model-1', 4),
 (b'model-0', 2), (b'model-1', 2), (b'model-0', 1), (b'model-1', 1)]
>>> len(single_messages(events))
22
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

__all__ = [
    "SENTINEL_DELAY_S",
    "T0",
    "envelope_messages",
    "generate",
    "produce",
    "sentinels",
    "single_messages",
]

T0 = 1_700_000_000.0
"""Event time of the first event (a multiple of 60 s: windows start aligned)."""
SENTINEL_DELAY_S = 3600.0

Event = dict[str, Any]
Message = tuple[bytes | None, bytes]  # (key, value)


def generate(n_events: int, n_models: int = 10, rate_per_s: float = 1000.0,
             seed: int = 1) -> list[Event]:
    """``n_events`` simulated prediction events, round-robin over the models, in time order."""
    from mlpulse.sdk.simulator import Simulator

    simulator = Simulator(n_models=n_models, seed=seed)
    return list(simulator.events(start_s=T0, duration_s=n_events / rate_per_s,
                                 rate_per_s=rate_per_s))


def add_features(events: Sequence[Event], count: int, seed: int = 2) -> None:
    """Add ``count`` numeric features ``x0``, ``x1``, … (standard normal, 4 digits) to every
    event's ``features``.

    >>> events = [{"features": {"amount": 1.0}}, {}]
    >>> add_features(events, 2)
    >>> [sorted(e["features"]) for e in events]
    [['amount', 'x0', 'x1'], ['x0', 'x1']]
    """
    rng = np.random.default_rng(seed)
    values = np.round(rng.standard_normal((len(events), count)), 4).tolist()
    names = [f"x{i}" for i in range(count)]
    for event, row in zip(events, values, strict=True):
        event.setdefault("features", {}).update(zip(names, row, strict=True))


def add_segments(events: Sequence[Event], keys: Sequence[str]) -> None:
    """Give every event a ``segment`` with each of ``keys``, of 5 values each, the keys'
    values independent of each other (what ``--slices`` slices by).

    >>> events = [{} for _ in range(3)]
    >>> add_segments(events, ["region", "tier"])
    >>> [e["segment"] for e in events]   # doctest: +NORMALIZE_WHITESPACE
    [{'region': 'region0', 'tier': 'tier0'}, {'region': 'region0', 'tier': 'tier0'},
     {'region': 'region0', 'tier': 'tier1'}]
    """
    for i, event in enumerate(events):
        event["segment"] = {k: f"{k}{(i * (3 + j) // 7) % 5}" for j, k in enumerate(keys)}


def sentinels(events: Sequence[Event]) -> list[Event]:
    """One event per model, ``SENTINEL_DELAY_S`` after the model's last event."""
    last: dict[str, Event] = {}
    for event in events:
        last[event["model"]] = event
    out = []
    for model, event in last.items():
        out.append({**event, "event_id": f"{model}-sentinel",
                    "timestamp": event["timestamp"] + SENTINEL_DELAY_S})
    return out


def envelope_messages(events: Sequence[Event], size: int) -> list[Message]:
    """Envelopes of up to ``size`` events of one model, keyed by model, then the sentinels.

    Envelopes are interleaved across models in time order, as producers
    batching in real time would send them.
    """
    by_model: dict[str, list[Event]] = {}
    for event in events:
        by_model.setdefault(event["model"], []).append(event)
    chunks = {model: [mine[i:i + size] for i in range(0, len(mine), size)]
              for model, mine in by_model.items()}
    out: list[Message] = []
    for index in range(max((len(c) for c in chunks.values()), default=0)):
        for model, model_chunks in chunks.items():
            if index < len(model_chunks):
                out.append((model.encode(), msgspec.json.encode(model_chunks[index])))
    out.extend((s["model"].encode(), msgspec.json.encode([s])) for s in sentinels(events))
    return out


def unkeyed(events: Sequence[Event], size: int, partitions: int = 4) -> list[Message]:
    """The same events as producers that key nothing send them: envelopes of ``size``
    consecutive events of every model (``size`` 1: one event per message), no key; then
    the sentinels, once per input partition (keyed so that each partition gets them: with no
    key, a partition might get none and wait out its idle time)."""
    if size == 1:
        out: list[Message] = [(None, msgspec.json.encode(e)) for e in events]
    else:
        out = [(None, msgspec.json.encode(list(events[i:i + size])))
               for i in range(0, len(events), size)]
    keys: dict[int, bytes] = {}
    n = 0
    while len(keys) < partitions:
        key = f"sentinels-{n}".encode()
        keys.setdefault((murmur2(key) & 0x7FFFFFFF) % partitions, key)
        n += 1
    last = msgspec.json.encode(sentinels(events))
    out.extend((key, last) for _, key in sorted(keys.items()))
    return out


def single_messages(events: Sequence[Event]) -> list[Message]:
    """One message per event, keyed by model, in time order, then the sentinels."""
    return [(e["model"].encode(), msgspec.json.encode(e))
            for e in [*events, *sentinels(events)]]


async def produce(bootstrap: str, topic: str, messages: Sequence[Message]) -> None:
    """Send ``messages`` to ``topic`` and wait until the broker acknowledged all of them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024,
                                linger_ms=20, acks=1)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
