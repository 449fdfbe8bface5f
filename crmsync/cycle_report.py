"""What one cycle did: its counters and the line it logs, the rows `run --once` shows, and the values a result
writes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .models import ScoreResult, ScoreStatus


@dataclass(frozen=True)
class ShownRow:
    """One line of `run --once`'s table: small and flat, so a large cycle keeps few of them."""

    lead_id: str
    inputs: dict[str, str]
    score: int | None
    tier: str | None
    confidence: float | None
    needs_review: bool
    why: str


@dataclass
class CycleReport:
    fetched: int = 0  # leads read from the CRM (all streams)
    changed: int = 0  # of those, from the changed stream
    skipped: int = 0  # unchanged since their last score
    human: int = 0  # a reviewer decided: left alone
    human_at_write: int = 0  # a reviewer decided while the lead was being scored: not written
    adopted: int = 0  # scored by someone else: recorded, left alone
    scored: int = 0
    escalated: int = 0
    fell_back: int = 0
    flagged: int = 0
    unscorable: int = 0
    failed: int = 0  # every provider down: retried next cycle
    written: int = 0
    write_errors: int = 0
    parked: int = 0
    cost_usd: float = 0.0
    tiers: Counter[str] = field(default_factory=Counter)
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (provider, model, outcome) → calls
    tokens: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (provider, model, kind) → tokens
    errors: list[str] = field(default_factory=list)
    stopped: bool = False
    budget_reached: bool = False  # [scoring] max_cost_per_day_usd: the rest waits for tomorrow
    api_budget_reached: bool = False  # the CRM's API share: nothing more is scored until it can be written
    dry_run: bool = False
    rows: list[ShownRow] = field(default_factory=list)
    rows_hidden: int = 0
    outage: str | None = None  # "no provider answered: fast: HTTP 500 ..." when nothing could be scored
    batched: int = 0  # leads sent to a provider's batch API this cycle (their results come in a later cycle)
    batch_saved_usd: float = 0.0  # batch results applied this cycle: their synchronous price minus what they cost

    @property
    def ok(self) -> bool:
        return not (self.errors or self.failed or self.write_errors or self.parked)

    def line(self) -> str:
        extra = ""
        if self.human_at_write:
            extra += f", left to reviewers at write time {self.human_at_write}"
        if self.adopted:
            extra += f", adopted {self.adopted}"
        if self.batched or self.batch_saved_usd:
            extra += f", sent to batch {self.batched}, batch saving ${self.batch_saved_usd:.6f}"
        return (
            f"fetched {self.fetched}, skipped {self.skipped}, scored {self.scored} (escalated {self.escalated}, "
            f"fell back {self.fell_back}), flagged {self.flagged}, unscorable {self.unscorable}, failed {self.failed}, "
            f"written {self.written}, write errors {self.write_errors}, parked {self.parked}{extra}, cost ${self.cost_usd:.6f}"
            + (" [dry run: nothing written]" if self.dry_run else "")
            + (" [stopped early]" if self.stopped else "")
            + (" [daily LLM budget reached: the rest waits]" if self.budget_reached else "")
            + (" [CRM API budget reached: the rest waits]" if self.api_budget_reached else "")
            + (f"; {self.outage}; nothing scored, retried next cycle" if self.outage else "")
        )


def result_values(result: ScoreResult, fp: str | None = None) -> dict[str, Any]:
    """The outputs to write for a result, by output name (score, tier, ...)."""
    review = ", ".join(r.value.replace("_", " ") for r in result.review_reasons)
    if result.status == ScoreStatus.scored:
        text = "; ".join(result.reasons)
    elif result.status == ScoreStatus.failed:
        text = "Not scored yet: no model answered (every provider was down or paused); crmsync retries it automatically."
    else:
        text = "No valid answer from any model; please score by hand."
    if review:
        text = f"Review: {review}. {text}"
    return {
        "score": result.score,
        "tier": result.tier,
        "confidence": round(result.confidence, 3) if result.confidence is not None else None,
        "needs_review": result.needs_review,
        "reasons": text[:1000],
        "scored_at": result.scored_at,
        "rubric_version": result.rubric_version,
        "model": f"{result.provider}:{result.model}" if result.provider else None,
        "input_hash": fp,
        "probability": result.probability,  # issue 15: calibrated P(qualified), None without a promoted calibration
    }
