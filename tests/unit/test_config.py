from __future__ import annotations

import pytest

from app.config import Settings
from app.errors import ConfigError


def test_defaults():
    s = Settings.from_env({})
    assert (s.kafka_bootstrap, s.window_seconds, s.lateness_seconds, s.web_port) == (
        None, 60.0, 10.0, 6066)
    assert s.topic("predictions") == "mlpulse.predictions"


def test_env_overrides_yaml(tmp_path):
    path = tmp_path / "mlpulse.yaml"
    path.write_text("window_seconds: 30\nlateness_seconds: 5\ntopic_prefix: acme.\n")
    s = Settings.from_env({"MLPULSE_CONFIG": str(path), "MLPULSE_LATENESS_SECONDS": "2"})
    assert (s.window_seconds, s.lateness_seconds, s.topic_prefix) == (30.0, 2.0, "acme.")


@pytest.mark.parametrize(("env", "message"), [
    ({"MLPULSE_WINDOW_SECONDS": "soon"}, "MLPULSE_WINDOW_SECONDS: expected a number"),
    ({"MLPULSE_WINDOW_SECONDS": "0"}, "MLPULSE_WINDOW_SECONDS: must be > 0"),
    ({"MLPULSE_WEB_PORT": "70000"}, "MLPULSE_WEB_PORT"),
    ({"MLPULSE_CONFIG": "/nonexistent.yaml"}, "cannot read"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("window_seconds: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Settings.from_env({"MLPULSE_CONFIG": str(bad)})
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("windw_seconds: 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'windw_seconds'"):
        Settings.from_env({"MLPULSE_CONFIG": str(unknown)})
