"""A sliced window's slices: which events of a batch are in which (:class:`Sliced`,
:class:`SliceRouter`), their names, and the bound on the events sliced windows hold unfolded
(:class:`Waiting`). How a window folds its slices: :mod:`mlpulse.slice_folds`.

A model version sliced by segment keys (``MLPULSE_SEGMENT_KEYS``, or per model) keeps its
slices' aggregates in its own window (:class:`~mlpulse.aggregates.PredictionAggregate`). As
each batch comes it reads the batch's fields once (:class:`~mlpulse.columns.Batch`), numbers
each event's slices here and holds the batch as arrays and codes; then it folds itself and
its slices at once.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

import numpy as np

from .columns import Batch, first_seen
from .sketches import OTHER

if TYPE_CHECKING:
    from .aggregates import PredictionAggregate
    from .guard import CardinalityGuard

__all__ = ["SliceNames", "SliceRouter", "Sliced", "Slicer", "Waiting", "segment_of",
           "slice_name"]


@dataclass(slots=True)
class Sliced:
    """The slices of a batch's events, per set of keys: the names of its slices with
    events, the rows of their events (the first slice's, then the next's, ...) and how many
    each has; and per row a code of the slices it is in (``names`` spells a code)."""

    groups: list[tuple[list[str], np.ndarray, np.ndarray]]
    codes: np.ndarray
    names: Callable[[int], tuple[str, ...]]
    sets: list[int]
    """Each group's set of keys (its position among the router's)."""
    combinations: tuple[np.ndarray, list[int]] | None = None
    """Where the router read the rows' combinations of values: each row's, and each
    combination's code (its rows' slices, for the label index without a pass over them)."""

    @staticmethod
    def concat(sliced: Sequence[Sliced], sizes: Sequence[int]
               ) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
        """The groups of batches of ``sizes`` rows (``sliced``: each one's) as those of one
        batch of them all, row after row: per set of keys, its slices in the order they
        first come and each one's rows in order.

        >>> def one(names, rows, sizes):
        ...     return Sliced([(names, np.array(rows), np.array(sizes))], np.zeros(0),
        ...                   lambda code: (), [0])
        >>> [(names, rows.tolist(), sizes.tolist()) for names, rows, sizes in Sliced.concat(
        ...     [one(["a", "b"], [0, 2, 1], [2, 1]), one(["b", "c"], [1, 0], [1, 1])], [3, 2])]
        [(['a', 'b', 'c'], [0, 2, 1, 4, 3], [2, 2, 1])]
        """
        offsets = np.cumsum([0, *sizes]).tolist()
        by_set: dict[int, dict[str, list[np.ndarray]]] = {}
        for one, offset in zip(sliced, offsets, strict=False):
            for (names, rows, counts), keys in zip(one.groups, one.sets, strict=True):
                slices = by_set.setdefault(keys, {})
                end = 0
                for name, count in zip(names, counts.tolist(), strict=True):
                    slices.setdefault(name, []).append(rows[end:end + count] + offset)
                    end += count
        return [(list(slices), np.concatenate([part for parts in slices.values()
                                               for part in parts]),
                 np.array([sum(part.size for part in parts) for parts in slices.values()],
                          dtype=np.int64))
                for _, slices in sorted(by_set.items())]


class Waiting:
    """Events waiting to be folded in any aggregate (``min_batch``), and which hold them:
    a worker bounds them all (:meth:`shrink` when over its bound).

    >>> from mlpulse.aggregates import PredictionAggregate
    >>> from mlpulse.events import PredictionEvent
    >>> waiting = Waiting()
    >>> a = PredictionAggregate(min_batch=10, waiting_events=waiting)
    >>> a.add_batch([PredictionEvent(event_id="1", timestamp=1, model="m")])
    >>> waiting.events, waiting.flush_all(), waiting.events, a.count
    (1, None, 0, 1)
    """

    def __init__(self, fold: Callable[[list[PredictionAggregate]], None] | None = None
                 ) -> None:
        self.events = 0
        self._held: dict[PredictionAggregate, int] = {}
        self.fold = fold
        """Folds what waits in some of the aggregates (default: each on its own)."""

    def add(self, aggregate: PredictionAggregate, n: int) -> None:
        self.events += n
        self._held[aggregate] = self._held.get(aggregate, 0) + n

    def remove(self, aggregate: PredictionAggregate) -> None:
        self.events -= self._held.pop(aggregate, 0)

    def flush_all(self) -> None:
        """Fold every aggregate's waiting events."""
        for aggregate in list(self._held):
            aggregate.flush()

    def shrink(self, to: int) -> None:
        """Fold the aggregates holding the most events until at most ``to`` wait: those
        that gathered least go on gathering (a fold costs ~2 ms whatever its size).

        >>> from mlpulse.aggregates import PredictionAggregate
        >>> from mlpulse.events import PredictionEvent
        >>> waiting = Waiting()
        >>> small, large = (PredictionAggregate(min_batch=100, waiting_events=waiting)
        ...                 for _ in range(2))
        >>> small.add_batch([PredictionEvent(event_id="1", timestamp=1, model="m")])
        >>> large.add_batch([PredictionEvent(event_id=str(i), timestamp=1, model="m")
        ...                  for i in range(5)])
        >>> waiting.shrink(to=3)
        >>> waiting.events, small.waiting, large.count
        (1, 1, 5)
        """
        chosen, events = [], self.events
        for aggregate, held in sorted(self._held.items(), key=lambda item: -item[1]):
            if events <= to:
                break
            chosen.append(aggregate)
            events -= held
        if self.fold is not None:
            self.fold(chosen)
        else:
            for aggregate in chosen:
                aggregate.flush()


Slicer = Callable[[Batch], Sliced]
"""A batch → its :class:`Sliced`."""


class SliceNames:
    """:func:`slice_name`, remembered (values repeat batch after batch; at most 100,000).

    >>> names = SliceNames()
    >>> names(("region",), ("eu",)) is names(("region",), ("eu",))
    True
    """

    def __init__(self) -> None:
        self._names: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}

    def __call__(self, keys: tuple[str, ...], values: tuple[str, ...]) -> str:
        name = self._names.get((keys, values))
        if name is None:
            if len(self._names) > 100_000:
                self._names.clear()
            name = self._names[(keys, values)] = slice_name(keys, values)
        return name


class SliceRouter:
    """The :data:`Slicer` of a sliced model's windows: which events of a batch are in which
    of its slices (values beyond the cardinality guard's bound folded into ``__other__``).
    Where every row has every key (the usual producer), each row's combination of values
    (one C pass for all keys), each set of keys numbered from the combinations; else per
    set of keys a column of the rows' values (one C pass). Then the rows of each number by
    one stable sort, and a row's slices as a mixed-radix code.

    >>> from mlpulse.guard import CardinalityGuard
    >>> from mlpulse.events import PredictionEvent
    >>> router = SliceRouter("m", [("region",)], CardinalityGuard(), SliceNames(), lambda: 0.0)
    >>> sliced = router(Batch.of([PredictionEvent(event_id=str(i), timestamp=1, model="m",
    ...     segment={"region": r}) for i, r in enumerate(["eu", "us", "eu"])]))
    >>> [(names, rows.tolist(), sizes.tolist()) for names, rows, sizes in sliced.groups]
    [(['region=eu', 'region=us'], [0, 2, 1], [2, 1])]
    >>> [sliced.names(code) for code in sliced.codes.tolist()]
    [('region=eu',), ('region=us',), ('region=eu',)]
    """

    def __init__(self, model: str, slices: Sequence[tuple[str, ...]], guard: CardinalityGuard,
                 names: SliceNames, clock: Callable[[], float]) -> None:
        self.model = model
        self.slices = slices
        self.guard = guard
        self.names = names
        self.clock = clock
        """The wall clock of the events being added (the guard's)."""
        keys = list(dict.fromkeys(key for key_set in slices for key in key_set))
        self._every_key = operator.itemgetter(*keys) if keys else None
        """Every key's value of a segment at once (a tuple; one key: the value)."""
        self._positions = [tuple(keys.index(key) for key in key_set) for key_set in slices]
        self._several = len(keys) > 1

    def __call__(self, batch: Batch) -> Sliced:
        segments = list(map(_SEGMENT, batch.events))
        n = len(segments)
        groups: list[tuple[list[str], np.ndarray, np.ndarray]] = []
        codes = np.zeros(n, dtype=np.int64)
        spelled: list[tuple[int, list[str]]] = []   # (radix, names by number)
        radix = 1
        sets: list[int] = []
        combos = self._combinations(segments)
        for index, keys in enumerate(self.slices):
            if combos is not None:   # every row has every key: from its combination
                ids, names = self._numbered(index, keys, *combos[:3])
            else:
                column: list[Any] = _column(segments, keys[0]) if len(keys) == 1 else [
                    None if None in values else values
                    for values in zip(*(_column(segments, key) for key in keys), strict=True)]
                values, of_row, _ = first_seen(column, n)   # each row's value's index
                names, numbers = self._number(keys, list(zip(
                    values, np.bincount(of_row, minlength=len(values)).tolist(), strict=True)))
                ids = np.array(numbers, dtype=np.int64)[of_row]
            if len(names) == 1:
                continue
            order = np.argsort(ids, kind="stable")
            bounds = np.searchsorted(ids[order], np.arange(len(names) + 1))
            groups.append((names[1:], order[bounds[1]:], np.diff(bounds)[1:]))
            sets.append(index)
            if radix * len(names) < 2**62:   # (a prediction's slices, for its labels)
                codes += ids * radix
                spelled.append((radix, names))
                radix *= len(names)

        def spell(code: int) -> tuple[str, ...]:
            return tuple(names[code // radix % len(names)] for radix, names in spelled
                         if code // radix % len(names))
        combinations = None if combos is None else (combos[1], codes[combos[3]].tolist())
        return Sliced(groups, codes, spell, sets, combinations)

    def _combinations(self, segments: list[dict[str, str]]
                      ) -> tuple[list[Any], np.ndarray, list[int], list[int]] | None:
        """Where every row has every key (the usual producer): the rows' combinations of
        values (the values of every key at once: one C pass, one lookup per row), each
        row's, how many rows each has and its first row; None where a row lacks a key."""
        if self._every_key is None:
            return None
        try:
            combos, index, rows = first_seen(map(self._every_key, segments), len(segments))
        except KeyError:
            return None
        return combos, index, np.bincount(index, minlength=len(combos)).tolist(), rows

    def _numbered(self, index: int, keys: tuple[str, ...], combos: list[Any],
                  combo: np.ndarray, counts: list[int]) -> tuple[np.ndarray, list[str]]:
        """Each row's number among the slices of set ``index`` (its ``keys``), from the
        rows' combinations of values (:meth:`_combinations`), and the slices' names."""
        positions = self._positions[index]
        if not self._several:   # one key in all: a combination is its value
            values = combos
        elif len(positions) == 1:
            values = [c[positions[0]] for c in combos]
        else:
            values = [tuple(c[p] for p in positions) for c in combos]
        counted: dict[Any, int] = {}
        for value, count in zip(values, counts, strict=True):
            counted[value] = counted.get(value, 0) + count
        names, numbers = self._number(keys, list(counted.items()))
        number_of = dict(zip(counted, numbers, strict=True))
        return np.array([number_of[v] for v in values], dtype=np.int64)[combo], names

    def _number(self, keys: tuple[str, ...], counted: list[tuple[Any, int]]
                ) -> tuple[list[str], list[int]]:
        """The slices of the values ``counted`` (with their rows; names; number 0: in none
        of them), and each value's number."""
        joined = _JOIN.join(keys)
        numbers: list[int] = []
        names: list[str] = [""]
        by_name: dict[str, int] = {}
        now_wall_s = self.clock()
        for value, count in counted:
            if value is None:
                numbers.append(0)
                continue
            values = (value,) if len(keys) == 1 else value
            kept = self.guard.segment(self.model, joined, _JOIN.join(values), now_wall_s, count)
            name = self.names(keys, values if kept != OTHER else (OTHER,) * len(keys))
            number = by_name.get(name)
            if number is None:
                number = by_name[name] = len(names)
                names.append(name)
            numbers.append(number)
        return names, numbers


_JOIN = "\x1f"
"""Joins the keys and values of a cross product for the cardinality guard."""
_SEGMENT = operator.attrgetter("segment")


def _column(segments: list[dict[str, str]], key: str) -> list[str | None]:
    """Each segment's value of ``key`` (None: none): ``dict.get`` mapped in C, a third of
    the cost of a ``methodcaller``."""
    return list(map(dict.get, segments, itertools.repeat(key)))


def slice_name(keys: Sequence[str], values: Sequence[str]) -> str:
    """A slice's name, as its windows are keyed and its alerts labelled: ``key=value``
    pairs joined by ``&``, the values percent-encoded where they would be ambiguous.

    >>> slice_name(["region"], ["eu"]), slice_name(["region", "tier"], ["eu", "a&b"])
    ('region=eu', 'region=eu&tier=a%26b')
    """
    return urlencode(list(zip(keys, values, strict=True)), quote_via=quote, safe="")


def segment_of(name: str) -> dict[str, str]:
    """The segment of a slice name (:func:`slice_name`).

    >>> segment_of("region=eu"), segment_of("region=eu&tier=a%26b")
    ({'region': 'eu'}, {'region': 'eu', 'tier': 'a&b'})
    """
    return dict(_pairs_of(name))


@functools.lru_cache(maxsize=65536)
def _pairs_of(name: str) -> tuple[tuple[str, str], ...]:
    """A slice name's pairs, remembered (every window of a slice is named alike)."""
    return tuple(parse_qsl(name, keep_blank_values=True))
