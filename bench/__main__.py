"""``python -m bench``: mlpulse worker throughput vs its peers, in one run, on one broker.

Cases (each a subprocess on a pre-filled topic, started after the fill; all on the same
embedded broker and the same generated events):

1. mlpulse worker, batch envelopes of ``--envelope-size`` events keyed by model
   (``--events`` events, default 600,000: 10 windows per model, of which the first 3
   build its reference), every detector on;
2. the same with detectors off (aggregation only), for the cost of detection;
3. mlpulse worker, one event per message (``--single-events``, default 30,000);
4. naive Faust agent (:mod:`bench.naive_agent`) on the topic of case 3;
5. the ceiling (:mod:`bench.ceiling`): raw aiokafka ``getmany`` + msgspec decode of the
   topic of case 1, no processing; and the same on the topic of case 3. Runs of case 1
   and of its ceiling alternate (each ceiling run reads the topic the mlpulse run before
   it read), so that a slow spell of the shared machine hits both alike; their ratio is
   also given run by run ("paired");
6. Quix Streams (:mod:`bench.quix_app`, the ``bench`` extra): the same per-model 60 s
   event-time windows (count, errors, latency sum/min/max) over the messages of case 3,
   then over the envelopes of case 1 (expanded), each on a topic of its own.

Prints a table (best, median and range of the ``--repeat`` runs) and the ratios of mlpulse
to the ceiling, the naive agent and Quix, and detectors on / off; writes
``bench/results/latest.json``. A peer case that fails (or Quix Streams not installed:
``pip install -c constraints.txt -e '.[bench]'``) is reported and skipped; the mlpulse
cases still count. The detection-quality benchmark is ``python -m bench.detection``
(``make bench`` runs both). ``--quick`` divides the sizes by 10; ``--repeat N`` runs
every case N times, after ``--warmup`` untimed runs (default 1), and reports the fastest
and the median (the machine is small and shared: single runs vary by ±30 %).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from bench.common import display, git_commit
from bench.peers import quix_available, run_ceiling, run_quix
from bench.runner import CaseFailed, CaseResult, run_mlpulse, run_naive
from bench.workload import (
    add_features,
    add_segments,
    envelope_messages,
    generate,
    sentinels,
    single_messages,
    unkeyed,
)

DEFAULT_EVENTS = 600_000
DEFAULT_SINGLE_EVENTS = 30_000
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
NO_DETECTORS = {"enabled": False, "logs": {"enabled": False}}
METHOD = (
    "topics pre-filled before each case's process starts; every case a subprocess; timed "
    "from partition assignment to done. mlpulse: broker timestamp of the window summary "
    "completing the event count; naive Faust: last message counted; ceiling: manual "
    "assignment (before offset reset and first fetch) to the last event decoded; Quix "
    "Streams: first partition assignment (after its stores opened) to the closed window "
    "completing the event count. Rates count the benchmark events (sentinels excluded)."
)


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
                        help="run each case N times; report the fastest, the median and all")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed runs of each case before the timed ones")
    parser.add_argument("--no-quix", action="store_true", help="skip the Quix Streams cases")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="a checkout of another commit: its worker runs the envelope case "
                             "(and with --slices the sliced one) too, in turn with this one's "
                             "(A/B in the same run)")
    parser.add_argument("--only-envelopes", action="store_true",
                        help="the envelope cases only (with --baseline: an A/B round)")
    parser.add_argument("--slices", default=None, metavar="KEYS",
                        help="also run the envelopes with MLPULSE_SEGMENT_KEYS=KEYS, in turn "
                             "with the plain case (every event then carries 5 values of each "
                             "key, e.g. region,tier: 2 keys x 5 values)")
    parser.add_argument("--extra-features", type=int, default=0, metavar="N",
                        help="N more numeric features on every event (the simulator's have "
                             "4: 3 numeric, 1 categorical), for every case")
    parser.add_argument("--window-seconds", type=float, default=60.0,
                        help="every mlpulse worker's window (60: 6,000 events per "
                             "model-window at the default rate; 10: 1,000)")
    parser.add_argument("--stages", action="store_true",
                        help="the mlpulse workers (an A/B baseline's aside) time their "
                             "engine's steps (python -m bench.stages): where their time went, "
                             "in the report")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="run the mlpulse workers under cProfile, writing DIR/*.prof "
                             "(slows them down: numbers are not comparable)")
    return parser


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, bootstrap: str, broker_pid: int | None,
               workdir: Path, failures: dict[str, str]) -> dict[str, CaseResult]:
    n_envelope, n_single = args.events, args.single_events
    started = time.perf_counter()
    events = generate(max(n_envelope, n_single), n_models=args.models, rate_per_s=args.rate)
    if args.slices:   # each key with 5 values, independent of each other
        add_segments(events, [k.strip() for k in args.slices.split(",") if k.strip()])
    if args.extra_features:
        add_features(events, args.extra_features)
    _log(f"generated {len(events)} events in {time.perf_counter() - started:.1f} s")
    results: dict[str, CaseResult] = {}
    labels = _labels(args)

    def cutoff(subset: Sequence[dict[str, Any]]) -> float:
        first_sentinel = min(s["timestamp"] for s in sentinels(subset))
        return math.floor(first_sentinel / 60.0) * 60.0 - 60.0

    envelope_events = events[:n_envelope]
    messages = envelope_messages(envelope_events, args.envelope_size)
    envelope_total = len(envelope_events) + len(sentinels(envelope_events))
    case = labels["envelopes"]
    _log(f"{case}: {len(envelope_events)} events in {len(messages)} messages "
         f"({sum(len(v) for _, v in messages) / 1e6:.1f} MB)")

    envelope_topics: list[str] = []

    async def envelope_run() -> CaseResult:
        result = await run_mlpulse(
            bootstrap, case, messages=messages, expected_events=len(envelope_events),
            cutoff_s=cutoff(envelope_events), workdir=workdir, timeout_s=args.timeout,
            profile_dir=args.profile, broker_pid=broker_pid, window_seconds=args.window_seconds,
            stages=args.stages)
        envelope_topics.append(str(result.details["input_topic"]))
        return result

    async def slices_run() -> CaseResult:   # the same messages, sliced by their segments
        return await run_mlpulse(
            bootstrap, labels["slices"], messages=messages,
            expected_events=len(envelope_events), cutoff_s=cutoff(envelope_events),
            workdir=workdir, timeout_s=args.timeout, broker_pid=broker_pid,
            window_seconds=args.window_seconds, profile_dir=args.profile,
            extra_env={"MLPULSE_SEGMENT_KEYS": args.slices or ""}, stages=args.stages)

    async def ceiling_run() -> CaseResult:   # on the topic the mlpulse run just read
        return await run_ceiling(
            bootstrap, labels["ceiling"], topic=envelope_topics[-1], mode="envelopes",
            messages=len(messages), events=len(envelope_events), total_events=envelope_total,
            workdir=workdir, timeout_s=args.timeout, broker_pid=broker_pid)

    async def baseline_run() -> CaseResult:   # the same, by another commit's worker
        return await run_mlpulse(
            bootstrap, labels["baseline"], messages=messages,
            expected_events=len(envelope_events), cutoff_s=cutoff(envelope_events),
            workdir=workdir, timeout_s=args.timeout, broker_pid=broker_pid,
            root=args.baseline, window_seconds=args.window_seconds)

    async def baseline_slices_run() -> CaseResult:   # sliced, by another commit's worker
        return await run_mlpulse(
            bootstrap, labels["baseline_slices"], messages=messages,
            expected_events=len(envelope_events), cutoff_s=cutoff(envelope_events),
            workdir=workdir, timeout_s=args.timeout, broker_pid=broker_pid,
            root=args.baseline, window_seconds=args.window_seconds,
            extra_env={"MLPULSE_SEGMENT_KEYS": args.slices or ""})

    # the headline ratio's two cases run in turn, so that a slow spell of the shared
    # machine hits both alike (run by run ratios: `paired_ratios`)
    turns = [("envelopes", case, envelope_run), ("ceiling", labels["ceiling"], ceiling_run)]
    if args.baseline is not None:
        turns.insert(1, ("baseline", labels["baseline"], baseline_run))
    if args.slices:
        turns.insert(1, ("slices", labels["slices"], slices_run))
        if args.baseline is not None:
            turns.insert(2, ("baseline_slices", labels["baseline_slices"],
                             baseline_slices_run))
    results.update(await _alternating(args.repeat, args.warmup, turns, failures))
    envelope_topic = str(results["envelopes"].details["input_topic"])

    # the same events as producers that key nothing send them: every event crosses the
    # repartition topic, and windows wait for the slowest input partition
    for key, size in (("unkeyed_envelopes", args.envelope_size), ("unkeyed_single", 1)):
        subset = envelope_events if size > 1 else events[:n_single]
        unkeyed_messages = unkeyed(subset, size)

        async def unkeyed_run(label: str = labels[key], subset: Sequence[Any] = subset,
                              unkeyed_messages: list[Any] = unkeyed_messages) -> CaseResult:
            return await run_mlpulse(   # (the keyed case's windows: their ratio compares)
                bootstrap, label, messages=unkeyed_messages, expected_events=len(subset),
                cutoff_s=cutoff(subset), workdir=workdir, timeout_s=args.timeout,
                profile_dir=args.profile, broker_pid=broker_pid,
                window_seconds=args.window_seconds, stages=args.stages)

        _log(f"{labels[key]}: {len(subset)} events in {len(unkeyed_messages)} messages")
        results[key] = await _best_of(args.repeat, labels[key], unkeyed_run, args.warmup)
    if args.only_envelopes:
        return results

    plain_case = labels["no_detectors"]

    async def plain_run() -> CaseResult:
        return await run_mlpulse(
            bootstrap, plain_case, messages=messages, expected_events=len(envelope_events),
            cutoff_s=cutoff(envelope_events), workdir=workdir, timeout_s=args.timeout,
            profile_dir=args.profile, broker_pid=broker_pid, detectors=NO_DETECTORS,
            window_seconds=args.window_seconds, stages=args.stages)

    results["no_detectors"] = await _best_of(args.repeat, plain_case, plain_run, args.warmup)

    single_events = events[:n_single]
    singles = single_messages(single_events)
    single_case = labels["single"]
    _log(f"{single_case}: {len(single_events)} events in {len(singles)} messages")

    async def single_run() -> CaseResult:
        return await run_mlpulse(
            bootstrap, single_case, messages=singles, expected_events=len(single_events),
            cutoff_s=cutoff(single_events), workdir=workdir, timeout_s=args.timeout,
            profile_dir=args.profile, broker_pid=broker_pid,
            window_seconds=args.window_seconds, stages=args.stages)

    results["single"] = await _best_of(args.repeat, single_case, single_run, args.warmup)
    single_topic = str(results["single"].details["input_topic"])

    naive_case = labels["naive"]
    _log(f"{naive_case}: counting the {len(singles)} messages of {single_topic}")

    async def naive_run() -> CaseResult:
        return await run_naive(bootstrap, naive_case, topic=single_topic,
                               messages=len(singles), workdir=workdir,
                               timeout_s=args.timeout, broker_pid=broker_pid)

    results["naive"] = await _best_of(args.repeat, naive_case, naive_run, args.warmup)

    # ------------------------------------------------ peers (a failure skips the case)
    peer: dict[str, Any] = {"labels": labels, "repeat": args.repeat, "warmup": args.warmup,
                            "results": results, "failures": failures}

    single_total = len(single_events) + len(sentinels(single_events))

    async def ceiling_single_run() -> CaseResult:
        return await run_ceiling(
            bootstrap, labels["ceiling_single"], topic=single_topic, mode="single",
            messages=len(singles), events=len(single_events), total_events=single_total,
            workdir=workdir, timeout_s=args.timeout, broker_pid=broker_pid)

    _log(f"{labels['ceiling_single']}: decoding the {len(singles)} messages of {single_topic}")
    await _peer("ceiling_single", ceiling_single_run, **peer)

    if args.no_quix:
        for key in ("quix_single", "quix_envelopes"):
            failures[key] = "skipped (--no-quix)"
    elif not quix_available():
        for key in ("quix_single", "quix_envelopes"):
            failures[key] = ("skipped: quixstreams is not installed "
                             "(pip install -c constraints.txt -e '.[bench]')")
        _log("Quix Streams cases skipped: quixstreams is not installed")
    else:
        async def quix_single_run() -> CaseResult:
            return await run_quix(
                bootstrap, labels["quix_single"], mode="single", messages=singles,
                expected_events=len(single_events), total_events=single_total,
                cutoff_s=cutoff(single_events), workdir=workdir, like_topic=single_topic,
                timeout_s=args.timeout, broker_pid=broker_pid)

        _log(f"{labels['quix_single']}: {len(single_events)} events in {len(singles)} "
             f"messages on a topic of its own")
        await _peer("quix_single", quix_single_run, **peer)

        async def quix_envelope_run() -> CaseResult:
            return await run_quix(
                bootstrap, labels["quix_envelopes"], mode="envelopes", messages=messages,
                expected_events=len(envelope_events), total_events=envelope_total,
                cutoff_s=cutoff(envelope_events), workdir=workdir, like_topic=envelope_topic,
                timeout_s=args.timeout, broker_pid=broker_pid)

        _log(f"{labels['quix_envelopes']}: {len(envelope_events)} events in {len(messages)} "
             f"messages on a topic of its own")
        await _peer("quix_envelopes", quix_envelope_run, **peer)
    return results


def _labels(args: argparse.Namespace) -> dict[str, str]:
    """Case key → the name shown in the table and the JSON, in the table's order."""
    return {
        "envelopes": f"mlpulse, envelopes of {args.envelope_size}",
        "baseline": f"mlpulse at {_commit(args.baseline)}, envelopes",
        "baseline_slices": f"mlpulse at {_commit(args.baseline)}, envelopes, sliced by "
                           f"{args.slices}",
        "slices": f"mlpulse, envelopes, sliced by {args.slices}",
        "unkeyed_envelopes": f"mlpulse, unkeyed mixed envelopes of {args.envelope_size}",
        "unkeyed_single": "mlpulse, unkeyed single events",
        "no_detectors": "mlpulse, envelopes, no detectors",
        "single": "mlpulse, single events",
        "naive": "naive Faust agent, single",
        "ceiling": "ceiling (aiokafka+msgspec), envelopes",
        "ceiling_single": "ceiling (aiokafka+msgspec), single",
        "quix_single": "Quix Streams, single events",
        "quix_envelopes": f"Quix Streams, envelopes of {args.envelope_size}",
    }


def _commit(root: Path | None) -> str:
    """The short commit of a checkout (for the baseline case's name)."""
    if root is None:
        return "baseline"
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return str(root)
    return done.stdout.strip()


async def _peer(key: str, run: Callable[[], Awaitable[CaseResult]], *, labels: dict[str, str],
                repeat: int, warmup: int, results: dict[str, CaseResult],
                failures: dict[str, str]) -> None:
    """Run a peer case; its failure is recorded in ``failures`` and does not stop the bench."""
    try:
        results[key] = await _best_of(repeat, labels[key], run, warmup)
    except (CaseFailed, KafkaError) as exc:
        failures[key] = f"failed: {exc}"
        _log(f"{labels[key]}: FAILED: {exc}")


async def _alternating(
    repeat: int, warmup: int, cases: list[tuple[str, str, Callable[[], Awaitable[CaseResult]]]],
    failures: dict[str, str],
) -> dict[str, CaseResult]:
    """Run ``cases`` (key, label, run) in turn, one run of each per round, after ``warmup``
    untimed rounds; each summarised by :func:`_summary`. The first case's failure stops
    the bench; a later (peer) case's is recorded in ``failures`` and the rounds go on."""
    runs: dict[str, list[CaseResult]] = {key: [] for key, _, _ in cases}
    for index in range(warmup + repeat):
        timed = index >= warmup
        of = (f" (run {index - warmup + 1} of {repeat})" if repeat > 1 else "") if timed \
            else f" (warm-up {index + 1} of {warmup}, not counted)"
        for position, (key, case, run) in enumerate(cases):
            if key in failures:
                continue
            try:
                with _status(f"{case}{of}"):
                    result = await run()
            except (CaseFailed, KafkaError) as exc:
                if position == 0:
                    raise
                failures[key] = f"failed: {exc}"
                _log(f"{case}: FAILED: {exc}")
                continue
            _log(f"{case}: {result.events_per_s:,.0f} events/s{of}")
            if timed:
                runs[key].append(result)
    return {key: _summary(found) for key, found in runs.items() if found}


def _summary(runs: list[CaseResult]) -> CaseResult:
    """The fastest run, with every run's rate (in run order), the median and the spread."""
    best = max(runs, key=lambda r: r.events_per_s)
    rates = [r.events_per_s for r in runs]
    median = statistics.median(rates)
    best.details["runs_events_per_s"] = [round(rate, 1) for rate in rates]
    best.details["median_events_per_s"] = round(median, 1)
    best.details["spread"] = round((max(rates) - min(rates)) / median, 3) if median else None
    return best


def _paired_ratios(results: dict[str, CaseResult]) -> dict[str, list[float]]:
    """mlpulse envelopes / ceiling (and / the baseline commit) run by run (they ran in turn:
    see :func:`_alternating`)."""
    out = {}
    for top_key, key in (("envelopes", "ceiling"), ("envelopes", "baseline"),
                         ("slices", "envelopes"), ("slices", "baseline_slices"),
                         ("baseline_slices", "baseline")):
        top, bottom = results.get(top_key), results.get(key)
        if top is None or bottom is None:
            continue
        pairs = zip(top.details["runs_events_per_s"], bottom.details["runs_events_per_s"],
                    strict=False)
        out[f"{top_key}_over_{key}"] = [round(a / b, 3) for a, b in pairs if b]
    return out


async def _best_of(repeat: int, case: str, run: Callable[[], Awaitable[CaseResult]],
                   warmup: int = 0) -> CaseResult:
    """Run a case ``warmup`` times untimed (broker, page cache, bytecode caches warm), then
    ``repeat`` times; the fastest run, with every run's rate in its details."""
    return (await _alternating(repeat, warmup, [(case, case, run)], {}))[case]


def _status(message: str) -> contextlib.AbstractContextManager[Any]:
    """A spinner on stderr while a run goes (rich, on a terminal), else nothing."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    try:
        from rich.console import Console
    except ImportError:
        return contextlib.nullcontext()
    return Console(stderr=True).status(message)


RATIOS: tuple[tuple[str, str, str, str], ...] = (
    # key in the JSON, numerator case, denominator case, label
    ("envelopes_over_ceiling", "envelopes", "ceiling", "mlpulse envelopes / ceiling"),
    ("envelopes_over_baseline", "envelopes", "baseline", "mlpulse envelopes / baseline commit"),
    ("slices_over_envelopes", "slices", "envelopes", "mlpulse sliced / not sliced"),
    ("slices_over_baseline_slices", "slices", "baseline_slices",
     "mlpulse sliced / baseline commit sliced"),
    ("baseline_slices_over_baseline", "baseline_slices", "baseline",
     "baseline commit: sliced / not sliced"),
    ("unkeyed_envelopes_over_envelopes", "unkeyed_envelopes", "envelopes",
     "mlpulse unkeyed envelopes / keyed"),
    ("envelopes_over_naive", "envelopes", "naive", "mlpulse envelopes / naive Faust"),
    ("single_over_naive", "single", "naive", "mlpulse single / naive Faust"),
    ("single_over_ceiling_single", "single", "ceiling_single", "mlpulse single / ceiling single"),
    ("single_over_quix_single", "single", "quix_single", "mlpulse single / Quix single"),
    ("envelopes_over_quix_envelopes", "envelopes", "quix_envelopes",
     "mlpulse envelopes / Quix envelopes"),
    ("detectors_on_over_off", "envelopes", "no_detectors", "detectors on / off"),
)


def _ratios(results: dict[str, CaseResult], median: bool = False) -> dict[str, float | None]:
    """Every ratio of ``RATIOS`` of the best (or median) rates; None where a case is missing."""
    def rate(key: str) -> float | None:
        result = results.get(key)
        if result is None:
            return None
        return float(result.details["median_events_per_s"]) if median else result.events_per_s

    out: dict[str, float | None] = {}
    for name, top, bottom, _ in RATIOS:
        a, b = rate(top), rate(bottom)
        out[name] = round(a / b, 3) if a is not None and b else None
    return out


def _table(results: dict[str, CaseResult], failures: dict[str, str],
           labels: dict[str, str], repeat: int) -> str:
    width = max(len(label) for label in labels.values()) + 1
    lines = [f"{'case':<{width}} {'events':>8} {'seconds':>8} {'events/s':>10} "
             f"{'median':>10} {'runs (min-max)':>16} {'spread':>7}"]
    for key, label in labels.items():
        r = results.get(key)
        if r is None:
            reason = failures.get(key, "not run")
            lines.append(f"{label:<{width}} {reason.splitlines()[0][:80]}")
            continue
        rates = r.details["runs_events_per_s"]
        spread = r.details.get("spread")
        lines.append(
            f"{label:<{width}} {r.events:>8} {r.seconds:>8.2f} {r.events_per_s:>10,.0f} "
            f"{r.details['median_events_per_s']:>10,.0f} "
            f"{_k(min(rates)) + '-' + _k(max(rates)):>16} "
            f"{f'{spread:.0%}' if spread is not None and repeat > 1 else '-':>7}")
    best, median = _ratios(results), _ratios(results, median=True)
    lines.append("ratios of the best runs" + (" (of the medians)" if repeat > 1 else "") + ":")
    for name, _, _, label in RATIOS:
        if best[name] is None:
            continue
        text = f"  {label:<36} {_times(best[name])}"
        if repeat > 1 and median[name] is not None:
            text += f"  ({_times(median[name])})"
        lines.append(text)
    paired = _paired_ratios(results).get("envelopes_over_ceiling")
    if paired and len(paired) > 1:
        lines.append(f"  {'mlpulse envelopes / ceiling, paired':<36} "
                     f"{_times(statistics.median(paired))} median, "
                     f"{_times(min(paired))}-{_times(max(paired))}")
    return "\n".join(lines)


def _k(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"


def _times(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def _details(results: dict[str, CaseResult], failures: dict[str, str]) -> str:
    lines = []
    for r in results.values():
        d = r.details
        parts = [f"startup {r.startup_seconds:.1f} s (not timed)"]
        if d.get("process"):
            parts.append(str(d["process"]))
        if d.get("ingest_assigned_after_seconds") is not None:
            parts.append(f"ingest consumer assigned {d['ingest_assigned_after_seconds']:.2f} s "
                         f"after the Faust group (timed from the later)")
        if "windows" in d:
            late = f", {d['late_events']} late" if "late_events" in d else ""
            parts.append(f"{d['windows']} windows{late}")
        if d.get("seconds_from_first_output") is not None:
            parts.append(f"{d['seconds_from_first_output']:.2f} s from first repartitioned message")
        if d.get("ingest_done_seconds") is not None:
            parts.append(f"ingest stage done after {d['ingest_done_seconds']:.2f} s")
        if d.get("all_events_windowed_seconds") is not None:
            parts.append(f"all events windowed after {d['all_events_windowed_seconds']:.2f} s")
        if d.get("seconds_from_first_message") is not None:
            parts.append(f"{d['seconds_from_first_message']:.2f} s from first message")
        shares = {k: v for k, v in (d.get("cpu_share") or {}).items() if v is not None}
        if shares:
            parts.append("CPU (1.0 = one core) " + ", ".join(
                f"{name} {share:.2f}" for name, share in shares.items()))
        stages = d.get("stages")
        if stages:
            parts.append(f"CPU {stages['cpu_seconds']:.2f} s from the first input: " + ", ".join(
                f"{name} {seconds:.2f}" for name, seconds in stages["steps_seconds"].items())
                + f", rest {stages['rest_seconds']:.2f}"
                + (f" (system {stages['system_seconds']:.2f} s, {stages['minor_faults']:,} "
                   "page faults)" if "system_seconds" in stages else ""))
        lines.append(f"  {r.case}: " + "; ".join(parts))
    for key, reason in failures.items():
        if reason.startswith("failed"):
            lines.append(f"  {key}: {reason}")
    return "\n".join(lines)


def _report(args: argparse.Namespace, results: dict[str, CaseResult], failures: dict[str, str],
            load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
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
            "event_rate_per_s": args.rate, "window_seconds": args.window_seconds,
            "extra_features": args.extra_features,
            "lateness_seconds": 10.0,
            "quick": args.quick, "repeat": args.repeat, "warmup": args.warmup,
        },
        "versions": _versions(),
        "method": METHOD,
        "cases": [{"id": key, **r.as_dict()} for key, r in results.items()],
        "skipped": failures,
        "ratios": _ratios(results),
        "ratios_of_medians": _ratios(results, median=True),
        "paired_ratios": _paired_ratios(results),
    }


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for package in ("faust-streaming", "aiokafka", "msgspec", "quixstreams", "confluent-kafka"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scale = 10 if args.quick else 1
    args.events = (args.events or DEFAULT_EVENTS) // scale
    args.single_events = (args.single_events or DEFAULT_SINGLE_EVENTS) // scale
    if min(args.events, args.single_events, args.envelope_size, args.models,
           args.repeat) <= 0 or args.warmup < 0:
        print("bench: sizes and --repeat must be > 0, --warmup >= 0", file=sys.stderr)
        return 2

    from mlpulse.broker import EmbeddedBroker

    signal.signal(signal.SIGTERM, _interrupt)  # stop workers and broker on SIGTERM too
    load_before = os.getloadavg()
    started = time.perf_counter()
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mlpulse-bench-") as tmp:
        workdir = Path(tmp)
        try:
            with EmbeddedBroker() as broker:
                _log(f"embedded broker on {broker.bootstrap}")
                broker_pid = broker.process.pid if broker.process is not None else None
                results = asyncio.run(_run(args, broker.bootstrap, broker_pid, workdir,
                                           failures))
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
    report = _report(args, results, failures, load_before)
    for case in report["cases"]:
        case.pop("log", None)  # temporary files, gone now
    write = args.profile is None or args.output != RESULTS  # profiled numbers are not results
    if write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(_table(results, failures, _labels(args), args.repeat))
    print(_details(results, failures))
    where = f"results in {display(args.output)}" if write else "profiled: results not saved"
    print(f"(total {time.perf_counter() - started:.0f} s; load average before "
          f"{load_before[0]:.2f}, {os.cpu_count()} CPUs; {where})")
    if args.profile is not None:
        print(f"profiles of the mlpulse workers in {args.profile} "
              f"(python -m pstats FILE; sort cumulative; stats 30)")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
