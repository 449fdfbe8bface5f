"""The one retry policy for every outbound call (LLM providers, CRM connectors), built on tenacity.

A failure is one of two kinds, and the caller says which:

- **transient** (5xx, timeouts, dropped connections): retried at most ``attempts - 1`` times, after the
  server's ``Retry-After`` when it sent one (up to ``max_retry_after_s``: above it the policy gives up at
  once, or with ``clamp_retry_after`` waits the cap), else exponential backoff with jitter.
- **load** (a provider's 429): not an outage, so it does not use up attempts; it is retried until the waits
  would pass ``max_load_wait_s`` in all, or one wait is over ``max_retry_after_s``. With ``hold`` the wait is
  handed to a gate shared by every caller (the provider's pacer) instead of being slept here.

Every decision is one DEBUG line with its reason. When the policy gives up, ``give_up`` (if given) turns the
story (``GiveUp``) into the exception the caller raises; otherwise the last failure is raised as it was.
Time is injected (``Clock``), so a test drives retries without sleeping.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception

from .clock import SYSTEM_CLOCK, Clock
from .masking import redact

log = logging.getLogger("crmsync.retry")
T = TypeVar("T")
Reason = Literal["attempts", "retry_after", "waited"]


def parse_retry_after(headers: object) -> float | None:
    """Seconds a server asked us to wait: ``retry-after-ms`` first, then ``Retry-After`` in seconds, any case.
    HTTP dates, garbage and missing headers are treated as absent; negative values as 0."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = get(name)
        if value in (None, "") and isinstance(headers, Mapping):  # a plain dict is case-sensitive
            value = next((v for k, v in headers.items() if str(k).lower() == name), None)
        try:
            seconds = float(value) * scale if value not in (None, "") else math.nan
        except (TypeError, ValueError):
            continue
        if not math.isnan(seconds):
            return max(0.0, seconds)
    return None


def server_wait(exc: BaseException) -> float | None:
    """The wait a failure carries from its server (``exc.retry_after``), if any."""
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, (int, float)) else None


def _never(_exc: BaseException) -> bool:
    return False


@dataclass(frozen=True)
class GiveUp:
    """Why retrying stopped, for the caller's own wording of the final error."""

    error: BaseException  # the last failure
    reason: Reason  # out of attempts | a server wait over max_retry_after_s | load waits over max_load_wait_s
    attempts: int  # failures of the last failure's kind, the last one included
    waited_s: float  # waited for load failures before this one
    wait_s: float  # the wait that was refused (0 when out of attempts)


@dataclass(frozen=True)
class RetryPolicy:
    """How one client retries. ``call(fn)`` runs ``fn`` until it succeeds, fails for good, or the policy
    gives up. Immutable and shared: each call keeps its own counts."""

    attempts: int  # tries of a transient failure, the first included (max_retries + 1)
    transient: Callable[[BaseException], bool]
    load: Callable[[BaseException], bool] = _never
    backoff_s: float = 0.5  # first backoff; doubles per retry, minus up to 25 % jitter (like the vendors' SDKs)
    max_backoff_s: float = 8.0
    max_retry_after_s: float = math.inf  # a longer server wait ends the retries (or, clamped, is cut to it)
    clamp_retry_after: bool = False
    max_load_wait_s: float = math.inf
    retry_after: Callable[[BaseException], float | None] = server_wait
    gate: Callable[[], float] | None = None  # a load wait already known (the pacer's, from rate headers)
    hold: Callable[[float], None] | None = None  # where load waits go instead of sleeping here
    give_up: Callable[[GiveUp], BaseException] | None = None
    clock: Clock = SYSTEM_CLOCK
    name: str = "call"

    def backoff(self, n: int) -> float:
        """Wait before retry ``n`` (1-based) when the server named none: 0.5 s, 1 s, 2 s ... capped, jittered."""
        return min(self.backoff_s * 2.0 ** min(n - 1, 64), self.max_backoff_s) * (1 - 0.25 * random.random())

    def call(self, fn: Callable[[], T], what: str = "") -> T:
        run = _Run(self, f"{self.name} {what}".strip())
        retrying = Retrying(
            retry=retry_if_exception(lambda e: self.load(e) or self.transient(e)),
            wait=run.wait,
            stop=run.stop,
            sleep=run.sleep,
            retry_error_callback=run.fail,
        )
        return retrying(fn)


@dataclass
class _Next:
    attempt: int  # tenacity's attempt number this decision is for
    load: bool
    wait: float
    reason: Reason | None  # None: retry after ``wait``
    n: int
    waited: float


class _Run:
    """One ``call``'s counts. tenacity asks ``wait`` then ``stop`` per failure; both read one decision."""

    def __init__(self, policy: RetryPolicy, who: str) -> None:
        self.p, self.who = policy, who
        self.transient_n = self.load_n = 0
        self.waited = 0.0
        self.next: _Next | None = None

    def decide(self, rs: RetryCallState) -> _Next:
        if self.next is not None and self.next.attempt == rs.attempt_number:
            return self.next
        p, exc = self.p, rs.outcome.exception() if rs.outcome else None
        assert exc is not None  # tenacity only asks after a failure we chose to retry
        asked = p.retry_after(exc)
        if p.load(exc):
            self.load_n += 1
            n, waited = self.load_n, self.waited
            wait = asked if asked is not None else ((p.gate() if p.gate else 0.0) or p.backoff(n))
            reason: Reason | None = (
                "retry_after" if wait > p.max_retry_after_s else ("waited" if waited + wait > p.max_load_wait_s else None)
            )
            if reason is None:
                self.waited += wait
            self.next = _Next(rs.attempt_number, True, wait, reason, n, waited)
        else:
            self.transient_n += 1
            n = self.transient_n
            wait, reason = (asked, None) if asked is not None else (p.backoff(n), None)
            if n >= p.attempts:
                wait, reason = 0.0, "attempts"
            elif wait > p.max_retry_after_s:
                wait, reason = (p.max_retry_after_s, None) if p.clamp_retry_after else (wait, "retry_after")
            self.next = _Next(rs.attempt_number, False, wait, reason, n, self.waited)
        self._log(self.next, exc)
        return self.next

    def _log(self, d: _Next, exc: BaseException) -> None:
        kind = "rate limited" if d.load else f"attempt {d.n}/{self.p.attempts}"
        why = redact(f"{type(exc).__name__}: {exc}")[:300]  # a server may echo what it was sent
        if d.reason is None:
            log.debug("%s: %s failed (%s); retrying in %.2fs", self.who, kind, why, d.wait)
        else:
            log.debug("%s: %s failed (%s); giving up (%s, wait %.2fs, waited %.1fs)", self.who, kind, why, d.reason, d.wait, d.waited)

    def wait(self, rs: RetryCallState) -> float:
        d = self.decide(rs)
        return d.wait if d.reason is None else 0.0

    def stop(self, rs: RetryCallState) -> bool:
        return self.decide(rs).reason is not None

    def sleep(self, seconds: float) -> None:
        if self.next is not None and self.next.load and self.p.hold is not None:
            self.p.hold(seconds)  # every caller of this provider waits, at its gate
        else:
            self.p.clock.sleep(seconds)

    def fail(self, rs: RetryCallState) -> None:
        d = self.decide(rs)
        exc = rs.outcome.exception() if rs.outcome else None
        assert exc is not None and d.reason is not None
        err = self.p.give_up(GiveUp(exc, d.reason, d.n, d.waited, d.wait)) if self.p.give_up else exc
        if err is exc:
            raise exc  # as it was, its own cause kept
        raise err from None  # the caller's wording says it all; the server's text is in it
