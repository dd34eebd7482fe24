"""``python -m bench``: mlpulse worker throughput vs a naive Faust agent, in one run.

Cases (each on its own pre-filled topic, worker started after the fill):

1. mlpulse worker, batch envelopes of ``--envelope-size`` events keyed by model
   (``--events`` events, default 200,000), every detector on;
2. the same with detectors off (aggregation only), for the cost of detection;
3. mlpulse worker, one event per message (``--single-events``, default 30,000);
4. naive Faust agent (:mod:`bench.naive_agent`) on the topic of case 3.

Prints a table and the ratios mlpulse / naive and detectors on / off; writes
``bench/results/latest.json``. The detection-quality benchmark is
``python -m bench.detection`` (``make bench`` runs both).
``--quick`` divides the sizes by 10; ``--repeat N`` reports the fastest of N runs per case
(the machine is small and shared: single runs vary by ±30 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.runner import ROOT, CaseFailed, CaseResult, run_mlpulse, run_naive
from bench.workload import envelope_messages, generate, sentinels, single_messages

DEFAULT_EVENTS = 200_000
DEFAULT_SINGLE_EVENTS = 30_000
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
NO_DETECTORS = {"enabled": False, "logs": {"enabled": False}}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=None,
                        help=f"events sent as envelopes (default {DEFAULT_EVENTS})")
    parser.add_argument("--single-events", type=int, default=None,
                        help=f"events sent one per message (default {DEFAULT_SINGLE_EVENTS})")
    parser.add_argument("--quick", action="store_true", help="divide the sizes by 10")
    parser.add_argument("--envelope-size", type=int, default=500, help="events per envelope")
    parser.add_argument("--models", type=int, default=10, help="simulated models")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="simulated events per second of event time (sets windows per model)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a case may take once its worker owns its partitions")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    parser.add_argument("--keep-logs", type=Path, default=None, metavar="DIR",
                        help="copy the workers' logs to DIR")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each case N times and report the fastest run")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run the mlpulse workers under cProfile, writing DIR/*.prof "
                             "(slows them down: numbers are not comparable)")
    return parser


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, bootstrap: str, broker_pid: int | None,
               workdir: Path) -> list[CaseResult]:
    n_envelope, n_single = args.events, args.single_events
    started = time.perf_counter()
    events = generate(max(n_envelope, n_single), n_models=args.models, rate_per_s=args.rate)
    _log(f"generated {len(events)} events in {time.perf_counter() - started:.1f} s")
    results: list[CaseResult] = []

    def cutoff(subset: Sequence[dict[str, Any]]) -> float:
        first_sentinel = min(s["timestamp"] for s in sentinels(subset))
        return math.floor(first_sentinel / 60.0) * 60.0 - 60.0

    envelope_events = events[:n_envelope]
    messages = envelope_messages(envelope_events, args.envelope_size)
    case = f"mlpulse, envelopes of {args.envelope_size}"
    _log(f"{case}: {len(envelope_events)} events in {len(messages)} messages "
         f"({sum(len(v) for _, v in messages) / 1e6:.1f} MB)")

    async def envelope_run() -> CaseResult:
        return await run_mlpulse(
            bootstrap, case, messages=messages, expected_events=len(envelope_events),
            cutoff_s=cutoff(envelope_events), workdir=workdir, timeout_s=args.timeout,
            profile_dir=args.profile, broker_pid=broker_pid)

    results.append(await _best_of(args.repeat, case, envelope_run))

    plain_case = "mlpulse, envelopes, no detectors"

    async def plain_run() -> CaseResult:
        return await run_mlpulse(
            bootstrap, plain_case, messages=messages, expected_events=len(envelope_events),
            cutoff_s=cutoff(envelope_events), workdir=workdir, timeout_s=args.timeout,
            profile_dir=args.profile, broker_pid=broker_pid, detectors=NO_DETECTORS)

    results.append(await _best_of(args.repeat, plain_case, plain_run))

    single_events = events[:n_single]
    singles = single_messages(single_events)
    single_case = "mlpulse, single events"
    _log(f"{single_case}: {len(single_events)} events in {len(singles)} messages")

    async def single_run() -> CaseResult:
        return await run_mlpulse(
            bootstrap, single_case, messages=singles, expected_events=len(single_events),
            cutoff_s=cutoff(single_events), workdir=workdir, timeout_s=args.timeout,
            profile_dir=args.profile, broker_pid=broker_pid)

    single = await _best_of(args.repeat, single_case, single_run)
    results.append(single)

    naive_case = "naive Faust agent, single"
    topic = str(single.details["input_topic"])
    _log(f"{naive_case}: counting the {len(singles)} messages of {topic}")

    async def naive_run() -> CaseResult:
        return await run_naive(bootstrap, naive_case, topic=topic, messages=len(singles),
                               workdir=workdir, timeout_s=args.timeout, broker_pid=broker_pid)

    results.append(await _best_of(args.repeat, naive_case, naive_run))
    return results


async def _best_of(repeat: int, case: str,
                   run: Callable[[], Awaitable[CaseResult]]) -> CaseResult:
    """Run a case ``repeat`` times; the fastest run, with every run's rate in its details."""
    runs: list[CaseResult] = []
    for index in range(repeat):
        runs.append(await run())
        of = f" (run {index + 1} of {repeat})" if repeat > 1 else ""
        _log(f"{case}: {runs[-1].events_per_s:,.0f} events/s{of}")
    best = max(runs, key=lambda r: r.events_per_s)
    if repeat > 1:
        best.details["runs_events_per_s"] = [round(r.events_per_s, 1) for r in runs]
    return best


def _table(results: Sequence[CaseResult]) -> str:
    lines = [f"{'case':<34} {'events':>8} {'seconds':>9} {'events/s':>10}"]
    for r in results:
        lines.append(f"{r.case:<34} {r.events:>8} {r.seconds:>9.2f} {r.events_per_s:>10,.0f}")
    envelope, plain, single, naive = results
    lines.append(f"ratio envelopes/naive: {_ratio(envelope, naive)}   "
                 f"ratio single/naive: {_ratio(single, naive)}   "
                 f"detectors on/off: {envelope.events_per_s / plain.events_per_s:.0%}")
    return "\n".join(lines)


def _ratio(a: CaseResult, b: CaseResult) -> str:
    ratio = a.events_per_s / b.events_per_s
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def _details(results: Sequence[CaseResult]) -> str:
    lines = []
    for r in results:
        d = r.details
        parts = [f"startup {r.startup_seconds:.1f} s (not timed)"]
        if "windows" in d:
            parts.append(f"{d['windows']} windows, {d['late_events']} late")
        if d.get("seconds_from_first_output") is not None:
            parts.append(f"{d['seconds_from_first_output']:.2f} s from first repartitioned message")
        if d.get("ingest_done_seconds") is not None:
            parts.append(f"ingest stage done after {d['ingest_done_seconds']:.2f} s")
        if d.get("seconds_from_first_message") is not None:
            parts.append(f"{d['seconds_from_first_message']:.2f} s from first message")
        shares = {k: v for k, v in (d.get("cpu_share") or {}).items() if v is not None}
        if shares:
            parts.append("CPU (1.0 = one core) " + ", ".join(
                f"{name} {share:.2f}" for name, share in shares.items()))
        lines.append(f"  {r.case}: " + "; ".join(parts))
    return "\n".join(lines)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def _report(args: argparse.Namespace, results: Sequence[CaseResult],
            load_before: tuple[float, float, float]) -> dict[str, Any]:
    envelope, plain, single, naive = results
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "config": {
            "events": args.events, "single_events": args.single_events,
            "envelope_size": args.envelope_size, "models": args.models,
            "event_rate_per_s": args.rate, "window_seconds": 60.0, "lateness_seconds": 10.0,
            "quick": args.quick, "repeat": args.repeat,
        },
        "method": ("topics pre-filled before the worker starts; timed from partition "
                   "assignment to done (mlpulse: broker timestamp of the window summary "
                   "completing the event count; naive: last message counted)"),
        "cases": [r.as_dict() for r in results],
        "ratios": {
            "envelopes_over_naive": round(envelope.events_per_s / naive.events_per_s, 3),
            "single_over_naive": round(single.events_per_s / naive.events_per_s, 3),
            "detectors_on_over_off": round(envelope.events_per_s / plain.events_per_s, 3),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scale = 10 if args.quick else 1
    args.events = (args.events or DEFAULT_EVENTS) // scale
    args.single_events = (args.single_events or DEFAULT_SINGLE_EVENTS) // scale
    if min(args.events, args.single_events, args.envelope_size, args.models, args.repeat) <= 0:
        print("bench: sizes must be > 0", file=sys.stderr)
        return 2

    from app.broker import EmbeddedBroker

    signal.signal(signal.SIGTERM, _interrupt)  # stop workers and broker on SIGTERM too
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlpulse-bench-") as tmp:
        workdir = Path(tmp)
        try:
            with EmbeddedBroker() as broker:
                _log(f"embedded broker on {broker.bootstrap}")
                broker_pid = broker.process.pid if broker.process is not None else None
                results = asyncio.run(_run(args, broker.bootstrap, broker_pid, workdir))
        except CaseFailed as exc:
            print(f"bench: failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench: interrupted", file=sys.stderr)
            return 130
        finally:
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in workdir.glob("*.log"):
                    shutil.copy(log, args.keep_logs / log.name)
    report = _report(args, results, load_before)
    for case in report["cases"]:
        case.pop("log", None)  # temporary files, gone now
    write = args.profile is None or args.output != RESULTS  # profiled numbers are not results
    if write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(_table(results))
    print(_details(results))
    where = f"results in {_display(args.output)}" if write else "profiled: results not saved"
    print(f"(total {time.perf_counter() - started:.0f} s; load average before "
          f"{load_before[0]:.2f}, {os.cpu_count()} CPUs; {where})")
    if args.profile is not None:
        print(f"profiles of the mlpulse workers in {args.profile} "
              f"(python -m pstats FILE; sort cumulative; stats 30)")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
