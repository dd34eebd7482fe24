"""Command line: ``mlpulse worker | demo | simulate | broker | schemas | check-config |
alertmanager-bridge``.

Settings come from ``MLPULSE_*`` variables and the ``MLPULSE_CONFIG`` YAML file
(see :mod:`mlpulse.config`); flags exist only for what the simulator varies.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import MlpulseError

__all__ = ["main"]

log = logging.getLogger("mlpulse")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "no_settings", False):
            return int(args.func(args) or 0)
        settings = Settings.from_env()
        return int(args.func(args, settings) or 0)
    except MlpulseError as exc:
        print(f"mlpulse: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlpulse", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    worker = sub.add_parser("worker", help="run a worker (embedded broker if no bootstrap)")
    worker.set_defaults(func=cmd_worker)

    bridge = sub.add_parser("alertmanager-bridge",
                            help="forward mlpulse.alerts to Alertmanager's v2 API")
    bridge.add_argument("--url", default=None,
                        help="Alertmanager base URL (default MLPULSE_ALERTMANAGER_URL)")
    bridge.add_argument("--resend-seconds", type=float, default=60.0,
                        help="re-send firing alerts this often (Alertmanager expires them)")
    bridge.set_defaults(func=cmd_bridge)

    check = sub.add_parser("check-config", help="validate a YAML config file (line and field)")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config, no_settings=True)

    demo = sub.add_parser("demo", help="embedded broker + worker + simulator, printing output")
    demo.add_argument("--models", type=int, default=3)
    demo.add_argument("--rate", type=float, default=200.0, help="events per second")
    demo.add_argument("--window-seconds", type=float, default=5.0)
    demo.add_argument("--duration", type=float, default=float("inf"), help="seconds to run")
    demo.set_defaults(func=_demo)

    simulate = sub.add_parser("simulate", help="send realistic traffic to a broker")
    simulate.add_argument("--bootstrap", default=None, help="default: MLPULSE_KAFKA_BOOTSTRAP")
    simulate.add_argument("--models", type=int, default=3)
    simulate.add_argument("--rate", type=float, default=200.0, help="events per second")
    simulate.add_argument("--duration", type=float, default=60.0, help="seconds")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--drift", action="append", default=[],
                          metavar="MODEL:FEATURE:SIGMA@START",
                          help="shift FEATURE of MODEL by SIGMA std devs from START s on")
    simulate.add_argument("--latency-spike", action="append", default=[],
                          metavar="MODEL:FACTOR@START+DURATION")
    simulate.add_argument("--error-burst", action="append", default=[],
                          metavar="MODEL:RATE@START+DURATION")
    simulate.add_argument("--accuracy", action="append", default=[],
                          metavar="MODEL:ACCURACY@START+DURATION",
                          help="share of MODEL's labels that agree with its predictions")
    simulate.add_argument("--canary", action="append", default=[],
                          metavar="MODEL:FACTOR@START+DURATION",
                          help="40%% of MODEL's events as version v2-canary, latency x FACTOR, "
                               "5%% errors")
    simulate.add_argument("--label-rate", type=float, default=0.5,
                          help="share of predictions that get a ground-truth label")
    simulate.add_argument("--label-delay", type=float, default=5.0,
                          help="seconds from a prediction to its label")
    simulate.add_argument("--malformed-rate", type=float, default=0.0,
                          help="share of extra malformed messages")
    simulate.set_defaults(func=cmd_simulate)

    broker = sub.add_parser("broker", help="run the embedded broker in the foreground")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(func=cmd_broker)

    schemas = sub.add_parser("schemas", help="write schemas/*.json from the wire types")
    schemas.add_argument("--out", default="schemas")
    schemas.set_defaults(func=cmd_schemas)
    return parser


# ---------------------------------------------------------------- commands


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from .broker import EmbeddedBroker

    setup_logging(settings.log_level, settings.log_format)
    if settings.kafka_bootstrap:
        return run_worker(settings)
    with EmbeddedBroker() as broker:
        log.info("embedded broker on %s", broker.bootstrap)
        return run_worker(settings.replace(kafka_bootstrap=broker.bootstrap))


def run_worker(settings: Settings, extra_tasks: Sequence[Any] = ()) -> int:
    """Create the topics, then run a Faust worker until SIGINT/SIGTERM."""
    import mode.loop

    if settings.event_loop == "uvloop":
        mode.loop.use("uvloop")   # measured: ~20% more events/s than asyncio's loop
    from faust.worker import Worker

    from .pipeline import Pipeline
    from .topics import ensure_topics

    ensure_topics(settings)
    one_core()
    pipeline = Pipeline(settings)
    # Batches create many short-lived containers; fewer young-generation collections
    # measured ~10% more events/s (see README, Measured).
    gc.set_threshold(50_000, 50, 1000)
    for task in extra_tasks:
        pipeline.app.task(task)
    from .logs import logging_config

    # stdout is the demo's story: Faust's start-up spinner goes to stderr with the logs
    worker = Worker(pipeline.app, loglevel=settings.log_level.upper(), quiet=True,
                    redirect_stdouts=False, stdout=sys.stderr,
                    logging_config=logging_config(settings.log_level, settings.log_format))
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def one_core() -> None:
    """Keep numpy's BLAS (and any OpenMP pool) on the calling thread: a worker scales out
    as more workers in its group, and a matrix product spread over threads that then spin
    takes a core from the broker or another worker (a 50 × 110 by 110 × 300 product: twice
    the CPU for a fifth less wall time; docs/performance.md#cost-of-slices).

    >>> import numpy   # (its BLAS loaded, as the worker's modules load it)
    >>> from threadpoolctl import threadpool_info
    >>> one_core()
    >>> {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
    {1}
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def cmd_bridge(args: argparse.Namespace, settings: Settings) -> int:
    from .bridge import AlertmanagerBridge
    from .errors import ConfigError

    setup_logging(settings.log_level, settings.log_format)
    url = args.url or settings.alertmanager_url
    if not url:
        raise ConfigError("alertmanager-bridge: set --url or MLPULSE_ALERTMANAGER_URL")
    bridge = AlertmanagerBridge(settings, url, resend_seconds=args.resend_seconds)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await bridge.run(stop)

    log.info("mlpulse bridge: %s → %s", bridge.topic, bridge.url)
    asyncio.run(run())
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from .checkconfig import check_config

    problem = check_config(args.file)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from .demo import cmd_demo

    return cmd_demo(args, settings)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from .sdk.producer import Telemetry
    from .sdk.simulator import Simulator
    from .security import kafka_options

    setup_logging(settings.log_level, settings.log_format)
    bootstrap = args.bootstrap or settings.bootstrap_or_error
    injections = [*map(_drift, args.drift), *map(_spike("latency"), args.latency_spike),
                  *map(_spike("errors"), args.error_burst), *map(_spike("accuracy"), args.accuracy),
                  *map(_spike("canary"), args.canary)]
    simulator = Simulator(n_models=args.models, seed=args.seed, injections=injections,
                          malformed_rate=args.malformed_rate, label_rate=args.label_rate,
                          label_delay_s=args.label_delay)
    with Telemetry(bootstrap, topic_prefix=settings.topic_prefix,
                   kafka_options=kafka_options(settings)) as telemetry:
        sent = simulator.run(telemetry, duration_s=args.duration, rate_per_s=args.rate)
    print(f"sent {sent} events ({telemetry.dropped} dropped)")
    return 0


def _drift(spec: str) -> Any:
    from .sdk.simulator import Injection

    try:
        target, start = spec.split("@")
        model, feature, sigma = target.split(":")
        return Injection("drift", model, float(start), feature=feature, magnitude=float(sigma))
    except ValueError:
        raise MlpulseError(f"--drift {spec!r}: expected MODEL:FEATURE:SIGMA@START") from None


def _spike(kind: str) -> Any:
    from .sdk.simulator import Injection

    def parse(spec: str) -> Injection:
        try:
            target, when = spec.split("@")
            model, magnitude = target.split(":")
            start, duration = when.split("+")
            return Injection(kind, model, float(start), float(duration),  # type: ignore[arg-type]
                             magnitude=float(magnitude))
        except ValueError:
            raise MlpulseError(f"{spec!r}: expected MODEL:VALUE@START+DURATION") from None

    return parse


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from .broker import EmbeddedBroker

    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker listening on {broker.bootstrap}; Ctrl-C stops it", flush=True)
        try:
            return broker.wait()
        except KeyboardInterrupt:
            return 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from .events import schemas

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (out / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out / name}")
    return 0


def setup_logging(level: str, log_format: str = "auto") -> None:
    import logging.config

    from .logs import logging_config

    logging.config.dictConfig(logging_config(level, log_format))
