"""Fakes for crmsync's own seams (never for an SDK object). They live here, under tests/, and nowhere in shipped code.

``FakeClock`` is the one fake ``crmsync.support.Clock``: time moves only when a test advances it or when code
sleeps on it, and a sleep returns at once (recorded in ``sleeps``). Hand it to anything that takes a clock:
``Cooldowns(cfg, clock=clock)``, ``ProviderContext(clock=clock)``, ``HubSpotConnector(..., clock=clock)``,
``SalesforceConnector(..., clock=clock)``, ``RetryPolicy(..., clock=clock)``.
"""

from __future__ import annotations


class FakeClock:
    """A monotonic clock a test moves by hand; ``sleep`` advances it instantly and is recorded."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = float(start)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(float(seconds), 0.0)

    def advance(self, seconds: float) -> None:
        """Time passes without anyone sleeping (a cooldown runs out, a rate window refills)."""
        self.now += float(seconds)
