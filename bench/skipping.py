"""``python -m bench.skipping worker``: a worker whose Faust consumer skips repartitioned
messages, as Faust does around a rebalance; ``bench.crash --skip N`` runs its workers so.

Faust's consumer can hand on a message of a partition past others it fetched and never
yielded: a fetch abandoned when its flow stops, messages its streams drop as fetched in an
older generation. Its read position is already past them, so they are not fetched again,
and it takes the jump in offsets as acknowledged (docs/reliability.md). That happens rarely
and only under load; this makes it happen every time: the first time each partition of the
repartitioned predictions topic brings offsets ``SKIP_FROM`` to ``SKIP_FROM + N - 1``
(``BENCH_SKIP=N`` in the environment), they are dropped unyielded. A worker that applies
what Faust yields loses their events; mlpulse must read them again. With
``BENCH_SKIP_ALWAYS=1`` they are dropped every time, as if the log lacked them: the worker
must say so and read on, not stay stuck on them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

SKIP_FROM = 10
"""The first offset skipped in each partition (a few messages in: the flow has begun)."""


def install(count: int, topic_suffix: str = "predictions.by-model", always: bool = False
            ) -> None:
    """Make every Faust consumer of this process drop, once (``always``: every time),
    offsets ``SKIP_FROM`` to ``SKIP_FROM + count - 1`` of each partition of topics named
    ``*topic_suffix``."""
    from faust.transport.consumer import Consumer

    fetch = Consumer.getmany
    skipped: dict[Any, set[int]] = {}

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        async for tp, message in fetch(self, timeout):
            offset = message.offset
            if tp.topic.endswith(topic_suffix) and SKIP_FROM <= offset < SKIP_FROM + count:
                seen = skipped.setdefault(tp, set())
                if always or offset not in seen:
                    seen.add(offset)
                    continue
            yield tp, message

    Consumer.getmany = getmany  # type: ignore[assignment,method-assign]


def main() -> int:
    from mlpulse.cli import main as mlpulse

    install(int(os.environ.get("BENCH_SKIP", "10")),
            always=os.environ.get("BENCH_SKIP_ALWAYS") == "1")
    return mlpulse()


if __name__ == "__main__":
    raise SystemExit(main())
