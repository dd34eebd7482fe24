"""RFC 3339 formatting of epoch seconds (UTC, ``Z`` suffix).

>>> rfc3339(1704067200), rfc3339(1704067200.25)
('2024-01-01T00:00:00Z', '2024-01-01T00:00:00.250000Z')
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["rfc3339"]


def rfc3339(epoch_s: float) -> str:
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")
