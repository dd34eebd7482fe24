"""``mlpulse check-config FILE``: validate a YAML config, answering with file, line and field.

The file is loaded exactly as a worker would load it (:meth:`Settings.from_env`
with ``MLPULSE_CONFIG=FILE``); a mistake comes back as one line, ``FILE:LINE:
message``, the line found by walking the YAML node tree along the field path
the message names. Never a traceback.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "mlpulse.yaml"
>>> _ = path.write_text("window_seconds: 30\\nrules:\\n  - name: slow\\n"
...                     "    expr: latency_ms.p99 > 500\\n    for: zero\\n")
>>> print(check_config(path).replace(str(path), "mlpulse.yaml"))
mlpulse.yaml:5: rules: Expected `int`, got `str` - at `$[0].for`
>>> _ = path.write_text("window_seconds: 30\\n")
>>> check_config(path)
''
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .config import Settings
from .errors import ConfigError

__all__ = ["check_config"]

_SECTION = re.compile(r"^([\w.\-\[\]/:]+?)(?:\[(\d+)\])?(?:\.(\w+))?: ")
_PATH = re.compile(r"at `\$([^`]*)`")
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def check_config(path: Path) -> str:
    """The first problem of the config file at ``path`` as ``FILE:LINE: message``, or ''."""
    try:
        text = path.read_text()
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror}"
    try:
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        return f"{path}:{line}: not valid YAML: {exc.problem or exc.context}"
    try:
        Settings.from_env({"MLPULSE_CONFIG": str(path)})
    except ConfigError as exc:
        message = str(exc).replace(f"MLPULSE_CONFIG: {path}: ", "")
        return f"{path}:{_line_of(root, message)}: {message}"
    except Exception as exc:
        return f"{path}: {type(exc).__name__}: {exc}"
    return ""


def _line_of(root: Any, message: str) -> int:
    """The line of the YAML node a config error names (1 when nothing better is known).

    ``message`` is the error without its ``MLPULSE_CONFIG: FILE:`` prefix.
    """
    if root is None:
        return 1
    tokens: list[str | int] = []
    section = _SECTION.match(message)
    if section:
        tokens.extend(section[1].split("."))
        if section[2] is not None:
            tokens.append(int(section[2]))
        if section[3] is not None:
            tokens.append(section[3])
    else:
        unknown = re.search(r"unknown setting '([^']+)'", message)
        if unknown:
            tokens.append(unknown[1])
        else:
            name = re.match(r"^MLPULSE_([A-Z_]+):", message)
            if name:
                tokens.append(name[1].lower())
    at = _PATH.search(message)
    if at:
        tokens.extend(m[1] if m[1] is not None else int(m[2]) for m in _TOKEN.finditer(at[1]))
    node, line = root, root.start_mark.line + 1
    for token in tokens:
        node = _child(node, token)
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _child(node: Any, token: str | int) -> Any:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(token):
                return value
        if token == "models":
            return None
        # settings may sit under `settings:`
        for key, value in node.value:
            if key.value == "settings":
                return _child(value, token)
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(token, int):
        return node.value[token] if token < len(node.value) else None
    return None
