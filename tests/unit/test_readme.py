"""README and docs stay true: every setting is in the configuration reference, and vice
versa; the quick start is two commands; the sections the code refers to and the docs it links
exist; the code layout names every module."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mlpulse.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_configuration_reference_lists_every_setting_and_the_readme_only_real_ones():
    reference = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(MLPULSE_[A-Z_]+)` \|", reference, re.MULTILINE))
    names = {f.metadata.get("env", f"MLPULSE_{f.name.upper()}")
             for f in dataclasses.fields(Settings)}
    names.discard(None)   # YAML-only sections (detectors, rules) have their own sections
    assert documented == names
    in_readme = set(re.findall(r"^\| `(MLPULSE_[A-Z_]+)` \|", README, re.MULTILINE))
    assert in_readme and in_readme <= names


def test_sections_the_code_points_to_exist_and_links_resolve():
    # app/config.py refers to the README's Detection and Alerts sections
    headings = set(re.findall(r"^#{2,3} (.+)$", README, re.MULTILINE))
    assert {"Detection", "Alerts", "Configuration"} <= headings
    root = Path(__file__).resolve().parents[2]
    targets = re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)", README)
    assert targets and all((root / t).is_file() for t in targets), targets


def test_quick_start_is_two_commands():
    block = README.split("## Quick start", 1)[1].split("```")[1]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]


def test_every_test_the_docs_cite_exists():
    root = Path(__file__).resolve().parents[2]
    text = README + "".join(p.read_text() for p in sorted((root / "docs").glob("*.md")))
    cited = set(re.findall(r"(tests/[\w/]+\.py)::(\w+)", text))
    assert cited
    missing = [(path, name) for path, name in sorted(cited)
               if not (root / path).exists() or f"def {name}(" not in (root / path).read_text()]
    assert missing == []


def test_the_code_layout_names_every_module():
    app = ROOT / "app"
    modules = {p.stem for p in app.glob("*.py")} - {"__init__", "__main__"}
    layout = (ROOT / "docs" / "development.md").read_text()
    table = layout.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    assert sorted(m for m in modules if f"`{m}`" not in table) == []
