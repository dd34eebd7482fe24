"""A fast, seeded generator of hostile input messages, for fuzzing at volume.

Hypothesis explores the structure of events (tests/unit/test_codec_fuzz.py) at ~1 ms per
example; this generator makes ~100k messages a second, so the suite can push ≥ 100k
inputs through the whole pipeline in seconds (``make fuzz`` pushes millions). Each message
is one of the kinds below, chosen at random; every kind is generated in every run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

NOW_S = 1_700_000_000.0

FIELDS = ("event_id", "timestamp", "model", "model_version", "latency_ms", "status",
          "error_type", "prediction", "confidence", "features", "tokens_in", "tokens_out",
          "cost_usd", "trace_id", "segment", "cache_hit")


def _event(rng: random.Random, model: str | None = None) -> dict[str, Any]:
    """A plausible event: valid most of the time, with the odd wrong type or value."""
    event: dict[str, Any] = {
        "event_id": f"e{rng.getrandbits(40):x}",
        "timestamp": NOW_S - rng.uniform(0, 600),
        "model": model or rng.choice(("fraud", "churn", "rank.v2", "llm/chat")),
        "latency_ms": rng.lognormvariate(3, 0.5),
    }
    if rng.random() < 0.7:
        event["model_version"] = rng.choice(("v1", "v2"))
    if rng.random() < 0.6:
        event["prediction"] = rng.choice((0, 1, 0.5, "cat", "dog", True, None))
    if rng.random() < 0.5:
        event["confidence"] = rng.random()
    if rng.random() < 0.6:
        event["features"] = {f"f{i}": rng.choice((rng.gauss(0, 1), "a", "b", None, 3))
                             for i in range(rng.randrange(0, 12))}
    if rng.random() < 0.1:
        event["status"], event["error_type"] = "error", "Timeout"
    if rng.random() < 0.1:
        event["tokens_in"], event["tokens_out"] = rng.randrange(5000), rng.randrange(5000)
        event["cost_usd"] = rng.random() / 100
    if rng.random() < 0.05:   # a wrong type or value somewhere
        name = rng.choice(FIELDS)
        event[name] = rng.choice(([], {}, "x", -1, 10**30, "", None, True, 1e308))
    return event


def _valid(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return json.dumps(_event(rng)).encode()
    return json.dumps([_event(rng) for _ in range(rng.randrange(0, 20))]).encode()


def _mutated(rng: random.Random) -> bytes:
    """A valid message with bytes flipped, inserted, removed or the tail cut off."""
    data = bytearray(_valid(rng))
    for _ in range(rng.randrange(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        action = rng.randrange(4)
        if action == 0:
            data[at] = rng.randrange(256)
        elif action == 1:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        elif action == 2:
            del data[at:at + rng.randrange(1, 6)]
        else:
            del data[at:]
    return bytes(data)


def _deeply_nested(rng: random.Random) -> bytes:
    depth = rng.choice((50, 500, 5000, 100_000))
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"event_id":"n","timestamp":1,"model":"m","features":' + inner + b"}"


def _huge_string(rng: random.Random) -> bytes:
    size = rng.choice((10_000, 300_000, 2_000_000))
    field = rng.choice(("event_id", "model", "error_type", "prediction"))
    event = _event(rng)
    event[field] = "x" * size
    return json.dumps(event).encode()


def _many_features(rng: random.Random) -> bytes:
    event = _event(rng)
    event["features"] = {f"f{i}": float(i) for i in range(rng.choice((999, 1000, 1001, 5000)))}
    return json.dumps(event).encode()


def _non_finite(rng: random.Random) -> bytes:
    literal = rng.choice(("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "nan"))
    field = rng.choice(("latency_ms", "confidence", "timestamp", "cost_usd", "prediction"))
    return (b'{"event_id":"x","timestamp":1700000000,"model":"m","' + field.encode()
            + b'":' + literal.encode() + b"}")


def _duplicate_keys(rng: random.Random) -> bytes:
    field = rng.choice(("model", "timestamp", "event_id", "latency_ms"))
    first, second = json.dumps(_event(rng)[field]), json.dumps(rng.choice(("m2", 5, None, [])))
    return (b'{"event_id":"d","timestamp":1700000000,"model":"m","' + field.encode() + b'":'
            + first.encode() + b',"' + field.encode() + b'":' + second.encode() + b"}")


def _invalid_utf8(rng: random.Random) -> bytes:
    bad = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"))
    return b'{"event_id":"u","timestamp":1700000000,"model":"m' + bad + b'"}'


def _far_timestamp(rng: random.Random) -> bytes:
    event = _event(rng)
    event["timestamp"] = rng.choice((0, -1, -1e12, 1e-3, 1e15, 9e18, NOW_S + 301,
                                     NOW_S + 10**7, "9999-12-31T23:59:59Z",
                                     "1970-01-01T00:00:00Z", NOW_S * 1000))
    return json.dumps(event).encode()


def _new_model_name(rng: random.Random) -> bytes:
    return json.dumps(_event(rng, model=f"flood-{rng.getrandbits(48):x}")).encode()


def _random_json(rng: random.Random) -> bytes:
    def value(depth: int) -> Any:
        kind = rng.randrange(7 if depth < 4 else 4)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice((True, False, 0, -1, 2**64, 1.5, -0.0))
        if kind == 2:
            return "".join(chr(rng.randrange(0x10FFFF)) for _ in range(rng.randrange(8))
                           ).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        if kind == 3:
            return rng.choice(FIELDS)
        if kind in (4, 5):
            return {rng.choice(FIELDS): value(depth + 1) for _ in range(rng.randrange(6))}
        return [value(depth + 1) for _ in range(rng.randrange(4))]
    return json.dumps(value(0)).encode()


def _random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))


KINDS: dict[str, tuple[float, Callable[[random.Random], bytes]]] = {
    "valid": (0.30, _valid),
    "mutated": (0.30, _mutated),
    "random_json": (0.10, _random_json),
    "random_bytes": (0.05, _random_bytes),
    "new_model_name": (0.10, _new_model_name),
    "far_timestamp": (0.05, _far_timestamp),
    "non_finite": (0.03, _non_finite),
    "duplicate_keys": (0.03, _duplicate_keys),
    "invalid_utf8": (0.02, _invalid_utf8),
    "many_features": (0.005, _many_features),
    "deeply_nested": (0.003, _deeply_nested),
    "huge_string": (0.002, _huge_string),
}


def messages(n: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``n`` (kind, message) pairs; the first ones are one of each kind."""
    rng = random.Random(seed)
    names = list(KINDS)
    weights = [KINDS[k][0] for k in names]
    for i in range(n):
        kind = names[i] if i < len(names) else rng.choices(names, weights)[0]
        yield kind, KINDS[kind][1](rng)
