"""One window's predictions awaiting their labels: compact columns, lookups, and the
records of its checkpoint.

A :class:`WindowLabels` belongs to one window of one model version, in the label index of
its worker (:class:`~mlpulse.join.LabelJoin`). It keeps, per prediction that can be
judged, the 64-bit hash of its event id (:func:`event_hash`), its event time and its
value, and whether a label scored it; the labelled ones are counted into its
:class:`~mlpulse.performance.Performance`. What changed since the last checkpoint (new
predictions, labels scored, the summary once the window closed) becomes records of the
checkpoint topic (:meth:`WindowLabels.flush`), each written once.

>>> from mlpulse.events import PredictionEvent
>>> from mlpulse.join import LabelJoin
>>> window = LabelJoin(window_s=60, horizon_s=3600).open(0, ("fraud", "v1"))
>>> window.remember([PredictionEvent(event_id=str(i), timestamp=10.0 + i, model="fraud",
...                                  prediction="yes") for i in range(3)])
>>> window.score(event_hash("1"), "no", 100.0), window.pending
(True, 2)
>>> window.flush()
>>> [key.rsplit(b"|", 1)[1] for key, _ in window.unwritten]   # 3 predictions, 1 label
[b'p0', b's0']
"""

from __future__ import annotations

import array
import hashlib
import itertools
import math
import operator
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import xxhash

from .events import PredictionEvent, PredictionWindow
from .performance import Outcomes, Performance

if TYPE_CHECKING:
    from .join import LabelJoin
    from .slicing import Sliced

__all__ = ["CHUNK_PREDICTIONS", "LABELLED", "WITH_OUTCOMES", "SliceSummaries", "WindowLabels",
           "event_hash"]

LABELLED = 1
"""A prediction's flag: its label joined."""
WITH_OUTCOMES = 2
"""A prediction's flag: its outcomes joined."""

event_hash: Callable[[str], int] = xxhash.xxh3_64_intdigest
"""The index's 64-bit hash of an event id: the same in every process (Python's ``hash``
is seeded per process, so an index of its values could not be restored elsewhere); ~90 ns
an id, measured against ~50 ns for ``hash``."""

MAX_COMBOS = 65_535
"""Most combinations of slices a window tells apart (2 bytes a prediction)."""
CHUNK_PREDICTIONS = 16_384
"""Most predictions in one checkpoint record of the index (~400 KB)."""

_msgpack = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()
_summary = msgspec.json.Decoder(PredictionWindow)
_bundle = msgspec.msgpack.Decoder(dict[str, bytes])
_TIMESTAMP = operator.attrgetter("timestamp")   # event time, epoch seconds once decoded
_PREDICTION = operator.attrgetter("prediction")
_EVENT_ID = operator.attrgetter("event_id")
_NONE = type(None)
_NO_IDS = np.zeros(0, dtype=np.uint16)


class SliceSummaries:
    """The summaries of a window's slices, kept for revisions: one compressed bundle of
    their JSON (zlib of a msgpack map, slice → summary). Compressed one by one, a slice's
    summary of ~1.3 KB cost ~40 µs (zlib's set-up for each); together they also share their
    structure. One checkpoint record holds the bundle as the window closed.

    >>> from mlpulse.events import PredictionWindow
    >>> def window(count):
    ...     return PredictionWindow(
    ...         model="m", model_version="v1", window_start="", window_end="", count=count,
    ...         error_count=0, error_rate=0.0, latency_ms=None, confidence=None,
    ...         predictions={}, features={}, tokens_in=0, tokens_out=0, cost_usd=0.0,
    ...         cache_hit_rate=None, late_events=0)
    >>> kept = SliceSummaries.of({"region=eu": window(5), "region=us": window(7)})
    >>> len(kept), "region=eu" in kept, kept.get("region=us").count, kept.get("x")
    (2, True, 7, None)
    >>> kept = kept.replace({"region=us": window(8)})
    >>> kept.get("region=us").count, SliceSummaries(kept.packed).get("region=eu").count
    (8, 5)
    """

    __slots__ = ("names", "packed")

    def __init__(self, packed: bytes = b"", names: frozenset[str] | None = None) -> None:
        self.packed = packed
        """The bundle (empty: no summary)."""
        self.names = names if names is not None else (
            frozenset(self._unpacked()) if packed else frozenset())

    @classmethod
    def of(cls, summaries: dict[str, PredictionWindow]) -> SliceSummaries:
        return cls().replace(summaries)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def get(self, name: str) -> PredictionWindow | None:
        """Slice ``name``'s summary (None: not kept)."""
        if name not in self.names:
            return None
        return _summary.decode(self._unpacked()[name])

    def replace(self, summaries: dict[str, PredictionWindow]) -> SliceSummaries:
        """These summaries with ``summaries`` in place of (or beside) theirs."""
        kept = self._unpacked() if self.packed else {}
        kept.update((name, _json.encode(summary)) for name, summary in summaries.items())
        return SliceSummaries(zlib.compress(_msgpack.encode(kept), 1), frozenset(kept))

    def _unpacked(self) -> dict[str, bytes]:
        return _bundle.decode(zlib.decompress(self.packed))


class WindowLabels:
    """One window's predictions awaiting labels, and the quality of the labelled ones.

    Compact columns, ~25 bytes per prediction: the 64-bit hash of its event id, its event
    time, its prediction and whether it was scored. No per-prediction Python object is
    kept (an event id string and a dict entry cost ~150 bytes and pin the allocator's
    pages of the batch that decoded them). Lookups sort the columns by hash (once per
    window in the usual case: labels arrive after it closed) and binary-search them.
    Two event ids with the same 64-bit hash in one model's windows would be confused:
    ~10⁻⁹ for 250k predictions.

    What changed since the last checkpoint waits in ``fresh`` (predictions, in arrival
    order) and ``fresh_scored`` (hashes of the labelled ones) until :meth:`flush` turns it
    into checkpoint records.
    """

    __slots__ = ("_combo_index", "_slice_index", "active", "chunks", "combo_ids", "combos",
                 "count", "end_s", "fresh", "fresh_combo_ids", "fresh_hashes",
                 "fresh_outcomes", "fresh_scored", "fresh_times_s", "hashes", "join", "key",
                 "last_revision_wall_s", "outcome_chunks", "outcomes", "partition", "pending",
                 "performance", "predictions", "revision", "scored", "scored_chunks",
                 "slice_names", "slice_outcomes", "slice_performance", "slice_summaries",
                 "slices_bundled", "slices_dirty", "slices_written", "sorted", "start_s",
                 "summary",
                 "summary_written", "times_s", "unwritten", "without_outcomes")

    def __init__(self, join: LabelJoin, partition: int, key: tuple[str, ...]) -> None:
        self.join = join
        self.partition = partition
        self.key = key
        self.start_s = math.nan
        self.end_s = math.nan
        self.count = 0
        self.pending = 0
        """Predictions of this window still awaiting their label."""
        self.hashes = array.array("Q")
        self.times_s = array.array("d")
        self.predictions: list[object] = []
        self.scored = bytearray()
        """Per prediction, what joined it: ``LABELLED`` and ``WITH_OUTCOMES`` bits."""
        self.sorted = True
        self.performance = Performance(join.max_classes)
        self.outcomes = Outcomes()
        self.without_outcomes = 0
        """Predictions of this window no outcomes joined yet."""
        self.summary: bytes | None = None   # set when the window closes (_pack)
        self.revision = 0
        self.last_revision_wall_s = -math.inf
        self.active = True   # False once the window left the index
        self.fresh: list[object] = []
        """Predictions since the last checkpoint, in arrival order (with their hashes and
        times in ``fresh_hashes``, ``fresh_times_s``)."""
        self.fresh_hashes = array.array("Q")
        self.fresh_times_s = array.array("d")
        self.fresh_scored = array.array("Q")
        self.fresh_outcomes = array.array("Q")
        """Hashes of the predictions outcomes joined since the last checkpoint."""
        self.chunks = 0
        """Checkpoint records of predictions made (``p0``, ``p1``, ...)."""
        self.scored_chunks = 0
        """Checkpoint records of labelled hashes made (``s0``, ``s1``, ...)."""
        self.outcome_chunks = 0
        """Checkpoint records of hashes with outcomes made (``o0``, ``o1``, ...)."""
        self.summary_written = False
        self.unwritten: list[tuple[bytes, bytes]] = []
        """Records made and not yet known to be written: (key, value)."""
        # the window's slices (mlpulse.slicing): which slices each prediction is in, as
        # the index of a combination of slices (2 bytes a prediction), and each slice's
        # performance and outcomes, summary (once closed) and revisions
        self.slice_names: list[str] = []
        self._slice_index: dict[str, int] = {}
        self.combos: list[tuple[int, ...]] = []
        """Combinations of slices (indices into ``slice_names``); the first is none."""
        self._combo_index: dict[tuple[int, ...], int] = {}
        self.combo_ids = array.array("H")
        """Per prediction (as ``hashes``), its combination's index; empty if unsliced."""
        self.fresh_combo_ids = array.array("H")
        self.slice_performance: dict[str, Performance] = {}
        self.slice_outcomes: dict[str, Outcomes] = {}
        self.slice_summaries = SliceSummaries()
        """The closed slices' summaries, kept for their revisions."""
        self.slices_dirty: set[str] = set()
        """Slices whose performance or outcomes changed since their last revision."""
        self.slices_bundled = False
        """Whether the slices' summaries have their checkpoint record (``|W``)."""
        self.slices_written: set[str] = set()
        """Slices whose summary has a record of its own (``|w|<slice>``: checkpoints
        written before the summaries were bundled)."""

    def remember(self, events: Sequence[PredictionEvent],
                 predictions: list[object] | None = None,
                 kinds: set[type] | None = None, sliced: Sliced | None = None) -> None:
        """Note a batch of this window's predictions (those without a prediction cannot
        be judged). ``predictions`` (each event's) and ``kinds`` (their types), when the
        caller has read them already, save reading them again; ``sliced``: the slices of
        the batch's events (their labels score them too)."""
        join = self.join
        if not events:
            return
        if self.count == 0:
            self.start_s = math.floor(events[0].event_time_s / join.window_s) * join.window_s
            self.end_s = self.start_s + join.window_s
        self.count += len(events)
        times_s = list(map(_TIMESTAMP, events))
        join.saw(self.key[0], max(times_s), prediction=True)
        if not self.active:
            return
        if predictions is None:
            predictions = list(map(_PREDICTION, events))
        if kinds is None:
            kinds = set(map(type, predictions))
        judged = events
        combo_ids = self._combo_ids(sliced) if sliced is not None else None
        if _NONE in kinds:   # failed calls: no prediction to judge
            keep = list(map(operator.is_not, predictions, itertools.repeat(None)))
            judged = list(itertools.compress(events, keep))
            if not judged:
                return
            times_s = list(itertools.compress(times_s, keep))
            predictions = list(itertools.compress(predictions, keep))
            kinds = kinds - {_NONE}
            if combo_ids is not None:
                combo_ids = combo_ids[np.array(keep, dtype=bool)]
        if combo_ids is not None:
            self._add_combo_ids(combo_ids)
        values = join.values(predictions, kinds)
        self.predictions.extend(values)
        self.times_s.fromlist(times_s)   # twice as fast as extend() from a list
        self.fresh_times_s.fromlist(times_s)
        hashes = list(map(event_hash, map(_EVENT_ID, judged)))
        self.hashes.fromlist(hashes)
        self.fresh_hashes.fromlist(hashes)
        self.fresh.extend(values)
        self.scored.extend(bytes(len(judged)))
        self.sorted = False
        self.pending += len(judged)
        self.without_outcomes += len(judged)
        join.size += len(judged)
        waiting = join.early.get(self.key[0])
        if waiting:
            new = set(hashes)
            for key, event_id in [(k, i) for i in waiting if (k := event_hash(i)) in new]:
                label, label_time_s, outcomes = waiting[event_id]
                if self.score(key, label, label_time_s, outcomes):
                    del waiting[event_id]
                    join.early_size -= 1
        if join.load > join.max_predictions:
            join.evict()

    def _combo_ids(self, sliced: Sliced) -> np.ndarray:
        """Each row's combination of slices (see ``combos``), as uint16."""
        if not self.combos:
            self.combos.append(())
            self._combo_index[()] = 0
        if sliced.combinations is not None:   # (the router's: no pass over the rows)
            rows, codes = sliced.combinations
        else:
            unique, rows = np.unique(sliced.codes, return_inverse=True)
            codes = unique.tolist()
        ids = np.zeros(len(codes), dtype=np.uint16)
        for i, code in enumerate(codes):
            combo = tuple(map(self._slice_id, sliced.names(code)))
            index = self._combo_index.get(combo)
            if index is None:
                if len(self.combos) >= MAX_COMBOS:
                    continue   # past the bound: in no slice (not reached with the guard's)
                index = self._combo_index[combo] = len(self.combos)
                self.combos.append(combo)
            ids[i] = index
        return ids[rows.reshape(-1)]

    def _slice_id(self, name: str) -> int:
        index = self._slice_index.get(name)
        if index is None:
            index = self._slice_index[name] = len(self.slice_names)
            self.slice_names.append(name)
        return index

    def _add_combo_ids(self, combo_ids: np.ndarray) -> None:
        """Append the combinations of the predictions just added (those before any had
        slices: none)."""
        for column, total in ((self.combo_ids, len(self.hashes)),
                              (self.fresh_combo_ids, len(self.fresh_hashes))):
            missing = total - len(column)
            if missing > 0:
                column.frombytes(bytes(2 * missing))
            column.frombytes(combo_ids.astype(np.uint16).tobytes())

    def _slices_of(self, index: int) -> list[str]:
        """The slices of the prediction at ``index``."""
        if index >= len(self.combo_ids):
            return []
        names = self.slice_names
        return [names[i] for i in self.combos[self.combo_ids[index]]]

    def _find(self, key: int, what: int = LABELLED) -> int:
        """The index of the prediction with hash ``key`` awaiting ``what`` (its label or
        its outcomes), or -1."""
        if not (self.pending if what == LABELLED else self.without_outcomes):
            return -1
        if not self.sorted:
            self._sort()
        hashes = np.frombuffer(self.hashes, dtype=np.uint64)
        index = int(np.searchsorted(hashes, key))
        while index < hashes.size and hashes[index] == key:   # a repeated prediction id
            if not self.scored[index] & what:
                return index
            index += 1
        return -1

    def _sort(self) -> None:
        hashes = np.frombuffer(self.hashes, dtype=np.uint64)
        order = np.argsort(hashes, kind="stable")
        self.hashes = array.array("Q", hashes[order].tobytes())
        times_s = np.frombuffer(self.times_s, dtype=np.float64)
        self.times_s = array.array("d", times_s[order].tobytes())
        scored = np.frombuffer(self.scored, dtype=np.uint8)
        self.scored = bytearray(scored[order].tobytes())
        predictions = self.predictions
        self.predictions = [predictions[i] for i in order.tolist()]
        if self.combo_ids:
            if len(self.combo_ids) < len(self.hashes):
                self._add_combo_ids(_NO_IDS)
            combo_ids = np.frombuffer(self.combo_ids, dtype=np.uint16)
            self.combo_ids = array.array("H", combo_ids[order].tobytes())
        self.sorted = True

    def score(self, key: int, label: object, label_time_s: float,
              outcomes: dict[str, float | bool] | None = None) -> bool:
        """Judge the prediction whose event id hashes to ``key`` (:func:`event_hash`) by
        ``label`` (None: none) and count its ``outcomes``; False if neither found a
        prediction here awaiting it."""
        joined = False
        index = self.mark(key, LABELLED) if label is not None else -1
        if index >= 0:
            self.fresh_scored.append(key)
            delay_s = max(label_time_s - self.times_s[index], 0.0)
            scored = [(self.predictions[index], label, delay_s)]
            self.performance.add(scored)
            for name in self._slices_of(index):
                performance = self.slice_performance.get(name)
                if performance is None:
                    performance = self.slice_performance[name] = Performance(
                        self.join.max_classes)
                performance.add(scored)
                self.slices_dirty.add(name)
            self.join.size -= 1
            self.join.counts["joined"] += 1
            joined = True
        index = self.mark(key, WITH_OUTCOMES) if outcomes else -1
        if index >= 0:
            assert outcomes is not None
            self.fresh_outcomes.append(key)
            self.outcomes.add(outcomes)
            for name in self._slices_of(index):
                self.slice_outcomes.setdefault(name, Outcomes()).add(outcomes)
                self.slices_dirty.add(name)
            self.join.counts["outcomes_joined"] += 1
            joined = True
        if joined and self.summary is not None:
            self.join.dirty.add(self)
        return joined

    def mark(self, key: int, what: int) -> int:
        """Flag the prediction with hash ``key`` awaiting ``what`` (``LABELLED`` or
        ``WITH_OUTCOMES``) as joined by it; its index, or -1 if none awaits it here."""
        index = self._find(key, what)
        if index >= 0:
            self.scored[index] |= what
            if what == LABELLED:
                self.pending -= 1
            else:
                self.without_outcomes -= 1
        return index

    @property
    def waiting(self) -> bool:
        """Whether feedback may still join: a label (or, for a model that sends outcomes,
        outcomes) is missing."""
        return bool(self.pending) or (bool(self.without_outcomes)
                                      and self.key[0] in self.join.outcome_models)

    def result(self, summary: PredictionWindow) -> PredictionWindow:
        """``summary`` with this window's performance (None before the first label)."""
        if self.performance.labelled:
            summary.performance = self.performance.result(max(self.count, summary.count))
        if self.outcomes:
            summary.outcomes = self.outcomes.result()
        return summary

    def slice_result(self, name: str, summary: PredictionWindow) -> PredictionWindow:
        """``summary`` of slice ``name`` of this window with the slice's performance and
        outcomes (as :meth:`result`)."""
        performance = self.slice_performance.get(name)
        if performance is not None and performance.labelled:
            summary.performance = performance.result(summary.count)
        outcomes = self.slice_outcomes.get(name)
        if outcomes:
            summary.outcomes = outcomes.result()
        return summary

    # ------------------------------------------------------------- checkpoints

    @property
    def name(self) -> bytes:
        """This window in its checkpoint records' keys: ``l|<partition>|<digest>``."""
        digest = hashlib.blake2b(_msgpack.encode([list(self.key), self.start_s]),
                                 digest_size=8).hexdigest()
        return f"l|{self.partition}|{digest}".encode()

    def flush(self) -> None:
        """Turn what changed since the last checkpoint into records (``unwritten``)."""
        name = self.name if (self.fresh or self.fresh_scored or self.fresh_outcomes or (
            self.summary is not None and not self.summary_written)
            or (self.slice_summaries and not self.slices_bundled)) else b""
        if self.fresh:
            hashes, times_s, values = self.fresh_hashes, self.fresh_times_s, self.fresh
            combo_ids = self.fresh_combo_ids
            if combo_ids and len(combo_ids) < len(hashes):
                self._add_combo_ids(_NO_IDS)
            for i in range(0, len(values), CHUNK_PREDICTIONS):
                chunk = slice(i, i + CHUNK_PREDICTIONS)
                record = [hashes[chunk].tobytes(), times_s[chunk].tobytes(), values[chunk]]
                if combo_ids:   # the predictions' slices
                    record.append(combo_ids[chunk].tobytes())
                self.unwritten.append((name + b"|p%d" % self.chunks, _msgpack.encode(record)))
                self.chunks += 1
            self.fresh, self.fresh_hashes, self.fresh_times_s = (
                [], array.array("Q"), array.array("d"))
            self.fresh_combo_ids = array.array("H")
        if self.fresh_scored:
            self.scored_chunks = self._hashes(name + b"|s", self.fresh_scored,
                                              self.scored_chunks)
            self.fresh_scored = array.array("Q")
        if self.fresh_outcomes:
            self.outcome_chunks = self._hashes(name + b"|o", self.fresh_outcomes,
                                               self.outcome_chunks)
            self.fresh_outcomes = array.array("Q")
        if self.summary is not None and not self.summary_written:
            self.unwritten.append((name + b"|w", self.summary))
            self.summary_written = True
        if self.slice_summaries and not self.slices_bundled:
            self.unwritten.append((name + b"|W", self.slice_summaries.packed))
            self.slices_bundled = True

    def _hashes(self, prefix: bytes, hashes: array.array[int], first: int) -> int:
        """Records of ``hashes`` (``<prefix>0``, ``<prefix>1``, ... from ``first``, each
        at most ``CHUNK_PREDICTIONS``); the number of the next."""
        for i in range(0, len(hashes), CHUNK_PREDICTIONS):
            self.unwritten.append((prefix + b"%d" % first,
                                   hashes[i:i + CHUNK_PREDICTIONS].tobytes()))
            first += 1
        return first

    def keys(self) -> list[bytes]:
        """Every checkpoint record of this window made so far."""
        name = self.name
        return ([name + b"|p%d" % i for i in range(self.chunks)]
                + [name + b"|s%d" % i for i in range(self.scored_chunks)]
                + [name + b"|o%d" % i for i in range(self.outcome_chunks)]
                + ([name + b"|w"] if self.summary_written else [])
                + ([name + b"|W"] if self.slices_bundled else [])
                + [name + b"|w|" + part.encode() for part in sorted(self.slices_written)])

    def state(self) -> list[Any]:
        """What the partition's checkpoint holds of this window (after :meth:`flush`)."""
        slices = None
        if self.slice_names:
            slices = [self.slice_names, [list(c) for c in self.combos],
                      {n: p.state() for n, p in self.slice_performance.items()},
                      {n: o.state() for n, o in self.slice_outcomes.items()},
                      sorted(self.slices_written), sorted(self.slices_dirty),
                      self.slices_bundled]
        return [list(self.key), self.start_s, self.count, self.chunks, self.scored_chunks,
                self.summary_written, self.revision, self in self.join.dirty,
                self.performance.state(), self.outcome_chunks, self.outcomes.state(), slices]

    def restore_slices(self, state: list[Any] | None) -> None:
        """Take the slices' part of a :meth:`state` (their summaries: in the ``|W`` record
        if ``slices_bundled``, and in those ``slices_written`` names)."""
        if not state:
            return
        names, combos, performance, outcomes, written, dirty, *bundled = state
        self.slice_names = list(names)
        self._slice_index = {name: i for i, name in enumerate(self.slice_names)}
        self.combos = [tuple(c) for c in combos]
        self._combo_index = {c: i for i, c in enumerate(self.combos)}
        max_classes = self.join.max_classes
        self.slice_performance = {n: Performance.from_state(p, max_classes)
                                  for n, p in performance.items()}
        self.slice_outcomes = {n: Outcomes.from_state(o) for n, o in outcomes.items()}
        self.slices_written = set(written)
        self.slices_dirty = set(dirty)
        self.slices_bundled = bool(bundled and bundled[0])
