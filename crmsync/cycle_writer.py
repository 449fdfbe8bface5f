"""The cycle's writer thread: re-reads review decisions and writes recorded results in the CRM's batch sizes."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .connector import ScoreUpdate, output_values
from .cycle_report import CycleReport, result_values
from .errors import ApiBudgetExhausted, ConnectorError, FatalConnectorError, LedgerError
from .state import LeadState, LedgerRow

if TYPE_CHECKING:
    from .cycle import Cycle

log = logging.getLogger("crmsync.cycle")
RESEND_PAUSE_S = 0.5  # before re-sending writes the CRM refused for now (row lock contention clears in moments)


class Writer(threading.Thread):
    """Writes recorded results beside scoring, in the connector's full batches, re-reading review decisions
    just before each write. Flushes when a re-check batch is full, when results have waited
    ``[daemon] write_flush_s``, and at the end of the cycle."""

    def __init__(self, cycle: Cycle, report: CycleReport) -> None:
        super().__init__(name="crm-writer", daemon=True)
        self.c = cycle
        self.report = report
        self.inbox: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        self.broken = False  # a whole write call failed: stop scoring, the rest is written next cycle
        self.retries: dict[str, int] = {}  # retryable rejections per lead this cycle (bounded by max_write_attempts)
        self.again: list[str] = []  # leads to send again after a short pause (a locked row clears in moments)
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
                pending = pending[self.group :]
                oldest = time.monotonic()
            if pending and time.monotonic() - oldest >= flush_s:
                self._flush(pending)
                pending = []
        for i in range(0, len(pending), self.group):
            self._flush(pending[i : i + self.group])
        self.resend()

    def resend(self) -> None:
        """Send the retryable rejections again, after a pause that grows with each round."""
        rounds = 0
        while self.again and not self.broken:
            rounds += 1
            time.sleep(min(RESEND_PAUSE_S * rounds, 5.0))
            ids, self.again = self.again, []
            for i in range(0, len(ids), self.group):
                self._flush(ids[i : i + self.group])

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
            if o.lead_id not in self.retries:
                report.write_errors += 1  # leads whose write failed this cycle, not attempts
            state = ledger.mark_write_failed(o.lead_id, o.error or "rejected", retryable=o.retryable)
            if state == LeadState.parked:
                report.parked += 1
                log.error("lead %s parked: the CRM rejected the write and sending it again cannot help: %s", o.lead_id, o.error)
                continue
            tries = self.retries[o.lead_id] = self.retries.get(o.lead_id, 0) + 1
            if tries < c.config.daemon.max_write_attempts:
                self.again.append(o.lead_id)
                log.warning("lead %s: the CRM refused the write for now (will send it again): %s", o.lead_id, o.error)
            else:
                log.warning("lead %s: the CRM refused the write %d times this cycle; next cycle: %s", o.lead_id, tries, o.error)
