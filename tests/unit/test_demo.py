"""The demo's story: one line per round of windows, references, alerts apart, labels."""

from __future__ import annotations

from mlpulse.demo import Story


def window(model: str, second: int, revision: int = 0, accuracy: float | None = None) -> dict:
    record = {"kind": "predictions", "model": model, "model_version": "v1",
              "window_start": f"2026-01-01T00:00:{second:02d}Z", "count": 100,
              "error_count": 2, "latency_ms": {"p99": 40.0 + second}, "late_events": 0,
              "revision": revision}
    if accuracy is not None:
        record["performance"] = {"accuracy": accuracy, "labelled": 50}
    return record


def test_a_round_prints_once_when_every_model_is_in_or_a_later_round_starts():
    story = Story(models=3, reference_windows=3, reference_min_events=300, color=False)
    assert story.window(window("a", 0)) == []
    assert story.window(window("b", 0)) == []
    lines = story.window(window("a", 5))          # c never came: the round prints anyway
    assert lines[0].startswith("window 00:00:00  2 models  200 events  4 errors")
    assert story.window(window("b", 0)) == []     # a straggler of a printed round
    story.window(window("b", 5))
    assert story.window(window("c", 5))[0].startswith("window 00:00:05  3 models")


def test_references_are_told_as_they_build():
    story = Story(models=1, reference_windows=3, reference_min_events=250, color=False)
    told = [story.window(window("a", s))[1:] for s in (0, 5, 10, 15)]
    assert told[0] == ["  references: 1 of 3 windows"]
    assert told[1] == ["  references: 2 of 3 windows"]
    assert "references ready (a/v1)" in told[2][0]
    assert told[3] == []


def test_alerts_stand_apart_and_accuracy_is_told_once_per_window():
    story = Story(models=2, reference_windows=1, reference_min_events=0, color=False)
    alert = {"status": "firing", "rule": "feature_drift", "severity": "critical",
             "labels": {"model": "a", "model_version": "v1"},
             "annotations": {"summary": "feature x drifted"}}
    assert story.alert(alert) == ["", ">>> ALERT FIRING feature_drift (critical) a/v1: "
                                      "feature x drifted"]
    lines: list[str] = []
    for second in (0, 5, 10, 15):
        for model in ("a", "b"):
            if second >= 5:   # labels of the window before
                lines += story.window(window(model, second - 5, revision=1, accuracy=0.9))
            lines += story.window(window(model, second))
    told = [line for line in lines if "accuracy" in line]
    assert told == ["  accuracy of window 00:00:00: a 0.90 (50 labelled), b 0.90 (50 labelled)",
                    "  accuracy of window 00:00:05: a 0.90 (50 labelled), b 0.90 (50 labelled)"]


def test_dead_letters_are_counted_into_the_next_round():
    story = Story(models=1, reference_windows=1, reference_min_events=0, color=False)
    story.dead_letter({"error": "invalid prediction event: missing field"})
    story.dead_letter({"error": "invalid prediction event: bad type"})
    assert "dead letters: 2 invalid prediction event" in story.window(window("a", 0))[0]
