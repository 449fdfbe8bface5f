"""The ledger's record of provider batches (tables ``batches`` and ``batch_requests``, migration 3).

The order that makes a ``kill -9`` harmless at any point (crmsync/batching.py follows it):
1. ``begin``: one transaction records the batch (state ``submitting``, no provider id yet), one row per request
   (custom_id → lead, input fingerprint, the hops of earlier steps) and moves the leads to ``batched``, so no
   stream scores or batches them again.
2. The provider is called; ``submitted`` stores its batch id. A crash between 1 and 2 leaves ``submitting`` with
   no id: the next cycle asks the provider (``BatchCapable.find_batch``) and either adopts the batch or, when it
   was never created, ``abandon``s the row (its leads go back to be scored): never a second submission.
3. Results are applied lead by lead through the ledger's own ``record_results``; a request is applied only while
   its lead is still ``batched`` with the same fingerprint, so replaying a half-applied batch after a crash is a
   no-op for the leads already recorded.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .ledger_schema import _now
from .models import Hop
from .providers.batch_api import custom_id
from .state import Ledger, call_rows

OPEN = ("submitting", "submitted")  # batches the cycle still polls


@dataclass(frozen=True)
class BatchRow:
    local_id: str
    provider: str
    model: str
    step: int
    batch_id: str | None
    state: str  # submitting | submitted | done | abandoned
    rubric_version: str
    requests: int
    created_at: datetime
    provider_status: str | None
    counts: dict[str, int]
    cost_usd: float
    saved_usd: float


@dataclass(frozen=True)
class RequestRow:
    custom_id: str
    lead_id: str
    fingerprint: str
    prior: list[dict[str, Any]]  # hops (+ answers) of earlier chain steps, as JSON


def _tx(ledger: Ledger) -> AbstractContextManager[None]:
    """The ledger's one transaction helper (one lock, one fsync, faults as LedgerError)."""
    return ledger.transaction()


class BatchStore:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.crm = ledger.crm

    # -- writes --------------------------------------------------------------------------------------
    def begin(
        self, *, provider: str, model: str, step: int, rubric_version: str, items: Sequence[tuple[str, str, list[dict[str, Any]]]]
    ) -> tuple[str, list[str]]:
        """Record a batch before it is submitted: (local id, custom_ids in item order). ``items``: (lead id,
        input fingerprint, prior hops). A lead's older pending request (another batch) is superseded."""
        local_id = "cs" + secrets.token_hex(8)  # [a-z0-9]: custom_ids stay within Anthropic's rule
        cids = [custom_id(local_id, n) for n in range(len(items))]
        now = _now()
        db = self.ledger.db
        with _tx(self.ledger):
            db.execute(
                "INSERT INTO batches (crm, local_id, provider, model, step, state, rubric_version, requests, created_at) "
                "VALUES (?,?,?,?,?,'submitting',?,?,?)",
                (self.crm, local_id, provider, model, step, rubric_version, len(items), now),
            )
            db.executemany(
                "UPDATE batch_requests SET state='superseded', updated_at=? WHERE crm=? AND lead_id=? AND state='pending'",
                [(now, self.crm, lead_id) for lead_id, _, _ in items],
            )
            db.executemany(
                "INSERT INTO batch_requests VALUES (?,?,?,?,?,?,'pending',?)",
                [
                    (self.crm, cid, local_id, lead_id, fp, json.dumps(prior) if prior else None, now)
                    for cid, (lead_id, fp, prior) in zip(cids, items, strict=True)
                ],
            )
            db.executemany(  # the lead is spoken for: the streams skip it while its inputs stay the same
                """INSERT INTO leads (crm, lead_id, fingerprint, rubric_version, state, updated_at) VALUES (?,?,?,?,'batched',?)
                   ON CONFLICT (crm, lead_id) DO UPDATE SET state='batched', fingerprint=excluded.fingerprint,
                       rubric_version=excluded.rubric_version, updated_at=excluded.updated_at""",
                [(self.crm, lead_id, fp, rubric_version, now) for lead_id, fp, _ in items],
            )
        return local_id, cids

    def submitted(self, local_id: str, batch_id: str, status: str = "") -> None:
        with _tx(self.ledger):
            self.ledger.db.execute(
                "UPDATE batches SET batch_id=?, state='submitted', provider_status=?, submitted_at=? WHERE crm=? AND local_id=?",
                (batch_id, status or None, _now(), self.crm, local_id),
            )

    def polled(self, local_id: str, status: str, counts: dict[str, int], error: str = "") -> None:
        with _tx(self.ledger):
            self.ledger.db.execute(
                "UPDATE batches SET provider_status=?, counts_json=?, polled_at=?, error=COALESCE(NULLIF(?, ''), error) "
                "WHERE crm=? AND local_id=?",
                (status, json.dumps(counts), _now(), error, self.crm, local_id),
            )

    def settle(
        self, local_id: str, outcomes: dict[str, str], cost_usd: float = 0.0, saved_usd: float = 0.0, paid: Sequence[tuple[str, Hop]] = ()
    ) -> None:
        """Mark requests (custom_id → applied | discarded) and add their cost; the batch is ``done`` once none is
        pending. ``paid``: (lead id, hop) of discarded answers, billed all the same: they go to the ledger's calls
        (today's spend, the budget, totals) as any hop does."""
        now = _now()
        db = self.ledger.db
        with _tx(self.ledger):
            db.executemany(
                "INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [row for lead_id, h in paid for row in call_rows(now, self.crm, lead_id, [h])],
            )
            db.executemany(
                "UPDATE batch_requests SET state=?, updated_at=? WHERE crm=? AND custom_id=? AND state='pending'",
                [(state, now, self.crm, cid) for cid, state in outcomes.items()],
            )
            db.execute(
                "UPDATE batches SET cost_usd=cost_usd+?, saved_usd=saved_usd+? WHERE crm=? AND local_id=?",
                (cost_usd, saved_usd, self.crm, local_id),
            )
            left = db.execute(
                "SELECT COUNT(*) FROM batch_requests WHERE crm=? AND local_id=? AND state='pending'", (self.crm, local_id)
            ).fetchone()[0]
            if not left:
                db.execute(
                    "UPDATE batches SET state='done', ended_at=COALESCE(ended_at, ?) WHERE crm=? AND local_id=? AND state IN "
                    "('submitting','submitted')",
                    (now, self.crm, local_id),
                )

    def abandon(self, local_id: str, error: str) -> list[str]:
        """The batch will give no result (never created, failed as a whole, or not ours after all): its pending
        requests are discarded and their leads, still waiting on it, are set to be scored again. Returns them."""
        now = _now()
        db = self.ledger.db
        with _tx(self.ledger):
            leads = [
                r[0]
                for r in db.execute(
                    "SELECT lead_id FROM batch_requests WHERE crm=? AND local_id=? AND state='pending'", (self.crm, local_id)
                )
            ]
            db.execute(
                "UPDATE batch_requests SET state='discarded', updated_at=? WHERE crm=? AND local_id=? AND state='pending'",
                (now, self.crm, local_id),
            )
            db.executemany(
                "UPDATE leads SET state='rescore', updated_at=? WHERE crm=? AND lead_id=? AND state='batched'",
                [(now, self.crm, i) for i in leads],
            )
            db.execute(
                "UPDATE batches SET state='abandoned', error=?, ended_at=? WHERE crm=? AND local_id=?",
                (error[:1000], now, self.crm, local_id),
            )
        return leads

    def release(self, lead_ids: Iterable[str]) -> None:
        """Leads whose batch result was discarded (inputs or rubric changed meanwhile): score them again."""
        now = _now()
        with _tx(self.ledger):
            self.ledger.db.executemany(
                "UPDATE leads SET state='rescore', updated_at=? WHERE crm=? AND lead_id=? AND state='batched'",
                [(now, self.crm, i) for i in lead_ids],
            )

    # -- reads ---------------------------------------------------------------------------------------
    _COLS = (
        "local_id, provider, model, step, batch_id, state, rubric_version, requests, created_at, provider_status, "
        "counts_json, cost_usd, saved_usd"
    )

    def outstanding(self) -> list[BatchRow]:
        return self._rows(
            f"SELECT {self._COLS} FROM batches WHERE crm=? AND state IN ('submitting','submitted') ORDER BY created_at", (self.crm,)
        )

    def get(self, local_id: str) -> BatchRow | None:
        rows = self._rows(f"SELECT {self._COLS} FROM batches WHERE crm=? AND local_id=?", (self.crm, local_id))
        return rows[0] if rows else None

    def known_batch_ids(self) -> set[str]:
        return {r[0] for r in self.ledger.db.execute("SELECT batch_id FROM batches WHERE crm=? AND batch_id IS NOT NULL", (self.crm,))}

    def pending(self, local_id: str) -> list[RequestRow]:
        return [
            RequestRow(cid, lead, fp, json.loads(prior) if prior else [])
            for cid, lead, fp, prior in self.ledger.db.execute(
                "SELECT custom_id, lead_id, fingerprint, prior_json FROM batch_requests WHERE crm=? AND local_id=? AND state='pending' "
                "ORDER BY rowid",
                (self.crm, local_id),
            )
        ]

    def custom_ids(self, local_id: str) -> set[str]:
        return {
            r[0] for r in self.ledger.db.execute("SELECT custom_id FROM batch_requests WHERE crm=? AND local_id=?", (self.crm, local_id))
        }

    def totals(self) -> dict[str, float]:
        """Spend and saving over every batch, for `crmsync status`."""
        cost, saved, n = self.ledger.db.execute(
            "SELECT COALESCE(SUM(cost_usd),0), COALESCE(SUM(saved_usd),0), COUNT(*) FROM batches WHERE crm=?", (self.crm,)
        ).fetchone()
        return {"cost_usd": cost, "saved_usd": saved, "batches": n}

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[BatchRow]:
        return [
            BatchRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                datetime.fromisoformat(r[8]),
                r[9],
                json.loads(r[10]) if r[10] else {},
                r[11],
                r[12],
            )
            for r in self.ledger.db.execute(sql, params)
        ]


def age(row: BatchRow, now: datetime | None = None) -> str:
    """'3 h 12 min', '45 s': how long a batch has been out."""
    s = int(((now or datetime.now(UTC)) - row.created_at).total_seconds())
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
