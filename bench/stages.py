"""``python -m bench.stages worker``: an mlpulse worker whose engine steps are timed.

What ``python -m bench --stages`` runs instead of ``python -m mlpulse worker``, to say where a
case's time went on the worker itself (profilers slow Python code down unevenly: the
per-window steps, many small calls, far more than numpy and the decoder). Each step's own
seconds are summed (``time.perf_counter`` around it, less the timed steps it calls): ~1 µs a
call, ~10,000 calls in a run of ``make bench``'s sliced case (~0.2 % of its time). At exit
the worker writes them to ``BENCH_STAGES_OUT`` as JSON, with the process's CPU seconds from
its first input on; ``rest`` is that CPU less the steps (Faust, aiokafka and the event loop:
fetching, sending, scheduling). The steps are wall time on a worker that keeps one core
busy, so they add up to its CPU but for the moments it waits.

>>> timer = Steps()
>>> def outer(): return inner() + 1
>>> def inner(): return 1
>>> outer, inner = timer.wrap("outer", outer), timer.wrap("inner", inner)
>>> outer(), sorted(timer.calls.items())
(2, [('inner', 1), ('outer', 1)])
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

STEPS: dict[str, tuple[str, str, str]] = {
    "decode": ("engine", "Engine", "_decode"),
    "gather": ("aggregates", "PredictionAggregate", "_gather"),
    "fold": ("aggregates", "PredictionAggregate", "_fold"),
    "close": ("summarize", "Summarizer", "close_due"),
    "summaries": ("aggregates", "PredictionAggregate", "results"),
    "judge": ("detect", "Detect", "on_closed"),
    "status": ("status", "Status", "on_window"),
    "emit": ("engine", "Engine", "_emit"),
    "checkpoint": ("engine", "Engine", "checkpoint"),
    "ingest": ("engine", "Engine", "ingest"),
    "apply": ("engine", "Engine", "apply"),
    "tick": ("engine", "Engine", "tick"),
}
"""Step → (module of the package, class, method). Each counts its own time: ``fold`` is a
window's (and its slices') fold, with reading its events' fields and telling its label
index where it folds each batch as it comes; ``gather`` what a sliced window does with a
batch as it comes (reading its fields, numbering its slices, its label index, keeping
them as arrays) before it folds the batches it holds; ``close`` what closing takes beyond
the fold and the summaries (keeping summaries for revisions, bookkeeping); ``judge`` every
detector and rule and the alert lifecycle; ``emit`` encoding the outputs; ``ingest``,
``apply`` and ``tick`` the rest of their step (routing, repartitioning, progress)."""


class Steps:
    """Own (exclusive) seconds and calls per step."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._inner: list[float] = []   # per open call: seconds of the timed calls in it
        self.first_input_cpu_s: float | None = None
        self._patched: list[tuple[type, str, Any]] = []
        self._first_usage: resource.struct_rusage | None = None

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        inner, seconds, calls, clock = self._inner, self.seconds, self.calls, self.clock

        first = name == "ingest"   # the CPU is counted from the first input on

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if first and self.first_input_cpu_s is None:
                self.first_input_cpu_s = time.process_time()
                self._first_usage = resource.getrusage(resource.RUSAGE_SELF)
            started = clock()
            inner.append(0.0)
            try:
                return function(*args, **kwargs)
            finally:
                took = clock() - started
                own = took - inner.pop()
                seconds[name] = seconds.get(name, 0.0) + own
                calls[name] = calls.get(name, 0) + 1
                if inner:
                    inner[-1] += took
        return timed

    def report(self) -> dict[str, Any]:
        cpu_s = time.process_time() - (self.first_input_cpu_s or 0.0)
        steps = {name: round(s, 3) for name, s in sorted(self.seconds.items(),
                                                         key=lambda item: -item[1])}
        usage, first = resource.getrusage(resource.RUSAGE_SELF), self._first_usage
        return {"steps_seconds": steps, "calls": dict(self.calls),
                "cpu_seconds": round(cpu_s, 3),
                "rest_seconds": round(cpu_s - sum(self.seconds.values()), 3),
                # the kernel's share (page faults: memory mapped and freed) from the first
                # input on
                "system_seconds": round(usage.ru_stime - (first.ru_stime if first else 0), 3),
                "minor_faults": usage.ru_minflt - (first.ru_minflt if first else 0)}

    def restore(self) -> None:
        """Undo :func:`install`."""
        for cls, method, original in reversed(self._patched):
            setattr(cls, method, original)
        self._patched.clear()


def install(package: str = "mlpulse", steps: Steps | None = None) -> Steps:
    """Time :data:`STEPS` of ``package`` (its classes patched in place, until
    :meth:`Steps.restore`)."""
    steps = steps or Steps()
    for name, (module, owner, method) in STEPS.items():
        cls = getattr(importlib.import_module(f"{package}.{module}"), owner)
        original = cls.__dict__[method]
        steps._patched.append((cls, method, original))
        if isinstance(original, staticmethod):   # still one, however it is called
            setattr(cls, method, staticmethod(steps.wrap(name, original.__func__)))
        else:
            setattr(cls, method, steps.wrap(name, original))
    return steps


def main() -> int:
    out = os.environ["BENCH_STAGES_OUT"]
    steps = install()

    def write() -> None:
        with open(out, "w") as file:
            json.dump(steps.report(), file)

    atexit.register(write)
    from mlpulse.cli import main as cli
    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
