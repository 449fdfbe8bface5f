"""The ledger: what crmsync knows about each lead, in one embedded SQLite file. Its queries live here; opening,
probing and the transaction helper in crmsync/ledger_file.py; the schema in crmsync/ledger_schema.py.

A score is stored before it is written to the CRM, so a crash never costs a second LLM call: the next run
writes what was scored but not written. A lead is rescored only when its mapped inputs change (by
fingerprint) or an admin asks; never because crmsync's own write bumped its modified time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from .ledger_file import LedgerFile
from .ledger_schema import MIGRATIONS, LeadState, LedgerRow, _now, fingerprint
from .models import Hop, ScoreResult
from .support import redact  # every stored string passes it: no secret value lands in the ledger

__all__ = ["MIGRATIONS", "LeadState", "Ledger", "LedgerRow", "fingerprint"]


def call_rows(now: str, crm: str, lead_id: str, hops: Iterable[Hop]) -> list[tuple[Any, ...]]:
    """Rows of the ``calls`` table (what was spent, per request) for the hops that reached a provider."""
    return [
        (
            now,
            crm,
            lead_id,
            h.provider,
            h.model,
            h.outcome.value,
            h.usage.input_tokens,
            h.usage.cached_input_tokens,
            h.usage.cache_write_tokens,
            h.usage.output_tokens,
            h.cost_usd,
        )
        for h in hops
        if h.attempts
    ]


class Ledger(LedgerFile):
    """One crm's view of the ledger: what crmsync knows about each lead, and what it spent."""

    # -- reads --------------------------------------------------------------------------------------
    def get(self, lead_id: str) -> LedgerRow | None:
        r = self.db.execute(
            "SELECT lead_id, state, fingerprint, rubric_version, result_json, write_attempts, last_error FROM leads "
            "WHERE crm=? AND lead_id=?",
            (self.crm, lead_id),
        ).fetchone()
        return self._row(r) if r else None

    def states(self, lead_ids: Sequence[str]) -> dict[str, tuple[LeadState, str | None]]:
        """(state, fingerprint) of each known lead, in one query per 500 ids: what a cycle decides by."""
        out: dict[str, tuple[LeadState, str | None]] = {}
        for i in range(0, len(lead_ids), 500):
            chunk = list(lead_ids[i : i + 500])
            marks = ",".join("?" for _ in chunk)
            for lead_id, state, fp in self.db.execute(
                f"SELECT lead_id, state, fingerprint FROM leads WHERE crm=? AND lead_id IN ({marks})", (self.crm, *chunk)
            ):
                out[lead_id] = (LeadState(state), fp)
        return out

    @staticmethod
    def _row(r: tuple[Any, ...]) -> LedgerRow:
        return LedgerRow(r[0], LeadState(r[1]), r[2], r[3], ScoreResult.model_validate_json(r[4]) if r[4] else None, r[5], r[6])

    def in_state(self, *states: LeadState) -> list[LedgerRow]:
        marks = ",".join("?" for _ in states)
        rows = self.db.execute(
            "SELECT lead_id, state, fingerprint, rubric_version, result_json, write_attempts, last_error FROM leads "
            f"WHERE crm=? AND state IN ({marks}) ORDER BY updated_at",
            (self.crm, *[s.value for s in states]),
        ).fetchall()
        return [self._row(r) for r in rows]

    def ids_in_state(self, state: LeadState, limit: int | None = None) -> list[str]:
        """Lead ids in one state, oldest change first: no result is parsed (a backlog may hold thousands)."""
        sql = "SELECT lead_id FROM leads WHERE crm=? AND state=? ORDER BY updated_at" + (" LIMIT ?" if limit else "")
        return [r[0] for r in self.db.execute(sql, (self.crm, state.value, *([limit] if limit else [])))]

    # -- writes (each one commits: a kill between two of them loses nothing) -------------------------
    def record_results(self, items: Sequence[tuple[str, str, ScoreResult]]) -> None:
        """Store results, with every hop's cost, before anything is written to the CRM: one transaction for
        the whole batch (a kill loses none or all of it, never half a lead), so scoring never waits on a commit
        per lead."""
        if not items:
            return
        now = _now()
        leads, calls = [], []
        for lead_id, fp, result in items:
            state = LeadState.failed if result.status.value == "failed" else LeadState.pending_write
            leads.append(
                (
                    self.crm,
                    lead_id,
                    fp,
                    result.rubric_version,
                    state.value,
                    redact(result.model_dump_json()),
                    result.score,
                    result.tier,
                    result.confidence,
                    int(result.needs_review),
                    result.cost_usd,
                    redact("; ".join(h.detail for h in result.hops if h.detail))[:1000] if state == LeadState.failed else None,
                    result.scored_at.isoformat(),
                    now,
                )
            )
            calls += call_rows(now, self.crm, lead_id, result.hops)
        with self._tx():  # one transaction for the whole batch
            self.db.executemany(
                """INSERT INTO leads (crm, lead_id, fingerprint, rubric_version, state, result_json, score, tier, confidence,
                       needs_review, cost_usd, write_attempts, score_attempts, last_error, scored_at, updated_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,0,1,?,?,?)
                   ON CONFLICT (crm, lead_id) DO UPDATE SET fingerprint=excluded.fingerprint,
                       rubric_version=excluded.rubric_version, state=excluded.state, result_json=excluded.result_json,
                       score=excluded.score, tier=excluded.tier, confidence=excluded.confidence,
                       needs_review=excluded.needs_review, cost_usd=leads.cost_usd + excluded.cost_usd,
                       write_attempts=0, score_attempts=leads.score_attempts + 1, last_error=excluded.last_error,
                       scored_at=excluded.scored_at, updated_at=excluded.updated_at""",
                leads,
            )
            self.db.executemany("INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?)", calls)

    def mark_written(self, lead_ids: Iterable[str]) -> None:
        now = _now()
        with self._tx():
            self.db.executemany(
                "UPDATE leads SET state='written', written_at=?, updated_at=?, last_error=NULL "
                "WHERE crm=? AND lead_id=? AND state='pending_write'",
                [(now, now, self.crm, i) for i in lead_ids],
            )

    def mark_write_failed(self, lead_id: str, error: str, *, retryable: bool) -> LeadState:
        """Record a rejected write with the CRM's message. A retryable rejection (a locked row, a transient error)
        leaves the lead pending: it is sent again, and never counts toward parking. Any other (a validation rule, a
        deleted record) parks it at once: sending the same values again cannot succeed, a person must look."""
        state = LeadState.pending_write if retryable else LeadState.parked
        with self._tx():
            self.db.execute(
                "UPDATE leads SET write_attempts=write_attempts+1, last_error=?, state=?, updated_at=? WHERE crm=? AND lead_id=?",
                (redact(error)[:1000], state.value, _now(), self.crm, lead_id),
            )
        return state

    def mark_human(self, lead_id: str, fp: str) -> None:
        with self._tx():
            self.db.execute(
                """INSERT INTO leads (crm, lead_id, fingerprint, state, updated_at) VALUES (?,?,?,'human',?)
                   ON CONFLICT (crm, lead_id) DO UPDATE SET state='human', updated_at=excluded.updated_at""",
                (self.crm, lead_id, fp, _now()),
            )

    def mark_external(self, lead_id: str, fp: str) -> None:
        """A lead the CRM shows scored, that crmsync has no record of: adopt it, never overwrite it."""
        with self._tx():
            self.db.execute(
                "INSERT INTO leads (crm, lead_id, fingerprint, state, updated_at) VALUES (?,?,?,'external',?) ON CONFLICT DO NOTHING",
                (self.crm, lead_id, fp, _now()),
            )

    def restore(self, lead_id: str, fp: str, state: LeadState) -> bool:
        """Record a lead from what the CRM holds (no result, no cost). Never replaces a row."""
        return self.restore_many([(lead_id, fp, state)]) == 1

    def restore_many(self, rows: Sequence[tuple[str, str, LeadState]]) -> int:
        """``ledger rebuild``: many at once, in one transaction; returns how many were new."""
        now = _now()
        with self._tx():
            before = self.db.total_changes
            self.db.executemany(
                "INSERT INTO leads (crm, lead_id, fingerprint, state, updated_at) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                [(self.crm, lead_id, fp, state.value, now) for lead_id, fp, state in rows],
            )
            return self.db.total_changes - before

    def mark_rescore(self, lead_ids: Iterable[str]) -> None:
        """Inputs changed since the last score: score again (human-decided leads excepted)."""
        with self._tx():
            self.db.executemany(
                "UPDATE leads SET state='rescore', updated_at=? WHERE crm=? AND lead_id=? AND state != 'human'",
                [(_now(), self.crm, i) for i in lead_ids],
            )

    def request_rescore(
        self, *, rubric_version: str | None = None, tier: str | None = None, lead_ids: list[str] | None = None, include_parked: bool = False
    ) -> int:
        """Mark leads for a fresh score (after a rubric change). Human-resolved leads are never touched."""
        states = ["written", "pending_write", "external"] + (["parked"] if include_parked else [])
        sql = f"UPDATE leads SET state='rescore', updated_at=? WHERE crm=? AND state IN ({','.join('?' for _ in states)})"
        params: list[Any] = [_now(), self.crm, *states]
        if rubric_version:
            sql += " AND rubric_version=?"
            params.append(rubric_version)
        if tier:
            sql += " AND tier=?"
            params.append(tier)
        if lead_ids:
            sql += f" AND lead_id IN ({','.join('?' for _ in lead_ids)})"
            params += lead_ids
        with self._tx():
            return self.db.execute(sql, params).rowcount

    # -- bookmarks -----------------------------------------------------------------------------------
    def bookmark(self, stream: str) -> tuple[datetime | None, str] | None:
        """Where ``stream`` (``unscored`` / ``changed``) stopped: (modified time or None, last id), or None."""
        r = self.db.execute("SELECT modified_at, lead_id FROM bookmarks WHERE crm=? AND stream=?", (self.crm, stream)).fetchone()
        if not r:
            return None
        return (datetime.fromisoformat(r[0]) if r[0] else None, r[1])

    def set_bookmark(self, stream: str, modified_at: datetime | None, lead_id: str) -> None:
        with self._tx():
            self.db.execute(
                """INSERT INTO bookmarks VALUES (?,?,?,?,?) ON CONFLICT (crm, stream) DO UPDATE
                   SET modified_at=excluded.modified_at, lead_id=excluded.lead_id, updated_at=excluded.updated_at""",
                (self.crm, stream, modified_at.isoformat() if modified_at else None, lead_id, _now()),
            )

    # -- labels ---------------------------------------------------------------------------------------
    def add_label(self, lead_id: str, source: str, outcome: str, inputs: dict[str, Any], decided_at: datetime | None) -> bool:
        """Store a label; returns True if it is new or changed."""
        with self._tx():
            cur = self.db.execute(
                """INSERT INTO labels VALUES (?,?,?,?,?,?,?)
                   ON CONFLICT (crm, lead_id, source) DO UPDATE SET outcome=excluded.outcome, inputs_json=excluded.inputs_json,
                       decided_at=excluded.decided_at, pulled_at=excluded.pulled_at
                   WHERE labels.outcome != excluded.outcome OR labels.inputs_json != excluded.inputs_json""",
                (
                    self.crm,
                    lead_id,
                    source,
                    outcome,
                    json.dumps(inputs, default=str, sort_keys=True),
                    decided_at.isoformat() if decided_at else None,
                    _now(),
                ),
            )
            return cur.rowcount > 0

    def labels(self) -> Iterator[dict[str, Any]]:
        for lead_id, source, outcome, inputs, decided_at in self.db.execute(
            "SELECT lead_id, source, outcome, inputs_json, decided_at FROM labels WHERE crm=? ORDER BY lead_id, source", (self.crm,)
        ):
            yield {"lead_id": lead_id, "source": source, "outcome": outcome, "inputs": json.loads(inputs), "decided_at": decided_at}

    # -- reporting ------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        counts = dict(self.db.execute("SELECT state, COUNT(*) FROM leads WHERE crm=? GROUP BY state", (self.crm,)).fetchall())
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        today = self.db.execute(
            "SELECT COALESCE(SUM(cost_usd),0), COUNT(*) FROM calls WHERE crm=? AND ts>=?", (self.crm, midnight)
        ).fetchone()
        total = self.db.execute("SELECT COALESCE(SUM(cost_usd),0), COUNT(*) FROM calls WHERE crm=?", (self.crm,)).fetchone()
        flagged = self.db.execute(
            "SELECT COUNT(*) FROM leads WHERE crm=? AND needs_review=1 AND state IN ('written','pending_write')", (self.crm,)
        ).fetchone()[0]
        parked = self.db.execute(
            "SELECT lead_id, last_error FROM leads WHERE crm=? AND state='parked' ORDER BY updated_at", (self.crm,)
        ).fetchall()
        tiers = dict(
            self.db.execute(
                "SELECT COALESCE(tier,'-'), COUNT(*) FROM leads WHERE crm=? AND state IN ('written','pending_write') GROUP BY tier",
                (self.crm,),
            ).fetchall()
        )
        return {
            "states": counts,
            "flagged": flagged,
            "tiers": tiers,
            "parked": parked,
            "cost_today": today[0],
            "calls_today": today[1],
            "cost_total": total[0],
            "calls_total": total[1],
        }

    def cost_today(self) -> float:
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        return float(
            self.db.execute("SELECT COALESCE(SUM(cost_usd),0) FROM calls WHERE crm=? AND ts>=?", (self.crm, midnight)).fetchone()[0]
        )

    def provider_failures(self) -> list[dict[str, Any]]:
        """Per provider that ever failed (unavailable or refused): when its last failure was recorded, the
        outcome, the cause (from that lead's stored hop, when the lead was not rescored since), and when it
        last answered. From the ``calls`` table, which keeps every hop's outcome; for `crmsync status`."""
        rows = self.db.execute(  # SQLite: the bare columns come from the row holding MAX(ts)
            "SELECT provider, MAX(ts), outcome, lead_id FROM calls WHERE crm=? AND outcome IN ('unavailable','rejected') "
            "GROUP BY provider ORDER BY provider",
            (self.crm,),
        ).fetchall()
        answered = dict(
            self.db.execute(
                "SELECT provider, MAX(ts) FROM calls WHERE crm=? AND outcome IN ('ok','repaired','invalid') GROUP BY provider", (self.crm,)
            ).fetchall()
        )
        out = []
        for provider, ts, outcome, lead_id in rows:
            stored = self.get(lead_id)
            hops = stored.result.hops if stored and stored.result else []
            cause = next((h.detail for h in reversed(hops) if h.provider == provider and h.outcome.value == outcome), "")
            out.append({"provider": provider, "at": ts, "outcome": outcome, "cause": cause, "last_answer": answered.get(provider)})
        return out
