"""Give freed heap memory back to the operating system (glibc's ``malloc_trim``).

A worker decodes hundreds of thousands of short-lived events between window closes,
interleaved with the long-lived state of each series; glibc keeps the freed pages of
its heap resident unless asked to return them. :class:`Trimmer` asks at most every
``interval_s`` of wall clock (a trim of a few hundred MB takes a few milliseconds). On a
C library without ``malloc_trim`` (musl, macOS) it does nothing.

>>> trimmer = Trimmer(interval_s=30.0)
>>> trimmer.maybe_trim(now_s=100.0) in (True, False)   # True where glibc is
True
>>> trimmer.maybe_trim(now_s=110.0)   # not due yet
False
>>> Trimmer(interval_s=0).maybe_trim(now_s=100.0)   # 0: off
False
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable

__all__ = ["Trimmer"]


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class Trimmer:
    """Calls ``malloc_trim(0)`` when ``interval_s`` passed since the last call."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last_s = -math.inf
        self.trims = 0
        self._trim = _malloc_trim() if interval_s > 0 else None

    def maybe_trim(self, now_s: float) -> bool:
        """Trim if due; True if it did."""
        if self._trim is None or now_s - self.last_s < self.interval_s:
            return False
        self.last_s = now_s
        self._trim(0)
        self.trims += 1
        return True
