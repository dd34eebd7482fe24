"""A fetch of input messages decodes like its messages one by one, only faster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.ingest import Ingest

T = 1_700_000_000.0


@dataclass
class Rec:
    value: bytes
    offset: int
    topic: str = "mlpulse.predictions"
    partition: int = 0
    headers: Any = ()


def ev(i: int, **extra: Any) -> bytes:
    return msgspec.json.encode({"event_id": str(i), "timestamp": T, "model": f"m{i % 3}",
                                **extra})


def one_by_one(ingest: Ingest, records: list[Rec]):
    out = {"accepted": 0, "ids": [], "dead": []}
    for r in records:
        routed = ingest.predictions(r.value, topic=r.topic, partition=r.partition,
                                    offset=r.offset, now_s=T)
        out["accepted"] += routed.accepted
        out["ids"] += [e.event_id for es in routed.by_key.values() for e in es]
        out["dead"] += [(d.offset, d.index, d.error) for d in routed.dead_letters]
    return out


def fetched(ingest: Ingest, records: list[Rec]):
    routed = ingest.fetch("predictions", records, T)
    return {"accepted": routed.accepted,
            "ids": [e.event_id for es in routed.by_key.values() for e in es],
            "dead": [(d.offset, d.index, d.error) for d in routed.dead_letters]}


def same(a, b) -> None:
    assert a["accepted"] == b["accepted"]
    assert sorted(a["ids"]) == sorted(b["ids"])
    assert sorted(a["dead"]) == sorted(b["dead"])


def test_valid_singles_are_decoded_together_and_bad_ones_keep_their_offsets():
    ingest = Ingest(Settings())
    records = [Rec(ev(i), i) for i in range(50)]
    records[7] = Rec(b'{"event_id": "x"}', 7)                       # invalid alone
    records[20] = Rec(ev(20)[:-1] + b"},{" + ev(21)[1:], 20)        # two objects in one
    records[30] = Rec(b'{"event_id": "1", "timestamp": ', 30)       # half of one
    records[31] = Rec(b'"oops"}', 31)
    records[40] = Rec(msgspec.json.encode([{"event_id": "e1", "timestamp": T, "model": "m"}]),
                      40)                                            # an envelope
    parent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    records[41] = Rec(ev(41), 41, headers=[("traceparent", parent)])
    same(fetched(ingest, records), one_by_one(ingest, records))
    assert len(fetched(ingest, records)["dead"]) == 4
    traced = ingest.fetch("predictions", [records[41]], T).by_key["m2"][0]
    assert traced.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


pieces = st.sampled_from([b"{", b"}", b",", b"[", b"]", b'"', b'"event_id":"1"',
                          b'"timestamp":1700000000', b'"model":"m"', b" ", b"\n", b"1"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.builds(ev, st.integers(0, 5)),
                          st.lists(pieces, min_size=1, max_size=12).map(b"".join)),
                min_size=1, max_size=8))
def test_any_fetch_matches_decoding_message_by_message(values):
    ingest = Ingest(Settings())
    records = [Rec(v, i) for i, v in enumerate(values)]
    same(fetched(ingest, records), one_by_one(ingest, records))
