"""Producer SDK and traffic simulator."""

from .producer import Telemetry, monitor_prediction

__all__ = ["Telemetry", "monitor_prediction"]
