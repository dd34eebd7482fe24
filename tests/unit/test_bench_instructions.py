"""``bench.instructions``: instructions counted by valgrind, and the stream it counts."""

from __future__ import annotations

import msgspec
import pytest

from bench.instructions import instructions, stream


def test_the_count_is_read_from_valgrinds_summary_and_its_absence_is_an_error() -> None:
    summary = "==7== Events    : Ir\n==7== Collected : 20331616270\n==7==\n" \
              "==7== I   refs:      20,331,616,270\n"
    assert instructions(summary) == 20_331_616_270
    with pytest.raises(ValueError, match="no instruction count"):
        instructions("valgrind: command not found\n")


def test_the_stream_is_the_benchmarks_envelopes_keyed_by_model_every_event_sliceable() -> None:
    messages = stream(3_000, ["region", "tier"])
    events = [e for _, value in messages for e in msgspec.json.decode(value)]
    assert len(events) == 3_000 + 10   # and one sentinel per model, to close every window
    assert all({e["model"]} == {key.decode()} for key, value in messages
               for e in msgspec.json.decode(value))
    assert {e["segment"]["region"] for e in events} == {f"region{i}" for i in range(5)}
    assert {e["segment"]["tier"] for e in events} == {f"tier{i}" for i in range(5)}
