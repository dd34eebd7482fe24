"""≥ 100k hostile inputs through the codec, the fetch path and the whole pipeline.

Every input either becomes counted events or a dead letter with a reason and the original
bytes (never both, never neither); a fetch of many messages decodes exactly like the same
messages one by one; no exception escapes; the pipeline's state stays bounded by its
limits whatever the input; and every accepted event is counted in exactly one window.
``MLPULSE_FUZZ_INPUTS`` sets the volume (``make fuzz``: 2,000,000).
"""

from __future__ import annotations

import base64
import collections
import json
import os
from dataclasses import dataclass

from mlpulse.config import Settings
from mlpulse.events import PredictionWindow
from mlpulse.ingest import Ingest
from mlpulse.streams import streams
from mlpulse.testing import FakeClock, LocalPipeline
from tests.fuzzing import KINDS, NOW_S, messages

PREDICTIONS = streams(Settings())[0]

INPUTS = int(os.environ.get("MLPULSE_FUZZ_INPUTS", "100000"))
SETTINGS = Settings(max_message_bytes=1_000_000, max_future_skew_seconds=300.0,
                    max_batch_events=1000, max_models=50, max_versions=5, max_features=200,
                    window_seconds=60.0, lateness_seconds=10.0)
TOPIC = "mlpulse.predictions"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    key: bytes | None = None


def _original(letter) -> bytes:
    if letter.payload_encoding == "base64":
        return base64.b64decode(letter.payload)
    return letter.payload.encode()


def test_hostile_inputs_at_volume_are_counted_or_dead_lettered_exactly_once():
    ingest = Ingest(SETTINGS)
    pipe = LocalPipeline(SETTINGS, clock=FakeClock(NOW_S))
    kinds: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    accepted_total = 0
    singles: dict[int, tuple[int, set[int | None]]] = {}
    fetch: list[Record] = []

    def check_fetch() -> None:
        routed = ingest.fetch(PREDICTIONS, fetch, NOW_S)
        assert routed.accepted == sum(singles[r.offset][0] for r in fetch)
        got = collections.defaultdict(set)
        for letter in routed.dead_letters:
            got[letter.offset].add(letter.index)
        assert got == {r.offset: singles[r.offset][1] for r in fetch if singles[r.offset][1]}
        fetch.clear()
        singles.clear()

    for offset, (kind, data) in enumerate(messages(INPUTS, seed=7)):
        kinds[kind] += 1
        routed = ingest.predictions(data, topic=TOPIC, partition=0, offset=offset, now_s=NOW_S)
        letters = routed.dead_letters
        events = sum(len(v) for v in routed.by_key.values())
        assert events == routed.accepted
        for letter in letters:
            assert letter.error and letter.offset == offset and letter.source_topic == TOPIC
        whole = [d for d in letters if d.index is None]
        if whole:   # the message as a whole is rejected: one dead letter, its bytes
            assert len(letters) == 1 and routed.accepted == 0
            assert _original(whole[0]) == data
            outcomes["message rejected"] += 1
        else:       # each element accepted or rejected once, with its own bytes
            indices = [d.index for d in letters]
            assert len(set(indices)) == len(indices)
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                assert routed.accepted + len(letters) == len(parsed)
                for letter in letters:
                    assert json.loads(_original(letter)) == parsed[letter.index]
            elif parsed is not None:
                assert routed.accepted + len(letters) == 1
            outcomes["events accepted"] += routed.accepted
            outcomes["elements rejected"] += len(letters)
        accepted_total += routed.accepted
        singles[offset] = (routed.accepted, {d.index for d in letters})
        fetch.append(Record(TOPIC, 0, offset, data))
        if len(fetch) == 500:
            check_fetch()
        pipe.send("predictions", data)
        if offset % 5000 == 0:
            pipe.advance(0.0)   # the timer runs; the clock stays: both see the same skew
            # bounded state whatever the input: the cardinality guard holds
            guard = pipe.summarizer.guard
            assert len(guard._models.last_seen) <= SETTINGS.max_models
            assert len(guard._versions) <= 2 * SETTINGS.max_models + 17
            assert len(pipe.detect._models) <= 4   # per partition
    if fetch:
        check_fetch()
    assert set(kinds) == set(KINDS)
    assert outcomes["events accepted"] > INPUTS // 5 and outcomes["message rejected"] > 0

    pipe.advance(7 * 24 * 3600.0)   # close every window
    windows = [w for w in pipe.windows if isinstance(w, PredictionWindow)]
    assert sum(w.count for w in windows) + pipe.late_events == accepted_total
    models = {w.model for w in windows}
    assert "__other__" in models and len(models) <= SETTINGS.max_models + 1
    assert all(len(w.features) <= SETTINGS.max_features + 1 for w in windows)
    assert pipe.summarizer.open_windows == 0
