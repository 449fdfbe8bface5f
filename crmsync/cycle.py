"""One cycle: read two fetch streams → decide per lead → score (bounded, concurrent) → record → write beside scoring.

The streams (see ``Connector``):
- *changed*, read first: leads modified since the ``changed`` bookmark. Each change is read once (crmsync's own
  writes included) and decides what happens to a known lead: a reviewer decided → human; a score crmsync never
  made → adopted; inputs changed → rescore. It never scores an unknown unscored lead: that is the next stream's job.
- *rescore*: leads an admin (``crmsync rescore``) or a changed input asked to score again.
- *unscored*: leads with no score and no decision, by id after the ``unscored`` bookmark, ``fetch_limit`` per cycle.
  It empties as crmsync writes, so a backlog drains ``fetch_limit`` per cycle however large it is.

Scoring never waits on I/O: results are recorded in batched transactions (always before any CRM write), and a
writer thread re-reads review decisions and writes full batches while scoring goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

from .batching import BatchStage
from .config import Config
from .connector import Connector
from .cycle_report import CycleReport, ShownRow, result_values
from .cycle_streams import Streams
from .cycle_writer import Writer
from .errors import ApiBudgetExhausted, ConnectorError, FatalConnectorError
from .models import HopOutcome, Lead, ScoreResult, ScoreStatus
from .scoring import Scorer
from .state import LeadState, Ledger, fingerprint

__all__ = ["Cycle", "CycleReport", "ShownRow", "result_values"]

log = logging.getLogger("crmsync.cycle")
T = TypeVar("T")

RECORD_BATCH = 64  # results per ledger transaction ...
RECORD_EVERY_S = 0.25  # ... or at least this often, so a slow model still lands results promptly
SHOWN_ROWS = 20  # `run --once` shows the first rows and the flagged ones, not 10,000 lines


class Cycle:
    def __init__(
        self,
        config: Config,
        connector: Connector,
        ledger: Ledger,
        scorer: Scorer,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.connector = connector
        self.ledger = ledger
        self.scorer = scorer
        self.now = now
        self.crm_lock = threading.Lock()  # one connector call at a time: fetch pages (here) and writes (writer)

    def run(self, *, dry_run: bool = False, stop: Callable[[], bool] = lambda: False, rows: int | None = SHOWN_ROWS) -> CycleReport:
        """One cycle. ``stop()`` true: no new lead starts, those in flight finish and are recorded and written.
        ``rows``: how many result rows to keep for display (the first ones, plus as many flagged); None = all."""
        report = CycleReport(dry_run=dry_run)
        if not dry_run:  # before any LLM call: a ledger that cannot record a score must cost nothing (LedgerError)
            self.ledger.probe_writable()
        budget = self.config.scoring.max_cost_per_day_usd
        spent_before = self.ledger.cost_today() if budget is not None else 0.0
        writer = None if dry_run else Writer(self, report)
        streams = Streams(self, report, dry_run)

        def over_budget() -> bool:
            return budget is not None and spent_before + report.cost_usd >= budget

        def halt() -> bool:  # checked before each lead starts: no LLM money for a lead that cannot be written
            if stop() or over_budget():
                return True
            if writer is not None and writer.broken:
                return True
            # Judged once the streams have made their first call (which refreshes a stale API usage figure).
            if streams.started and not self.connector.can_spend():
                report.api_budget_reached = True
                return True
            return False

        try:
            if writer is not None:
                # An earlier run's results first, before any new LLM spend: if the CRM still refuses writes, this
                # cycle scores nothing it could not write.
                writer.drain(self.ledger.ids_in_state(LeadState.pending_write))
                writer.start()
            buf: list[tuple[str, str, ScoreResult]] = []
            first = 0.0
            try:
                counted = lambda lead, result: self._count(report, lead, result, rows)  # noqa: E731
                leads: Iterable[Lead] = streams.leads()
                if not dry_run:  # issue 14 (crmsync/batching.py): earlier batches' results first, then maybe a new batch
                    batches = BatchStage(self.config, self.connector, self.ledger, self.scorer, self.locked, report)
                    batches.collect(counted, lambda done: self._record(done, writer))
                    leads = batches.divert(leads, halt)
                for lead, result in self.scorer.score_many(leads, self.config.scoring.concurrency, halt, counted):
                    if dry_run:
                        continue
                    if not buf:
                        first = time.monotonic()
                    buf.append((lead.id, fingerprint(lead.inputs), result))
                    if len(buf) >= RECORD_BATCH or time.monotonic() - first >= RECORD_EVERY_S:
                        self._record(buf, writer)
                        buf = []
            finally:  # a CRM error mid-fetch still keeps every result paid for
                self._record(buf, writer)
            report.stopped = stop()
            if report.failed and not report.scored:
                report.outage = self.scorer.chain.outage_summary()
            report.budget_reached = streams.cut_short and over_budget()
            if report.budget_reached:
                log.warning(
                    "daily LLM budget of $%.2f reached ($%.4f spent today): the rest wait for tomorrow",
                    budget,
                    spent_before + report.cost_usd,
                )
            if report.api_budget_reached:
                log.warning("the CRM's API budget is reached: no more leads are scored until their scores can be written")
            if not dry_run:
                streams.save_bookmarks()
        except ApiBudgetExhausted as exc:
            report.errors.append(f"CRM API budget: {exc}")
            log.warning("stopping this cycle: %s", exc)
        except FatalConnectorError as exc:
            report.errors.append(f"CRM refused: {exc}")
            log.error("CRM refused the request, this cycle stops: %s", exc)
        except ConnectorError as exc:
            report.errors.append(f"CRM unavailable: {exc}")
            log.warning("CRM unavailable, will retry next cycle: %s", exc)
        finally:
            if writer is not None:
                writer.finish()
        log.info("cycle: %s", report.line())
        broken = self.scorer.rubric_error
        if broken:  # every cycle, until fixed: a rejected edit must not go unnoticed
            log.error("the rubric file has a rejected edit; still scoring with version %s. %s", self.scorer.rubric.version, broken)
        return report

    # -- steps ---------------------------------------------------------------------------------------
    def locked(self, it: Iterable[T]) -> Iterator[T]:
        """Pull from a connector generator holding the connector lock for each page it may fetch."""
        it = iter(it)
        while True:
            with self.crm_lock:
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item

    def _record(self, buf: list[tuple[str, str, ScoreResult]], writer: Writer | None) -> None:
        if not buf:
            return
        self.ledger.record_results(buf)  # stored before any CRM write: a crash never costs a second LLM call
        if writer is not None:
            writer.add(lead_id for lead_id, _, r in buf if r.status != ScoreStatus.failed)

    def _count(self, report: CycleReport, lead: Lead, result: ScoreResult, rows: int | None) -> None:
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
        for hop in result.hops:
            if hop.outcome == HopOutcome.cooling_down:
                continue
            report.calls[(hop.provider, hop.model, hop.outcome.value)] += 1
            for kind in ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens"):
                report.tokens[(hop.provider, hop.model, kind.removesuffix("_tokens"))] += getattr(hop.usage, kind)
        kept = len(report.rows)
        if rows is None or kept < rows or (result.needs_review and kept < 2 * rows):
            shown: dict[str, str] = {
                k: str(lead.inputs.get(k) or "")[:60] for k in ("company", "title", "monthly_orders") if k in lead.inputs
            }
            report.rows.append(
                ShownRow(
                    lead.id,
                    shown,
                    result.score,
                    result.tier,
                    result.confidence,
                    result.needs_review,
                    result_values(result)["reasons"][:300],
                )
            )
        else:
            report.rows_hidden += 1
