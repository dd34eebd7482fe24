"""The peer: a naive Faust agent counting JSON events per model.

One JSON event per message, raw serializers (no pickle), ``json.loads`` and a
dict counter per model: about the least a Faust worker can do per event. Run as
``python -m bench.naive_agent`` with its settings in environment variables:

``BENCH_NAIVE_BOOTSTRAP``  broker, ``host:port``
``BENCH_NAIVE_TOPIC``      topic to count (pre-filled)
``BENCH_NAIVE_GROUP``      Faust app id / consumer group
``BENCH_NAIVE_EXPECTED``   messages to count before finishing
``BENCH_NAIVE_RESULT``     JSON file written when done
``BENCH_NAIVE_WEB_PORT``   port of Faust's web server
``BENCH_NAIVE_DATA_DIR``   Faust's data directory

When it has counted ``BENCH_NAIVE_EXPECTED`` messages it writes the result
(wall-clock times of partition assignment, first and last message, the counts)
and exits at once with status 0.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import faust

__all__ = ["build_app", "main"]


def build_app(*, bootstrap: str, topic: str, group: str, expected: int, result: Path,
              web_port: int, data_dir: str) -> faust.App:
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        broker_session_timeout=10,
        broker_rebalance_timeout=10,
        topic_disable_leader=True,
        web_port=web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        datadir=data_dir,
        autodiscover=False,
        store="memory://",
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    marks: dict[str, float] = {}
    counts: Counter[str] = Counter()

    async def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned = args[0] if args else kwargs.get("assigned")  # Faust sends it positionally
        if assigned and "assigned_at" not in marks:
            marks["assigned_at"] = time.time()
            marks["cpu_assigned"] = time.process_time()

    app.on_partitions_assigned.connect(cast(Any, on_assigned))  # mode's handler type is too strict

    @app.agent(source, name="naive_count")
    async def naive_count(stream: Any) -> None:
        total = 0
        async for value in stream:
            if not total:
                marks["first_at"] = time.time()
            event = json.loads(value)
            counts[event["model"]] += 1
            total += 1
            if total >= expected:
                record = {"total": total, "done_at": time.time(), "cpu_done": time.process_time(),
                          "counts": dict(counts), **marks}
                tmp = result.with_suffix(".tmp")
                tmp.write_text(json.dumps(record))
                tmp.replace(result)
                os._exit(0)

    return app


def main() -> None:
    from faust.worker import Worker

    env = os.environ
    app = build_app(
        bootstrap=env["BENCH_NAIVE_BOOTSTRAP"],
        topic=env["BENCH_NAIVE_TOPIC"],
        group=env["BENCH_NAIVE_GROUP"],
        expected=int(env["BENCH_NAIVE_EXPECTED"]),
        result=Path(env["BENCH_NAIVE_RESULT"]),
        web_port=int(env["BENCH_NAIVE_WEB_PORT"]),
        data_dir=env["BENCH_NAIVE_DATA_DIR"],
    )
    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
