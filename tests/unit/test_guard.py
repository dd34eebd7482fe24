"""Cardinality guard: bounded names whatever producers send; idle names make room."""

from __future__ import annotations

from mlpulse.guard import OTHER, CardinalityGuard


def test_a_flood_of_unique_names_is_bounded_and_counted():
    guard = CardinalityGuard(max_models=10, max_versions=3, idle_s=60)
    names = [guard.model(f"m{i}", now_s=0, events=2) for i in range(10_000)]
    assert names[:10] == [f"m{i}" for i in range(10)] and set(names[10:]) == {OTHER}
    assert guard.folded["model"] == 2 * 9_990
    assert len(guard._models.last_seen) == 10


def test_versions_of_models_that_lost_their_slot_are_forgotten():
    """Each new model brings versions: the version table stays bounded too."""
    guard = CardinalityGuard(max_models=5, max_versions=2, idle_s=1)
    for i in range(1_000):
        model = guard.model(f"m{i}", now_s=float(i) * 2)   # the previous ones went idle
        assert model == f"m{i}"
        assert guard.version(model, "v1", now_s=float(i) * 2) == "v1"
    assert len(guard._versions) <= 2 * 5 + 16 + 1


def test_a_busy_name_keeps_its_slot_and_looking_a_name_up_does_not_count_as_seen():
    guard = CardinalityGuard(max_models=1, idle_s=60)
    assert guard.model("a", now_s=0) == "a"
    assert guard.model("b", now_s=30) == OTHER   # "a" was seen 30 s ago: not idle
    assert guard.known_model("a") == "a" and guard.known_model("b") == OTHER
    assert guard.model("a", now_s=50) == "a"     # seen again: its idle time restarts
    assert guard.model("b", now_s=100) == OTHER
    assert guard.model("b", now_s=111) == "b"    # 61 s after "a" was last seen
    assert guard.known_model("a") == OTHER
