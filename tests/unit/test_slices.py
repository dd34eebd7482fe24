"""Slices: windows, detectors and alerts per segment value, beside the model version's."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from mlpulse.config import Settings
from mlpulse.errors import ConfigError
from mlpulse.events import PredictionWindow
from mlpulse.testing import LocalPipeline

REGIONS = {"eu": 0.15, "us": 0.5, "apac": 0.35}


def traffic(windows: int, per_window: int, shift: dict[str, float] | None = None,
            from_window: int = 0, seed: int = 3) -> list[dict[str, Any]]:
    """Events of model m over 10 s windows; feature x ~ N(0, 1), shifted by ``shift`` in a
    region from window ``from_window`` on."""
    rng = np.random.default_rng(seed)
    names, shares = list(REGIONS), list(REGIONS.values())
    out = []
    for w in range(windows):
        regions = rng.choice(names, size=per_window, p=shares)
        for i, region in enumerate(regions):
            x = float(rng.normal())
            if shift and w >= from_window:
                x += shift.get(str(region), 0.0)
            out.append({"event_id": f"{w}-{i}", "timestamp": 10.0 * w + i * 10.0 / per_window,
                        "model": "m", "model_version": "v1", "latency_ms": 20.0,
                        "features": {"x": x}, "segment": {"region": str(region),
                                                          "tier": "gold" if i % 4 else "free"}})
    return out


def run(events: list[dict[str, Any]], **settings: Any) -> LocalPipeline:
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, **settings)
    for i in range(0, len(events), 500):
        pipe.send_predictions(events[i:i + 500])
    pipe.advance(100)
    return pipe


def windows(pipe: LocalPipeline) -> dict[tuple[str, str], list[PredictionWindow]]:
    out: dict[tuple[str, str], list[PredictionWindow]] = {}
    for w in pipe.windows:
        if isinstance(w, PredictionWindow):
            name = ",".join(f"{k}={v}" for k, v in w.segment.items())
            out.setdefault((name, w.window_start), []).append(w)
    return out


def test_each_segment_value_gets_its_own_window_beside_the_model_versions():
    events = traffic(windows=2, per_window=400)
    got = windows(run(events, segment_keys="region, tier"))
    truth: dict[tuple[str, str], int] = {}
    for e in events:
        start = "1970-01-01T00:00:00Z" if e["timestamp"] < 10 else "1970-01-01T00:00:10Z"
        for name in ("", f"region={e['segment']['region']}", f"tier={e['segment']['tier']}"):
            truth[(name, start)] = truth.get((name, start), 0) + 1
    assert {key: [w.count for w in ws] for key, ws in got.items()} == {
        key: [n] for key, n in truth.items()}
    whole = got[("", "1970-01-01T00:00:00Z")][0]
    assert whole.segment == {} and whole.count == 400
    eu = got[("region=eu", "1970-01-01T00:00:00Z")][0]
    assert eu.segment == {"region": "eu"} and eu.features["x"].count == eu.count


def test_segment_values_are_bounded_and_the_rest_folded_every_event_counted():
    events = traffic(windows=1, per_window=600)
    for i, e in enumerate(events):
        e["segment"]["region"] = f"r{i % 50}"   # a flood of values
    pipe = run(events, segment_keys="region", max_segment_values=3)
    got = windows(pipe)
    names = sorted(name for name, _ in got if name.startswith("region="))
    assert names == ["region=__other__", "region=r0", "region=r1", "region=r2"]
    assert sum(ws[0].count for (name, _), ws in got.items() if name) == 600
    assert got[("region=__other__", "1970-01-01T00:00:00Z")][0].count == 600 - 3 * 12
    assert pipe.summarizer.guard.folded["segment"] == 600 - 3 * 12
    assert pipe.engine.registry.get_sample_value(
        "mlpulse_series_folded_total", {"kind": "segment"}) == 600 - 3 * 12


def test_a_drift_confined_to_one_slice_is_alerted_for_that_slice_only():
    """A 15 % slice shifts: its own reference (its first windows) sees it; the model
    version and the other slices stay quiet."""
    events = traffic(windows=8, per_window=1500, shift={"eu": 1.0}, from_window=5)
    pipe = run(events, segment_keys="region")
    drift = {(a.labels.get("segment", ""), a.labels.get("feature")) for a in pipe.alerts
             if a.status == "firing" and a.rule == "feature_drift"}
    assert drift == {("region=eu", "x")}
    fired = next(a for a in pipe.alerts if a.rule == "feature_drift")
    assert fired.evidence["current"]["mean"] > fired.evidence["reference"]["mean"] + 0.5
    # the quiet slices too show their largest drift on the status page
    psi = {r["segment"]: r["drift_psi_max"] for r in pipe.status.to_json()["slices"]}
    assert set(psi) == {"region=eu", "region=us", "region=apac"}
    assert psi["region=eu"] > 0.2 > max(psi["region=us"], psi["region=apac"]) >= 0


def test_what_windows_closing_together_compute_at_once_is_what_each_computes_alone(
        monkeypatch):
    """The drift tests of a model version's window and its slices' run in one numpy pass
    (each with its own family), their anomaly detectors' judgements in another: the same
    verdicts and evidence as one by one."""
    import mlpulse.detect

    events = traffic(windows=8, per_window=1500, shift={"eu": 1.0}, from_window=5)
    for event in events:   # and errors in eu from window 6 on: anomalies
        if event["segment"]["region"] == "eu" and event["timestamp"] >= 60 and int(
                event["event_id"].split("-")[1]) % 3 == 0:
            event["status"] = "error"

    def alerts() -> list[tuple[Any, ...]]:
        pipe = run(events, segment_keys="region,tier",
                   detectors={"anomaly": {"warmup_windows": 2}})
        return [(a.status, a.rule, sorted(a.labels.items()), a.value, a.window_start,
                 a.annotations.summary) for a in pipe.alerts]

    together = alerts()
    monkeypatch.setattr(mlpulse.detect, "run_drift_tests", lambda drifts: None)
    monkeypatch.setattr(mlpulse.detect, "observe_many", lambda anomalies, vectors, samples: [
        a.observe(v, s) for a, v, s in zip(anomalies, vectors, samples, strict=True)])
    assert alerts() == together
    assert {"feature_drift", "window_anomaly"} <= {rule for _, rule, *_ in together}


def test_a_small_slice_is_summarised_but_not_judged():
    events = traffic(windows=8, per_window=300, shift={"eu": 5.0}, from_window=5)
    pipe = run(events, segment_keys="region", min_slice_events=100)   # eu: ~45 a window
    assert windows(pipe)[("region=eu", "1970-01-01T00:01:00Z")][0].count < 100
    assert not [a for a in pipe.alerts if a.labels.get("segment") == "region=eu"]


def test_slices_are_off_by_default_and_keys_are_checked():
    assert Settings().slice_keys == ()
    assert Settings(segment_keys="region,tier,region").slice_keys == ("region", "tier")
    with pytest.raises(ConfigError, match="MLPULSE_SEGMENT_KEYS"):
        Settings(segment_keys="region,bad key")._validate()
    pipe = run(traffic(windows=1, per_window=100))
    assert {name for name, _ in windows(pipe)} == {""}


def test_slice_windows_waiting_to_fold_are_whole_in_a_checkpoint():
    """A sliced window gathers events before folding them and its slices (SLICED_BATCH):
    a checkpoint taken meanwhile holds them all."""
    from mlpulse.events import PredictionEvent
    from mlpulse.summarize import Summarizer

    settings = Settings(window_seconds=10, lateness_seconds=0, segment_keys="region")
    first, second = Summarizer(settings), Summarizer(settings)
    events = [PredictionEvent(event_id=str(i), timestamp=1.0, model="m",
                              segment={"region": "eu" if i % 3 else "us"}) for i in range(30)]
    first.add_prediction_events(0, events, now_wall_s=0)
    second.restore_partition(0, first.partition_state(0))
    counts = {tuple(c.summary.segment.items()): c.summary.count
              for c in second.close_due(now_wall_s=1000)}
    assert counts == {(): 30, (("region", "eu"),): 20, (("region", "us"),): 10}


def test_a_checkpoint_with_slice_windows_of_their_own_restores():
    """An earlier version checkpointed each slice's window beside its model version's, keyed
    (model, version, slice): restored into the model version's window, nothing lost."""
    from mlpulse.events import PredictionEvent
    from mlpulse.summarize import Summarizer

    settings = Settings(window_seconds=10, lateness_seconds=0, segment_keys="region")
    first, second = Summarizer(settings), Summarizer(settings)
    events = [PredictionEvent(event_id=str(i), timestamp=1.0, model="m",
                              segment={"region": "eu" if i % 3 else "us"}) for i in range(30)]
    first.add_prediction_events(0, events, now_wall_s=0)
    state = msgspec.msgpack.decode(first.partition_state(0))
    [entry] = state["predictions"]
    for start, aggregate, updated in entry[1]:   # as the earlier version kept them
        for name, part in aggregate.pop("slices").items():
            state["predictions"].append([[*entry[0], name], [[start, part, updated]],
                                         entry[2], entry[3], 0])
    second.restore_partition(0, msgspec.msgpack.encode(state))
    counts = {tuple(c.summary.segment.items()): c.summary.count
              for c in second.close_due(now_wall_s=1000)}
    assert counts == {(): 30, (("region", "eu"),): 20, (("region", "us"),): 10}


@pytest.mark.parametrize("by_cells", [True, False])
def test_a_slice_is_summarised_as_its_events_would_be_alone(monkeypatch, by_cells):
    """Slices fold the rows of their events from the window's columns: every field (LLM
    usage, errors, optional and mixed features, labels of predictions) comes out as a
    window of those events alone. So it does where a batch holds more combinations of
    slices than MAX_CELLS (each key's slices folded apart)."""
    from mlpulse import slice_folds

    if not by_cells:
        monkeypatch.setattr(slice_folds, "MAX_CELLS", 0)
    rng = np.random.default_rng(8)
    events = []
    for i in range(700):
        event: dict[str, Any] = {
            "event_id": str(i), "timestamp": 1.0 + i / 100, "model": "m",
            "latency_ms": float(rng.lognormal(3, 0.5)),
            "status": "error" if rng.random() < 0.1 else "ok",
            "prediction": str(rng.choice(["a", "b"])) if i % 5 else float(rng.normal()),
            "features": {"x": float(rng.normal()), "c": str(rng.choice(["p", "q"]))},
            "segment": {"region": str(rng.choice(["eu", "us", "apac"]))}}
        if i % 3:
            event["confidence"] = float(rng.random())
        if i % 4 == 0:
            event["features"]["y"] = None if i % 8 else 2.5
            event.update(tokens_in=int(rng.integers(10, 100)), cost_usd=0.001 * (i % 7))
        if event["status"] == "error":
            event["error_type"] = "timeout"
        events.append(event)
    sliced = run(events, segment_keys="region")
    for region in ("eu", "us", "apac"):
        alone = run([e for e in events if e["segment"]["region"] == region])
        [whole] = [w for w in alone.windows if isinstance(w, PredictionWindow)]
        [part] = [w for w in sliced.windows if isinstance(w, PredictionWindow)
                  and w.segment == {"region": region}]
        assert msgspec.structs.replace(part, segment={}) == whole


def test_models_a_glob_names_get_their_own_segment_keys_and_cross_products():
    """``detectors.models."<glob>".segments`` slices the models it matches (instead of
    MLPULSE_SEGMENT_KEYS); a list among them slices the cross product of its keys."""
    events = traffic(windows=1, per_window=400)
    other = [e | {"model": "plain", "event_id": "p" + e["event_id"],
                  "segment": dict(e["segment"])} for e in events]
    for e in events:
        e["model"] = "m-eu"
        e["segment"]["tier"] = "a&b" if e["segment"]["tier"] == "free" else "gold"
    pipe = run(events + other, segment_keys="tier",
               detectors={"models": {"m-*": {"segments": [["region", "tier"]]}}})
    names = {(w.model, tuple(sorted(w.segment.items()))) for w in pipe.windows
             if isinstance(w, PredictionWindow) and w.segment}
    assert {n for m, n in names if m == "plain"} == {(("tier", "free"),), (("tier", "gold"),)}
    crossed = {n for m, n in names if m == "m-eu"}
    assert (("region", "eu"), ("tier", "a&b")) in crossed and len(crossed) == 6
    counts = [w.count for w in pipe.windows
              if isinstance(w, PredictionWindow) and w.model == "m-eu" and w.segment]
    assert sum(counts) == 400   # each event in one pair of values
    with pytest.raises(ConfigError, match="segments"):
        run([], detectors={"segments": ["bad key"]})


def test_events_sliced_windows_hold_unfolded_are_bounded_per_worker(monkeypatch):
    """Sliced windows gather events before folding them (SLICED_BATCH each); many sliced
    models with few events each would hold a lot: past MAX_WAITING in all, the windows
    holding most fold what they hold, down to half of it. Nothing is lost either way, and
    windows a worker gives up let go of theirs."""
    from mlpulse import summarize
    from mlpulse.events import PredictionEvent

    monkeypatch.setattr(summarize, "MAX_WAITING", 50)
    s = summarize.Summarizer(Settings(window_seconds=10, lateness_seconds=0,
                                      segment_keys="region"))
    for m in range(20):
        s.add_prediction_events(m % 2, [
            PredictionEvent(event_id=f"{m}-{i}", timestamp=1.0, model=f"m{m}",
                            segment={"region": "eu" if i % 2 else "us"}) for i in range(10)],
            now_wall_s=0)
        assert s.waiting.events <= 50
    assert s.waiting.events > 0   # the bound folds some windows, not all
    s.keep_only(predictions={0}, logs=set())
    assert s.waiting.events <= 50 and all(
        aggregate.waiting == 0 or key[0] in {f"m{m}" for m in range(0, 20, 2)}
        for key, _, aggregate in s._predictions[0].opened())
    counts = {(c.summary.model, tuple(c.summary.segment.values())): c.summary.count
              for c in s.close_due(now_wall_s=1000)}
    assert len(counts) == 30 and set(counts.values()) == {10, 5}
    assert s.waiting.events == 0
