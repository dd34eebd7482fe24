"""Producer SDK and traffic simulator."""

from app.sdk.producer import Telemetry, monitor_prediction

__all__ = ["Telemetry", "monitor_prediction"]
