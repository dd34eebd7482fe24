"""The repartition protocol: each event numbered where it was read, replays dropped."""

from __future__ import annotations

import random

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from mlpulse.config import Settings
from mlpulse.ingest import Ingest
from mlpulse.repartition import SEQ_BITS, HopFilter, in_order
from mlpulse.streams import streams
from tests.unit.test_ingest import Rec, ev

PREDICTIONS = streams(Settings())[0]

T0 = 1_700_000_000.0


@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.randoms())
def test_each_repartitioned_event_is_applied_once_whatever_the_replays(cuts, rnd):
    """A source sends its events in order; after each crash it starts again from an earlier
    point (its last checkpoint), so the partition sees overlapping runs. And the partition
    itself may restore an older state and see the topic again from an older offset."""
    events = list(range(1, 200))
    hops, applied = HopFilter(), []
    sent: list[list[int]] = []
    position = 0
    for cut in cuts:
        restart = max(0, position - rnd.randint(0, 30))
        run = events[restart:min(len(events), restart + cut + 1)]
        sent.append(run)
        position = restart + len(run)
    for run in sent:
        for start in range(0, len(run), 7):   # the runs arrive as messages of <= 7 events
            chunk = run[start:start + 7]
            admitted = hops.admit(0, "in", [3] * len(chunk), chunk)
            applied += [e for e, ok in zip(chunk, admitted, strict=True) if ok]
    assert applied == sorted(set(applied))
    assert set(applied) == {e for run in sent for e in run}


def test_hop_positions_follow_the_partition():
    hops = HopFilter()
    hops.admit(1, "in", [0, 0], [3, 4])
    hops.admit(2, "in", [0], [9])
    moved = HopFilter()
    moved.restore(1, hops.state(1))
    assert moved.admit(1, "in", [0, 0], [4, 5]) == [False, True]
    hops.keep_only([2])
    assert hops.state(1) == {} and hops.state(2) == {"in:0": 9}


def test_every_event_of_a_fetch_has_its_own_increasing_sequence_number():
    ingest = Ingest(Settings(max_future_skew_seconds=1e12))
    envelope = msgspec.json.encode([msgspec.json.decode(ev(i)) for i in range(10, 16)])
    records = [Rec(ev(1), 40), Rec(envelope, 41), Rec(ev(2), 42), Rec(b"{broken", 43),
               Rec(ev(4), 44)]
    routed = ingest.fetch(PREDICTIONS, records, T0)
    seen = []
    for events in routed.all_by_key().values():
        ordered, sources, seqs = in_order(events, *routed.origin(events))
        assert seqs == sorted(seqs) and routed.origin(ordered) == (sources, seqs)
        assert set(sources) == {0} and {s >> SEQ_BITS for s in seqs} <= {40, 41, 42, 44}
        seen += seqs
    assert len(seen) == len(set(seen)) == routed.accepted == 9
    # a replay of the same messages numbers them the same
    again = ingest.fetch(PREDICTIONS, records, T0)
    assert sorted(s for es in again.all_by_key().values() for s in again.origin(es)[1]) \
        == sorted(seen)


def test_random_sources_interleaved_per_partition():
    """Several sources interleave in one partition's topic; each is filtered on its own."""
    rnd = random.Random(5)
    hops = HopFilter()
    streams = {f"in:{i}": list(range(1, 60)) for i in range(3)}
    out: dict[str, list[int]] = {name: [] for name in streams}
    cursors = dict.fromkeys(streams, 0)
    while any(cursors[n] < len(s) for n, s in streams.items()):
        name = rnd.choice([n for n in streams if cursors[n] < len(streams[n])])
        start = max(0, cursors[name] - rnd.randint(0, 5))   # sometimes a replay
        chunk = streams[name][start:start + 4]
        cursors[name] = start + len(chunk)
        topic, _, source = name.partition(":")
        admitted = hops.admit(0, topic, [int(source)] * len(chunk), chunk)
        out[name] += [e for e, ok in zip(chunk, admitted, strict=True) if ok]
    assert out == streams
