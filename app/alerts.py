"""Alert lifecycle: conditions, window after window, become few and trustworthy alert events.

Like Prometheus and Alertmanager: a condition that turns active is **pending**
until it has held for its rule's ``for`` windows, then **firing** (one
``firing`` event); once it clears it keeps firing for ``keep_firing_for``
windows, then **resolved** (one ``resolved`` event, same ``alert_id``). A
condition that holds again while firing changes nothing (repeat suppression: a
flood of one finding is one alert). An alert's identity is its
``fingerprint`` — a hash of its rule and labels — stable across restarts and
workers; its ``alert_id`` is the fingerprint and the start of its incident.

**Inhibition**: while a *source* alert fires (e.g. ``no_data``, ``type_change``),
a *target* alert with the same ``equal`` labels that starts firing is held back;
it is published only if it still fires when the source resolves.

>>> from mlpulse.rules import Condition
>>> life = Lifecycle()
>>> def window(i, active):
...     c = Condition("slow", active, {"model": "m"}, for_windows=2, keep_firing_for=1)
...     return [(e.status, e.alert_id) for e in life.apply([c], 60.0 * i, 60.0 * i + 60)]
>>> [window(0, True), window(1, True), window(2, True), window(3, False), window(4, False)]
[[], [('firing', '70d9b570678c3a72-0')], [], [], [('resolved', '70d9b570678c3a72-0')]]
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .events import AlertEvent, Annotations
from .rules import Condition, Rules
from .timefmt import rfc3339

__all__ = ["Lifecycle", "fingerprint"]

def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Stable id of one alert's identity: its rule and labels.

    >>> fingerprint("no_data", {"model": "fraud"})
    '5d246223df8a0a41'
    """
    return _fingerprint(rule, tuple(sorted(labels.items())))


@functools.lru_cache(maxsize=16_384)
def _fingerprint(rule: str, items: tuple[tuple[str, str], ...]) -> str:
    """Remembered: every window's conditions ask again (~9 µs each, ~40 a window)."""
    text = json.dumps([rule, [list(item) for item in items]], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Lifecycle:
    """Alert states of one key (a model version, a service, a model's presence)."""

    def __init__(self, states: dict[str, dict[str, Any]] | None = None) -> None:
        self.states: dict[str, dict[str, Any]] = states or {}

    def firing(self) -> list[tuple[str, dict[str, str]]]:
        """(rule, labels) of every alert in the firing state (published or held back)."""
        return [(s["rule"], s["labels"]) for s in self.states.values() if s["state"] == "firing"]

    def apply(
        self, conditions: Iterable[Condition], start_s: float, end_s: float, *,
        window: bool = True, rules: Rules | None = None,
        also_firing: Iterable[tuple[str, dict[str, str]]] = (),
    ) -> list[AlertEvent]:
        """Advance the states with one window's conditions; the alert events that result.

        ``rules`` holds the inhibitions, judged against what fires after this window's
        conditions (here, plus ``also_firing`` of other keys, e.g. the model's no-data).
        """
        out: list[AlertEvent] = []
        conditions = list(conditions)
        if not self.states and not any(c.active for c in conditions):
            return out   # nothing pending or firing, nothing new: nothing to do
        for c in conditions:
            fp = fingerprint(c.rule, c.labels)
            state = self.states.get(fp)
            if state is not None and window and state.get("window_s") is not None:
                # a window judged again (its late labels came in): newest verdict only
                if start_s < state["window_s"]:
                    continue
                if start_s == state["window_s"]:
                    if state["was_active"] == c.active:
                        state["last"] = _remember(c)
                        continue
                    state["active" if state["was_active"] else "inactive"] -= 1
            if c.active:
                if state is None:
                    state = self.states[fp] = {
                        "rule": c.rule, "labels": c.labels, "state": "pending", "active": 0,
                        "inactive": 0, "start_s": start_s, "published": False}
                state["active"] += 1
                state["inactive"] = 0
                if state["state"] == "pending" and state["active"] >= c.for_windows:
                    state["state"] = "firing"
            elif state is not None:
                if state["state"] == "pending":
                    del self.states[fp]
                    continue
                state["inactive"] += 1
                if state["inactive"] > c.keep_firing_for:
                    del self.states[fp]
                    if state["published"]:
                        out.append(_event(c, fp, state, "resolved", start_s=start_s, end_s=end_s,
                                          window=window))
                    continue
            if state is not None:
                state["last"] = _remember(c)
                if window:
                    state["window_s"], state["was_active"] = start_s, c.active
        # publish what fires and is not held back (now that this window's sources are known)
        firing = [*self.firing(), *also_firing]
        for fp, state in self.states.items():
            if state["state"] != "firing" or state["published"]:
                continue
            if rules is not None and rules.inhibited(state["rule"], state["labels"], firing):
                continue
            state["published"] = True
            out.append(_event(_recall(state), fp, state, "firing", start_s=start_s, end_s=end_s,
                              window=window))
        return out

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.states


def _remember(c: Condition) -> dict[str, Any]:
    return {"kind": c.kind, "severity": c.severity, "value": c.value, "threshold": c.threshold,
            "summary": c.summary, "description": c.description, "runbook_url": c.runbook_url,
            "evidence": _plain(c.evidence)}


def _recall(state: dict[str, Any]) -> Condition:
    last = state.get("last", {})
    return Condition(rule=state["rule"], active=True, labels=state["labels"],
                     **{k: v for k, v in last.items()})


def _event(
    c: Condition, fp: str, state: dict[str, Any], status: str, *, start_s: float, end_s: float,
    window: bool,
) -> AlertEvent:
    subject = " ".join(c.labels[k] for k in ("model", "model_version", "service")
                       if k in c.labels)
    evidence = dict(c.evidence)
    trace_ids = evidence.pop("trace_ids", [])
    started = state["start_s"]
    return AlertEvent(
        alert_id=f"{fp}-{int(started)}", fingerprint=fp, status=status,  # type: ignore[arg-type]
        severity=c.severity, rule=c.rule, kind=c.kind,  # type: ignore[arg-type]
        labels=dict(c.labels),
        annotations=Annotations(summary=c.summary,
                                description=c.description or f"{subject}: {c.summary}",
                                runbook_url=c.runbook_url),
        value=c.value, threshold=c.threshold, starts_at=rfc3339(started),
        ends_at=rfc3339(start_s) if status == "resolved" else None,
        window_start=rfc3339(start_s) if window else None,
        window_end=rfc3339(end_s) if window else None,
        evidence=_plain(evidence), trace_ids=list(trace_ids),
    )


def _plain(value: Any) -> Any:
    """JSON-ready data (numpy scalars and arrays become numbers and lists)."""
    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=_enc_hook))


def _enc_hook(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise NotImplementedError(type(value))
