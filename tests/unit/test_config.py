from __future__ import annotations

import pytest

from mlpulse.config import Settings
from mlpulse.errors import ConfigError


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
    ({"MLPULSE_GROUP_SESSION_TIMEOUT_SECONDS": "0"},
     "MLPULSE_GROUP_SESSION_TIMEOUT_SECONDS: must be > 0"),
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


@pytest.mark.parametrize(("text", "expected"), [
    ("window_seconds: 30\ndetectors:\n  models:\n    fraud:\n      drift:\n        psi: high\n",
     ":6: detectors.models.fraud: Expected `float`, got `str` - at `$.drift.psi`"),
    ("rules:\n  - name: a\n    expr: error_rate > 1\n  - name: slow\n    expr: p99 >> 5\n",
     ":5: rules[1].expr: expected `<metric> <op> <number>`, got 'p99 >> 5'"),
    ("partitions: 4\nwindow_secs: 30\n", ":2: unknown setting 'window_secs'"),
    ("rules: [\n", ":2: not valid YAML"),
    ("inhibit:\n  - source: [no_data]\n", ":2: inhibit: Object missing required field `target`"),
])
def test_check_config_names_line_and_field(tmp_path, capsys, text, expected):
    from mlpulse.cli import main

    path = tmp_path / "mlpulse.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(str(path)) and expected in err and "Traceback" not in err


def test_check_config_accepts_a_good_file(tmp_path, capsys):
    from mlpulse.cli import main

    path = tmp_path / "mlpulse.yaml"
    path.write_text("window_seconds: 30\nrules:\n  - detector: '*'\n"
                    "  - {name: slow, expr: latency_ms.p99 > 500, for: 2}\n")
    assert main(["check-config", str(path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_group_timeouts_heartbeat_well_within_the_session():
    # Kafka's advice: heartbeats at most a third of the session timeout; the rebalance
    # timeout (members checkpoint before they rejoin) never shorter than 10 s
    assert Settings.from_env({}).group_options() == {
        "session_timeout_ms": 10_000, "heartbeat_interval_ms": 3_000,
        "rebalance_timeout_ms": 10_000}
    assert Settings.from_env({"MLPULSE_GROUP_SESSION_TIMEOUT_SECONDS": "45"}).group_options() == {
        "session_timeout_ms": 45_000, "heartbeat_interval_ms": 3_000,
        "rebalance_timeout_ms": 45_000}
    short = Settings(group_session_timeout_seconds=4).group_options()
    assert short["heartbeat_interval_ms"] == 1333
