"""Checkpoints: never torn, restored exactly."""

from __future__ import annotations

import os

import pytest

from mlpulse.checkpoint import (
    CHUNK_BYTES,
    Checkpoint,
    CheckpointWriter,
    checkpoint_records,
    next_slot,
    read_checkpoint,
)
from mlpulse.config import Settings
from mlpulse.sdk.simulator import Simulator
from mlpulse.store import MemoryStore
from mlpulse.testing import FakeClock, LocalPipeline

T0 = 1_700_000_000.0


def write(table: dict[bytes, bytes], partition: int, point: Checkpoint,
          keep: int | None = None) -> None:
    """Write a checkpoint as the worker does; ``keep``: crash after that many records."""
    records = checkpoint_records(partition, point, next_slot(table.get, partition))
    for key, value in records[:keep]:
        table[key] = value


def big(tag: bytes) -> Checkpoint:
    # incompressible, so it takes several chunks
    return Checkpoint(state=tag + os.urandom(3 * CHUNK_BYTES), inputs={"in:1": 5},
                      hops={"in:0": 1 << 20})


def test_a_large_checkpoint_is_chunked_and_read_back_whole():
    table: dict[bytes, bytes] = {}
    point = big(b"one")
    write(table, 1, point)
    assert len(table) > 3
    assert read_checkpoint(table.get, 1) == point
    assert read_checkpoint(table.get, 0) is None


@pytest.mark.parametrize("keep", [0, 1, 2, 3])
def test_a_crash_while_writing_leaves_the_previous_checkpoint(keep):
    table: dict[bytes, bytes] = {}
    first, second = big(b"first"), big(b"second")
    write(table, 2, first)
    write(table, 2, second, keep=keep)   # the header comes last: not written
    assert read_checkpoint(table.get, 2) == first
    write(table, 2, second)
    assert read_checkpoint(table.get, 2) == second
    write(table, 2, first)               # and the slots keep alternating
    assert read_checkpoint(table.get, 2) == first


def test_a_corrupt_chunk_is_an_error_not_a_wrong_state():
    table: dict[bytes, bytes] = {}
    write(table, 0, big(b"x"))
    key = next(k for k in table if k.startswith(b"c|0|0|"))
    table[key] = table[key][:-1] + bytes([table[key][-1] ^ 1])
    with pytest.raises(ValueError, match="partition 0"):
        read_checkpoint(table.get, 0)


def test_a_window_closed_again_after_a_restore_is_not_judged_twice():
    """The state of a partition is restored from a checkpoint taken before its windows
    closed, and the detectors' state is newer (a round stored it, and the worker died
    before that round's checkpoint was written): replaying the input closes them again, with
    the same summaries, and raises no alert a second time."""
    settings = Settings(window_seconds=10.0, lateness_seconds=0, max_future_skew_seconds=1e12,
                        detectors={"reference": {"windows": 1, "min_events": 10}},
                        rules=[{"name": "busy", "expr": "count > 150"}])
    sim = Simulator(n_models=2, seed=4)
    # window 1 is busy (~200 events per model), the others are not (~100)
    batches = [list(sim.events(T0 + w * 10.0, 10.0, rate_per_s=40 if w == 1 else 20))
               for w in range(4)]
    store, clock = MemoryStore(), FakeClock(T0)
    first = LocalPipeline(settings, clock=clock, store=store)
    for batch in batches[:2]:
        first.send_predictions(batch)
    states = {p: first.summarizer.partition_state(p) for p in range(4)}   # the checkpoint
    first.send_predictions(batches[2])
    first.send_predictions(batches[3])
    first.detect.save()                      # the round's detector state, stored
    busy = [(a.status, a.labels["model"]) for a in first.alerts if a.rule == "busy"]
    assert sorted(busy) == [("firing", "model-0"), ("firing", "model-1"),
                            ("resolved", "model-0"), ("resolved", "model-1")]
    restarted = LocalPipeline(settings, clock=clock, store=store)
    for partition, state in states.items():
        restarted.summarizer.restore_partition(partition, state)
    restarted.send_predictions(batches[2])   # replayed since the checkpoint
    restarted.send_predictions(batches[3])
    again = [w for w in restarted.windows]
    assert again and all(w in first.windows for w in again)
    assert [a for a in restarted.alerts if a.rule != "no_data"] == []


async def test_a_round_writes_chunks_then_headers_each_made_durable_before_done():
    """The order that makes a crash harmless: the chunks (and the label index's records,
    tombstones included), made durable, then the headers, made durable, then done."""
    writer = CheckpointWriter()
    point = Checkpoint(state=b"windows", inputs={"in:1": 5}, hops={})
    steps: list[str] = []
    round_ = writer.round({1: point}, lambda: steps.append("after headers"),
                          {1: [(b"l|1|w|p0", b"x"), (b"l|1|old|p0", None)]},
                          lambda: steps.append("written"))
    assert round_ is not None

    async def send(partition: int, key: bytes, value: bytes | None) -> None:
        steps.append(f"{partition} {key.decode()} {'tombstone' if value is None else 'value'}")

    async def flush() -> None:
        steps.append("flush")

    await round_.write(send, flush)
    assert steps == ["1 l|1|w|p0 value", "1 l|1|old|p0 tombstone", "1 c|1|0|0 value", "flush",
                     "1 c|1 value", "after headers", "flush", "written"]
    assert writer.round({1: point}) is None   # done: the next round compares with it
