"""Per-provider pacing: a rate limit is load, not an outage.

One ``Pacer`` per provider, three mechanisms:

1. **Our own limiter** for the configured ``requests_per_minute`` and ``tokens_per_minute``, built on
   pyrate-limiter's token bucket (GCRA). Requests leave evenly spaced, with a burst of at most half a second's
   worth: providers enforce a per-minute limit over much shorter periods (OpenAI: "60,000 RPM may be enforced
   as 1,000 requests per second"), so a minute's worth at once would be refused. Tokens are estimated before a request
   (characters / 4 of the prompt, plus ``max_output_tokens``) and the difference to the real usage is
   settled on the next request: a token bucket does not care when a unit is taken, only that it is.
2. **The provider's own signals**: when a response says no request (or not enough tokens) remains, no request
   starts until one unit has refilled (``limit`` per minute), or until the stated reset. A 429's wait
   (``hold``) also stops every lead of this provider, not only the one that got it.
3. **Adaptive concurrency (AIMD)**: requests in flight to this provider are unbounded (that is, bounded by the
   scorer's workers) until a 429; then the window halves, at most once per round trip, and every window's worth
   of answers adds one back, up to the most workers ever seen at once (the ``[scoring] concurrency`` in use).

The clock (``crmsync.support.Clock``) is injected so tests can drive it with a fake one.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from pyrate_limiter import Duration, Rate, RateItem, StateBucket, TokenBucket

from ..support import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class RateSignal:
    """What one response's headers said about the provider's limits (None: not said). Resets in seconds."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset_s: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset_s: float | None = None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset headers, Go-style durations: "6m0s", "1s", "120ms", "1h2m3.5s" → seconds."""
    if not text:
        return None
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def seconds_until(text: str | None, now: datetime | None = None) -> float | None:
    """Anthropic's reset headers, RFC 3339 times ("2026-11-30T06:01:00Z") → seconds from now (never negative)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - (now or datetime.now(UTC))).total_seconds())


def header_int(headers: object, name: str) -> int | None:
    get = getattr(headers, "get", None)
    value = get(name) if get else None
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def header_str(headers: object, name: str) -> str | None:
    get = getattr(headers, "get", None)
    return get(name) if get else None


def estimate_tokens(chars: int, max_output_tokens: int) -> int:
    """A request's tokens before it is sent: characters / 4 of the prompt, plus the most it may answer."""
    return math.ceil(chars / 4) + max_output_tokens


@dataclass
class Ticket:
    """One admitted request: when it started, what it was charged, how long it waited to start."""

    started: float
    tokens: int
    waited_s: float


class _Window:
    """AIMD over requests in flight. ``limit`` None = no 429 seen yet (only the workers bound it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.in_flight = 0
        self.waiting = 0
        self.limit: float | None = None
        self.cap = 1  # the most callers seen at once: the scorer's concurrency
        self._last_cut = -math.inf

    def enter(self) -> None:
        with self._cond:
            self.waiting += 1
            self.cap = max(self.cap, self.in_flight + self.waiting)
            while self.limit is not None and self.in_flight >= int(self.limit):
                self._cond.wait()
            self.waiting -= 1
            self.in_flight += 1

    def leave(self, started: float, now: float, *, answered: bool, limited: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            if limited and started >= self._last_cut:  # one cut per round trip: the 429s of one burst count once
                self.limit = max(1.0, (self.limit if self.limit is not None else self.cap) / 2)
                self._last_cut = now
            elif answered and self.limit is not None:
                self.limit = min(float(self.cap), self.limit + 1.0 / self.limit)
            self._cond.notify_all()


class Pacer:
    """Admits requests to one provider. ``acquire`` blocks until a request may start; ``release`` tells the
    pacer how it went. Thread-safe."""

    def __init__(
        self,
        name: str,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        max_gate_s: float = 60.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.max_gate_s = max_gate_s
        self._clock = clock.monotonic
        self._sleep = clock.sleep
        self._lock = threading.Lock()
        self._bucket_lock = threading.Lock()
        self._gate = -math.inf  # no request starts before this (our clock)
        self._token_debt = 0  # real usage minus estimates, charged to the next request
        self._last_estimate = 0
        # A burst of half a second's worth at most: a late-waking worker can catch up, and the provider's own
        # short-period allowance (about a second's worth) keeps half as a margin for network jitter.
        self._requests = _bucket(requests_per_minute, burst=max(1, requests_per_minute // 120)) if requests_per_minute else None
        self._tokens = _bucket(tokens_per_minute, burst=tokens_per_minute) if tokens_per_minute else None
        self._token_burst = tokens_per_minute or 0
        self.window = _Window()
        self.rate_limited = 0  # 429s seen (for reports and tests)

    # -- admission --------------------------------------------------------------------------------------
    def acquire(self, tokens: int) -> Ticket:
        """Wait for a slot in the window, then for the gate, then for the request and token budgets."""
        self.window.enter()
        try:
            waited = self._wait_gate()
            if self._requests is not None:
                waited += self._take(self._requests, 1)
            with self._lock:
                self._last_estimate = tokens
            if self._tokens is not None:
                with self._lock:
                    charge = max(0, min(tokens + self._token_debt, self._token_burst))
                    self._token_debt = tokens + self._token_debt - charge  # a credit stays for later requests
                if charge:
                    waited += self._take(self._tokens, charge)
            return Ticket(started=self._clock(), tokens=tokens, waited_s=waited)
        except BaseException:
            now = self._clock()
            self.window.leave(now, now, answered=False, limited=False)
            raise

    def release(self, ticket: Ticket, *, answered: bool, limited: bool = False, used_tokens: int | None = None) -> None:
        """``answered``: the model replied (validly or not); ``limited``: a 429; ``used_tokens``: the real usage."""
        if limited:
            with self._lock:
                self.rate_limited += 1
        if used_tokens is not None and self._tokens is not None:
            with self._lock:
                self._token_debt += used_tokens - ticket.tokens
        self.window.leave(ticket.started, self._clock(), answered=answered, limited=limited)

    def hold(self, seconds: float) -> None:
        """The provider asked us to wait (a 429's Retry-After): no request of this provider starts before then."""
        with self._lock:
            self._gate = max(self._gate, self._clock() + min(seconds, self.max_gate_s))

    def gate_remaining(self) -> float:
        with self._lock:
            return max(0.0, self._gate - self._clock())

    def observe(self, signal: RateSignal) -> None:
        """Slow down before the 429: when the provider says a budget is spent, wait until it has refilled enough
        for one more request (``limit`` per minute), or until its stated reset when it gave no limit."""
        waits = [
            _refill_wait(signal.requests_remaining, 1, signal.requests_limit, signal.requests_reset_s),
            _refill_wait(signal.tokens_remaining, max(1, self._last_estimate), signal.tokens_limit, signal.tokens_reset_s),
        ]
        wait = max((w for w in waits if w is not None), default=0.0)
        if wait > 0:
            self.hold(wait)

    # -- internals --------------------------------------------------------------------------------------
    def _wait_gate(self) -> float:
        # One sleep, not a loop on the clock: a later hold() is seen by the next request, and an injected
        # no-op sleep (tests) cannot spin.
        delay = self.gate_remaining()
        if delay > 0:
            self._sleep(delay)
        return delay

    def _take(self, bucket: StateBucket, weight: int) -> float:
        waited = 0.0
        while True:
            item = RateItem(self.name, int(self._clock() * 1000), weight)
            with self._bucket_lock:  # put() and waiting() share the bucket's last verdict: read it as a pair
                if bucket.put(item):
                    return waited
                wait_ms = bucket.waiting(item)
            assert isinstance(wait_ms, int)  # an in-memory bucket answers at once, never with an awaitable
            delay = max(wait_ms, 1) / 1000
            self._sleep(delay)
            waited += delay


def _bucket(per_minute: int, *, burst: int) -> StateBucket:
    return StateBucket([Rate(per_minute, Duration.MINUTE, burst=burst)], algorithm=TokenBucket())


def _refill_wait(remaining: int | None, need: int, limit: int | None, reset_s: float | None) -> float | None:
    """Seconds until ``need`` units are available again, or None when nothing needs waiting for."""
    if remaining is None or remaining >= need:
        return None
    if limit:  # both providers state per-minute limits, refilled continuously
        return (need - max(remaining, 0)) * 60.0 / limit
    return reset_s
