"""Producer SDK and traffic simulator."""

from .producer import Telemetry, last_event_id, monitor_prediction

__all__ = ["Telemetry", "last_event_id", "monitor_prediction"]
