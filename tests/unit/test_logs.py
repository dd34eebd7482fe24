"""Worker logs: JSON lines with context, readable text on a terminal."""

from __future__ import annotations

import io
import logging
import logging.config

import msgspec
import pytest

from mlpulse.config import Settings
from mlpulse.errors import ConfigError
from mlpulse.logs import logging_config


def test_json_lines_carry_context_and_exceptions(capsys):
    logging.config.dictConfig(logging_config("info", "json"))
    log = logging.getLogger("mlpulse.test")
    log.info("alert %s", "slow", extra={"model": "fraud", "trace_id": "ab" * 16})
    log.debug("hidden at info level")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"topic": "t", "partition": 1, "offset": 7})
    lines = [msgspec.json.decode(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["message"] for r in lines] == ["alert slow", "failed"]
    assert lines[0]["model"] == "fraud" and lines[0]["trace_id"] == "ab" * 16
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "mlpulse.test"
    assert lines[0]["time"].endswith("Z")
    assert (lines[1]["topic"], lines[1]["partition"], lines[1]["offset"]) == ("t", 1, 7)
    assert "ValueError: boom" in lines[1]["exception"]


def test_text_on_a_terminal_and_settings_are_checked(monkeypatch):
    monkeypatch.setattr("sys.stderr", type("Tty", (io.StringIO,), {"isatty": lambda s: True})())
    config = logging_config("warning", "auto")
    assert config["formatters"]["mlpulse"]["()"].__name__ == "TextFormatter"
    with pytest.raises(ConfigError, match="MLPULSE_LOG_FORMAT"):
        Settings.from_env({"MLPULSE_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="MLPULSE_LOG_LEVEL"):
        Settings.from_env({"MLPULSE_LOG_LEVEL": "loud"})
