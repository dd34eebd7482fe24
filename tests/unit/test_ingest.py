"""A fetch of input messages decodes like its messages one by one, only faster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpulse.config import Settings
from mlpulse.ingest import Ingest
from mlpulse.streams import streams

PREDICTIONS = streams(Settings())[0]

T = 1_700_000_000.0


@dataclass
class Rec:
    value: bytes
    offset: int
    topic: str = "mlpulse.predictions"
    partition: int = 0
    headers: Any = ()
    key: bytes | None = None


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
    routed = ingest.fetch(PREDICTIONS, records, T)
    return {"accepted": routed.accepted,
            "ids": [e.event_id for es in routed.all_by_key().values() for e in es],
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
    traced = ingest.fetch(PREDICTIONS, [records[41]], T).repartition["m2"][0]
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


def test_events_of_messages_keyed_by_their_model_are_told_apart_from_the_others():
    """Only events whose message key is their model may be applied where they are read
    (their model's events all come from that one input partition); the rest are
    repartitioned."""
    ingest = Ingest(Settings())
    envelope = msgspec.json.encode([msgspec.json.decode(ev(i)) for i in (3, 4, 6)])  # m0, m1
    records = [Rec(ev(0), 0, key=b"m0"), Rec(ev(1), 1), Rec(ev(2), 2, key=b"m0"),
               Rec(envelope, 3, key=b"m0")]
    routed = ingest.fetch(PREDICTIONS, records, T)
    keyed = {k: sorted(e.event_id for e in es) for k, es in routed.by_key.items()}
    repartition = {k: sorted(e.event_id for e in es) for k, es in routed.repartition.items()}
    assert keyed == {"m0": ["0", "3", "6"]}
    assert repartition == {"m1": ["1", "4"], "m2": ["2"]}
    # all keyed right: the fast path keeps every event in by_key
    singles = ingest.fetch(PREDICTIONS, [Rec(ev(i), i, key=f"m{i % 3}".encode())
                                           for i in range(9)], T)
    assert singles.repartition == {} and sum(map(len, singles.by_key.values())) == 9
    # keyed right, but read from a partition ``local`` says is not the key's: repartitioned
    moved = ingest.fetch(PREDICTIONS, [Rec(ev(0), 0, key=b"m0", partition=1),
                                         Rec(ev(3), 1, key=b"m0", partition=2)], T,
                         local=lambda key, partition: partition == 2)
    assert [e.event_id for e in moved.by_key["m0"]] == ["3"]
    assert [e.event_id for e in moved.repartition["m0"]] == ["0"]
    assert moved.origin(moved.all_by_key()["m0"]) == ([2, 1], [1 << 20, 0])
