"""Time, injected: every part of crmsync that waits or measures takes a ``Clock``, so a test can move time by
hand and nothing sleeps for real. The fake lives in tests/ (tests/fakes.py), never in shipped code."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock and the sleep that goes with it."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``time.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))


#: The one real clock; the default wherever a clock is optional.
SYSTEM_CLOCK: Clock = SystemClock()
