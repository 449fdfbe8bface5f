"""`crmsync score --batch`: a file's leads through step 1's batch API, then polled until every result is in.

The daemon's batch stage (crmsync/batching.py) does the work, with a ledger of its own beside the output file
(``<output>.batches.sqlite``): the batch is recorded before it is submitted, so stopping (Ctrl+C, a crash) and
running the same command again resumes polling and never submits a lead twice. Results go through the same
chain rules; leads the batch could not answer go to the chain's next step at once, as in the daemon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from .batch_store import BatchStore
from .batching import BatchStage, batch_provider
from .config import Config
from .connector import Connector
from .errors import ConfigError
from .models import CrmLead, Lead, ScoreResult
from .scoring import Scorer
from .state import Ledger

log = logging.getLogger("crmsync.score")


class _FileLeads:
    """What the batch stage reads back when results arrive: the file's leads, by id (no CRM)."""

    def __init__(self, leads: Iterable[Lead]) -> None:
        self.by_id = {lead.id: lead for lead in leads}

    def fetch_ids(self, ids: Iterable[str]) -> Iterator[CrmLead]:
        for i in ids:
            if i in self.by_id:
                yield CrmLead(id=i, inputs=self.by_id[i].inputs)


class _Report:
    batched = 0
    batch_saved_usd = 0.0


def ledger_path(output: Path) -> Path:
    return output.with_name(output.name + ".batches.sqlite")


def score_in_batches(
    config: Config,
    scorer: Scorer,
    leads: list[Lead],
    todo: list[Lead],
    output: Path,
    on_result: Callable[[Lead, ScoreResult], None],
    stop: Callable[[], bool],
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Submit ``todo`` (less the leads already out in a batch), poll every ``[scoring] batch_poll_s`` until none is
    outstanding, and hand each result to ``on_result``. Returns the saving against synchronous prices."""
    provider = batch_provider(scorer, config, 0)
    if provider is None:
        raise ConfigError(
            f"`crmsync score --batch` needs chain[0] ({config.chain[0].provider}) to be a provider with a batch "
            'API (openai or anthropic) and `batch = "auto"` or `"always"` on that [[chain]] step'
        )
    ledger = Ledger(ledger_path(output), "file")
    report = _Report()
    try:
        stage = BatchStage(config, cast(Connector, _FileLeads(leads)), ledger, scorer, lambda it: iter(it), report)
        store = BatchStore(ledger)
        # Recorded by an earlier run that stopped before writing them to the output: handed over, not paid again.
        kept = [row for lead in todo if (row := ledger.get(lead.id)) and row.result and row.state.value == "pending_write"]
        for row in kept:
            on_result(next(lead for lead in todo if lead.id == row.lead_id), row.result)  # type: ignore[arg-type]
        todo = [lead for lead in todo if lead.id not in {row.lead_id for row in kept}]
        out = {r.lead_id for row in store.outstanding() for r in store.pending(row.local_id)}
        new = [lead for lead in todo if lead.id not in out]
        if out:
            say(f"resuming: {len(out)} lead(s) are already out in a batch; polling for them")
        if new and not stop():
            left = stage.submit(0, provider, [(lead, []) for lead in new])
            for lead, result in scorer.score_many(left, config.scoring.concurrency, stop):  # the batch never got through
                on_result(lead, result)
            if report.batched:
                say(f"submitted {report.batched} lead(s) to {provider.name}'s batch API; results usually within hours, at most 24 h")
        by_id = {lead.id: lead for lead in leads}

        def record(done: list[tuple[str, str, Any]]) -> None:
            ledger.record_results(done)  # the stage's guard: a lead applied once is never applied again
            for lead_id, _, result in done:
                on_result(by_id[lead_id], result)

        while store.outstanding() and not stop():
            stage.collect(lambda lead, result: None, record)
            if store.outstanding() and not stop():
                sleep(config.scoring.batch_poll_s)
        if store.outstanding():
            say(
                f"stopped: {sum(r.requests for r in store.outstanding())} lead(s) are still out; run the same command again "
                "to collect them (nothing is submitted twice)"
            )
        return report.batch_saved_usd
    finally:
        ledger.close()
