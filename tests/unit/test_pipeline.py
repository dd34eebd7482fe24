"""The Faust shell's rebalance callbacks (mlpulse.pipeline.Pipeline), without a broker."""

from __future__ import annotations

import asyncio
from typing import Any

from mlpulse.config import Settings
from mlpulse.pipeline import Pipeline


def _pipeline() -> tuple[Pipeline, list[Any]]:
    pipeline = Pipeline(Settings(kafka_bootstrap="127.0.0.1:1"))
    calls: list[Any] = []

    async def assign(partitions: Any, offsets: Any = None) -> None:
        calls.append(("ingest reads", sorted(partitions)))

    async def partitions(topic: str) -> int:
        return 4

    async def refetch(rebalance: int) -> None:
        calls.append("refetch")

    pipeline.ingest_consumer.assign = assign  # type: ignore[method-assign]
    pipeline.ingest_consumer.partitions = partitions  # type: ignore[method-assign]
    pipeline._refetch_after_resume = refetch  # type: ignore[method-assign]
    pipeline.engine.resume = lambda: calls.append("resume")  # type: ignore[method-assign]
    return pipeline, calls


def test_the_input_is_read_once_the_assignment_is_recovered():
    pipeline, calls = _pipeline()

    async def rebalance() -> None:
        await pipeline._on_revoked(None, set())
        await pipeline._on_assigned(None, set())
        await pipeline._on_rebalance_complete(None)
        await asyncio.sleep(0)

    asyncio.run(rebalance())
    assert calls == [("ingest reads", []), ("ingest reads", []), "resume", "refetch"]


def test_a_recovery_of_an_assignment_revoked_since_reads_nothing():
    # seen in a 3-worker kill test: the commit of a rejoin failed (IllegalGenerationError),
    # aiokafka synced a stale generation, assigned and revoked at once, and Faust still
    # completed the recovery of that assignment; the next assignment's recovery reads
    pipeline, calls = _pipeline()

    async def rebalances() -> list[Any]:
        await pipeline._on_revoked(None, set())
        await pipeline._on_assigned(None, set())
        await pipeline._on_revoked(None, set())   # a new rebalance began
        await pipeline._on_rebalance_complete(None)   # the revoked assignment's
        stale = list(calls)
        await pipeline._on_assigned(None, set())
        await pipeline._on_rebalance_complete(None)
        await asyncio.sleep(0)
        return stale

    stale = asyncio.run(rebalances())
    assert "resume" not in stale and "refetch" not in stale
    assert calls[-2:] == ["resume", "refetch"]
