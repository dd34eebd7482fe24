"""Detector settings: mistakes are rejected naming the field."""


from __future__ import annotations

import pytest

from mlpulse.detectors.settings import DetectorSettings
from mlpulse.errors import ConfigError


def test_detector_settings_reject_mistakes_with_the_field():
    with pytest.raises(ConfigError, match=r"\$\.reference\.mode"):
        DetectorSettings.from_mapping({"reference": {"mode": "sometimes"}})
    with pytest.raises(ConfigError, match=r"detectors.models.fraud.*unknown field `psy`"):
        DetectorSettings.from_mapping({"models": {"fraud": {"drift": {"psy": 1}}}})
    with pytest.raises(ConfigError, match="needs `path`"):
        DetectorSettings.from_mapping({"reference": {"mode": "file"}})
