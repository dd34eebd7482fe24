"""README stays true: every setting is in the configuration table, and vice versa."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mlpulse.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_configuration_table_lists_every_setting():
    documented = set(re.findall(r"^\| `(MLPULSE_[A-Z_]+)` \|", README, re.MULTILINE))
    names = {f.metadata.get("env", f"MLPULSE_{f.name.upper()}")
             for f in dataclasses.fields(Settings)}
    names.discard(None)   # YAML-only sections (detectors) have their own README section
    assert documented == names
    assert "## Detection" in README


def test_quick_start_is_two_commands():
    block = README.split("## Quick start", 1)[1].split("```")[1]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]
