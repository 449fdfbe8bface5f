"""`crmsync ledger rebuild`: recreate the ledger's lead records from what the CRM holds, with no LLM call.

With ``[fields.outputs] input_hash`` mapped, every score crmsync wrote carries the fingerprint of the inputs it
was made from: a lead whose fingerprint still matches is recorded as written (never scored again), one whose
inputs changed since is queued for a fresh score. A score without a fingerprint (another tool's, or written
before the field was mapped) is adopted and left alone. Reviewer decisions are recorded as such.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from .config import Config
from .connector import Bookmark, Connector
from .state import LeadState, Ledger, fingerprint

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rebuild(config: Config, connector: Connector, ledger: Ledger) -> Counter[str]:
    """Read every lead the CRM changed up to now; record what it says. Rows the ledger already has are kept."""
    counts: Counter[str] = Counter()
    batch: list[tuple[str, str, LeadState]] = []
    kinds: Counter[str] = Counter()

    def flush() -> None:
        new = ledger.restore_many(batch)
        counts.update(kinds)
        counts["kept"] += len(batch) - new  # rows the ledger already had are never replaced
        counts["new"] += new
        batch.clear()
        kinds.clear()

    now = datetime.now(UTC)
    for lead in connector.fetch_changed(Bookmark(EPOCH), now, 100_000_000):
        fp = fingerprint(lead.inputs)
        if lead.review_decision:
            state, kind = LeadState.human, "human"
        elif not lead.has_score:
            counts["unscored"] += 1  # the unscored stream finds it
            continue
        elif lead.input_hash is None:
            state, kind = LeadState.external, "adopted"
        elif lead.input_hash == fp:
            state, kind = LeadState.written, "written"
        else:
            state, kind = LeadState.rescore, "rescore"
        batch.append((lead.id, fp, state))
        kinds[kind] += 1
        if len(batch) >= 500:
            flush()
    flush()
    # The changed stream goes on from here: what was just read is not replayed.
    ledger.set_bookmark("changed", now - timedelta(seconds=config.daemon.changed_lag_s), "")
    return counts
