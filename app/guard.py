"""Cardinality guard: the series a worker keeps are bounded, whatever producers send.

At most ``max_models`` models, ``max_versions`` versions per model and
``max_services`` log services are tracked per worker; a name beyond the bound is
folded into ``__other__`` (its events still count, under that name) and the
folded events are counted by kind. A series not seen for ``idle_s`` of wall
clock makes room for a new one, so a model that was retired does not hold its
slot for ever; a flood of unique names costs O(1) per name.

>>> guard = CardinalityGuard(max_models=2, max_versions=1, idle_s=60)
>>> [guard.model(m, now_s=0) for m in ("a", "b", "c")]
['a', 'b', '__other__']
>>> guard.version("a", "v2", now_s=0), guard.version("a", "v1", now_s=0)
('v2', '__other__')
>>> guard.model("c", now_s=100)   # "a" and "b" idle for 100 s: "c" takes a slot
'c'
>>> dict(guard.folded)
{'model': 1, 'version': 1}
"""

from __future__ import annotations

import collections

from .sketches import OTHER

__all__ = ["OTHER", "CardinalityGuard"]


class _Slots:
    """Names in least-recently-seen order, bounded."""

    def __init__(self, limit: int, idle_s: float) -> None:
        self.limit = limit
        self.idle_s = idle_s
        self.last_seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def admit(self, name: str, now_s: float) -> bool:
        last_seen = self.last_seen
        if name in last_seen:
            last_seen[name] = now_s
            last_seen.move_to_end(name)
            return True
        if len(last_seen) >= self.limit:
            oldest, seen_s = next(iter(last_seen.items()))
            if now_s - seen_s < self.idle_s:
                return False
            del last_seen[oldest]
        last_seen[name] = now_s
        return True


class CardinalityGuard:
    """Admits or folds model, version and service names (one guard per worker)."""

    def __init__(self, *, max_models: int = 1000, max_versions: int = 20,
                 max_services: int = 1000, max_segment_values: int = 20,
                 idle_s: float = 3600.0) -> None:
        self.max_versions = max_versions
        self.max_segment_values = max_segment_values
        self._segments: dict[tuple[str, ...], _Slots] = {}
        self._segment_keys: set[str] = set()
        self.idle_s = idle_s
        self._models = _Slots(max_models, idle_s)
        self._services = _Slots(max_services, idle_s)
        self._versions: dict[tuple[str, ...], _Slots] = {}
        self.folded: collections.Counter[str] = collections.Counter()
        """Events folded into ``__other__``, by kind (model, version, service, segment,
        feature)."""

    def model(self, name: str, now_s: float, events: int = 1) -> str:
        if self._models.admit(name, now_s):
            return name
        self.folded["model"] += events
        return OTHER

    def version(self, model: str, version: str, now_s: float, events: int = 1) -> str:
        slots = self._keyed(self._versions, (model,), self.max_versions)
        if slots.admit(version, now_s):
            return version
        self.folded["version"] += events
        return OTHER

    def segment(self, model: str, key: str, value: str, now_s: float, events: int = 1) -> str:
        """A value of segment ``key`` of ``model``: at most ``max_segment_values`` each.

        >>> guard = CardinalityGuard(max_segment_values=1)
        >>> guard.segment("m", "region", "eu", 0), guard.segment("m", "region", "us", 0)
        ('eu', '__other__')
        """
        self._segment_keys.add(key)
        slots = self._keyed(self._segments, (model, key), self.max_segment_values,
                            per_model=len(self._segment_keys))
        if slots.admit(value, now_s):
            return value
        self.folded["segment"] += events
        return OTHER

    def _keyed(self, table: dict[tuple[str, ...], _Slots], key: tuple[str, ...], limit: int,
               per_model: int = 1) -> _Slots:
        """The slots of ``key`` (its model first) in ``table``. A table grown past the
        models holding a slot (``per_model`` entries each) forgets the entries of the
        models that lost theirs."""
        slots = table.get(key)
        if slots is None:
            if len(table) > per_model * 2 * len(self._models.last_seen) + 16:
                for gone in [k for k in table if k[0] not in self._models.last_seen]:
                    del table[gone]
            slots = table[key] = _Slots(limit, self.idle_s)
        return slots

    def service(self, name: str, now_s: float, events: int = 1) -> str:
        if self._services.admit(name, now_s):
            return name
        self.folded["service"] += events
        return OTHER

    def known_model(self, name: str) -> str:
        """``name`` if it holds a slot, else ``__other__`` (does not count as seen)."""
        return name if name in self._models.last_seen else OTHER
