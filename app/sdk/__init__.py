"""Producer SDK and traffic simulator."""

from .monitor import last_event_id, monitor_prediction
from .producer import Telemetry

__all__ = ["Telemetry", "last_event_id", "monitor_prediction"]
