"""Delayed labels joined to the windows of the predictions they judge.

Each prediction window (of one model version) keeps the predictions that still
await a label (:class:`~mlpulse.labels.WindowLabels`). A label
(:class:`~mlpulse.events.FeedbackEvent`) is looked up among its model's windows,
newest first, and scored into that window's :class:`~mlpulse.performance.Performance`;
the entry goes, so a repeated label counts once. A label that arrives before its
prediction has been consumed waits (bounded) until the model's predictions have
moved a window and its lateness past the label's time.

The index is part of the checkpoint of its partition (:meth:`LabelJoin.state`,
:meth:`LabelJoin.records`): each window's predictions as chunks written once (the
predictions since the last checkpoint), the labels scored as chunks of their event ids'
hashes, its summary once it closed, and in the partition's checkpoint the few counters
that change (performance, revision). Labels sent after a crash (``kill -9``) join the
predictions made before it.

Memory is bounded: a window's entries are kept until the model's newest event
time is ``horizon_s`` past the window's end, and a worker keeps at most
``max_predictions`` entries (the oldest windows go first, counted as evicted), where a
window awaiting labels counts as ``WINDOW_COST`` entries besides its predictions (its
summary and counters: quiet models' windows would otherwise grow without bound).

A *closed* window whose performance changed is due for a revision: its summary
again, with ``performance`` updated and ``revision`` + 1, at most once per
``revision_interval_s`` of wall clock (and once more when the window leaves the
index with changes not yet sent).

>>> from mlpulse.events import FeedbackEvent, PredictionEvent, PredictionWindow
>>> join = LabelJoin(window_s=60, horizon_s=3600, revision_interval_s=0)
>>> window = join.open(0, ("fraud", "v1"))
>>> window.remember([PredictionEvent(event_id=str(i), timestamp=10.0 + i, model="fraud",
...                                  prediction=float(i % 2)) for i in range(4)])
>>> summary = PredictionWindow(
...     model="fraud", model_version="v1", window_start="", window_end="", count=4,
...     error_count=0, error_rate=0.0, latency_ms=None, confidence=None, predictions={},
...     features={}, tokens_in=0, tokens_out=0, cost_usd=0.0, cache_hit_rate=None,
...     late_events=0)
>>> join.closed(window, summary)   # no labels yet: nothing to report
>>> summary.performance is None
True
>>> join.label(0, [FeedbackEvent(event_id=str(i), timestamp=100.0, model="fraud", label=1.0)
...                for i in range(3)])
>>> [(r.summary.revision, r.summary.performance.accuracy) for r in join.revisions(now_wall_s=1)]
[(1, 0.3333333333333333)]
>>> join.counts["joined"], join.size
(3, 1)
"""

from __future__ import annotations

import array
import collections
import itertools
import logging
import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from .events import FeedbackEvent, PredictionWindow
from .labels import LABELLED, WITH_OUTCOMES, SliceSummaries, WindowLabels, event_hash
from .performance import Outcomes, Performance

__all__ = ["LabelJoin", "Revised"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PredictionWindow)
_msgpack = msgspec.msgpack.Encoder()

log = logging.getLogger("mlpulse.join")

_SHARED = {str, float}
"""Prediction types :meth:`LabelJoin.value` shares one object of."""

WINDOW_COST = 64
"""What a window awaiting labels counts against ``max_predictions``: its compressed summary,
quality counters and index (~1.6 KB) weigh about as much as 64 predictions (~25 B each)."""


def _pack(summary: PredictionWindow) -> bytes:
    """A closed window's summary as kept for its revisions: compressed JSON (~1.2 KB with
    20 features instead of ~4.3 KB; an hour of 1,000 series' windows held ~250 MB)."""
    return zlib.compress(_encoder.encode(summary), 1)


def _unpack(packed: bytes) -> PredictionWindow:
    return _decoder.decode(zlib.decompress(packed))


@dataclass(slots=True)
class Revised:
    """A closed window's summary again, changed by labels that arrived after it closed."""

    partition: int
    key: tuple[str, ...]
    start_s: float
    end_s: float
    summary: PredictionWindow


class LabelJoin:
    """The label index of every window of the partitions this worker owns."""

    def __init__(self, *, window_s: float, horizon_s: float, lateness_s: float = 0.0,
                 max_predictions: int = 500_000, revision_interval_s: float = 5.0,
                 max_classes: int = 100) -> None:
        self.window_s = window_s
        self.horizon_s = horizon_s
        self.lateness_s = lateness_s
        self.max_predictions = max_predictions
        self.max_early = max(max_predictions // 10, 1)
        self.revision_interval_s = revision_interval_s
        self.max_classes = max_classes
        self.windows: dict[str, list[WindowLabels]] = {}
        """Per model, its windows that still await labels, oldest first."""
        self.partition_of: dict[str, int] = {}
        self.newest_s: dict[str, float] = {}
        """Per model, the newest event time of its predictions and labels."""
        self.newest_prediction_s: dict[str, float] = {}
        self.aligned_s: dict[int, float] = {}
        """Per partition, how far every input partition of predictions has come (the
        slowest's newest event time; mlpulse.progress): a label waits for its prediction until
        then, not only until its model's newest prediction (read from the fastest)."""
        self.early: dict[str, dict[str, tuple[object, float, dict[str, float | bool]]]] = {}
        """Per model, feedback (label, time, outcomes) whose prediction has not been seen
        yet."""
        self.outcome_models: set[str] = set()
        """Models that sent outcomes: their windows wait for outcomes too, not only for
        labels."""
        self.size = 0
        """Predictions held (awaiting labels)."""
        self.window_count = 0
        """Windows held (awaiting labels)."""
        self.slice_windows = 0
        """Summaries of their slices held (for revisions)."""
        self._values: dict[object, object] = {}
        self.early_size = 0
        self.dirty: set[WindowLabels] = set()
        self._leaving: list[WindowLabels] = []
        self.counts: collections.Counter[str] = collections.Counter()
        """joined, unmatched (no prediction found in time), unlabelled (predictions that
        left the index without a label), evicted (predictions dropped for memory)."""
        self._forgotten: dict[int, list[bytes]] = {}
        """Per partition, records of windows that left since the last checkpoint."""
        self._retired: dict[int, list[bytes]] = {}
        """... that left before the checkpoint being written (it no longer names them)."""
        self._deletable: dict[int, list[bytes]] = {}
        """... that no written checkpoint names: deleted (tombstones) with the next one."""

    def open(self, partition: int, key: tuple[str, ...]) -> WindowLabels:
        """The label index of a new window of (model, version)."""
        window = WindowLabels(self, partition, key)
        self.windows.setdefault(key[0], []).append(window)
        self.window_count += 1
        self.partition_of[key[0]] = partition
        return window

    def values(self, predictions: list[object], kinds: set[type] | None = None) -> list[object]:
        """:meth:`value` of each prediction (the usual batch, all strings or all floats, in
        C-speed passes); ``kinds``, their types, if known.

        >>> join = LabelJoin(window_s=60, horizon_s=600)
        >>> a, b = join.values(["cat", "cat"]), join.values(["".join(["c", "at"])])
        >>> a[0] is a[1] is b[0]
        True
        """
        if kinds is None:
            kinds = set(map(type, predictions))
        if len(kinds) != 1 or not kinds <= _SHARED:   # mixed: True and 1.0 hash alike
            return [self.value(p) for p in predictions]
        held = self._values
        shared = list(map(held.get, predictions))
        if None not in shared:   # the usual batch: every class seen before
            return shared
        room = 4 * self.max_classes - len(held)
        if room > 0:
            new = set(predictions).difference(held)
            for prediction in itertools.islice(new, room):
                held[prediction] = prediction
        return list(map(held.get, predictions, predictions))

    def value(self, prediction: object) -> object:
        """``prediction`` itself, or an equal string or float already held (classes
        repeat: one object per class rather than one per prediction; at most
        4 × ``max_classes`` distinct values are kept for sharing)."""
        if type(prediction) is not str and type(prediction) is not float:
            return prediction
        held = self._values.get(prediction)
        if held is not None:
            return held
        if len(self._values) < 4 * self.max_classes:
            self._values[prediction] = prediction
        return prediction

    def saw(self, model: str, time_s: float, *, prediction: bool) -> None:
        """Event time moves on for ``model`` (windows expire, waiting labels give up)."""
        if time_s > self.newest_s.get(model, -math.inf):
            self.newest_s[model] = time_s
        if prediction and time_s > self.newest_prediction_s.get(model, -math.inf):
            self.newest_prediction_s[model] = time_s

    def progress(self, partition: int, aligned_s: float) -> None:
        """Every input partition of predictions has come this far (see ``aligned_s``)."""
        self.aligned_s[partition] = aligned_s

    def closed(self, window: WindowLabels, summary: PredictionWindow) -> None:
        """The window closed with ``summary``: fill in its performance and keep it for
        revisions while labels may still come."""
        window.result(summary)
        if window.waiting and window in self.windows.get(window.key[0], ()):
            window.summary = _pack(summary)
        else:
            self._forget(window)

    def closed_slices(self, window: WindowLabels, summaries: dict[str, PredictionWindow]
                      ) -> None:
        """The slices of ``window`` closed with ``summaries`` (after the window's own
        :meth:`closed`): their performance, and kept for revisions like the window's."""
        for name, summary in summaries.items():
            window.slice_result(name, summary)
            window.slices_dirty.discard(name)
        if window.active and window.summary is not None and summaries:
            kept = window.slice_summaries
            self.slice_windows += len(summaries.keys() - kept.names)
            window.slice_summaries = kept.replace(summaries)

    def label(self, partition: int, events: Iterable[FeedbackEvent]) -> None:
        """Score each label into the window of its prediction (or let it wait)."""
        for fb in events:
            self.saw(fb.model, fb.event_time_s, prediction=False)
            if fb.outcomes:
                self.outcome_models.add(fb.model)
            windows = self.windows.get(fb.model, ())
            key = event_hash(fb.event_id)
            if any(w.score(key, fb.label, fb.event_time_s, fb.outcomes)
                   for w in reversed(windows)):
                continue
            if self.early_size >= self.max_early:
                self.counts["unmatched"] += 1
                continue
            waiting = self.early.setdefault(fb.model, {})
            held = waiting.get(fb.event_id)
            if held is None:
                self.early_size += 1
                waiting[fb.event_id] = (fb.label, fb.event_time_s, fb.outcomes)
            else:   # its label and its outcomes may come in two events, both early
                label, time_s, outcomes = held
                waiting[fb.event_id] = ((fb.label, fb.event_time_s) if fb.label is not None
                                        else (label, time_s)) + (fb.outcomes or outcomes,)
            self.partition_of.setdefault(fb.model, partition)

    def revisions(self, now_wall_s: float) -> list[Revised]:
        """Expire what is past the horizon; the summaries to re-emit now."""
        self._expire()
        out = [r for w in self._leaving if w in self.dirty for r in self._revise(w, now_wall_s)]
        self.dirty.difference_update(self._leaving)
        self._leaving.clear()
        for window in [w for w in self.dirty
                       if now_wall_s - w.last_revision_wall_s >= self.revision_interval_s]:
            out.extend(self._revise(window, now_wall_s))
            self.dirty.discard(window)
            if not window.waiting:
                self._forget(window)
        return out

    def _revise(self, window: WindowLabels, now_wall_s: float) -> list[Revised]:
        """The window's summary again, and those of its slices that feedback changed."""
        assert window.summary is not None
        summary = window.result(_unpack(window.summary))
        window.revision += 1
        summary.revision = window.revision
        window.summary = _pack(summary)
        window.last_revision_wall_s = now_wall_s
        self.counts["revisions"] += 1
        out = [Revised(window.partition, window.key, window.start_s, window.end_s, summary)]
        revised: dict[str, PredictionWindow] = {}
        for name in sorted(window.slices_dirty):
            kept = window.slice_summaries.get(name)
            if kept is None:
                continue
            sliced = revised[name] = window.slice_result(name, kept)
            sliced.revision = window.revision
            out.append(Revised(window.partition, (*window.key, name), window.start_s,
                               window.end_s, sliced))
        if revised:   # (their record keeps the first: the performance a restored window
            # reports is its counters', as the window's)
            window.slice_summaries = window.slice_summaries.replace(revised)
        window.slices_dirty.clear()
        return out

    def _expire(self) -> None:
        for model, windows in list(self.windows.items()):
            cutoff = self.newest_s.get(model, -math.inf) - self.horizon_s
            for window in [w for w in windows if w.end_s <= cutoff]:
                self.counts["unlabelled"] += window.pending
                self._leave(window)
        for model, waiting in list(self.early.items()):
            newest_s = min(self.newest_prediction_s.get(model, -math.inf),
                           self.aligned_s.get(self.partition_of.get(model, -1), math.inf))
            cutoff = newest_s - self.window_s - self.lateness_s
            for event_id in [i for i, (_, t, _) in waiting.items() if t < cutoff]:
                del waiting[event_id]
                self.early_size -= 1
                self.counts["unmatched"] += 1
            if not waiting:
                del self.early[model]

    @property
    def load(self) -> int:
        """What the index holds against ``max_predictions``: its predictions, and
        ``WINDOW_COST`` per window and per slice of a window."""
        return self.size + WINDOW_COST * (self.window_count + self.slice_windows)

    def evict(self) -> None:
        """Drop the oldest windows until the index is at 90% of its bound."""
        windows = sorted((w for ws in self.windows.values() for w in ws),
                         key=lambda w: (math.isnan(w.start_s), w.start_s))
        for window in windows:
            if self.load <= 0.9 * self.max_predictions:
                break
            self.counts["evicted"] += window.pending
            self._leave(window)

    def _leave(self, window: WindowLabels) -> None:
        """The window stops taking labels; a change not yet re-emitted still will be."""
        if window in self.dirty:
            self._leaving.append(window)
        self._forget(window)

    def _forget(self, window: WindowLabels) -> None:
        self.size -= window.pending
        if window.active and (window.chunks or window.scored_chunks or window.summary_written):
            self._forgotten.setdefault(window.partition, []).extend(window.keys())
        window.pending = window.without_outcomes = 0
        window.predictions = []
        window.times_s = array.array("d")
        window.hashes = array.array("Q")
        window.scored = bytearray()
        window.fresh, window.unwritten = [], []
        window.fresh_hashes, window.fresh_scored = array.array("Q"), array.array("Q")
        window.fresh_times_s = array.array("d")
        window.combo_ids, window.fresh_combo_ids = array.array("H"), array.array("H")
        self.slice_windows -= len(window.slice_summaries)
        window.slice_summaries, window.slices_dirty = SliceSummaries(), set()
        window.active = False
        windows = self.windows.get(window.key[0])
        if windows is not None and window in windows:
            windows.remove(window)
            self.window_count -= 1
            if not windows:
                del self.windows[window.key[0]]

    def keep_only(self, partitions: set[int]) -> None:
        """Drop the index of models on partitions this worker no longer owns."""
        for model, partition in list(self.partition_of.items()):
            if partition in partitions:
                continue
            for window in list(self.windows.get(model, ())):
                self._forget(window)
                self.dirty.discard(window)
            self.early_size -= len(self.early.pop(model, {}))
            self.newest_s.pop(model, None)
            self.newest_prediction_s.pop(model, None)
            self.outcome_models.discard(model)
            del self.partition_of[model]
        for partition in set(self.aligned_s) - partitions:
            del self.aligned_s[partition]
        for pending in (self._forgotten, self._retired, self._deletable):
            for partition in set(pending) - partitions:   # the new owner's records now
                del pending[partition]

    # ------------------------------------------------------------- checkpoints

    def _models(self, partition: int) -> list[str]:
        return [m for m, p in self.partition_of.items() if p == partition]

    def state(self, partition: int) -> dict[str, Any]:
        """The index of ``partition`` as its checkpoint holds it: per window its counters
        and how many records it made (:meth:`records` are the new ones), the labels
        waiting for their predictions, and each model's newest event times."""
        models = self._models(partition)
        windows = []
        for model in models:
            for window in self.windows.get(model, ()):
                if math.isnan(window.start_s):
                    continue   # nothing remembered yet
                window.flush()
                windows.append(window.state())
        self._retired.setdefault(partition, []).extend(self._forgotten.pop(partition, []))
        return {
            "windows": windows,
            "early": [[model, [[i, label, t, outcomes]
                               for i, (label, t, outcomes) in self.early[model].items()]]
                      for model in models if model in self.early],
            "outcome_models": [m for m in models if m in self.outcome_models],
            "newest": [[model, self.newest_s.get(model, -math.inf),
                        self.newest_prediction_s.get(model, -math.inf)] for model in models],
        }

    def records(self, partition: int) -> list[tuple[bytes, bytes | None]]:
        """The checkpoint records of ``partition`` to write with its :meth:`state`: new
        chunks of its windows, and tombstones (None) of windows no checkpoint names."""
        out: list[tuple[bytes, bytes | None]] = []
        for model in self._models(partition):
            for window in self.windows.get(model, ()):
                out.extend(window.unwritten)
        out.extend((key, None) for key in self._deletable.get(partition, ()))
        return out

    def written(self, partition: int) -> None:
        """The records and state of ``partition`` taken last are durable."""
        for model in self._models(partition):
            for window in self.windows.get(model, ()):
                window.unwritten = []
        self._deletable[partition] = self._retired.pop(partition, [])

    def restore(self, partition: int, state: dict[str, Any],
                get: Callable[[bytes], bytes | None]) -> dict[tuple[Any, ...], WindowLabels]:
        """Take over the index of ``partition`` from a checkpoint's :meth:`state` and
        records (``get``); the windows still open, by (key, start), for their aggregates."""
        for model in self._models(partition):   # what a previous ownership left
            for window in list(self.windows.get(model, ())):
                self._forget(window)
        self._forgotten.pop(partition, None)
        opened: dict[tuple[Any, ...], WindowLabels] = {}
        for row in state.get("windows", ()):
            restored = self._restore_window(partition, row, get)
            if restored is None:
                continue
            self.windows.setdefault(restored.key[0], []).append(restored)
            self.window_count += 1
            self.slice_windows += len(restored.slice_summaries)
            self.size += restored.pending
            self.partition_of[restored.key[0]] = partition
            if restored.summary is None:
                opened[(restored.key, restored.start_s)] = restored
        for windows in self.windows.values():
            windows.sort(key=lambda w: w.start_s)
        for model, waiting in state.get("early", ()):
            held = self.early.setdefault(model, {})
            for event_id, label, time_s, *outcomes in waiting:
                if event_id not in held:
                    self.early_size += 1
                held[event_id] = (label, time_s, outcomes[0] if outcomes else {})
            self.partition_of.setdefault(model, partition)
        self.outcome_models.update(state.get("outcome_models", ()))
        for model, newest_s, newest_prediction_s in state.get("newest", ()):
            self.saw(model, newest_s, prediction=False)
            self.saw(model, newest_prediction_s, prediction=True)
        return opened

    def _restore_window(self, partition: int, row: list[Any],
                        get: Callable[[bytes], bytes | None]) -> WindowLabels | None:
        key, start_s, count, chunks, scored_chunks, summary_written, revision, dirty, perf = (
            row[:9])
        outcome_chunks, outcomes = row[9:11] if len(row) > 9 else (0, None)
        slices = row[11] if len(row) > 11 else None
        window = WindowLabels(self, partition, tuple(key))
        window.start_s, window.end_s, window.count = start_s, start_s + self.window_s, count
        window.chunks, window.scored_chunks = chunks, scored_chunks
        window.summary_written, window.revision = summary_written, revision
        window.performance = Performance.from_state(perf, self.max_classes)
        window.outcomes = Outcomes.from_state(outcomes)
        window.outcome_chunks = outcome_chunks
        window.restore_slices(slices)
        name = window.name
        hashes, times_s, values = array.array("Q"), array.array("d"), []
        combo_ids = array.array("H")
        try:
            for i in range(chunks):
                h, t, v, *c = msgspec.msgpack.decode(_required(get, name + b"|p%d" % i))
                if c:   # the predictions' slices (those before any had slices: none)
                    combo_ids.frombytes(bytes(2 * (len(hashes) - len(combo_ids))) + c[0])
                hashes.frombytes(h)
                times_s.frombytes(t)
                values.extend(v)
            window.hashes, window.times_s, window.combo_ids = hashes, times_s, combo_ids
            window.predictions = self.values(values) if values else []
            window.scored = bytearray(len(hashes))
            window.sorted = not hashes
            window.pending = window.without_outcomes = len(hashes)
            for tag, chunks, what in ((b"|s", scored_chunks, LABELLED),
                                      (b"|o", outcome_chunks, WITH_OUTCOMES)):
                for i in range(chunks):
                    for key in array.array("Q", _required(get, name + tag + b"%d" % i)).tolist():
                        window.mark(key, what)
            if summary_written:
                window.summary = _required(get, name + b"|w")
            if window.slices_bundled:
                window.slice_summaries = SliceSummaries(_required(get, name + b"|W"))
            elif window.slices_written:   # (checkpoints of summaries one record each)
                window.slice_summaries = SliceSummaries.of({
                    part: _unpack(_required(get, name + b"|w|" + part.encode()))
                    for part in window.slices_written})
        except (KeyError, ValueError, msgspec.DecodeError) as exc:
            log.error("label index of a window of %s not restored (%s): its labels will not "
                      "join", key, exc)
            self._forgotten.setdefault(partition, []).extend(window.keys())
            return None
        if dirty:
            self.dirty.add(window)
        return window


def _required(get: Callable[[bytes], bytes | None], key: bytes) -> bytes:
    value = get(key)
    if value is None:
        raise KeyError(f"checkpoint record {key!r} missing")
    return value
