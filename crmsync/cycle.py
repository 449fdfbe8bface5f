"""One cycle: flush earlier scores → fetch → score (bounded, concurrent) → write in batches → record."""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .config import Config
from .connector import Connector, ScoreUpdate, output_values
from .errors import ApiBudgetExhausted, ConnectorError, FatalConnectorError
from .models import CrmLead, Lead, ScoreResult, ScoreStatus
from .scoring import Scorer
from .state import Ledger, LeadState, cursor_with_lag, fingerprint

log = logging.getLogger("crmsync.cycle")
WRITE_CHUNK = 100  # results written as they accumulate, so a long cycle lands scores early


@dataclass
class CycleReport:
    fetched: int = 0
    skipped: int = 0  # unchanged since their last score
    human: int = 0  # a reviewer decided: left alone
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
    errors: list[str] = field(default_factory=list)
    stopped: bool = False
    budget_reached: bool = False  # [scoring] max_cost_per_day_usd: the rest waits for tomorrow
    dry_run: bool = False
    results: list[tuple[Lead, ScoreResult]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.errors or self.failed or self.write_errors or self.parked)

    def line(self) -> str:
        return (
            f"fetched {self.fetched}, skipped {self.skipped}, scored {self.scored} (escalated {self.escalated}, "
            f"fell back {self.fell_back}), flagged {self.flagged}, unscorable {self.unscorable}, failed {self.failed}, "
            f"written {self.written}, write errors {self.write_errors}, parked {self.parked}, cost ${self.cost_usd:.6f}"
            + (" [dry run: nothing written]" if self.dry_run else "")
            + (" [stopped early]" if self.stopped else "")
            + (" [daily LLM budget reached: the rest waits]" if self.budget_reached else "")
        )


def result_values(result: ScoreResult) -> dict[str, Any]:
    """The outputs to write for a result, by output name (score, tier, ...)."""
    review = ", ".join(r.value.replace("_", " ") for r in result.review_reasons)
    if result.status == ScoreStatus.scored:
        text = "; ".join(result.reasons)
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
    }


class Cycle:
    def __init__(self, config: Config, connector: Connector, ledger: Ledger, scorer: Scorer) -> None:
        self.config = config
        self.connector = connector
        self.ledger = ledger
        self.scorer = scorer

    def run(self, *, dry_run: bool = False, stop: Callable[[], bool] = lambda: False) -> CycleReport:
        report = CycleReport(dry_run=dry_run)
        start = datetime.now(timezone.utc)
        budget = self.config.scoring.max_cost_per_day_usd
        spent_before = self.ledger.cost_today() if budget is not None else 0.0

        def over_budget() -> bool:
            return budget is not None and spent_before + report.cost_usd >= budget

        def halt() -> bool:  # no new lead starts; those in flight finish
            return stop() or over_budget()

        try:
            if not dry_run:
                self._flush(report)
            todo = self._select(self._fetch(report), report)
            pending: list[str] = []
            for lead, result in self.scorer.score_many(todo, self.config.scoring.concurrency, halt):
                self._count(report, lead, result)
                if dry_run:
                    continue
                self.ledger.record_result(lead.id, fingerprint(lead.inputs), result)
                if result.status != ScoreStatus.failed:
                    pending.append(lead.id)
                if len(pending) >= WRITE_CHUNK:
                    self._write(pending, report)
                    pending = []
            if pending:
                self._write(pending, report)
            report.stopped = stop()
            report.budget_reached = len(report.results) < len(todo) and over_budget()
            if report.budget_reached:
                log.warning("daily LLM budget of $%.2f reached ($%.4f spent today): %d lead(s) wait for tomorrow",
                            budget, spent_before + report.cost_usd, len(todo) - len(report.results))
            if not dry_run and not report.errors and not report.stopped and not report.budget_reached:
                self.ledger.set_cursor(cursor_with_lag(start))
        except ApiBudgetExhausted as exc:
            report.errors.append(f"CRM API budget: {exc}")
            log.warning("stopping this cycle: %s", exc)
        except FatalConnectorError as exc:
            report.errors.append(f"CRM refused: {exc}")
            log.error("CRM refused the request, this cycle stops: %s", exc)
        except ConnectorError as exc:
            report.errors.append(f"CRM unavailable: {exc}")
            log.warning("CRM unavailable, will retry next cycle: %s", exc)
        log.info("cycle: %s", report.line())
        broken = getattr(self.scorer.rubrics, "last_error", None)
        if broken:  # every cycle, until fixed: a rejected edit must not go unnoticed
            log.error("the rubric file has a rejected edit; still scoring with version %s. %s", self.scorer.rubric.version, broken)
        return report

    # -- steps ---------------------------------------------------------------------------------------
    def _fetch(self, report: CycleReport) -> list[CrmLead]:
        seen: dict[str, CrmLead] = {}
        for lead in self.connector.fetch(self.ledger.cursor(), self.config.daemon.fetch_limit):
            seen.setdefault(lead.id, lead)  # eventually consistent searches can repeat a lead
        wanted = [r.lead_id for r in self.ledger.in_state(LeadState.rescore) if r.lead_id not in seen]
        if wanted:
            for lead in self.connector.fetch_ids(wanted):
                seen.setdefault(lead.id, lead)
        report.fetched = len(seen)
        return list(seen.values())

    def _select(self, leads: list[CrmLead], report: CycleReport) -> list[Lead]:
        """Which fetched leads to score. Never rescored for crmsync's own write; never over a human."""
        todo: list[Lead] = []
        for lead in leads:
            fp = fingerprint(lead.inputs)
            row = self.ledger.get(lead.id)
            if lead.review_decision or (row and row.state == LeadState.human):
                if not row or row.state != LeadState.human:
                    self.ledger.mark_human(lead.id, fp)
                report.human += 1
                continue
            if row and row.state in (LeadState.written, LeadState.pending_write, LeadState.parked) and row.fingerprint == fp:
                report.skipped += 1
                continue
            todo.append(Lead(id=lead.id, inputs=lead.inputs))
        return todo

    def _count(self, report: CycleReport, lead: Lead, result: ScoreResult) -> None:
        report.results.append((lead, result))
        report.cost_usd += result.cost_usd
        report.escalated += result.escalated
        report.fell_back += result.fell_back
        if result.status == ScoreStatus.scored:
            report.scored += 1
            report.tiers[result.tier or "-"] += 1
        elif result.status == ScoreStatus.unscorable:
            report.unscorable += 1
        else:
            report.failed += 1
        report.flagged += result.needs_review

    def _flush(self, report: CycleReport) -> None:
        """Write what an earlier run scored but did not write (a crash, a CRM outage, a rejected write)."""
        pending = [r.lead_id for r in self.ledger.in_state(LeadState.pending_write)]
        if pending:
            log.info("writing %d result(s) scored earlier but not yet in the CRM", len(pending))
            for i in range(0, len(pending), WRITE_CHUNK):
                self._write(pending[i : i + WRITE_CHUNK], report)

    def _write(self, lead_ids: list[str], report: CycleReport) -> None:
        updates = []
        for lead_id in lead_ids:
            row = self.ledger.get(lead_id)
            if row and row.result and row.state == LeadState.pending_write:
                updates.append(ScoreUpdate(lead_id, output_values(self.config.fields, result_values(row.result))))
        if not updates:
            return
        outcomes = self.connector.write(updates)
        if len(outcomes) != len(updates):
            raise FatalConnectorError(f"connector returned {len(outcomes)} outcomes for {len(updates)} updates")
        ok = [o.lead_id for o in outcomes if o.ok]
        self.ledger.mark_written(ok)
        report.written += len(ok)
        for o in outcomes:
            if o.ok:
                continue
            report.write_errors += 1
            state = self.ledger.mark_write_failed(o.lead_id, o.error or "rejected", self.config.daemon.max_write_attempts)
            if state == LeadState.parked:
                report.parked += 1
                log.error("lead %s parked after %d rejected writes: %s", o.lead_id, self.config.daemon.max_write_attempts, o.error)
            else:
                log.warning("lead %s: the CRM rejected the write (will retry): %s", o.lead_id, o.error)
