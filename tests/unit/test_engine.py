"""The engine end to end, in process (mlpulse.testing drives the worker's own Engine):
envelopes vs single events, logs, late events, alignment across input partitions, pauses,
restore."""

from __future__ import annotations

import msgspec
import pytest

from mlpulse.sdk.simulator import Simulator
from mlpulse.testing import LocalPipeline

T0 = 1_700_000_000.0


def events(n_windows: int = 3) -> list[dict]:
    return list(Simulator(n_models=3, seed=2).events(T0, 10.0 * n_windows, rate_per_s=30))


def summaries(pipe: LocalPipeline) -> list[dict]:
    return sorted((msgspec.to_builtins(w) for w in pipe.windows),
                  key=lambda w: (w["model"], w["window_start"]))


def assert_same(a: object, b: object, path: str = "$") -> None:
    """Equal, floats to 1e-9 relative (sums of floats depend on batching in the last bits)."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9), path
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_single_events_and_envelopes_give_identical_summaries():
    evs = events()
    single = LocalPipeline(window_seconds=10, lateness_seconds=1)
    single.send_predictions(evs, envelope=False)
    single.advance(100)
    batched = LocalPipeline(window_seconds=10, lateness_seconds=1)
    for i in range(0, len(evs), 37):
        batched.send_predictions(evs[i:i + 37])
    batched.advance(100)
    assert len(single.windows) == 9
    assert_same(summaries(single), summaries(batched))


def test_each_window_is_emitted_once_with_all_its_events():
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=1)
    evs = events()
    pipe.send_predictions(evs)
    pipe.advance(5)
    pipe.advance(100)
    pipe.advance(100)
    keys = [(w.model, w.window_start) for w in pipe.windows]
    assert len(keys) == len(set(keys)) == 9
    assert sum(w.count for w in pipe.windows) == len(evs)


def test_late_events_are_counted_not_dropped_silently():
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0)
    base = {"model": "m", "event_id": "x"}
    pipe.send_predictions([{**base, "timestamp": T0 + 1}, {**base, "timestamp": T0 + 12}])
    assert [w.count for w in pipe.windows] == [1]
    pipe.send_predictions([{**base, "timestamp": T0 + 2}, {**base, "timestamp": T0 + 3}])
    assert pipe.late_events == 2
    pipe.advance(100)
    assert [(w.count, w.late_events) for w in pipe.windows] == [(1, 0), (1, 2)]
    metric = pipe.engine.registry.get_sample_value
    assert metric("mlpulse_late_events_total", {"kind": "predictions"}) == 2
    assert metric("mlpulse_windows_closed_total", {"kind": "predictions"}) == 2


def test_versions_get_separate_windows():
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0)
    pipe.send_predictions([
        {"event_id": "1", "timestamp": T0, "model": "m", "model_version": "v1"},
        {"event_id": "2", "timestamp": T0, "model": "m", "model_version": "v2"},
        {"event_id": "3", "timestamp": T0, "model": "m"},
    ])
    pipe.advance(100)
    assert sorted(w.model_version for w in pipe.windows) == ["unknown", "v1", "v2"]


def test_log_windows_per_service():
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0)
    pipe.send_logs([
        {"timestamp": T0 + i, "level": level, "service": svc, "message": "m"}
        for i, (level, svc) in enumerate(
            [("info", "a"), ("error", "a"), ("WARNING", "a"), ("critical", "a"), ("info", "b")])
    ])
    pipe.advance(100)
    by_service = {w.service: w for w in pipe.windows}
    a = by_service["a"]
    assert (a.count, a.error_count, a.error_rate) == (4, 2, 0.5)
    assert a.counts == {"TRACE": 0, "DEBUG": 0, "INFO": 1, "WARN": 1, "ERROR": 1, "FATAL": 1}
    assert by_service["b"].count == 1


def test_bad_messages_become_dead_letters_and_valid_ones_still_count():
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0)
    good = {"event_id": "1", "timestamp": T0, "model": "m"}
    pipe.send("predictions", b"garbage")
    pipe.send("predictions", msgspec.json.encode([good, {"event_id": 5}, good]))
    pipe.send("logs", b'{"level": "INFO"}')
    pipe.send("feedback", b'{"event_id": "1", "timestamp": 1, "label": 1}')
    pipe.advance(100)
    assert [(d.index, d.source_topic) for d in pipe.dead_letters] == [
        (None, "mlpulse.predictions"), (1, "mlpulse.predictions"), (None, "mlpulse.logs"),
        (None, "mlpulse.feedback")]
    assert [w.count for w in pipe.windows] == [2]


def test_cardinality_guard_folds_a_flood_of_model_names_and_features():
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, max_models=3,
                         max_versions=2, max_features=2)
    flood = [{"event_id": str(i), "timestamp": T0, "model": f"m{i}", "model_version": "v1",
              "features": {"a": 1.0, f"x{i}": 3.0}} for i in range(500)]
    pipe.send_predictions(flood, envelope=False)
    pipe.send_predictions([{"event_id": "v", "timestamp": T0, "model": "m0",
                            "model_version": f"v{i}"} for i in range(5)])
    pipe.advance(100)
    windows = {(w.model, w.model_version): w for w in pipe.windows}
    assert set(windows) == {("m0", "v1"), ("m1", "v1"), ("m2", "v1"), ("__other__", "v1"),
                            ("m0", "v0"), ("m0", "__other__")}
    assert sum(w.count for w in pipe.windows) == 505         # nothing lost, only folded
    other = [w for w in pipe.windows if w.model == "__other__"]   # one per partition
    assert sum(w.count for w in other) == 497
    # each window keeps "a" and its first x; every later x is folded
    assert all(len(w.features) == 3 and "__other__" in w.features for w in other)
    folded = pipe.summarizer.guard.folded
    assert (folded["model"], folded["version"], folded["feature"]) == (497, 3, 497 - len(other))
    assert pipe.engine.registry.get_sample_value("mlpulse_series_folded_total",
                                                 {"kind": "model"}) == 497
    presence = pipe.detect._presence   # the state a flood must not grow
    assert sum(len(models) for models in presence.values()) <= 3 + 4   # models + __other__s


def test_a_pipeline_restored_from_partition_states_summarizes_like_one_that_never_stopped():
    """Checkpoint groundwork: every partition's window state taken mid-stream and restored
    into a fresh pipeline gives the same window summaries (counts, latency quantiles,
    feature statistics, late events) as the uninterrupted pipeline."""
    import random

    from mlpulse.events import PredictionWindow

    rng = random.Random(5)
    events = [{"event_id": str(i), "timestamp": 1000.0 + i * 0.05 + rng.uniform(-3, 0),
               "model": f"m{i % 5}", "model_version": f"v{i % 2}",
               "latency_ms": rng.lognormvariate(3, 0.5),
               "features": {"x": rng.gauss(0, 1), "c": rng.choice("abc")}}
              for i in range(3000)]
    logs = [{"timestamp": 1000.0 + i * 0.1, "level": rng.choice(["INFO", "ERROR"]),
             "service": f"s{i % 3}", "message": "m"} for i in range(600)]

    def feed(pipe: LocalPipeline, part: slice) -> None:
        chunk = events[part]
        for i in range(0, len(chunk), 100):
            pipe.send_predictions(chunk[i:i + 100])
        log_chunk = logs[part.start // 5 if part.start else 0:
                         part.stop // 5 if part.stop else None]
        if log_chunk:
            pipe.send_logs(log_chunk)

    def summaries(pipe: LocalPipeline) -> list:
        pipe.advance(10_000)
        return sorted((w.model if isinstance(w, PredictionWindow) else w.service,
                       w.window_start, msgspec.json.encode(w)) for w in pipe.windows)

    straight = LocalPipeline(window_seconds=10, lateness_seconds=2)
    feed(straight, slice(0, 1700))
    first = LocalPipeline(window_seconds=10, lateness_seconds=2)
    feed(first, slice(0, 1700))
    states = {p: first.summarizer.partition_state(p) for p in range(first.partitions)}
    restored = LocalPipeline(window_seconds=10, lateness_seconds=2, clock=first.clock)
    for partition, data in states.items():
        restored.summarizer.restore_partition(partition, data)
    restored.windows.extend(first.windows)   # what was emitted before the checkpoint
    for pipe in (straight, restored):
        feed(pipe, slice(1700, None))
    assert summaries(restored) == summaries(straight)
    assert sum(w.count for w in straight.windows if isinstance(w, PredictionWindow)) + \
        straight.late_events == 3000


def unkeyed_singles(pipe: LocalPipeline, evs: list[dict]) -> list[list[tuple]]:
    """The events one message each, no key, spread round robin over 4 input partitions:
    per partition, the messages in order."""
    out: list[list[tuple]] = [[], [], [], []]
    for i, event in enumerate(evs):
        out[i % 4].append(("predictions", msgspec.json.encode(event), None, i % 4, []))
    return out


def truth(evs: list[dict], window_s: float = 10.0) -> dict[tuple[str, float], int]:
    counts: dict[tuple[str, float], int] = {}
    for e in evs:
        key = (e["model"], (e["timestamp"] // window_s) * window_s)
        counts[key] = counts.get(key, 0) + 1
    return counts


def counted(pipe: LocalPipeline) -> dict[tuple[str, float], int]:
    from datetime import datetime

    out: dict[tuple[str, float], int] = {}
    for w in pipe.windows:
        start = datetime.fromisoformat(w.window_start.replace("Z", "+00:00")).timestamp()
        assert (w.model, start) not in out, "a window emitted twice"
        out[(w.model, start)] = w.count
    return out


def test_unkeyed_single_events_read_at_different_paces_are_exact():
    """One input partition read far ahead of the others (a backlog read unevenly): windows
    wait for the slowest, so no event is late that was not late in the data."""
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, input_partitions=4)
    evs = events(n_windows=6)
    parts = unkeyed_singles(pipe, evs)
    pipe.fetch(parts[0])                       # all of partition 0 first
    for chunk in range(0, len(parts[1]), 50):  # then the others, interleaved
        pipe.fetch([m for p in parts[1:] for m in p[chunk:chunk + 50]])
    pipe.advance(100)
    assert pipe.late_events == 0
    assert counted(pipe) == truth(evs)


def test_a_partition_far_ahead_of_the_slowest_is_paused_until_the_others_catch_up():
    pipe = LocalPipeline(window_seconds=10, lateness_seconds=0, input_partitions=2,
                         max_drift_seconds=20)
    topic = pipe.engine.predictions.topic

    def at(partition: int, t: float) -> tuple:
        event = {"event_id": f"{partition}-{t}", "timestamp": T0 + t, "model": "m"}
        return ("predictions", msgspec.json.encode(event), None, partition, [])

    pipe.fetch([at(0, 1)])
    assert pipe.paused[topic] == {0}          # partition 1 not read yet: 0 waits for it
    pipe.fetch([at(1, 2)])
    assert pipe.paused[topic] == set()
    pipe.fetch([at(0, 50)])                   # 48 s ahead of partition 1
    assert pipe.paused[topic] == {0}

    def gauge() -> float | None:
        return pipe.engine.registry.get_sample_value(
            "mlpulse_input_partitions_paused", {"topic": topic})

    assert gauge() == 1
    pipe.fetch([at(1, 45)])
    assert pipe.paused[topic] == set() and gauge() == 0
    assert pipe.engine.registry.get_sample_value(
        "mlpulse_input_partition_pauses_total", {"topic": topic}) == 2


def test_a_partition_is_checkpointed_only_once_its_restore_is_done():
    """While a new partition's checkpoint is being read, a checkpoint round (the ingest
    consumer still reads the partitions it kept) must not write the partition's still
    empty state over that checkpoint: the events since its last owner's committed offsets
    would be lost (a crash test lost 300 events of two windows so)."""
    from mlpulse.config import Settings
    from mlpulse.engine import Engine

    engine = Engine(Settings(partitions=4))
    engine.assign({"predictions": {2, 3}, "logs": {2, 3}, "feedback": {2, 3}})
    assert engine.to_restore() == [2, 3]
    assert engine.checkpoint({}) is None        # the reads are under way: nothing held
    engine.assign({"predictions": {2}, "logs": {2}, "feedback": {2}})   # 3 went meanwhile
    assert engine.restore(2, None, 0) == {} and engine.restore(3, None, 0) == {}
    assert engine.ownership.held == {2}
    assert engine.checkpoint({}) is not None    # now it is held


def test_a_new_owner_restored_from_the_checkpoint_counts_each_event_once():
    """Events up to a checkpoint, a crash, the input read again from the checkpoint's
    offsets by a new worker: the summaries equal those of a worker that never stopped."""
    from mlpulse.checkpoint import Checkpoint
    from mlpulse.testing import FakeClock

    evs = events(n_windows=6)
    straight = LocalPipeline(window_seconds=10, lateness_seconds=0, input_partitions=4)
    for part in unkeyed_singles(straight, evs):
        straight.fetch(part)
    straight.advance(100)

    clock = FakeClock()
    first = LocalPipeline(window_seconds=10, lateness_seconds=0, input_partitions=4,
                          clock=clock)
    parts = unkeyed_singles(first, evs)
    half = [p[:len(p) // 2] for p in parts]
    for part in half:
        first.fetch(part)
    points: dict[int, Checkpoint] = first.checkpoint()
    for part in parts:   # read on after the checkpoint, then killed: this output is lost
        first.fetch(part[len(part) // 2:len(part) * 3 // 4])
    emitted = list(first.windows)

    second = LocalPipeline(window_seconds=10, lateness_seconds=0, input_partitions=4,
                           clock=clock)
    for partition, point in points.items():
        second.engine.restore(partition, point, 1)
    offsets = {}
    for point in points.values():
        for name, offset in point.inputs.items():
            offsets[int(name.rpartition(":")[2])] = offset
    for index, part in enumerate(parts):
        second.seek("predictions", index, offsets.get(index, 0))
        second.fetch(part[offsets.get(index, 0):])
    second.advance(100)
    summaries_after = {(w.model, w.window_start): w for w in second.windows}
    before = {(w.model, w.window_start): w for w in emitted}
    for key, window in before.items():   # emitted again after the restore: identical
        assert summaries_after.get(key, window) == window
    assert {**before, **summaries_after} == {(w.model, w.window_start): w
                                             for w in straight.windows}
