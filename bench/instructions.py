"""``python -m bench.instructions``: what slices cost in instructions executed, a measure the
machine's noise does not move.

On this shared machine the time of a run drifts by tens of percent, and the sliced engine's
more than the plain one's (it runs more code and touches more data per event, so it loses
more to cache misses when the neighbours are busy): the sliced / not sliced ratio of
``make bench`` moves with the hour. The instructions a run executes do not. This counts them
(valgrind's callgrind, ``I refs``) for the worker's engine in process
(:class:`mlpulse.testing.LocalPipeline`: envelopes of 500 events keyed by model, read where
they belong, as on the worker) on the stream of ``python -m bench`` (10 models, the
simulator's events, every event with a ``region`` and a ``tier`` of 5 values; 10 s windows:
1,000 events per model-window), not sliced and sliced by ``--slices``. Each case also runs to
the end of its warm-up only; the difference is the stream's. ``--baseline DIR``: the same
cases of another checkout: an A/B that reads a change of 0.1 %. Instructions are not time
(a cache miss costs many), so this explains and compares; the goal is measured by
``make bench``.

Needs valgrind (Debian package ``valgrind``); a case runs ~50x slower than natively, two at
a time. Writes ``bench/results/instructions.json``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from .common import git_commit, host_info, write_results
from .workload import add_segments, envelope_messages, generate

WARM_ENVELOPES = 20
"""Envelopes each case runs before the counted stream (imports, first windows)."""
CHILD_ENV = {"PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
"""What makes a count repeat to the instruction: string hashes fixed, and numpy's BLAS on
the calling thread, as the worker keeps it (threads waiting for work spin: counts of the
same code were up to 0.8 % apart with them, 1 instruction an event apart without)."""


def instructions(valgrind_output: str) -> int:
    """The instructions a run executed, from valgrind's summary.

    >>> instructions("==1== Collected : 12\\n==1== I   refs:      8,596,482,988\\n")
    8596482988
    """
    found = re.search(r"I\s+refs:\s+([\d,]+)", valgrind_output)
    if found is None:
        raise ValueError(f"no instruction count in valgrind's output: {valgrind_output[-500:]}")
    return int(found.group(1).replace(",", ""))


def stream(events: int, keys: list[str]) -> list[tuple[bytes, bytes]]:
    """(key, envelope) of ``python -m bench``'s stream: ``events`` events of 10 models at
    1,000 a second, each key of ``keys`` with 5 values, envelopes of 500 keyed by model."""
    raw = generate(events, n_models=10, rate_per_s=1000)
    add_segments(raw, keys)
    return [(key or b"", value) for key, value in envelope_messages(raw, 500)]


def _child(args: argparse.Namespace) -> int:
    """Run the engine on the stream file (this process is the one valgrind counts)."""
    sys.path.insert(0, args.root)   # each checkout's source directory, imported alike
    config = importlib.import_module("app.config")
    testing = importlib.import_module("app.testing")
    messages = msgspec.msgpack.decode(Path(args.stream).read_bytes())

    def run(envelopes: list[list[bytes]]) -> None:
        pipe = testing.LocalPipeline(
            config.Settings(max_future_skew_seconds=1e12), window_seconds=args.window_seconds,
            lateness_seconds=10.0, segment_keys=args.keys)
        home = pipe.engine._home
        for key, value in envelopes:
            pipe.send("predictions", value, key=key, partition=home(key))
            pipe.windows.clear()
            pipe.alerts.clear()

    run(messages[:WARM_ENVELOPES])
    if not args.warm_only:
        run(messages)
    return 0


def _count(stream_path: Path, keys: str, window_s: float, root: str, warm_only: bool) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, "-m", "bench.instructions", "--child", "--stream",
               str(stream_path), "--keys", keys, "--window-seconds", str(window_s),
               "--root", root]
    if warm_only:
        command.append("--warm-only")
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parent.parent,
                          env={**os.environ, **CHILD_ENV})
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return instructions(done.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=150_000,
                        help="events counted (default 150,000: 15 windows per model)")
    parser.add_argument("--slices", default="region,tier", metavar="KEYS")
    parser.add_argument("--window-seconds", type=float, default=10.0)
    parser.add_argument("--baseline", metavar="DIR", help="another checkout, counted too")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--keys", default="", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--warm-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    if shutil.which("valgrind") is None:
        parser.error("needs valgrind (Debian package valgrind: apt-get install valgrind)")
    keys = [k.strip() for k in args.slices.split(",") if k.strip()]
    checkouts = {"this": Path(__file__).resolve().parent.parent}
    if args.baseline:
        checkouts["baseline"] = Path(args.baseline).resolve()
    with tempfile.TemporaryDirectory(prefix="mlpulse-instructions-") as tmp:
        # each checkout's app/ seen through a directory of the same name's length: where
        # the code lies then changes no address, and no count (dicts and sets of objects
        # iterate in the order of their addresses)
        roots = {}
        for n, (checkout, source) in enumerate(checkouts.items()):
            (Path(tmp) / str(n)).mkdir()
            (Path(tmp) / str(n) / "app").symlink_to(source / "app")
            roots[checkout] = str(Path(tmp) / str(n))
        path = Path(tmp) / "stream.msgpack"
        path.write_bytes(msgspec.msgpack.encode(stream(args.events, keys)))
        runs = [(checkout, case, case_keys, warm)
                for checkout in roots for case, case_keys in (("plain", ""),
                                                              ("sliced", args.slices))
                for warm in (True, False)]
        with ThreadPoolExecutor(max_workers=2) as pool:   # (two cores)
            counted = list(pool.map(lambda run: _count(path, run[2], args.window_seconds,
                                                       roots[run[0]], run[3]), runs))
    total = dict(zip(((c, case, warm) for c, case, _, warm in runs), counted, strict=True))
    report: dict[str, Any] = {
        "host": host_info(), "git_commit": git_commit(),
        "config": {"events": args.events, "slices": args.slices,
                   "window_seconds": args.window_seconds, "models": 10,
                   "events_per_model_window": round(1000 * args.window_seconds / 10),
                   "baseline": args.baseline},
        "method": "valgrind --tool=callgrind, I refs of each case run to the end less the "
                  "same run to the end of its warm-up only",
        "checkouts": {}}
    for checkout in roots:
        per_event = {case: (total[(checkout, case, False)] - total[(checkout, case, True)])
                     / args.events for case in ("plain", "sliced")}
        report["checkouts"][checkout] = {
            "instructions_per_event": {k: round(v) for k, v in per_event.items()},
            "plain_over_sliced": round(per_event["plain"] / per_event["sliced"], 3)}
        print(f"{checkout}: {per_event['plain']:,.0f} instructions an event not sliced, "
              f"{per_event['sliced']:,.0f} sliced by {args.slices}: plain / sliced "
              f"{per_event['plain'] / per_event['sliced']:.3f}")
    if args.baseline:
        this, base = (report["checkouts"][c]["instructions_per_event"]
                      for c in ("this", "baseline"))
        report["this_over_baseline"] = {case: round(this[case] / base[case], 4)
                                        for case in this}
        print(f"this / baseline: {report['this_over_baseline']}")
    print(f"(results in {write_results('instructions', report, args.output)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
