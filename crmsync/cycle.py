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

import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from .config import Config
from .connector import Bookmark, Connector, ScoreUpdate, output_values
from .errors import ApiBudgetExhausted, ConnectorError, FatalConnectorError, LedgerError
from .models import CrmLead, HopOutcome, Lead, ScoreResult, ScoreStatus
from .scoring import Scorer
from .state import Ledger, LeadState, LedgerRow, fingerprint

log = logging.getLogger("crmsync.cycle")
T = TypeVar("T")

RECORD_BATCH = 64  # results per ledger transaction ...
RECORD_EVERY_S = 0.25  # ... or at least this often, so a slow model still lands results promptly
SHOWN_ROWS = 20  # `run --once` shows the first rows and the flagged ones, not 10,000 lines
DONE = (LeadState.written, LeadState.pending_write, LeadState.parked, LeadState.external)


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

    @property
    def ok(self) -> bool:
        return not (self.errors or self.failed or self.write_errors or self.parked)

    def line(self) -> str:
        extra = ""
        if self.human_at_write:
            extra += f", left to reviewers at write time {self.human_at_write}"
        if self.adopted:
            extra += f", adopted {self.adopted}"
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
    }


class Cycle:
    def __init__(self, config: Config, connector: Connector, ledger: Ledger, scorer: Scorer,
                 *, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
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
        writer = None if dry_run else _Writer(self, report)
        streams = _Streams(self, report, dry_run)

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
                for lead, result in self.scorer.score_many(streams.leads(), self.config.scoring.concurrency, halt, counted):
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
                log.warning("daily LLM budget of $%.2f reached ($%.4f spent today): the rest wait for tomorrow",
                            budget, spent_before + report.cost_usd)
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
        broken = getattr(self.scorer.rubrics, "last_error", None)
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

    def _record(self, buf: list[tuple[str, str, ScoreResult]], writer: _Writer | None) -> None:
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
            shown = {k: str(lead.inputs.get(k) or "")[:60] for k in ("company", "title", "monthly_orders") if k in lead.inputs}
            report.rows.append(ShownRow(lead.id, shown, result.score, result.tier, result.confidence, result.needs_review,
                                        result_values(result)["reasons"][:300]))
        else:
            report.rows_hidden += 1


class _Streams:
    """The leads one cycle looks at, in order: changed → rescore → unscored. Yields only the ones to score."""

    def __init__(self, cycle: Cycle, report: CycleReport, dry_run: bool) -> None:
        self.c = cycle
        self.report = report
        self.dry_run = dry_run
        self.seen: set[str] = set()
        self.changed_mark: Bookmark | None = None
        self.unscored_mark: tuple[bool, str | None] | None = None  # (bookmark reached the end?, last id)
        self.cut_short = False  # a halt left leads of this cycle unscored
        self.started = False
        self.taken: str | None = None  # the last lead decided on (the unscored bookmark, if the cycle halts)

    def leads(self) -> Iterator[Lead]:
        self.started = self.cut_short = True  # cut short until the unscored stream is read to its end
        yield from self._changed()
        yield from self._rescore()
        yield from self._unscored()
        self.cut_short = False

    # -- changed -------------------------------------------------------------------------------------
    def _changed(self) -> list[Lead]:
        c, d = self.c, self.c.config.daemon
        until = c.now() - timedelta(seconds=d.changed_lag_s)
        mark = c.ledger.bookmark("changed")
        if mark is None or mark[0] is None:  # first run: no history to replay; the unscored stream covers new leads
            self.changed_mark = Bookmark(until, "")
            return []
        start = Bookmark(mark[0], mark[1])
        last = start
        todo: list[Lead] = []
        rescore: list[str] = []
        read = list(c.locked(c.connector.fetch_changed(start, until, d.changed_limit)))
        known = c.ledger.states([lead.id for lead in read])
        for lead in read:
            if lead.modified_at is not None and (lead.modified_at, lead.id) > (last.modified_at, last.lead_id):
                last = Bookmark(lead.modified_at, lead.id)
            if lead.id in self.seen:
                continue
            verdict = self._decide(lead, known.get(lead.id), from_changed=True)
            if verdict is None:
                continue  # unknown and unscored, or failed earlier: the unscored stream's lead
            self.seen.add(lead.id)
            self.report.fetched += 1
            self.report.changed += 1
            if verdict:
                rescore.append(lead.id)
                todo.append(Lead(id=lead.id, inputs=lead.inputs))
        if rescore and not self.dry_run:
            c.ledger.mark_rescore(rescore)  # durable: a halt before they are scored loses nothing
        self.changed_mark = last
        return todo

    # -- rescore -------------------------------------------------------------------------------------
    def _rescore(self) -> Iterator[Lead]:
        c = self.c
        limit = c.config.daemon.fetch_limit
        wanted = [i for i in c.ledger.ids_in_state(LeadState.rescore, limit + len(self.seen)) if i not in self.seen][:limit]
        if not wanted:
            return
        yield from self._take(c.locked(c.connector.fetch_ids(wanted)))

    # -- unscored ------------------------------------------------------------------------------------
    def _unscored(self) -> Iterator[Lead]:
        c, limit = self.c, self.c.config.daemon.fetch_limit
        mark = c.ledger.bookmark("unscored")
        after = mark[1] or None if mark else None
        counted = _Counted(c.locked(c.connector.fetch_unscored(after, limit)))
        for lead in self._take(counted):
            yield lead
            self.unscored_mark = (False, self.taken)  # a halt here leaves the rest of the chunk for next cycle
        # Fewer than the limit: the scan reached the end, so the next cycle starts from the first unscored lead
        # again (leads left unscored by a failed provider or a parked write get their next turn).
        self.unscored_mark = (counted.n < limit, counted.last or after)

    def _take(self, leads: Iterable[CrmLead], chunk: int = 100) -> Iterator[Lead]:
        """Decide for leads as they are read, looking the ledger up per chunk (one query, not one per lead)."""
        it = iter(leads)
        while batch := list(itertools.islice(it, chunk)):
            known = self.c.ledger.states([lead.id for lead in batch if lead.id not in self.seen])
            for lead in batch:
                self.taken = lead.id
                if lead.id in self.seen:
                    continue
                self.seen.add(lead.id)
                self.report.fetched += 1
                if self._decide(lead, known.get(lead.id), from_changed=False):
                    yield Lead(id=lead.id, inputs=lead.inputs)

    # -- the decision --------------------------------------------------------------------------------
    def _decide(self, lead: CrmLead, known: tuple[LeadState, str | None] | None, *, from_changed: bool) -> bool | None:
        """Whether to score this lead now (None: not this stream's lead), given its ledger (state, fingerprint).
        Never over a human; never for crmsync's own write; never over a score crmsync did not make unless the
        inputs changed afterwards."""
        c, report = self.c, self.report
        fp = fingerprint(lead.inputs)
        state, known_fp = known if known else (None, None)
        if lead.review_decision or state == LeadState.human:
            if not self.dry_run and state != LeadState.human:
                c.ledger.mark_human(lead.id, fp)
            report.human += 1
            return False
        if state is None:
            if lead.has_score:
                if lead.input_hash and lead.input_hash != fp:
                    return True  # crmsync's own score (ledger lost), made from other inputs: score again
                if not self.dry_run:
                    if lead.input_hash == fp:
                        c.ledger.restore(lead.id, fp, LeadState.written)
                    else:
                        c.ledger.mark_external(lead.id, fp)
                report.adopted += 1
                return False
            return None if from_changed else True  # an unknown unscored lead belongs to the unscored stream
        if state == LeadState.rescore:
            return True
        if state == LeadState.failed:
            return None if from_changed else True
        if state in DONE and known_fp == fp:
            report.skipped += 1
            return False
        return True  # inputs changed since the last score

    def save_bookmarks(self) -> None:
        ledger = self.c.ledger
        if self.changed_mark is not None:
            ledger.set_bookmark("changed", self.changed_mark.modified_at, self.changed_mark.lead_id)
        if self.unscored_mark is not None:
            at_end, last = self.unscored_mark
            ledger.set_bookmark("unscored", None, "" if at_end or last is None else last)


class _Counted:
    """Counts what a connector stream yields and remembers the last id (for the unscored bookmark)."""

    def __init__(self, it: Iterable[CrmLead]) -> None:
        self.it = iter(it)
        self.n = 0
        self.last: str | None = None

    def __iter__(self) -> Iterator[CrmLead]:
        for lead in self.it:
            self.n += 1
            self.last = lead.id
            yield lead


class _Writer(threading.Thread):
    """Writes recorded results beside scoring, in the connector's full batches, re-reading review decisions
    just before each write. Flushes when a re-check batch is full, when results have waited
    ``[daemon] write_flush_s``, and at the end of the cycle."""

    def __init__(self, cycle: Cycle, report: CycleReport) -> None:
        super().__init__(name="crm-writer", daemon=True)
        self.c = cycle
        self.report = report
        self.inbox: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self.broken = False  # a whole write call failed: stop scoring, the rest is written next cycle
        conn = cycle.connector
        self.group = max(conn.write_batch, conn.read_batch) if cycle.config.daemon.recheck_before_write else conn.write_batch

    def add(self, ids: Iterable[str]) -> None:
        batch = list(ids)
        if batch:
            self.inbox.put(batch)

    def drain(self, lead_ids: list[str]) -> None:
        """Write these now, on the calling thread, in full groups (before the thread starts)."""
        for i in range(0, len(lead_ids), self.group):
            self._flush(lead_ids[i : i + self.group])

    def finish(self) -> None:
        if self.is_alive():
            self.inbox.put(None)
            self.join()

    def run(self) -> None:
        pending: list[str] = []
        oldest = 0.0
        flush_s = self.c.config.daemon.write_flush_s
        while True:
            try:
                item = self.inbox.get(timeout=0.2)
            except queue.Empty:
                item = []
            if item is None:
                break
            if item and not pending:
                oldest = time.monotonic()
            pending.extend(item)
            while len(pending) >= self.group:
                self._flush(pending[: self.group])
                pending = pending[self.group:]
                oldest = time.monotonic()
            if pending and time.monotonic() - oldest >= flush_s:
                self._flush(pending)
                pending = []
        for i in range(0, len(pending), self.group):
            self._flush(pending[i : i + self.group])

    def _flush(self, lead_ids: list[str]) -> None:
        if self.broken or not lead_ids:
            return
        try:
            self._write(list(dict.fromkeys(lead_ids)))
        except LedgerError as exc:  # the ledger, not the CRM: the same message `run` gives at start
            self._fail(str(exc), exc, logging.ERROR)
        except ApiBudgetExhausted as exc:
            self._fail(f"CRM API budget: {exc}", exc, logging.WARNING)
        except FatalConnectorError as exc:
            self._fail(f"CRM refused: {exc}", exc, logging.ERROR)
        except ConnectorError as exc:
            self._fail(f"CRM unavailable: {exc}", exc, logging.WARNING)
        except Exception as exc:  # a bug must not kill the thread silently: the cycle reports it
            log.exception("writing to the CRM failed")
            self._fail(f"writing to the CRM failed: {type(exc).__name__}: {exc}", exc, logging.ERROR)

    def _fail(self, message: str, exc: Exception, level: int) -> None:
        self.broken = True
        if message not in self.report.errors:
            self.report.errors.append(message)
        log.log(level, "writes stop for this cycle (scores are kept and written next cycle): %s", exc)

    def _write(self, lead_ids: list[str]) -> None:
        c, report, ledger = self.c, self.report, self.c.ledger
        rows = {i: r for i in lead_ids if (r := ledger.get(i)) and r.result and r.state == LeadState.pending_write}
        if not rows:
            return
        if c.config.daemon.recheck_before_write:  # the human wins at write time, not only at fetch time
            ids = list(rows)
            decided: dict[str, str | None] = {}
            for i in range(0, len(ids), c.connector.read_batch):
                with c.crm_lock:
                    decided.update(c.connector.read_decisions(ids[i : i + c.connector.read_batch]))
            for lead_id, decision in decided.items():
                if decision and lead_id in rows:
                    ledger.mark_human(lead_id, rows.pop(lead_id).fingerprint or "")
                    report.human_at_write += 1
                    log.info("lead %s: a reviewer decided while it was being scored; not written", lead_id)
        updates = [
            ScoreUpdate(i, output_values(c.config.fields, result_values(r.result, r.fingerprint)))  # type: ignore[arg-type]
            for i, r in rows.items()
        ]
        size = c.connector.write_batch
        for start in range(0, len(updates), size):
            chunk = updates[start : start + size]
            with c.crm_lock:
                outcomes = c.connector.write(chunk)
            if len(outcomes) != len(chunk):
                raise FatalConnectorError(f"connector returned {len(outcomes)} outcomes for {len(chunk)} updates")
            self._settle(outcomes, rows)

    def _settle(self, outcomes: list[Any], rows: dict[str, LedgerRow]) -> None:
        c, report, ledger = self.c, self.report, self.c.ledger
        ok = [o.lead_id for o in outcomes if o.ok]
        ledger.mark_written(ok)
        report.written += len(ok)
        for o in outcomes:
            if o.ok:
                continue
            if o.human:
                ledger.mark_human(o.lead_id, rows[o.lead_id].fingerprint or "")
                report.human_at_write += 1
                continue
            report.write_errors += 1
            state = ledger.mark_write_failed(o.lead_id, o.error or "rejected", c.config.daemon.max_write_attempts)
            if state == LeadState.parked:
                report.parked += 1
                log.error("lead %s parked after %d rejected writes: %s", o.lead_id, c.config.daemon.max_write_attempts, o.error)
            else:
                log.warning("lead %s: the CRM rejected the write (will retry): %s", o.lead_id, o.error)
