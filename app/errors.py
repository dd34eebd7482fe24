"""Exceptions raised by mlpulse.

Hierarchy::

    MlpulseError
    ├── ConfigError          bad setting or configuration file
    ├── BrokerError          the embedded broker could not start
    └── InvalidEvent         one input event failed decoding or validation
"""

from __future__ import annotations


class MlpulseError(Exception):
    """Base class of every error mlpulse raises on purpose."""


class ConfigError(MlpulseError):
    """A setting has a bad value; the message names the setting."""


class BrokerError(MlpulseError):
    """The embedded Kafka-protocol broker could not be started or reached."""


class InvalidEvent(MlpulseError):
    """An input event is malformed or invalid; ``reason`` names the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
