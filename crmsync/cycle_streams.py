"""The cycle's fetch streams (changed → rescore → unscored) and the decision per lead they read."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

from .connector import Bookmark
from .cycle_report import CycleReport
from .models import CrmLead, Lead
from .state import LeadState, fingerprint

if TYPE_CHECKING:
    from .cycle import Cycle

log = logging.getLogger("crmsync.cycle")
DONE = (LeadState.written, LeadState.pending_write, LeadState.parked, LeadState.external, LeadState.batched)


class Streams:
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
        counted = Counted(c.locked(c.connector.fetch_unscored(after, limit)))
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


class Counted:
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
