"""Server-side rate limits for the LLM API emulators (stdlib only), enforced the way the real APIs do.

Both vendors state their limits per minute and refill them continuously (Anthropic: "a token bucket ... your
capacity is continuously replenished up to your maximum limit"); both enforce them over shorter periods too
(OpenAI: "60,000 requests/minute may be enforced as 1,000 requests/second"; Anthropic: "short bursts of requests
at a high volume can surpass the rate limit"). So a ``ServerLimit`` is a token bucket refilling at
``per_minute / 60`` units a second that banks at most ``window_s`` seconds' worth (default: one second of
requests, a full minute of tokens). It is deliberately not crmsync's own limiter: the client is tested
against an independent model of the server.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class ServerLimit:
    def __init__(self, per_minute: int, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        self.per_minute = int(per_minute)
        self.rate = per_minute / 60.0  # units per second
        self.capacity = max(1.0, per_minute * window_s / 60.0)
        self._clock = clock
        self._level = self.capacity
        self._t = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._t) * self.rate)
        self._t = now

    def take(self, n: float = 1.0) -> float:
        """Spend ``n`` units now and return 0.0, or spend nothing and return the seconds until ``n`` are there."""
        with self._lock:
            self._refill()
            n = min(n, self.capacity)  # a request larger than the bucket waits for a full one
            if self._level >= n:
                self._level -= n
                return 0.0
            return (n - self._level) / self.rate

    def remaining(self) -> int:
        with self._lock:
            self._refill()
            return int(self._level)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again ("resets to its initial state")."""
        with self._lock:
            self._refill()
            return (self.capacity - self._level) / self.rate


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: Go durations such as "6m0s", "1s", "1.5s", "120ms", "0s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    out = f"{int(h)}h" if h else ""
    out += f"{int(m)}m" if h or m else ""
    return out + (f"{s:.3f}".rstrip("0").rstrip(".") or "0") + "s"


def rfc3339_in(seconds: float) -> str:
    """Anthropic's reset format: the UTC time, whole seconds (rounded up), e.g. "2026-11-30T06:01:00Z"."""
    at = datetime.now(UTC) + timedelta(seconds=max(0.0, seconds))
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")
