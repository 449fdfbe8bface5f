"""The long-running process: APScheduler 3.x polls on an interval; SIGTERM/SIGINT stop it cleanly.
The only module that imports ``apscheduler``."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from .cycle import Cycle, CycleReport
from .errors import LedgerError

log = logging.getLogger("crmsync.daemon")


class CycleObserver(Protocol):
    def observe(self, report: CycleReport, seconds: float, rubric_error: str | None) -> None: ...


class Daemon:
    def __init__(self, cycle: Cycle, interval_s: int, *, dry_run: bool = False, observer: CycleObserver | None = None) -> None:
        self.cycle = cycle
        self.interval_s = interval_s
        self.dry_run = dry_run
        self.observer = observer
        self.stopping = threading.Event()
        self.last: CycleReport | None = None

    def _job(self) -> None:
        if self.stopping.is_set():
            return
        try:
            started = time.monotonic()
            self.last = self.cycle.run(dry_run=self.dry_run, stop=self.stopping.is_set)
            if self.observer:
                self.observer.observe(self.last, time.monotonic() - started, self.cycle.scorer.rubric_error)
        except LedgerError as exc:  # found before any LLM call: nothing paid; say what to fix, try again next interval
            log.error("%s (next try in %ss)", exc, self.interval_s)
        except Exception:  # a bug in one cycle must not kill the service: log it, try again next interval
            log.exception("cycle crashed; the next one runs in %ss", self.interval_s)

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("%s received: finishing in-flight leads, then stopping", signal.Signals(signum).name)
        self.stopping.set()

    def run_forever(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        scheduler = BackgroundScheduler(timezone=UTC)
        # One cycle at a time; a late run is merged, not stacked.
        scheduler.add_job(
            self._job,
            "interval",
            seconds=self.interval_s,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id="cycle",
        )
        scheduler.start()
        log.info("crmsync daemon started: a cycle every %ss%s", self.interval_s, " (dry run)" if self.dry_run else "")
        while not self.stopping.wait(1.0):
            pass
        scheduler.shutdown(wait=True)  # waits for the running cycle, which stops starting new leads
        log.info("crmsync daemon stopped cleanly")
        return 0
