"""Stage 2: routed events → per-partition tumbling windows → closed-window summaries.

One :class:`Summarizer` per worker holds the windows of the partitions it owns
(predictions keyed by model, logs keyed by service). It is fed the internal
payloads that :mod:`mlpulse.ingest` produced and is asked, after each batch and on
a wall-clock timer, for the windows that closed.

>>> from mlpulse.config import Settings
>>> from mlpulse.ingest import Ingest
>>> settings = Settings(window_seconds=60, lateness_seconds=0)
>>> routed = Ingest(settings).predictions(
...     b'[{"event_id": "1", "timestamp": 5, "model": "a", "latency_ms": 12}]',
...     topic="t", partition=0, offset=0, now_s=100)
>>> s = Summarizer(settings)
>>> s.add_prediction_events(0, routed.by_key["a"], now_wall_s=100)
0
>>> [(c.summary.model, c.summary.window_start, c.summary.count)
...  for c in s.close_due(now_wall_s=1000)]
[('a', '1970-01-01T00:00:00Z', 1)]
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .aggregates import LogAggregate, PredictionAggregate
from .codec import group_by
from .config import Settings
from .events import FeedbackEvent, LogEvent, PredictionEvent, WindowSummary
from .guard import CardinalityGuard
from .join import LabelJoin, Revised
from .labels import WindowLabels
from .progress import Report, Watermarks
from .slicing import SliceNames, SliceRouter, Waiting, segment_of
from .timefmt import rfc3339
from .windows import TumblingWindows

__all__ = ["Closed", "Summarizer"]

SLICED_BATCH = 16384
"""Events a sliced window gathers before folding them and its slices: a slice's share of
a batch is a few events, and folding costs ~0.15 ms a batch whatever its size. (A 60 s
window of 6,000 events then folds once: 0.632x -> 0.649x of the unsliced run in process,
against 4,096; on the worker 0.70x against 0.65x with 2,048; MAX_WAITING bounds them all.)"""
MAX_WAITING = 100_000
"""Events all sliced windows of a worker may hold unfolded (as arrays and codes, ~250 bytes
each with the label index's share: :meth:`~mlpulse.columns.Batch.compact`): beyond it, the
windows holding most fold theirs, down to half of it (many sliced models, or a backlog read
ahead of the windows' closing)."""

ProfileFactory = Callable[[int, tuple[str, ...]], Any]
"""(partition, (model, version)) → the detectors' profile of a new window, or None."""
Slicing = Callable[[str], Sequence[tuple[str, ...]] | None]
"""model → the segment keys that slice it (each a key, or keys whose values' cross product
is sliced), or None: those of ``MLPULSE_SEGMENT_KEYS``."""


@dataclass(slots=True)
class Closed:
    """A closed window: its summary, and what the detectors need of it."""

    partition: int
    key: tuple[str, ...]
    start_s: float
    end_s: float
    aggregate: Any
    summary: WindowSummary
    idle: bool = False
    """Closed on the wall clock, its key's events having stopped (see ClosedWindow.idle)."""


class Summarizer:
    """Windows of every owned partition, and their summaries when they close."""

    def __init__(self, settings: Settings, profiles: ProfileFactory | None = None,
                 slicing: Slicing | None = None) -> None:
        self.settings = settings
        self.profiles = profiles
        self.slicing = slicing
        self._slices: dict[str, tuple[tuple[str, ...], ...]] = {}
        """Per model (as the guard keeps it), the keys that slice it."""
        self._names = SliceNames()
        self.waiting = Waiting(fold=self._fold_waiting)
        """Events sliced windows gather before folding, all of them (``MAX_WAITING``)."""
        self._now_wall_s = 0.0
        """The wall clock of the events being added (the guard's, for slices)."""
        self._predictions: dict[int, TumblingWindows[PredictionAggregate]] = {}
        self._logs: dict[int, TumblingWindows[LogAggregate]] = {}
        self.guard = CardinalityGuard(
            max_models=settings.max_models, max_versions=settings.max_versions,
            max_services=settings.max_services, max_segment_values=settings.max_segment_values,
            idle_s=settings.series_idle_seconds)
        self.slice_keys = tuple((key,) for key in settings.slice_keys)
        """Segment keys that slice every model version (windows keyed (model, version,
        ``key=value``)) unless ``slicing`` says otherwise for a model."""
        self.watermarks = Watermarks(settings.lateness_seconds)
        """Progress of the input partitions per owned partition: the aligned watermarks."""
        self.join: LabelJoin | None = None
        if settings.feedback_horizon_seconds > 0:
            self.join = LabelJoin(
                window_s=settings.window_seconds, horizon_s=settings.feedback_horizon_seconds,
                lateness_s=settings.lateness_seconds,
                max_predictions=settings.feedback_max_predictions,
                revision_interval_s=settings.revision_interval_seconds,
                max_classes=settings.top_values)

    def _windows(
        self, table: dict[int, TumblingWindows[Any]], partition: int,
        factory: Callable[[tuple[str, ...]], Any],
    ) -> TumblingWindows[Any]:
        windows = table.get(partition)
        if windows is None:
            windows = table[partition] = TumblingWindows(
                self.settings.window_seconds, self.settings.lateness_seconds, factory
            )
            stream = "predictions" if table is self._predictions else "logs"
            if self.watermarks.aligned(stream):
                windows.align(self.watermarks.watermark_s(partition, stream),
                              self.watermarks.caught_up(partition, stream))
        return windows

    def sources(self, stream: str, count: int) -> None:
        """``stream`` (``"predictions"`` or ``"logs"``) is read from ``count`` input
        partitions, any of which can carry any model (service): its windows close on the
        slowest of them (:mod:`mlpulse.progress`)."""
        self.watermarks.sources(stream, count)
        table = self._predictions if stream == "predictions" else self._logs
        for partition, windows in table.items():
            windows.align(self.watermarks.watermark_s(partition, stream),
                          self.watermarks.caught_up(partition, stream))

    def progress(self, partition: int, stream: str, report: Report) -> None:
        """A reader's progress of input partitions of ``stream``, as of after every event
        of theirs that reached ``partition`` before; moves the aligned watermark.

        >>> from mlpulse.config import Settings
        >>> from mlpulse.events import PredictionEvent
        >>> from mlpulse.progress import CAUGHT_UP
        >>> s = Summarizer(Settings(window_seconds=10, lateness_seconds=0))
        >>> s.sources("predictions", 2)
        >>> def event(t): return PredictionEvent(event_id=str(t), timestamp=t, model="m")
        >>> s.add_prediction_events(0, [event(1.0), event(15.0)], now_wall_s=0)
        0
        >>> s.progress(0, "predictions", {0: (15.0, CAUGHT_UP)})
        >>> s.close_due(now_wall_s=0, check_idle=False)   # input partition 1 unheard of
        []
        >>> s.add_prediction_events(0, [event(3.0)], now_wall_s=0)   # ... and its events
        0
        >>> s.progress(0, "predictions", {1: (12.0, CAUGHT_UP)})
        >>> [(c.summary.window_start, c.summary.count)
        ...  for c in s.close_due(now_wall_s=0, check_idle=False)]
        [('1970-01-01T00:00:00Z', 2)]
        """
        if not self.watermarks.update(partition, stream, report):
            return
        table = self._predictions if stream == "predictions" else self._logs
        watermark_s = self.watermarks.watermark_s(partition, stream)
        windows = table.get(partition)
        if windows is not None:
            windows.align(watermark_s, self.watermarks.caught_up(partition, stream))
        if stream == "predictions" and self.join is not None:
            self.join.progress(partition, watermark_s + self.settings.lateness_seconds)

    def _prediction_factory(self, partition: int, with_labels: bool = True
                            ) -> Callable[[tuple[str, ...]], Any]:
        profiles = self.profiles
        join = self.join if with_labels else None
        settings = self.settings

        def new(key: tuple[str, ...]) -> PredictionAggregate:
            model, version = key
            slices = self._slices.get(model)
            if slices is None:
                slices = self._slices[model] = self._slices_of(model)

            def new_slice(name: str) -> PredictionAggregate:
                return PredictionAggregate(
                    settings.max_categories, settings.top_values,
                    profile=profiles(partition, (model, version, name))
                    if profiles is not None else None, max_features=settings.max_features)

            return PredictionAggregate(   # labels join the model version's windows
                settings.max_categories, settings.top_values,
                profile=profiles(partition, key) if profiles is not None else None,
                labels=join.open(partition, key) if join is not None else None,
                max_features=settings.max_features,
                min_batch=SLICED_BATCH if slices else 0,
                slicer=SliceRouter(model, slices, self.guard, self._names,
                                   lambda: self._now_wall_s) if slices else None,
                new_slice=new_slice if slices else None, waiting_events=self.waiting)
        return new

    def add_prediction_events(
        self, partition: int, events: list[PredictionEvent], now_wall_s: float
    ) -> int:
        """Aggregate routed events (all of one model); return the number of late events."""
        windows = self._predictions.get(partition) or self._windows(
            self._predictions, partition, self._prediction_factory(partition))
        if not events:
            return 0
        late = 0
        guard = self.guard
        self._now_wall_s = now_wall_s
        model = guard.model(events[0].model, now_wall_s, len(events))
        for name, group in group_by(events, "model_version").items():
            version = guard.version(model, name, now_wall_s, len(group))
            late += windows.add((model, version), group, now_wall_s)
        if self.waiting.events > MAX_WAITING:
            self.waiting.shrink(to=MAX_WAITING // 2)
        return late

    def _fold_waiting(self, aggregates: list[PredictionAggregate]) -> None:
        """Fold what waits in these open windows (:meth:`Waiting.shrink`): see
        :func:`fold_in_rounds`."""
        chosen = set(aggregates)
        fold_in_rounds(((partition, key), start_s, aggregate)
                       for partition, windows in self._predictions.items()
                       for key, start_s, aggregate in windows.opened() if aggregate in chosen)

    def _slices_of(self, model: str) -> tuple[tuple[str, ...], ...]:
        configured = self.slicing(model) if self.slicing is not None else None
        if len(self._slices) > 4 * self.settings.max_models:   # models that folded or left
            self._slices.clear()
        return tuple(configured) if configured is not None else self.slice_keys

    def add_feedback(self, partition: int, events: list[FeedbackEvent]) -> None:
        """Join labels (all of one model) to the predictions of that model's windows."""
        if self.join is None:
            return
        windows = self._predictions.get(partition)
        if windows is not None and events and self.waiting.events:
            # its predictions waiting to be folded first
            model = events[0].model
            for key, _, aggregate in windows.opened():
                if key[0] == model and aggregate.waiting:
                    aggregate.flush()
        self.join.label(partition, events)

    def revisions(self, now_wall_s: float) -> list[Revised]:
        """Summaries of closed windows that labels changed since they were emitted."""
        return self.join.revisions(now_wall_s) if self.join is not None else []

    def add_log_events(self, partition: int, events: list[LogEvent], now_wall_s: float) -> int:
        """Aggregate routed log events (all of one service)."""
        if not events:
            return 0
        windows = self._windows(self._logs, partition, lambda key: LogAggregate())
        service = self.guard.service(events[0].service, now_wall_s, len(events))
        return windows.add((service,), events, now_wall_s)

    def close_due(self, now_wall_s: float, check_idle: bool = True) -> list[Closed]:
        """Every window that is due to close, oldest first per partition, with its summary.

        ``check_idle=False`` only closes what the watermark passed (cheap: the engine asks
        after every batch; the clock's tick asks with the default)."""
        out: list[Closed] = []
        due = [(partition, windows.close_due(now_wall_s, check_idle))
               for partition, windows in self._predictions.items()]
        fold_in_rounds(((partition, c.key), c.start_s, c.aggregate)
                       for partition, closing in due for c in closing)
        for partition, closing in due:
            for closed in closing:
                model, version = closed.key
                aggregate = closed.aggregate
                window = dict(model=model, model_version=version,
                              window_start=rfc3339(closed.start_s),
                              window_end=rfc3339(closed.end_s))
                aggregate.flush()   # (its slices come of the events it folds)
                names = sorted(aggregate.slices)
                parts = [aggregate.slices[name] for name in names]
                # late events are counted by the model version's window only
                summary, *part_summaries = PredictionAggregate.results(
                    [aggregate, *parts], [closed.late_events] + [0] * len(parts), **window)
                if aggregate.folded_features:
                    self.guard.folded["feature"] += aggregate.folded_features
                labels = aggregate.labels
                if isinstance(labels, WindowLabels) and self.join is not None:
                    self.join.closed(labels, summary)
                out.append(Closed(partition, closed.key, closed.start_s, closed.end_s,
                                  aggregate, summary, idle=closed.idle))
                for name, part_aggregate, sliced in zip(names, parts, part_summaries,
                                                        strict=True):
                    sliced.segment = segment_of(name)
                    if part_aggregate.folded_features:
                        self.guard.folded["feature"] += part_aggregate.folded_features
                    out.append(Closed(partition, (model, version, name), closed.start_s,
                                      closed.end_s, part_aggregate, sliced, idle=closed.idle))
                if isinstance(labels, WindowLabels) and self.join is not None:
                    self.join.closed_slices(labels, dict(zip(names, part_summaries,
                                                             strict=True)))
        for partition, log_windows in self._logs.items():
            for closed_log in log_windows.close_due(now_wall_s, check_idle):
                log_summary = closed_log.aggregate.result(
                    service=closed_log.key[0],
                    window_start=rfc3339(closed_log.start_s),
                    window_end=rfc3339(closed_log.end_s),
                    late_events=closed_log.late_events,
                )
                out.append(Closed(partition, closed_log.key, closed_log.start_s,
                                  closed_log.end_s, closed_log.aggregate, log_summary,
                                  idle=closed_log.idle))
        return out

    def partition_state(self, partition: int) -> bytes:
        """The open windows of ``partition`` (predictions and logs) with their watermarks,
        and the progress of the input partitions, as msgpack: what a checkpoint of the
        partition holds, with the detectors' bin counts of each open window and the label
        index's counters (its predictions are in :meth:`partition_records`, taken after
        this).
        """
        predictions = self._predictions.get(partition)
        logs = self._logs.get(partition)
        if predictions is not None:   # (what waits is folded for the state)
            fold_in_rounds(predictions.opened())
        return msgspec.msgpack.encode({
            "predictions": predictions.state(PredictionAggregate.state) if predictions else [],
            "logs": logs.state(LogAggregate.state) if logs else [],
            "progress": self.watermarks.state(partition),
            "labels": self.join.state(partition) if self.join is not None else None,
        })

    def partition_records(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """Checkpoint records to write with the last :meth:`partition_state` of
        ``partition`` (the label index's new chunks; None: a tombstone)."""
        return self.join.records(partition) if self.join is not None else []

    def records_written(self, partition: int) -> None:
        """The last state and records of ``partition`` are durable."""
        if self.join is not None:
            self.join.written(partition)

    def restore_partition(self, partition: int, data: bytes,
                          now_wall_s: float = float("-inf"),
                          records: Callable[[bytes], bytes | None] | None = None) -> None:
        """Replace the windows of ``partition`` by those of a :meth:`partition_state`
        (restored at ``now_wall_s``: the idle close gives restored windows their full time
        from then), and its label index by the one in ``records`` (the checkpoint topic's).

        >>> from mlpulse.config import Settings
        >>> from mlpulse.events import PredictionEvent
        >>> one, two = Summarizer(Settings()), Summarizer(Settings())
        >>> one.add_prediction_events(2, [PredictionEvent(event_id="1", timestamp=5.0,
        ...                                               model="m")], now_wall_s=0)
        0
        >>> two.restore_partition(2, one.partition_state(2))
        >>> [(c.summary.model, c.summary.count) for c in two.close_due(now_wall_s=1000)]
        [('m', 1)]
        """
        state = msgspec.msgpack.decode(data)
        self._drop(partition)
        self._logs.pop(partition, None)
        self.watermarks.restore(partition, state.get("progress", {}))
        labels: dict[tuple[Any, ...], WindowLabels] = {}
        if self.join is not None and state.get("labels") and records is not None:
            labels = self.join.restore(partition, state["labels"], records)
        if state["predictions"]:
            _nest_slices(state["predictions"])
            factory = self._prediction_factory(partition, with_labels=False)
            windows = self._windows(self._predictions, partition, factory)
            windows.restore(state["predictions"],
                            lambda key, data: factory(key).restore(data), now_wall_s)
            for key, start_s, aggregate in windows.opened():   # their label index
                if self.join is not None and len(key) == 2:
                    aggregate.labels = labels.pop((key, start_s), None) or self.join.open(
                        partition, key)
            windows.new_aggregate = self._prediction_factory(partition)
        if state["logs"]:
            self._windows(self._logs, partition, lambda key: LogAggregate()).restore(
                state["logs"], lambda key, data: LogAggregate().restore(data), now_wall_s)

    def _drop(self, partition: int) -> None:
        """Forget the prediction windows of ``partition`` (and what they held unfolded)."""
        windows = self._predictions.pop(partition, None)
        if windows is not None:
            for _, _, aggregate in windows.opened():
                self.waiting.remove(aggregate)

    def touch(self, now_wall_s: float) -> None:
        """Input resumes after a pause: every open window gets its full idle time again."""
        for predictions in self._predictions.values():
            predictions.touch(now_wall_s)
        for logs in self._logs.values():
            logs.touch(now_wall_s)

    def keep_only(self, predictions: set[int], logs: set[int]) -> None:
        """Drop the state of partitions this worker no longer owns."""
        for partition in set(self._predictions) - predictions:
            self._drop(partition)
        if self.join is not None:
            self.join.keep_only(predictions)
        for partition in set(self._logs) - logs:
            del self._logs[partition]
        self.watermarks.keep_only(predictions | logs)

    @property
    def open_windows(self) -> int:
        """Open windows: of model versions, of their slices, of log services."""
        slices = sum(len(aggregate.slices) for windows in self._predictions.values()
                     for _, _, aggregate in windows.opened())
        return slices + sum(w.open_windows for w in self._predictions.values()) + sum(
            w.open_windows for w in self._logs.values())


WINDOWS_PER_FOLD = 8
"""Windows folded in one pass at most (:func:`fold_in_rounds`): past ~8 the fixed cost is
mostly shared, and a pass's windows share a bound on their cells (``MAX_CELLS``, 512 for
all: beyond it each window folds alone)."""
EVENTS_PER_FOLD = 8192
"""Events folded in one pass at most, unless one window holds more (it folds alone): a pass
of 8 windows of 6,000 events each cost ~10-15 % more a window than each alone (its
columns no longer fit the CPU's caches), where 8 of 1,000 cost ~10 % less
(``python -m bench.folds``)."""


def fold_in_rounds(windows: Iterable[tuple[Hashable, float, PredictionAggregate]]) -> None:
    """Fold the events waiting in these windows (``(key, start, aggregate)``) in one pass
    per round (:meth:`PredictionAggregate.flush_together`), of at most ``WINDOWS_PER_FOLD``
    windows and ``EVENTS_PER_FOLD`` events: a round takes the oldest window of each key not
    yet folded, so that a key's windows still fold one after the other, in order (its
    detectors see its events in order). A fold costs ~150 numpy calls whatever its events:
    the windows that close together (or that a checkpoint snapshots) pay it once a pass.

    >>> events = [PredictionEvent(event_id=str(i), timestamp=1, model="m") for i in range(3)]
    >>> a, b, c = (PredictionAggregate(min_batch=10) for _ in range(3))
    >>> for window in (a, b, c):
    ...     window.add_batch(events)
    >>> fold_in_rounds([("m", 10.0, b), ("m", 0.0, a), ("n", 0.0, c)])
    >>> [window.count for window in (a, b, c)]
    [3, 3, 3]
    """
    rounds: list[list[PredictionAggregate]] = []
    seen: dict[Hashable, int] = {}
    for key, _, aggregate in sorted(windows, key=lambda window: window[1]):
        if not aggregate.waiting:
            continue
        n = seen[key] = seen.get(key, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(aggregate)
    for together in rounds:
        passes: list[list[PredictionAggregate]] = [[]]
        events = 0
        for aggregate in together:
            if passes[-1] and (len(passes[-1]) == WINDOWS_PER_FOLD
                               or events + aggregate.waiting > EVENTS_PER_FOLD):
                passes.append([])
                events = 0
            passes[-1].append(aggregate)
            events += aggregate.waiting
        for windows_of_pass in passes:
            PredictionAggregate.flush_together(windows_of_pass)


def _nest_slices(windows: list[list[Any]]) -> None:
    """Move the slice windows of an earlier version's checkpoint (keyed ``(model, version,
    slice)`` beside their model version's) into their model version's windows, as this
    version keeps them; a slice window without its model version's is dropped."""
    whole = {tuple(entry[0]): entry for entry in windows if len(entry[0]) == 2}
    for entry in [entry for entry in windows if len(entry[0]) == 3]:
        windows.remove(entry)
        model, version, name = entry[0]
        parent = whole.get((model, version))
        if parent is None:
            continue
        starts = {window[0]: window[1] for window in parent[1]}
        for start, aggregate, *_ in entry[1]:
            if start in starts:
                starts[start].setdefault("slices", {}).setdefault(name, aggregate)

