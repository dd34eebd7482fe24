"""What one window collects for the detectors, fed batch by batch with numpy arrays.

A :class:`WindowProfile` belongs to one open window of one model/version. For each
numeric *signal* (a feature ``f:<name>``, or an output: ``o:latency_ms``,
``o:confidence``, ``o:prediction``, ``o:error``) it keeps either

* exact counts on the reference's bins, when the reference existed as the window
  opened (``B`` quantile bins plus one bin below and one above the reference range),
* and/or a bounded uniform sample (reservoir), while a reference is being built
  from this window,

and passes every value on to the model's per-event change detectors (ADWIN).
State is bounded: ``B + 2`` integers or ``sample_size`` floats per signal.

A checkpoint holds the bin counts (:meth:`WindowProfile.state`: a restored window judges
drift on all of its events), not the samples: those only feed a reference being built,
and would cost ~5 KB per signal and window in every checkpoint (a window restored while
it builds a reference contributes a sample of its events after the restore).

>>> profile = WindowProfile(edges={"f:x": np.array([0.0, 1.0, 2.0])}, sample_size=4)
>>> profile.add("f:x", np.array([-5.0, 0.5, 1.5, 1.7, 9.0]))
>>> profile.counts("f:x", profile.edges["f:x"]).tolist()   # below, [0, 1), [1, 2), above
[1, 1, 2, 1]
>>> profile.add("f:y", np.arange(10.0))  # no bins yet: a 4-value sample of 10
>>> profile.samples["f:y"].seen, profile.samples["f:y"].values.size
(10, 4)
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

__all__ = ["DRIFT_OUTPUTS", "Reservoir", "WindowProfile", "bin_counts", "binned"]

DRIFT_OUTPUTS = ("o:prediction", "o:confidence")
"""Outputs whose distribution is tested against the reference (latency and errors are
watched by ADWIN and the window-anomaly detector instead)."""


def binned(signal: str) -> bool:
    """Whether a window counts ``signal`` on its reference's bins: the signals whose drift
    is tested (every feature, :data:`DRIFT_OUTPUTS`). Latency and errors have bins in the
    reference (its table keeps their rows, so checkpoints of either kind restore), but
    nothing reads a window's counts of them.

    >>> binned("f:age"), binned("o:confidence"), binned("o:latency_ms")
    (True, True, False)
    """
    return signal.startswith("f:") or signal in DRIFT_OUTPUTS


class ChangeFeed(Protocol):
    """Where a window profile feeds each signal's values as they come (the ADWIN change
    detectors, :class:`mlpulse.detectors.adwin.ChangeDetectors`)."""

    def update(self, signal: str, values: np.ndarray) -> None: ...


def bin_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the ``len(edges) + 1`` bins that ``edges`` bound.

    Bin 0 holds values below ``edges[0]``, the last bin values at or above ``edges[-1]``.

    >>> bin_counts(np.array([0.0, 1.0]), np.array([-1.0, 0.0, 0.5, 1.0])).tolist()
    [1, 2, 1]
    """
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)


class Reservoir:
    """A uniform sample of at most ``size`` values of a stream (Algorithm R, vectorised).

    >>> r = Reservoir(3, np.random.default_rng(0))
    >>> r.add(np.arange(100.0))
    >>> r.seen, r.values.size, bool(np.all(r.values < 100))
    (100, 3, True)
    """

    __slots__ = ("_buffer", "_filled", "rng", "seen", "size")

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.rng = rng
        self.seen = 0
        self._filled = 0
        self._buffer = np.empty(min(size, 64), dtype=np.float64)

    @property
    def values(self) -> np.ndarray:
        return self._buffer[: self._filled]

    def add(self, values: np.ndarray) -> None:
        free = self.size - self._filled
        if free > 0:
            head = values[:free]
            end = self._filled + head.size
            if end > self._buffer.size:
                grown = np.empty(min(self.size, max(end, 2 * self._buffer.size)))
                grown[: self._filled] = self._buffer[: self._filled]
                self._buffer = grown
            self._buffer[self._filled:end] = head
            self._filled = end
            self.seen += head.size
            values = values[head.size:]
        n = values.size
        if n:
            # item number i (1-based) is kept with probability size / i, in a uniform slot:
            # Algorithm R's draw of one of i slots, split in two (floats are cheaper to draw
            # than integers of varying bounds; only the kept few need a slot)
            numbers = np.arange(self.seen + 1, self.seen + n + 1, dtype=np.float64)
            kept = values[self.rng.random(n) * numbers < self.size]
            if kept.size:
                slots = self.rng.integers(0, self.size, kept.size)
                if kept.size > 1:   # a slot drawn twice keeps the later value, as one by
                    # one would (numpy leaves which of repeated indices wins unspecified)
                    last = kept.size - 1 - np.unique(slots[::-1], return_index=True)[1]
                    slots, kept = slots[last], kept[last]
                self._buffer[slots] = kept
            self.seen += n


class WindowProfile:
    """Per-signal bins or samples of one window (see the module docs).

    The bins of all signals are rows of one table, allocated at the first value (a numpy
    array per signal and window took ~200 B each, 20 features × 1,000 series × 2 windows).
    """

    __slots__ = ("_digest", "_rows", "_table", "changes", "edges", "rng", "sample_size",
                 "samples")

    def __init__(
        self, edges: Mapping[str, np.ndarray] | None = None, sample_size: int = 0,
        changes: ChangeFeed | None = None, rng: np.random.Generator | None = None,
        rows: Mapping[str, int] | None = None,
    ) -> None:
        self.edges = edges or {}
        self.sample_size = sample_size
        self.changes = changes
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._rows = rows if rows is not None else {s: i for i, s in enumerate(self.edges)}
        """Row of each binned signal in the table (``Reference.rows``: shared)."""
        self._table: np.ndarray | None = None
        self.samples: dict[str, Reservoir] = {}
        self._digest: int | None = None

    @property
    def digest(self) -> int:
        """A checksum of the bins (signals, rows and edges): a restored window takes the
        counts of its checkpoint only onto the same bins."""
        if self._digest is None:
            crc = 0
            for signal, _row in sorted(self._rows.items(), key=lambda item: item[1]):
                crc = zlib.crc32(signal.encode(), crc)
                edges = self.edges.get(signal)
                if edges is not None:
                    crc = zlib.crc32(np.ascontiguousarray(edges, np.float64).tobytes(), crc)
            self._digest = crc
        return self._digest

    def state(self) -> list[Any] | None:
        """The bin counts as plain data (None: none yet), for a checkpoint.

        >>> edges = {"f:x": np.array([0.0, 1.0])}
        >>> one = WindowProfile(edges=edges)
        >>> one.add("f:x", np.array([-1.0, 0.5, 0.7]))
        >>> two = WindowProfile(edges=edges)
        >>> two.restore(one.state())
        >>> two.counts("f:x", edges["f:x"]).tolist()
        [1, 2, 0]
        >>> other = WindowProfile(edges={"f:x": np.array([0.0, 2.0])})   # another reference
        >>> other.restore(one.state())
        >>> other.counts("f:x", other.edges["f:x"]) is None
        True
        """
        if self._table is None:
            return None
        return [self.digest, self._table.tolist()]

    def restore(self, state: list[Any] | None) -> None:
        """Take the bin counts of a :meth:`state`, if they were counted on these bins."""
        if not state or not self.edges or state[0] != self.digest:
            return
        table = np.array(state[1], dtype=np.int64)
        if table.shape == self._shape():
            self._table = table

    def _shape(self) -> tuple[int, int]:
        """The table's: a row per signal, as wide as the most bins of any (``B + 2``)."""
        return len(self._rows), 1 + max(e.size for e in self.edges.values())

    def _counts_table(self) -> np.ndarray:
        """The bin counts, allocated at the first value."""
        if self._table is None:
            self._table = np.zeros(self._shape(), dtype=np.int64)
        return self._table

    def add(self, signal: str, values: np.ndarray) -> None:
        """Fold a batch of one signal's values (finite floats, event order)."""
        if values.size == 0:
            return
        if self.changes is not None:
            self.changes.update(signal, values)
        edges = self.bins(signal)
        if edges is not None:
            self._counts_table()[self._rows[signal], : edges.size + 1] += bin_counts(edges,
                                                                                     values)
        if self.sample_size:
            sample = self.samples.get(signal)
            if sample is None:
                sample = self.samples[signal] = Reservoir(self.sample_size, self.rng)
            sample.add(values)

    def bins(self, signal: str) -> np.ndarray | None:
        """The edges this window counts ``signal`` on (None: not counted, see
        :func:`binned`)."""
        return self.edges.get(signal) if binned(signal) else None

    def add_binned(self, signals: list[str], counts: np.ndarray) -> None:
        """Add counts of values already binned on this profile's edges, of several signals
        at once: ``counts[i]`` are ``signals[i]``'s (columns beyond a signal's own bins hold
        zeros). For a profile that neither samples nor watches events: a slice's once it has
        a reference (:func:`mlpulse.slice_folds.fold_slices`).

        >>> profile = WindowProfile(edges={"f:x": np.array([0.0]), "f:y": np.array([0.0, 1.0])})
        >>> profile.add_binned(["f:y", "f:x"], np.array([[1, 2, 3, 0], [4, 5, 0, 0]]))
        >>> profile.counts("f:x", profile.edges["f:x"]).tolist()
        [4, 5]
        """
        table = self._counts_table()
        width = min(counts.shape[1], table.shape[1])
        rows = self._rows
        table[[rows[s] for s in signals], :width] += counts[:, :width]

    def all_counts(self, edges: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`counts` of each signal of ``edges`` that has any (a window's drift tests
        read them all: one look at the table for all).

        >>> edges = {"f:x": np.array([0.0, 1.0]), "f:y": np.array([0.0])}
        >>> profile = WindowProfile(edges=edges)
        >>> profile.add("f:x", np.array([-1.0, 0.5]))
        >>> {s: c.tolist() for s, c in profile.all_counts(edges).items()}
        {'f:x': [1, 1, 0]}
        """
        table = self._table
        if table is None or self.samples:
            return {signal: counts for signal, signal_edges in edges.items()
                    if (counts := self.counts(signal, signal_edges)) is not None}
        rows, own = self._rows, self.edges
        filled = np.any(table, axis=1).tolist()
        out = {}
        for signal, signal_edges in edges.items():
            row = rows.get(signal)
            if row is not None and filled[row] and own.get(signal) is signal_edges:
                out[signal] = table[row, : signal_edges.size + 1]
        return out

    def counts(self, signal: str, edges: np.ndarray) -> np.ndarray | None:
        """This window's counts on ``edges``: exact if binned, else from the sample."""
        row = self._rows.get(signal)
        if row is not None and self._table is not None and self.edges.get(signal) is edges:
            counts = self._table[row, : edges.size + 1]
            if counts.any():
                return counts
        sample = self.samples.get(signal)
        if sample is not None and sample.values.size:
            return bin_counts(edges, sample.values)
        return None
