"""Delayed labels and outcomes: joined to the right window, bounded, revised, and judged by
rules."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from mlpulse.events import PredictionWindow
from mlpulse.join import WINDOW_COST, LabelJoin
from mlpulse.testing import LocalPipeline

T0 = 1_000_020.0   # window [1_000_020, 1_000_030) with 10 s windows
RULES = [{"name": "accuracy_low", "expr": "performance.accuracy < 0.8", "for": 2,
          "severity": "critical"}]


def predictions(model: str, start: float, n: int, *, prefix: str = "",
                prediction: Any = 1.0) -> list[dict[str, Any]]:
    return [{"event_id": f"{prefix}{i}", "timestamp": start + i * 0.01, "model": model,
             "model_version": "v1", "prediction": prediction} for i in range(n)]


def labels(model: str, ids: list[str], label: Any, at: float) -> list[dict[str, Any]]:
    return [{"event_id": i, "timestamp": at, "model": model, "label": label} for i in ids]


def outcomes(model: str, ids: list[str], values: dict[str, Any], at: float
             ) -> list[dict[str, Any]]:
    return [{"event_id": i, "timestamp": at, "model": model, "outcomes": values} for i in ids]


def pipe(**overrides: Any) -> LocalPipeline:
    settings = {"window_seconds": 10, "lateness_seconds": 0, "revision_interval_seconds": 0,
                "feedback_min_labels": 5, **overrides}
    return LocalPipeline(**settings)


def windows_of(p: LocalPipeline, model: str) -> list[PredictionWindow]:
    return [w for w in p.windows if isinstance(w, PredictionWindow) and w.model == model]


def test_late_labels_revise_the_window_of_their_predictions():
    p = pipe()
    p.send_predictions(predictions("m", T0, 10, prefix="a"))        # window 1
    p.send_predictions(predictions("m", T0 + 10, 10, prefix="b"))   # window 2
    p.send_predictions(predictions("m", T0 + 20, 1, prefix="c"))    # closes both
    first, _ = windows_of(p, "m")
    assert (first.revision, first.performance) == (0, None)
    # labels of window 1 only: 6 right, 2 wrong, 2 never come
    p.send_feedback(labels("m", [f"a{i}" for i in range(6)], 1.0, at=T0 + 100)
                    + labels("m", ["a6", "a7"], 0.0, at=T0 + 130))
    p.advance(1)
    revised = windows_of(p, "m")[2:]
    assert [(w.window_start, w.revision) for w in revised] == [(first.window_start, 1)]
    perf = revised[0].performance
    assert perf is not None
    assert (perf.labelled, perf.label_coverage, perf.accuracy) == (8, 0.8, 0.75)
    assert perf.label_delay_max_seconds == pytest.approx(130 - 0.06)
    assert revised[0].count == first.count and revised[0].features == first.features
    assert p.summarizer.join is not None and p.summarizer.join.counts["joined"] == 8


def test_labels_before_their_predictions_wait_and_repeated_labels_count_once():
    p = pipe()
    p.send_feedback(labels("m", ["a0", "a1"], 1.0, at=T0 + 1))    # predictions not seen yet
    p.send_predictions(predictions("m", T0, 3, prefix="a"))
    p.send_feedback(labels("m", ["a0", "a2"], 0.0, at=T0 + 2))    # a0 again: ignored
    p.send_predictions(predictions("m", T0 + 10, 1, prefix="z"))  # closes window 1
    perf = windows_of(p, "m")[0].performance
    assert perf is not None and (perf.labelled, perf.accuracy) == (3, 2 / 3)


def test_unmatched_labels_and_the_horizon():
    p = pipe(feedback_horizon_seconds=30)
    p.send_predictions(predictions("m", T0, 5, prefix="a"))
    p.send_feedback(labels("m", ["nope"], 1.0, at=T0 + 1))
    p.send_predictions(predictions("m", T0 + 70, 1, prefix="late"))   # 40 s past the horizon
    p.advance(1)
    p.send_feedback(labels("m", ["a0"], 1.0, at=T0 + 75))   # its window left the index
    p.send_predictions(predictions("m", T0 + 90, 1, prefix="later"))
    p.advance(1)
    join = p.summarizer.join
    assert join is not None
    assert join.counts["unlabelled"] == 5 and join.counts["unmatched"] == 2
    assert join.counts["joined"] == 0 and not join.early


def fill_bounded(windows: int, per_window: int) -> LabelJoin:
    """A join bounded at 1,000 fed ``windows`` 10 s windows of ``per_window`` predictions,
    checking the bound after each."""
    join = LabelJoin(window_s=10, horizon_s=1e9, max_predictions=1000)
    p = pipe()
    for w in range(windows):
        window = join.open(0, ("m", "v1"))
        events = p.engine.ingest_stage.predictions(
            msgspec.json.encode(predictions("m", T0 + 10 * w, per_window, prefix=f"{w}-")),
            topic="t", partition=0, offset=0, now_s=0).by_key["m"]
        window.remember(events)
        assert join.load <= 1000
    return join


def test_the_index_is_bounded_oldest_windows_first():
    join = fill_bounded(30, 100)
    kept = [w.start_s for w in join.windows["m"]]
    assert kept == sorted(kept) and kept[-1] == T0 + 290
    pending = sum(w.pending for w in join.windows["m"])
    assert join.size == pending and join.load == pending + WINDOW_COST * len(kept)
    assert join.counts["evicted"] == 3000 - pending


def test_quiet_windows_count_against_the_bound_too():
    """One prediction per window: the windows themselves (summary, counters) are what
    weighs, and they are bounded as well."""
    join = fill_bounded(200, 1)
    assert len(join.windows["m"]) <= 1000 // (WINDOW_COST + 1)
    assert join.windows["m"][-1].start_s == T0 + 1990


def test_revisions_are_throttled_per_window():
    p = pipe(revision_interval_seconds=60)
    p.send_predictions(predictions("m", T0, 20, prefix="a"))
    p.send_predictions(predictions("m", T0 + 10, 1, prefix="z"))
    for i in range(10):
        p.send_feedback(labels("m", [f"a{i}"], 1.0, at=T0 + 20))
        p.advance(1)
    first = [w for w in windows_of(p, "m") if w.window_start == windows_of(p, "m")[0].window_start]
    assert [w.revision for w in first] == [0, 1]   # one revision in 10 s
    p.advance(60)
    first = [w for w in windows_of(p, "m") if w.window_start == first[0].window_start]
    assert [w.revision for w in first] == [0, 1, 2]
    assert first[-1].performance is not None and first[-1].performance.labelled == 10


def test_accuracy_rule_fires_on_late_labels_counting_windows_not_revisions():
    p = pipe(rules=RULES)
    ids = []
    for w in range(4):
        p.send_predictions(predictions("m", T0 + 10 * w, 10, prefix=f"{w}-"))
        ids.append([f"{w}-{i}" for i in range(10)])
    p.send_predictions(predictions("m", T0 + 40, 1, prefix="z"))   # windows 0-3 closed
    assert not [a for a in p.alerts if a.rule == "accuracy_low"]
    # window 0 gets bad labels twice (two revisions): one window, so still pending
    p.send_feedback(labels("m", ids[0][:5], 0.0, at=T0 + 50))
    p.advance(1)
    p.send_feedback(labels("m", ids[0][5:], 0.0, at=T0 + 51))
    p.advance(1)
    assert not [a for a in p.alerts if a.rule == "accuracy_low"]
    # 3 labels are below feedback_min_labels: no verdict on window 1
    p.send_feedback(labels("m", ids[1][:3], 0.0, at=T0 + 52))
    p.advance(1)
    assert not [a for a in p.alerts if a.rule == "accuracy_low"]
    p.send_feedback(labels("m", ids[1][3:], 0.0, at=T0 + 53))
    p.advance(1)
    fired = [a for a in p.alerts if a.rule == "accuracy_low"]
    assert [(a.status, a.kind, a.severity, a.value) for a in fired] == [
        ("firing", "threshold", "critical", 0.0)]
    # good labels for windows 2 and 3: resolved
    p.send_feedback(labels("m", ids[2] + ids[3], 1.0, at=T0 + 60))
    p.advance(1)
    fired = [a for a in p.alerts if a.rule == "accuracy_low"]
    assert [a.status for a in fired] == ["firing", "resolved"]
    assert fired[0].alert_id == fired[1].alert_id


def test_the_join_can_be_turned_off_and_follows_partitions():
    off = pipe(feedback_horizon_seconds=0)
    off.send_predictions(predictions("m", T0, 3))
    off.send_feedback(labels("m", ["0"], 1.0, at=T0))
    off.advance(100)
    assert off.summarizer.join is None and windows_of(off, "m")[0].performance is None
    on = pipe()
    on.send_predictions(predictions("m", T0, 3))
    join = on.summarizer.join
    assert join is not None and join.size == 3
    on.summarizer.keep_only(predictions=set(), logs=set())
    assert join.size == 0 and not join.windows


def test_labels_between_batches_of_an_open_window_and_repeated_prediction_ids():
    """The index is columns sorted by id hash on lookup: labels that arrive while the window
    still grows find predictions of earlier and later batches; a prediction id sent twice
    (a replay) takes one label per copy and no more."""
    from mlpulse.events import FeedbackEvent, PredictionEvent

    join = LabelJoin(window_s=60, horizon_s=3600, revision_interval_s=0)
    window = join.open(0, ("m", "v1"))

    def batch(ids: list[str], prediction: Any) -> list[PredictionEvent]:
        # a fresh string object per event, as the decoder makes them
        return [PredictionEvent(event_id=i, timestamp=10.0, model="m",
                                prediction=(prediction + "!")[:-1]) for i in ids]

    def label(ids: list[str], value: Any) -> None:
        join.label(0, [FeedbackEvent(event_id=i, timestamp=20.0, model="m", label=value)
                       for i in ids])

    window.remember(batch([f"a{i}" for i in range(50)], "cat"))
    label(["a3", "a7"], "cat")
    window.remember(batch([f"b{i}" for i in range(50)], "dog"))
    label(["b1", "a9"], "cat")          # one wrong (dog ≠ cat), one right
    window.remember(batch(["a3"], "cat"))  # a replayed prediction id
    label(["a3", "a3", "a3"], "cat")    # the replayed copy takes one, the rest wait
    assert join.counts["joined"] == 5
    assert window.performance.labelled == 5
    assert window.pending == 101 - 5 and join.size == 96
    assert sum(len(w) for w in join.early.values()) == 1   # the third a3 waits
    summary = window.result(PredictionWindow(
        model="m", model_version="v1", window_start="", window_end="", count=101,
        error_count=0, error_rate=0.0, latency_ms=None, confidence=None, predictions={},
        features={}, tokens_in=0, tokens_out=0, cost_usd=0.0, cache_hit_rate=None,
        late_events=0))
    assert summary.performance is not None and summary.performance.accuracy == 0.8
    # class names are shared, not one string object per prediction
    assert len({id(p) for p in window.predictions}) == 2


def test_failed_calls_in_a_batch_are_not_judged_and_the_rest_keep_their_times():
    """A batch mixing failed calls (no prediction) with answered ones: only the answered
    ones await labels, each with its own event time (the label delay is per prediction)."""
    p = pipe()
    batch = predictions("m", T0, 10, prefix="a")
    for event in batch[::3]:   # a0, a3, a6, a9 failed
        event.update(prediction=None, status="error", error_type="timeout")
    p.send_predictions(batch)
    join = p.summarizer.join
    assert join is not None and join.size == 6
    p.send_feedback(labels("m", ["a0", "a1", "a2", "a8"], 1.0, at=T0 + 50))
    p.send_predictions(predictions("m", T0 + 10, 1, prefix="z"))   # closes the window
    perf = windows_of(p, "m")[0].performance
    assert perf is not None and (perf.labelled, perf.accuracy) == (3, 1.0)
    assert perf.label_delay_max_seconds == pytest.approx(50 - 0.01)
    assert perf.label_delay_mean_seconds == pytest.approx(50 - 0.11 / 3)
    assert join.counts["joined"] == 3


def test_labels_after_a_crash_join_the_predictions_made_before_it():
    """A worker checkpoints, reads on, and is killed: a new one restores the checkpoint
    (label index included), reads the input again from its offsets, then every label
    arrives. Each window's final performance equals that of a worker that never stopped,
    and no label goes unmatched."""
    enc = msgspec.json.encode
    before = [enc(predictions("m", T0, 20, prefix="a")),
              enc(predictions("m", T0 + 10, 20, prefix="b")),
              enc(predictions("m", T0 + 20, 10, prefix="c")),               # open at the crash
              enc(labels("m", [f"a{i}" for i in range(5)], 1.0, at=T0 + 25)),
              enc(outcomes("m", [f"a{i}" for i in range(8)], {"converted": True},
                           at=T0 + 25)),
              enc(labels("m", ["d0", "d1"], 0.0, at=T0 + 26))]              # before their own
    after = [enc(predictions("m", T0 + 25, 10, prefix="c1")),
             enc(labels("m", [f"a{i}" for i in range(5, 10)], 0.0, at=T0 + 27))]
    later = [enc(predictions("m", T0 + 30, 2, prefix="d")),
             enc(predictions("m", T0 + 45, 1, prefix="e")),
             enc(labels("m", [f"a{i}" for i in range(10, 20)] + [f"b{i}" for i in range(20)]
                        + [f"c{i}" for i in range(10)] + [f"c1{i}" for i in range(10)],
                        1.0, at=T0 + 50)),
             enc(outcomes("m", [f"a{i}" for i in range(20)] + ["b1"], {"converted": False},
                          at=T0 + 50))]   # a0-a7 had theirs: duplicates

    def feedback(payload: bytes) -> bool:
        return b'"label"' in payload or b'"outcomes"' in payload

    def send(p: LocalPipeline, payloads: list[bytes]) -> None:
        for payload in payloads:
            p.send("feedback" if feedback(payload) else "predictions", payload)

    def final(p: LocalPipeline) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for w in sorted(windows_of(p, "m"), key=lambda w: w.revision):
            out[w.window_start] = (w.performance, w.outcomes)
        return out

    straight = pipe()
    send(straight, before + after + later)
    straight.advance(1)

    first = pipe()
    send(first, before)
    first.advance(1)
    first.checkpoint()
    send(first, after)   # read on, then killed: this is lost

    second = pipe(clock=first.clock)
    second.restore(first.checkpoints)
    for stream, sent in (("predictions", [m for m in before + after if not feedback(m)]),
                         ("feedback", [m for m in before + after if feedback(m)])):
        offset = second._offsets.get((second.engine.streams[stream].topic, 0), 0)
        send(second, sent[offset:])
    send(second, later)
    second.advance(1)

    want = final(straight)
    assert len(want) == 4 and all(perf for perf, _ in want.values())
    assert final(second) == want
    join = second.summarizer.join
    assert join is not None and join.counts["unmatched"] == 0
    labelled = {start: perf.labelled for start, (perf, _) in final(second).items() if perf}
    assert sorted(labelled.values()) == [2, 20, 20, 20]
    joined = {start: o["converted"] for start, (_, o) in final(second).items() if o}
    assert sorted((o.count, o.rate) for o in joined.values()) == [(1, 0.0), (20, 0.4)]


def test_the_index_is_checkpointed_incrementally_and_what_leaves_is_deleted():
    """Each checkpoint writes only what changed (new predictions, labels scored, a summary
    once); the records of a window that left the index are deleted once no checkpoint
    names it, so the compacted checkpoint topic does not grow with the windows."""
    p = pipe(feedback_horizon_seconds=30)
    engine = p.engine

    def label_keys(kind: bytes = b"") -> set[bytes]:
        return {k for t in p.checkpoints.values() for k in t
                if k.startswith(b"l|") and kind in k.rsplit(b"|", 1)[1]}

    p.send_predictions(predictions("m", T0, 10, prefix="a"))
    p.checkpoint()
    assert len(label_keys(b"p")) == 1 and not label_keys(b"s")
    assert engine.checkpoint(dict(p._offsets)) is None   # nothing changed: nothing written
    p.send_predictions(predictions("m", T0 + 10, 10, prefix="b"))   # closes window a
    p.send_feedback(labels("m", ["a1", "a2"], 1.0, at=T0 + 12))
    round_ = engine.checkpoint(dict(p._offsets))
    assert round_ is not None
    written = sorted(k.rsplit(b"|", 1)[1] for _, k, _ in round_.chunks if k.startswith(b"l|"))
    assert written == [b"p0", b"s0", b"w"]   # b's predictions, a's labels and summary
    for partition, key, value in [*round_.chunks, *round_.headers]:
        p.checkpoints.setdefault(partition, {})[key] = value
    round_.headers_written()
    round_.done()
    assert len(label_keys()) == 4
    p.send_predictions(predictions("m", T0 + 100, 1, prefix="z"))   # a and b expire
    p.advance(1)
    p.checkpoint()
    assert label_keys()   # the last checkpoint written named them until now
    p.advance(1)
    p.checkpoint()
    join = engine.summarizer.join
    assert join is not None
    left = {w.name.split(b"|")[2] for ws in join.windows.values() for w in ws}
    assert len(left) == 1   # z's window
    assert {k.split(b"|")[2] for k in label_keys()} == left


def test_outcomes_join_like_labels_and_revise_their_window():
    """Outcomes in their own feedback events, with a label, or before their prediction:
    each prediction's counted once; a window whose labels are all in still waits for
    outcomes; rules read them."""
    p = pipe(rules=[{"name": "conversion_low", "expr": "outcomes.converted.rate < 0.5",
                     "confidence": 0}])
    p.send_predictions(predictions("m", T0, 10))
    p.send_feedback(outcomes("m", ["x0"], {"converted": True}, at=T0 + 1))   # its own later
    p.send_feedback(labels("m", ["x0"], 1.0, at=T0 + 1))   # its label too, as early
    p.send_predictions(predictions("m", T0 + 10, 2, prefix="x"))
    p.send_feedback(labels("m", [str(i) for i in range(10)], 1.0, at=T0 + 12))
    p.advance(1)   # every label in: the window is revised, and waits for outcomes still
    first = windows_of(p, "m")
    assert first[-1].outcomes == {} and first[-1].performance.labelled == 10
    p.send_feedback([{"event_id": str(i), "timestamp": T0 + 13, "model": "m",
                      "outcomes": {"converted": i < 3, "revenue_usd": 2.0 * i}}
                     for i in range(10)])
    p.send_feedback(outcomes("m", ["1", "2"], {"converted": False}, at=T0 + 14))   # repeats
    p.advance(1)
    revised = [w for w in windows_of(p, "m") if w.window_start == first[0].window_start]
    last = revised[-1].outcomes
    assert (last["converted"].count, last["converted"].rate) == (10, 0.3)
    assert (last["revenue_usd"].mean, last["revenue_usd"].sum, last["revenue_usd"].rate) == (
        9.0, 90.0, None)
    assert revised[-1].performance.labelled == 10   # labels kept
    assert [a.rule for a in p.alerts if a.status == "firing"] == ["conversion_low"]
    assert p.engine.registry.get_sample_value("mlpulse_outcomes_joined_total") == 11   # and x0
    p.advance(30)
    x = [w for w in windows_of(p, "m") if w.window_start != first[0].window_start]
    assert x[-1].outcomes["converted"].count == 1 and x[-1].performance.labelled == 1


def test_feedback_scores_the_slices_of_its_predictions_and_survives_a_crash():
    """A sliced model's labels and outcomes revise its slices' windows too (each with the
    performance of its own predictions), raise a rule's alert for the slice that is
    worse, and join the same after a crash (slices of each prediction in the checkpoint)."""
    enc = msgspec.json.encode
    events = predictions("m", T0, 40, prefix="a", prediction="yes")
    for i, event in enumerate(events):
        event["segment"] = {"region": "eu" if i % 4 == 0 else "us"}
    eu = [f"a{i}" for i in range(0, 40, 4)]
    us = [f"a{i}" for i in range(40) if i % 4]
    before = [enc(events), enc(predictions("m", T0 + 10, 1, prefix="b")),   # closes it
              enc(labels("m", eu[:5] + us[:15], "no", at=T0 + 20))]
    after = [enc(labels("m", eu[5:], "no", at=T0 + 30)),
             enc(labels("m", us[15:], "yes", at=T0 + 30)),
             enc(outcomes("m", eu, {"converted": True}, at=T0 + 31))]
    rules = [{"name": "slice_accuracy_low", "expr": "performance.accuracy < 0.5",
              "match": {"segment": "region=*"}}]

    def send(p: LocalPipeline, payloads: list[bytes]) -> None:
        for payload in payloads:
            p.send("feedback" if b'"label"' in payload or b'"outcomes"' in payload
                   else "predictions", payload)
        p.advance(1)

    def final(p: LocalPipeline) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for w in sorted(windows_of(p, "m"), key=lambda w: w.revision):
            if w.window_start == "1970-01-12T13:47:00Z":
                out[",".join(w.segment.values())] = (
                    w.count, w.performance and (w.performance.labelled, w.performance.accuracy),
                    w.outcomes and w.outcomes["converted"].count, w.revision)
        return out

    straight = pipe(segment_keys="region", rules=rules)
    send(straight, before + after)
    assert final(straight) == {"": (40, (40, 0.375), 10, 1),
                               "eu": (10, (10, 0.0), 10, 1),
                               "us": (30, (30, 0.5), {}, 1)}
    alerts = [(a.status, a.labels.get("segment")) for a in straight.alerts
              if a.rule == "slice_accuracy_low"]
    assert alerts == [("firing", "region=eu")]   # not the model's 0.375: not a slice

    first = pipe(segment_keys="region", rules=rules)
    send(first, before)
    first.checkpoint()
    # and from a checkpoint of the earlier format: each slice's summary a record of its own
    for checkpoints in (first.checkpoints, _summaries_one_record_each(first.checkpoints)):
        second = pipe(segment_keys="region", rules=rules, clock=first.clock)
        second.restore(checkpoints)
        send(second, after)
        assert {k: v[:3] for k, v in final(second).items()} == {
            k: v[:3] for k, v in final(straight).items()}


def _summaries_one_record_each(checkpoints: dict[int, dict[bytes, bytes]]
                               ) -> dict[int, dict[bytes, bytes]]:
    """The checkpoints as the earlier format wrote them: a sliced window's slices'
    summaries one record each (``|w|<slice>``, compressed JSON), named in its state, not
    one bundle (``|W``)."""
    import zlib

    from mlpulse.checkpoint import Checkpoint, checkpoint_records, next_slot, read_checkpoint
    from mlpulse.labels import SliceSummaries

    out = {}
    for partition, records in checkpoints.items():
        table = dict(records)
        point = read_checkpoint(table.get, partition)
        if point is None:
            out[partition] = table
            continue
        state = msgspec.msgpack.decode(point.state)
        for row in (state["labels"] or {}).get("windows", []):
            slices = row[11] if len(row) > 11 else None
            if not slices or not slices[6]:
                continue
            name = next(key[:-2] for key in table if key.endswith(b"|W"))
            bundle = SliceSummaries(table.pop(name + b"|W"))
            for part in bundle.names:
                table[name + b"|w|" + part.encode()] = zlib.compress(
                    msgspec.json.encode(bundle.get(part)), 1)
            slices[4] = sorted(bundle.names)
            row[11] = slices[:6]
        earlier = Checkpoint(msgspec.msgpack.encode(state), point.inputs, point.hops)
        table.update(checkpoint_records(partition, earlier, next_slot(table.get, partition)))
        out[partition] = table
    assert any(key.endswith(b"|w|region=eu") for table in out.values() for key in table)
    return out
