"""``python -m bench.crash``: what a ``kill -9`` does to the window counts, measured.

The stream: ``--events`` (default 200,000) prediction events of ``--models`` (10) models,
event time advancing steadily (``--events-per-second`` of event time, default 2,000) over
5 s windows, sent as SDK-style envelopes of 100 events keyed by model at ``--rate``
(default 20,000 events/s, so ~10 s) on the embedded broker once the worker(s) have their
partitions. At random points of the stream (at least 2 s apart) one worker is killed with
SIGKILL and restarted at once, ``--kills`` times (default 3).
``--workers 3`` runs a consumer group of three and kills one of them each time (the
rebalance case). ``--keys none`` sends the envelopes unkeyed, so every event crosses the
repartition topic. ``--shape`` says what producers send (the traffic-shape matrix: SDK
envelopes keyed by model, unkeyed envelopes of one model, unkeyed envelopes of all models,
unkeyed single events); ``--backlog`` writes the whole stream before the first worker starts
(then the kills come when a random share of the windows is out); ``--join N`` starts N more
workers a third of the way in. ``--stall S`` stops the chosen worker (SIGSTOP) for ``S``
seconds instead of killing it, then lets it go on (SIGCONT): past its group session timeout
the group gives its partitions to the others, and what it writes when it wakes must not
overwrite theirs (``checkpoint_generation_regressions``: checkpoint headers of a partition
written by an older group generation than one before them). The workers' peak RSS at the
end is reported too.

Afterwards every window summary on the windows topic is compared with the truth computed
from the generated events: per (model, window) emitted exactly once with the exact count,
missing, emitted with a wrong count (fewer: events lost; more: events counted twice), or
emitted more than once (and then whether with different content; ``problem_windows`` in
the results lists the first 20 of each with what differed). A run without kills
(``--kills 0``) is the control: every window exact. ``--slices N`` gives every event one
of N regions (``segment: {"region": ...}``) and the workers ``MLPULSE_SEGMENT_KEYS=region``:
each slice window is compared with its truth too. ``--skip N`` runs the workers with a
Faust consumer that drops N fetched repartitioned messages of each partition once, as Faust
does around a rebalance (``bench.skipping``; ``--skip-always``: every time, as if the log
lacked them). Writes ``bench/results/crash.json``
(``crash-workers3.json`` for ``--workers 3``; ``--shape``, ``--backlog``, ``--join`` and
``--stall`` add ``-<shape>``, ``-backlog``, ``-join<n>`` and ``-stall``; ``--slices`` and
``--skip`` add ``-slices<n>`` and ``-skip``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from bench.common import log, rss_bytes, run_in_workdir, table, topic_records, write_results
from bench.runner import SummaryReader
from mlpulse.slicing import slice_name

NAME = "crash"
WINDOW_S = 5.0
T0 = 1_700_000_000.0   # a multiple of 5 s


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--events-per-second", type=float, default=2000.0,
                        help="event-time rate of the stream")
    parser.add_argument("--rate", type=float, default=20_000.0,
                        help="events per second (wall clock) the stream is produced at")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--lateness", type=float, default=1.0,
                        help="MLPULSE_LATENESS_SECONDS of the workers (event time)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds without a new summary before the comparison")
    parser.add_argument("--keys", choices=["model", "none"], default="model",
                        help="message keys: the model (as the SDK does: events are applied "
                             "where they are read) or none (every event is repartitioned)")
    parser.add_argument("--shape", choices=SHAPES, default=None,
                        help="what producers send (overrides --keys): keyed-envelopes (the "
                             "SDK's), unkeyed-envelopes (one model each), unkeyed-mixed "
                             "(100 consecutive events of all models), unkeyed-singles (one "
                             "event per message, as most producers send)")
    parser.add_argument("--backlog", action="store_true",
                        help="write the whole stream before the first worker starts")
    parser.add_argument("--stall", type=float, default=0.0,
                        help="stop the chosen worker for this many seconds (SIGSTOP, then "
                             "SIGCONT) instead of killing it")
    parser.add_argument("--session", type=float, default=None,
                        help="MLPULSE_GROUP_SESSION_TIMEOUT_SECONDS of the workers")
    parser.add_argument("--join", type=int, default=0,
                        help="workers that join the group a third of the way in")
    parser.add_argument("--slices", type=int, default=0, metavar="N",
                        help="every event in one of N regions, the workers sliced by region: "
                             "each slice window is compared with its truth too")
    parser.add_argument("--skip", type=int, default=0, metavar="N",
                        help="workers whose Faust consumer drops N fetched repartitioned "
                             "messages of each partition once, unyielded (bench.skipping)")
    parser.add_argument("--skip-always", action="store_true",
                        help="with --skip: drop them every time, as if the log lacked them")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the worker logs here (default: a temporary directory)")
    return parser


Truth = dict[tuple[str, str, float], int]
"""(model, slice name ("" for the model version's window), window start) → its events."""
SHAPES = ("keyed-envelopes", "unkeyed-envelopes", "unkeyed-mixed", "unkeyed-singles")


def shape_of(args: argparse.Namespace) -> str:
    shape = getattr(args, "shape", None)
    if shape:
        return str(shape)
    return "keyed-envelopes" if getattr(args, "keys", "model") == "model" else "unkeyed-envelopes"


def stream(args: argparse.Namespace) -> tuple[list[tuple[str | None, bytes]], Truth]:
    """(key, message) in event-time order, and the true count per window."""
    rng = random.Random(args.seed)
    models = [f"model-{i}" for i in range(args.models)]
    truth: collections.Counter[tuple[str, str, float]] = collections.Counter()
    regions = getattr(args, "slices", 0)
    pending: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    out: list[tuple[str | None, bytes]] = []
    shape = shape_of(args)
    mixed: list[dict[str, Any]] = []
    for k in range(args.events):
        model = models[k % len(models)]
        t = T0 + k / args.events_per_second
        pending[model].append({"event_id": f"{model}-{k}", "timestamp": round(t, 6),
                               "model": model, "model_version": "v1",
                               "latency_ms": round(rng.lognormvariate(3, 0.4), 3),
                               "prediction": k % 2, "confidence": round(rng.random(), 4)})
        start = math.floor(t / WINDOW_S) * WINDOW_S
        truth[(model, "", start)] += 1
        if regions:
            region = f"r{rng.randrange(regions)}"
            pending[model][-1]["segment"] = {"region": region}
            truth[(model, slice_name(["region"], [region]), start)] += 1
        if shape == "unkeyed-singles":
            out.append((None, msgspec.json.encode(pending[model].pop())))
        elif shape == "unkeyed-mixed":
            mixed.append(pending[model].pop())
            if len(mixed) == 100:
                out.append((None, msgspec.json.encode(mixed)))
                mixed = []
        elif len(pending[model]) == 100:
            out.append((model if shape == "keyed-envelopes" else None,
                        msgspec.json.encode(pending[model])))
            pending[model] = []
    if mixed:
        out.append((None, msgspec.json.encode(mixed)))
    out += [(m if shape == "keyed-envelopes" else None, msgspec.json.encode(ev))
            for m, ev in pending.items() if ev]
    return out, dict(truth)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from bench.runner import _INGEST_ASSIGNED as INGEST_ASSIGNED
    from bench.runner import Subprocess, _signal_group, _wait_for, worker_env
    from bench.runner import _assigned_at as assigned_at
    from mlpulse.broker import EmbeddedBroker
    from mlpulse.config import Settings
    from mlpulse.topics import Topics, checkpoint_changelog, ensure_topics_async

    messages, truth = stream(args)
    rng = random.Random(args.seed + 1)
    tag = uuid.uuid4().hex[:8]
    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"crash-{tag}.",
                            group_id=f"crash-{tag}")
        topics = Topics(settings)
        await ensure_topics_async(settings)
        def start(name: str) -> Subprocess:
            env = worker_env(settings, workdir / name, MLPULSE_WINDOW_SECONDS=str(WINDOW_S),
                             MLPULSE_LATENESS_SECONDS=str(getattr(args, "lateness", 1.0)),
                             MLPULSE_IDLE_CHECK_SECONDS="0.25",
                             MLPULSE_SEGMENT_KEYS="region" if getattr(args, "slices", 0) else "",
                             **({"MLPULSE_GROUP_SESSION_TIMEOUT_SECONDS": str(args.session)}
                                if getattr(args, "session", None) else {}))
            skip = getattr(args, "skip", 0)
            command = ["bench.skipping", "worker"] if skip else ["mlpulse", "worker"]
            env |= {"BENCH_SKIP": str(skip),
                    "BENCH_SKIP_ALWAYS": "1" if getattr(args, "skip_always", False) else "0"}
            return Subprocess([sys.executable, "-m", *command], env, workdir / f"{name}.log")

        reader = Records(broker.bootstrap, topics.windows)
        await reader.start()
        summaries = reader.records
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5,
                                    max_request_size=4 * 1024 * 1024)
        await producer.start()
        backlog = getattr(args, "backlog", False)
        per_message = (args.events / len(messages)) / args.rate

        async def produce(paced: bool) -> None:
            started = time.monotonic()
            for n, (key, value) in enumerate(messages):
                delay = started + n * per_message - time.monotonic()
                if paced and delay > 0:
                    await asyncio.sleep(delay)
                await producer.send(topics.predictions, value,
                                    key=key.encode() if key is not None else None)
            await producer.flush()

        if backlog:   # the whole stream waits in the input topic
            await produce(paced=False)
        workers = [start(f"w{i}-0") for i in range(args.workers)]
        kills: list[dict[str, Any]] = []
        try:
            for w in workers:
                await _wait_for("partition assignment", lambda w=w: assigned_at(w.log_text()),
                                w, timeout_s=90)
            # the stream, paced (unless written already); kills at random points of it, at
            # least 2 s apart (of a backlog: when a random share of its windows is out);
            # workers joining a third of the way in
            duration_s = args.events / args.rate
            sending = asyncio.create_task(produce(paced=True)) if not backlog else None
            moments = sorted(rng.uniform(1.0, max(duration_s - 1.0, 1.0))
                             for _ in range(args.kills))
            for k in range(1, len(moments)):
                moments[k] = max(moments[k], moments[k - 1] + 2.0)
            if backlog:
                moments = sorted(rng.uniform(0.1, 0.8) for _ in range(args.kills))
            began = time.monotonic()
            joining = getattr(args, "join", 0)
            events: list[tuple[float, str, int]] = [(at, "kill", k)
                                                    for k, at in enumerate(moments)]
            if joining:
                events.append((1 / 3 if backlog else duration_s / 3, "join", 0))
            for at, what, k in sorted(events):
                if backlog:   # a share of the windows out, and the workers at work again
                    deadline = time.monotonic() + 120
                    while (len(summaries) < at * len(truth)
                           or not all(assigned_at(w.log_text()) for w in workers)):
                        if time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.05)
                else:
                    await asyncio.sleep(max(0.0, began + at - time.monotonic()))
                if what == "join":
                    for _ in range(joining):
                        workers.append(start(f"w{len(workers)}-0"))
                    log(NAME, f"{joining} worker(s) join at {time.monotonic() - began:.1f} s")
                    continue
                victim = rng.randrange(len(workers))
                stall_s = getattr(args, "stall", 0.0)
                if stall_s:   # a worker that stops and later goes on (a zombie)
                    _signal_group(workers[victim].process.pid, signal.SIGSTOP)
                    log(NAME, f"stop worker {victim} at {time.monotonic() - began:.1f} s for "
                              f"{stall_s:g} s ({k + 1}/{args.kills})")
                    await asyncio.sleep(stall_s)
                    _signal_group(workers[victim].process.pid, signal.SIGCONT)
                    kills.append({"at_s": round(time.monotonic() - began, 2), "worker": victim,
                                  "stalled_s": stall_s, "summaries_before": len(summaries)})
                    continue
                _signal_group(workers[victim].process.pid, signal.SIGKILL)
                workers[victim].process.wait(10)
                kills.append({"at_s": round(time.monotonic() - began, 2), "worker": victim,
                              "summaries_before": len(summaries)})
                log(NAME, f"kill -9 worker {victim} at {time.monotonic() - began:.1f} s, "
                          f"{len(summaries)} windows out ({k + 1}/{args.kills})")
                workers[victim].stop()
                workers[victim] = start(f"w{victim}-{k + 1}")
            if sending is not None:
                await sending
            # until the stream's last windows closed (idle close: window + lateness of wall
            # clock after their last event) and nothing new came
            # Then until every event is counted and nothing new came for ``settle`` s, or
            # nothing came for longer than an idle close takes (window + lateness of wall
            # clock after a window's last event, or after the restart that restored it):
            # counted from the last time a worker was given input to read, as groups that
            # lose members one after another can take tens of seconds to form again.
            ended = time.monotonic()
            idle_close_s = WINDOW_S + getattr(args, "lateness", 1.0) + 30.0
            settle_s = getattr(args, "settle", 30.0)
            deadline = ended + 300
            while time.monotonic() < deadline:
                reads = [assigned_at(w.log_text(), INGEST_ASSIGNED, last=True)
                         for w in workers]
                ago = [time.time() - at for at in reads if at is not None]
                last_read = time.monotonic() - min(ago) if ago else ended
                quiet_s = time.monotonic() - max(reader.last_new_s, ended, last_read)
                if reader.counted >= sum(truth.values()) and quiet_s >= settle_s:
                    break
                if quiet_s >= max(idle_close_s, settle_s):
                    break
                await asyncio.sleep(0.5)
            regressions, generations = await checkpoint_generation_regressions(
                broker.bootstrap, checkpoint_changelog(settings))
            alive = sum(w.alive for w in workers)
            # the most memory a worker of the end held at once (the kernel's high-water mark)
            peaks = [rss_bytes(w.process.pid, "VmHWM") for w in workers if w.alive]
            peak = max((p for p in peaks if p is not None), default=None)
        finally:
            await producer.stop()
            await reader.stop()
            for w in workers:
                w.stop()
    crashed = sum(path.read_text(errors="replace").count("Crashed reason")
                  for path in workdir.glob("*.log"))   # a worker service that gave up
    return {"kills": kills, "worker_crash_logs": crashed, "workers_alive_at_end": alive,
            "checkpoint_generation_regressions": regressions,
            "checkpoint_generations": generations,
            "worker_peak_rss_mb": round(peak / 2**20, 1) if peak else None,
            **compare(truth, summaries)}


async def checkpoint_generation_regressions(bootstrap: str, topic: str
                                            ) -> tuple[int, dict[int, str]]:
    """Checkpoint headers of the checkpoint topic written by an older group generation than
    an earlier header of the same partition (a worker that wrote after losing its
    assignment: a zombie), and per partition the generations of its headers in order
    (``"0x12 1x5"``: 12 headers of generation 0, then 5 of generation 1)."""
    from mlpulse.checkpoint import header_generation

    newest: dict[int, int] = {}
    runs: dict[int, list[list[int]]] = {}
    regressions = 0
    async for record in topic_records(bootstrap, topic):
        found = header_generation(record.key, record.value)
        if found is None:
            continue
        partition, generation = found
        if generation < newest.get(partition, 0):
            regressions += 1
        newest[partition] = max(generation, newest.get(partition, 0))
        seen = runs.setdefault(partition, [])
        if seen and seen[-1][0] == generation:
            seen[-1][1] += 1
        else:
            seen.append([generation, 1])
    return regressions, {p: " ".join(f"{g}x{n}" for g, n in seen)
                         for p, seen in sorted(runs.items())}


class Records(SummaryReader):
    """Every prediction window summary, as it comes; when the last record of any kind
    was read (monotonic clock). ``counted``: the events of the distinct windows (a window
    emitted again counts once), so that waiting for every event is not cut short by
    windows a killed worker's successor emitted again."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic, poll_ms=500)
        self.records: list[dict[str, Any]] = []
        self.windows: dict[tuple[str, str, str], int] = {}
        self.last_new_s = time.monotonic()

    @property
    def counted(self) -> int:
        return sum(self.windows.values())

    def _add(self, record: dict[str, Any], timestamp_ms: int, seen_s: float) -> None:
        self.last_new_s = time.monotonic()
        if record.get("kind") == "predictions":
            self.records.append(record)
            key = (record["model"], slice_of(record), record["window_start"])
            self.windows[key] = max(self.windows.get(key, 0), int(record["count"]))


def slice_of(record: dict[str, Any]) -> str:
    """A summary's slice name ("" for a model version's window).

    >>> slice_of({"segment": {"region": "r1"}}), slice_of({})
    ('region=r1', '')
    """
    segment = record.get("segment") or {}
    return slice_name(list(segment), list(segment.values()))


def compare(truth: Truth, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Each true window: exact once, missing, wrong count, or emitted more than once."""
    from datetime import datetime
    emitted: dict[tuple[str, str, float], list[dict[str, Any]]] = collections.defaultdict(list)
    late = 0
    for s in summaries:
        start = datetime.fromisoformat(s["window_start"].replace("Z", "+00:00")).timestamp()
        emitted[(s["model"], slice_of(s), start)].append(s)
        late += int(s.get("late_events", 0))
    exact = missing = under = over = repeated = differing = 0
    lost = doubled = 0
    problems: list[dict[str, Any]] = []
    for key, count in truth.items():
        got = emitted.get(key, [])
        if not got:
            missing += 1
            lost += count
            continue
        counts = [int(g["count"]) for g in got]
        if counts != [count] and len(problems) < 20:
            problems.append({"model": key[0], "slice": key[1], "window_start_s": key[2],
                             "true_count": count,
                             "emitted_counts": counts,
                             "late_events": [int(g.get("late_events", 0)) for g in got]})
        if len(got) > 1:
            repeated += 1
            fields = sorted({k for g in got[1:] for k in g if g.get(k) != got[0].get(k)})
            differing += bool(fields)
            if fields and len(problems) < 20:
                problems.append({"model": key[0], "slice": key[1], "window_start_s": key[2],
                                 "emitted_counts": counts, "fields_that_differ": fields,
                                 "values": [{k: g.get(k) for k in fields} for g in got]})
        if counts == [count]:
            exact += 1
        elif max(counts) < count:
            under += 1
            lost += count - max(counts)
        elif max(counts) > count:
            over += 1
            doubled += max(counts) - count
    extra = sorted(k for k in emitted if k not in truth)
    counted = sum(int(g["count"]) for v in emitted.values() for g in v)
    return {
        "windows_true": len(truth), "windows_exact_once": exact, "windows_missing": missing,
        "windows_undercounted": under, "windows_overcounted": over,
        "windows_emitted_more_than_once": repeated,
        "windows_emitted_with_different_content": differing,
        "windows_not_in_truth": len(extra),
        "events_true": sum(truth.values()), "events_counted": counted,
        "late_events_reported": late, "events_lost": lost, "events_counted_twice": doubled,
        "problem_windows": problems,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run_in_workdir(run, args, "mlpulse-crash-")
    report = {"config": {k: v for k, v in vars(args).items() if k not in ("output", "workdir")},
              "window_seconds": WINDOW_S, **result}
    name = NAME if args.workers == 1 else f"{NAME}-workers{args.workers}"
    if args.shape:
        name += f"-{args.shape}"
    elif args.keys == "none":
        name += "-unkeyed"
    if args.backlog:
        name += "-backlog"
    if args.join:
        name += f"-join{args.join}"
    if args.stall:
        name += "-stall"
    if args.slices:
        name += f"-slices{args.slices}"
    if args.skip:
        name += "-skip"
    path = write_results(name, report, args.output)
    rows = [[k, v] for k, v in result.items()
            if k not in ("kills", "problem_windows", "checkpoint_generations")]
    print(table(["measure", "value"], rows))
    print(f"(results in {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
