"""The provider chain: ordered steps with fallback, escalation and per-provider cooldown.

For one lead, steps run in order. A step that fails (unavailable, rejected, invalid after one repair)
hands over to the next (fallback). A step that answers validly ends the chain unless its confidence is
under its ``escalate_below`` (escalation): then the next step scores too. The decision is ``_escalate``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..config import ChainStep, CooldownConfig, PriceConfig, ReviewConfig
from ..errors import InvalidAnswer, ProviderRejected, ProviderUnavailable
from ..models import Hop, HopOutcome, ModelAnswer, ReviewReason, ScoreResult, ScoreStatus, Usage
from ..rubric import Rubric
from ..support import SYSTEM_CLOCK, Clock, redact
from .base import Prompt, Provider, Repair, cost_usd

log = logging.getLogger("crmsync.chain")


@dataclass
class Cooldowns:
    """Per-provider pauses after failures. The clock (``crmsync.support.Clock``) is injected so tests can move time.

    Rate limits (429) do not land here unless they outlast ``max_rate_limit_wait_s``: a rate-limited
    provider makes its leads wait (providers/pacing.py), it is not paused."""

    cfg: CooldownConfig
    clock: Clock = SYSTEM_CLOCK
    _until: dict[str, float] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)
    _told: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remaining(self, name: str) -> float:
        return max(0.0, self._until.get(name, 0.0) - self.clock.monotonic())

    def failed(self, name: str, retry_after: float | None, cause: str = "") -> float:
        """Pause ``name`` (30 s doubling per failure, honouring Retry-After, never beyond ``max_s``); returns the
        pause. Leads that were in flight when the pause began neither double it nor warn again."""
        with self._lock:
            now = self.clock.monotonic()
            left = self._until.get(name, 0.0) - now
            if left > 0:  # already paused: at most honour a longer Retry-After
                self._until[name] = now + max(left, min(self.cfg.max_s, retry_after or 0.0))
                return self._until[name] - now
            n = self._failures.get(name, 0) + 1
            self._failures[name] = n
            # min(n - 1, 32): no float overflow in long outages
            pause = min(self.cfg.max_s, max(retry_after or 0.0, self.cfg.base_s * 2.0 ** min(n - 1, 32)))
            self._until[name] = now + pause
        # once per provider per pause, with the cause: an outage must not hide at DEBUG
        log.warning("provider %s unavailable, paused %.0fs: %s", name, pause, cause or "no answer")
        return pause

    def rejected(self, name: str, message: str) -> None:
        self._until[name] = self.clock.monotonic() + self.cfg.rejected_s
        if name not in self._told:  # loudly, once: the same bad key would otherwise fill the log
            self._told.add(name)
            log.error("provider %s refused the request (configuration error), paused %.0fs: %s", name, self.cfg.rejected_s, message)

    def succeeded(self, name: str) -> None:
        with self._lock:
            recovered = self._failures.pop(name, None)
            self._until.pop(name, None)  # it answered: whatever pause is left is moot
        if recovered:
            log.info("provider %s answers again", name)
        self._told.discard(name)


@dataclass(frozen=True)
class _Valid:
    step: ChainStep
    hop: Hop
    answer: ModelAnswer


class Chain:
    def __init__(
        self,
        steps: Sequence[ChainStep],
        providers: Mapping[str, Provider],
        *,
        review: ReviewConfig,
        cooldowns: Cooldowns,
        prices: Mapping[str, PriceConfig],
        repair_attempts: int = 1,
    ) -> None:
        self.steps = list(steps)
        self.providers = providers
        self.review = review
        self.cooldowns = cooldowns
        self.prices = prices
        self.repair_attempts = repair_attempts
        self._last_failure: dict[str, str | None] = {}  # provider → cause of its latest failed call, None once it answers

    def score(
        self,
        prompt: Prompt,
        rubric: Rubric,
        suspicious: bool,
        *,
        prior: Sequence[tuple[Hop, ModelAnswer | None]] = (),
        repair: Repair | None = None,
    ) -> ScoreResult:
        """``prior``: steps already answered elsewhere (a provider's batch API, crmsync/batching.py) as (hop, valid
        answer or None); the chain goes on after the last of them, or decides at once when that one answered validly
        without escalating. ``repair``: the last prior step answered invalidly and gets its one repair here first."""
        hops: list[Hop] = [h for h, _ in prior]
        valid = [_Valid(self.steps[h.step], h, a) for h, a in prior if a is not None]
        start = prior[-1][0].step + 1 if prior else 0
        if prior and prior[-1][1] is not None and not self._escalate(start - 1, self.steps[start - 1], prior[-1][0]):
            return self._decide(rubric, hops, valid, suspicious)
        if prior and repair is not None:
            start -= 1
        for i, step in enumerate(self.steps[start:], start):
            provider = self.providers[step.provider]
            wait = self.cooldowns.remaining(step.provider)
            if wait > 0:
                hops.append(
                    Hop(
                        step=i,
                        provider=step.provider,
                        model=provider.model,
                        outcome=HopOutcome.cooling_down,
                        detail=f"paused for {wait:.0f}s more",
                    )
                )
                continue
            hop, answer = self._run_step(i, step, provider, prompt, repair if prior and i == start else None)
            hops.append(hop)
            if answer is None:
                continue  # fallback
            valid.append(_Valid(step, hop, answer))
            if not self._escalate(i, step, hop):
                break
        return self._decide(rubric, hops, valid, suspicious)

    def ask(self, provider: Provider, prompt: Prompt, step: int) -> tuple[Hop, ModelAnswer | None]:
        """One question to one provider outside the chain's order (the guard's): the same cooldowns, retries,
        repair, failure bookkeeping and cost as any step."""
        wait = self.cooldowns.remaining(provider.name)
        if wait > 0:
            return Hop(
                step=step,
                provider=provider.name,
                model=provider.model,
                outcome=HopOutcome.cooling_down,
                detail=f"paused for {wait:.0f}s more",
            ), None
        return self._run_step(step, ChainStep(provider=provider.name), provider, prompt)

    def close(self) -> None:
        """Close every provider of the chain (idempotent, like ``Provider.close``)."""
        for provider in self.providers.values():
            provider.close()

    def outage_summary(self) -> str | None:
        """ "no provider answered: fast: HTTP 500: ...; strong: ..." when the latest call to every provider of the
        chain failed (unavailable or refused), else None. For the cycle line and `crmsync score`'s summary."""
        names = list(dict.fromkeys(step.provider for step in self.steps))
        causes = [self._last_failure.get(n) for n in names]
        if not all(causes):
            return None
        return redact("no provider answered: " + "; ".join(c for c in causes if c))  # a provider may echo the key

    def _escalate(self, i: int, step: ChainStep, hop: Hop) -> bool:
        """The one stop-or-escalate rule: go on when this step was unsure and a next step exists."""
        return step.escalate_below is not None and (hop.confidence or 0.0) < step.escalate_below and i + 1 < len(self.steps)

    def _run_step(
        self, i: int, step: ChainStep, provider: Provider, prompt: Prompt, repair: Repair | None = None
    ) -> tuple[Hop, ModelAnswer | None]:
        usage = Usage()
        attempts = 1 if repair else 0  # a repair handed in is the step's repair attempt (its first answer came by batch)
        started = time.monotonic()
        outcome, detail, reply = HopOutcome.invalid, "", None
        while True:
            attempts += 1
            try:
                reply = provider.score(prompt, repair)
            except InvalidAnswer as exc:
                usage = usage + (exc.usage if isinstance(exc.usage, Usage) else Usage())
                detail = str(exc)
                if attempts <= self.repair_attempts:
                    repair = Repair(raw=exc.raw or "", problem=str(exc))
                    continue
                outcome = HopOutcome.invalid
                self._answered(step.provider)  # it answered: the service is up
            except ProviderUnavailable as exc:
                self._last_failure[step.provider] = str(exc)
                pause = self.cooldowns.failed(step.provider, exc.retry_after, str(exc))
                outcome, detail = HopOutcome.unavailable, f"{exc} (paused {pause:.0f}s)"
            except ProviderRejected as exc:
                self._last_failure[step.provider] = str(exc)
                self.cooldowns.rejected(step.provider, str(exc))
                outcome, detail = HopOutcome.rejected, str(exc)
            except Exception as exc:  # a provider bug must not lose the lead: treat as unavailable
                log.exception("provider %s crashed", step.provider)
                cause = f"{step.provider}: {type(exc).__name__}: {exc}"
                self._last_failure[step.provider] = cause
                pause = self.cooldowns.failed(step.provider, None, cause)
                outcome, detail = HopOutcome.unavailable, f"{type(exc).__name__}: {exc} (paused {pause:.0f}s)"
            else:
                usage = usage + reply.usage
                self._answered(step.provider)
                outcome = HopOutcome.ok if attempts == 1 else HopOutcome.repaired
            break
        hop = Hop(
            step=i,
            provider=step.provider,
            model=provider.model,
            outcome=outcome,
            detail=redact(detail)[:500],  # masked before the cut: a cut must not leave part of a key behind
            latency_s=round(time.monotonic() - started, 3),
            usage=usage,
            cost_usd=cost_usd(usage, self.prices.get(provider.model)),
            attempts=attempts,
        )
        if outcome not in (HopOutcome.ok, HopOutcome.repaired) or reply is None:
            return hop, None
        answer = reply.answer
        conf = answer.confidence if reply.logprob_confidence is None else min(answer.confidence, reply.logprob_confidence)
        hop = hop.model_copy(
            update={
                "score": answer.score,
                "confidence": round(conf, 4),
                "stated_confidence": answer.confidence,
                "logprob_confidence": reply.logprob_confidence,
            }
        )
        return hop, answer

    def _answered(self, name: str) -> None:
        self._last_failure[name] = None
        self.cooldowns.succeeded(name)

    def _decide(self, rubric: Rubric, hops: list[Hop], valid: list[_Valid], suspicious: bool) -> ScoreResult:
        now = datetime.now(UTC)
        if not valid:
            answered = any(h.outcome == HopOutcome.invalid for h in hops)
            return ScoreResult(
                status=ScoreStatus.unscorable if answered else ScoreStatus.failed,
                needs_review=answered,
                review_reasons=[ReviewReason.no_valid_answer] if answered else [],
                reasons=[h.detail for h in hops if h.detail][:3],
                rubric_version=rubric.version,
                hops=hops,
                scored_at=now,
            )
        final = valid[-1]
        tier = rubric.tier_for(final.answer.score)
        reasons: list[ReviewReason] = []
        confidence = final.hop.confidence or 0.0
        if confidence < self.review.confidence_below:
            reasons.append(ReviewReason.low_confidence)
        for earlier in valid[:-1]:
            if rubric.tier_for(earlier.answer.score) != tier or abs(earlier.answer.score - final.answer.score) > self.review.max_score_gap:
                reasons.append(ReviewReason.steps_disagree)
                break
        if suspicious or any(v.answer.lead_text_contains_instructions for v in valid):
            reasons.append(ReviewReason.instructions_in_lead)
        return ScoreResult(
            status=ScoreStatus.scored,
            score=final.answer.score,
            tier=tier,
            confidence=confidence,
            reasons=final.answer.reasons,
            missing_or_contradictory=final.answer.missing_or_contradictory,
            needs_review=bool(reasons),
            review_reasons=reasons,
            rubric_version=rubric.version,
            provider=final.step.provider,
            model=final.hop.model,
            hops=hops,
            scored_at=now,
        )
