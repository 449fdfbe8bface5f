"""Client-side budget for HubSpot calls: search's per-second limit, the app's 10-second burst, the daily cap.

Built on pyrate-limiter's ``InMemoryBucket`` fed with our own timestamps, so a test can drive it with a fake
clock and nothing sleeps for real. The daily window is a rolling 24 h (HubSpot resets at midnight in the portal's
time zone; rolling is the conservative reading).
"""

from __future__ import annotations

import logging
import threading

from pyrate_limiter import Duration, InMemoryBucket, Rate, RateItem

from crmsync import ApiBudgetExhausted
from crmsync.support import Clock

log = logging.getLogger(__name__)


class CallBudget:
    """``acquire(search=True)`` blocks (via ``clock.sleep``) until a call may go out, or raises
    ``ApiBudgetExhausted`` when our daily share is spent."""

    def __init__(self, *, search_per_second: int, burst_per_10s: int, daily_limit: int, clock: Clock) -> None:
        self.clock = clock
        self._search = InMemoryBucket([Rate(search_per_second, Duration.SECOND)])
        self._burst = InMemoryBucket([Rate(burst_per_10s, Duration.SECOND * 10)])
        self._daily = InMemoryBucket([Rate(daily_limit, Duration.DAY)])
        self.daily_limit = daily_limit
        self._lock = threading.Lock()
        self.waited_s = 0.0
        self._blocked_until = float("-inf")

    def _ms(self) -> int:
        return int(self.clock.monotonic() * 1000)

    def _wait_for(self, bucket: InMemoryBucket, name: str) -> None:
        while True:
            item = RateItem(name, self._ms())
            if bucket.put(item):
                return
            wait_ms = bucket.waiting(item)
            assert isinstance(wait_ms, int)  # an in-memory bucket answers at once, never with an awaitable
            wait_s = max(wait_ms, 1) / 1000
            log.debug("hubspot limiter: %s window full, waiting %.3fs", name, wait_s)
            self.waited_s += wait_s
            self.clock.sleep(wait_s)

    def acquire(self, *, search: bool) -> None:
        with self._lock:
            if self.clock.monotonic() < self._blocked_until:
                raise ApiBudgetExhausted("HubSpot: the account's daily API limit was reached; crmsync pauses calls until it resets.")
            if search:
                self._wait_for(self._search, "search")
            self._wait_for(self._burst, "burst")
            now = self._ms()
            if not self._daily.put(RateItem("daily", now)):
                raise ApiBudgetExhausted(
                    f"HubSpot: our daily share of API calls ({self.daily_limit}, [crm.options] daily_limit) is used up; "
                    "crmsync resumes when calls from 24 h ago age out."
                )
            for bucket in (self._search, self._burst, self._daily):
                bucket.leak(now)

    def block(self, seconds: float) -> None:
        """HubSpot said DAILY: refuse every call for a while (``acquire`` raises ``ApiBudgetExhausted``)."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self.clock.monotonic() + seconds)
