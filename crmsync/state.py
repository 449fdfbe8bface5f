"""The ledger: what crmsync knows about each lead, in one embedded SQLite file. The only module that
imports ``sqlite3`` for crmsync's own state.

A score is stored before it is written to the CRM, so a crash never costs a second LLM call: the next run
writes what was scored but not written. A lead is rescored only when its mapped inputs change (by
fingerprint) or an admin asks; never because crmsync's own write bumped its modified time.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from .models import ScoreResult


class LeadState(str, Enum):
    pending_write = "pending_write"  # scored, stored, not yet in the CRM
    written = "written"
    parked = "parked"  # the CRM kept rejecting the write: a person must look (reason stored)
    failed = "failed"  # every provider was down: no score, retried next cycle
    rescore = "rescore"  # an admin asked for a fresh score
    human = "human"  # a reviewer decided: crmsync never overwrites this lead


def fingerprint(inputs: dict[str, Any]) -> str:
    """A stable hash of the mapped inputs (and only them)."""
    canon = json.dumps({k: ("" if v is None else str(v)) for k, v in sorted(inputs.items())}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:20]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


# Numbered migrations: append, never edit. Each runs once, in order, in one transaction.
MIGRATIONS: list[str] = [
    # 1: initial schema
    """
        CREATE TABLE leads (
            crm TEXT NOT NULL, lead_id TEXT NOT NULL,
            fingerprint TEXT, rubric_version TEXT, state TEXT NOT NULL,
            result_json TEXT, score INTEGER, tier TEXT, confidence REAL, needs_review INTEGER,
            cost_usd REAL NOT NULL DEFAULT 0,
            write_attempts INTEGER NOT NULL DEFAULT 0, score_attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT, scored_at TEXT, written_at TEXT, updated_at TEXT NOT NULL,
            PRIMARY KEY (crm, lead_id));
        CREATE INDEX leads_state ON leads (crm, state);
        CREATE TABLE calls (
            ts TEXT NOT NULL, crm TEXT NOT NULL, lead_id TEXT NOT NULL, provider TEXT, model TEXT, outcome TEXT,
            input_tokens INTEGER, cached_input_tokens INTEGER, cache_write_tokens INTEGER, output_tokens INTEGER,
            cost_usd REAL NOT NULL DEFAULT 0);
        CREATE INDEX calls_ts ON calls (ts);
        CREATE TABLE cursors (crm TEXT PRIMARY KEY, since TEXT);
        CREATE TABLE labels (
            crm TEXT NOT NULL, lead_id TEXT NOT NULL, source TEXT NOT NULL, outcome TEXT NOT NULL,
            inputs_json TEXT NOT NULL, decided_at TEXT, pulled_at TEXT NOT NULL,
            PRIMARY KEY (crm, lead_id, source));
    """,
]


@dataclass(frozen=True)
class LedgerRow:
    lead_id: str
    state: LeadState
    fingerprint: str | None
    rubric_version: str | None
    result: ScoreResult | None
    write_attempts: int
    last_error: str | None


class Ledger:
    """One crm's view of the ledger file. Thread-safe: scoring threads record results as they finish."""

    def __init__(self, path: Path, crm: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.crm = crm
        self._lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a recorded score survives a power cut
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for n, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                self.db.executescript(f"BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {n}; COMMIT;")

    def close(self) -> None:
        self.db.close()

    # -- reads --------------------------------------------------------------------------------------
    def get(self, lead_id: str) -> LedgerRow | None:
        r = self.db.execute(
            "SELECT lead_id, state, fingerprint, rubric_version, result_json, write_attempts, last_error FROM leads WHERE crm=? AND lead_id=?",
            (self.crm, lead_id),
        ).fetchone()
        return self._row(r) if r else None

    @staticmethod
    def _row(r: tuple[Any, ...]) -> LedgerRow:
        return LedgerRow(r[0], LeadState(r[1]), r[2], r[3], ScoreResult.model_validate_json(r[4]) if r[4] else None, r[5], r[6])

    def in_state(self, *states: LeadState) -> list[LedgerRow]:
        marks = ",".join("?" for _ in states)
        rows = self.db.execute(
            f"SELECT lead_id, state, fingerprint, rubric_version, result_json, write_attempts, last_error FROM leads WHERE crm=? AND state IN ({marks}) ORDER BY updated_at",
            (self.crm, *[s.value for s in states]),
        ).fetchall()
        return [self._row(r) for r in rows]

    # -- writes (each one commits: a kill between two of them loses nothing) -------------------------
    def record_result(self, lead_id: str, fp: str, result: ScoreResult, crm_lead_id: str | None = None) -> None:
        """Store a result before anything is written to the CRM, with every hop's cost."""
        now = _now()
        state = LeadState.failed if result.status.value == "failed" else LeadState.pending_write
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                """INSERT INTO leads (crm, lead_id, fingerprint, rubric_version, state, result_json, score, tier, confidence,
                       needs_review, cost_usd, write_attempts, score_attempts, last_error, scored_at, updated_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,0,1,?,?,?)
                   ON CONFLICT (crm, lead_id) DO UPDATE SET fingerprint=excluded.fingerprint,
                       rubric_version=excluded.rubric_version, state=excluded.state, result_json=excluded.result_json,
                       score=excluded.score, tier=excluded.tier, confidence=excluded.confidence,
                       needs_review=excluded.needs_review, cost_usd=leads.cost_usd + excluded.cost_usd,
                       write_attempts=0, score_attempts=leads.score_attempts + 1, last_error=excluded.last_error,
                       scored_at=excluded.scored_at, updated_at=excluded.updated_at""",
                (
                    self.crm, lead_id, fp, result.rubric_version, state.value, result.model_dump_json(), result.score,
                    result.tier, result.confidence, int(result.needs_review), result.cost_usd,
                    "; ".join(h.detail for h in result.hops if h.detail)[:1000] if state == LeadState.failed else None,
                    result.scored_at.isoformat(), now,
                ),
            )
            self.db.executemany(
                "INSERT INTO calls VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (now, self.crm, lead_id, h.provider, h.model, h.outcome.value, h.usage.input_tokens, h.usage.cached_input_tokens,
                     h.usage.cache_write_tokens, h.usage.output_tokens, h.cost_usd)
                    for h in result.hops if h.attempts
                ],
            )
            self.db.execute("COMMIT")

    def mark_written(self, lead_ids: Iterable[str]) -> None:
        now = _now()
        with self._lock:
            self.db.executemany(
                "UPDATE leads SET state='written', written_at=?, updated_at=?, last_error=NULL WHERE crm=? AND lead_id=? AND state='pending_write'",
                [(now, now, self.crm, i) for i in lead_ids],
            )

    def mark_write_failed(self, lead_id: str, error: str, max_attempts: int) -> LeadState:
        """Count a rejected write; park the lead once it has failed ``max_attempts`` times."""
        with self._lock:
            r = self.db.execute("SELECT write_attempts FROM leads WHERE crm=? AND lead_id=?", (self.crm, lead_id)).fetchone()
            attempts = (r[0] if r else 0) + 1
            state = LeadState.parked if attempts >= max_attempts else LeadState.pending_write
            self.db.execute(
                "UPDATE leads SET write_attempts=?, last_error=?, state=?, updated_at=? WHERE crm=? AND lead_id=?",
                (attempts, error[:1000], state.value, _now(), self.crm, lead_id),
            )
            return state

    def mark_human(self, lead_id: str, fp: str) -> None:
        with self._lock:
            self.db.execute(
                """INSERT INTO leads (crm, lead_id, fingerprint, state, updated_at) VALUES (?,?,?,'human',?)
                   ON CONFLICT (crm, lead_id) DO UPDATE SET state='human', updated_at=excluded.updated_at""",
                (self.crm, lead_id, fp, _now()),
            )

    def request_rescore(self, *, rubric_version: str | None = None, tier: str | None = None, lead_ids: list[str] | None = None,
                        include_parked: bool = False) -> int:
        """Mark leads for a fresh score (after a rubric change). Human-resolved leads are never touched."""
        states = ["written", "pending_write"] + (["parked"] if include_parked else [])
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
        with self._lock:
            return self.db.execute(sql, params).rowcount

    # -- cursor --------------------------------------------------------------------------------------
    def cursor(self) -> datetime | None:
        r = self.db.execute("SELECT since FROM cursors WHERE crm=?", (self.crm,)).fetchone()
        return datetime.fromisoformat(r[0]) if r and r[0] else None

    def set_cursor(self, since: datetime) -> None:
        with self._lock:
            self.db.execute("INSERT INTO cursors VALUES (?,?) ON CONFLICT (crm) DO UPDATE SET since=excluded.since", (self.crm, since.isoformat()))

    # -- labels ---------------------------------------------------------------------------------------
    def add_label(self, lead_id: str, source: str, outcome: str, inputs: dict[str, Any], decided_at: datetime | None) -> bool:
        """Store a label; returns True if it is new or changed."""
        with self._lock:
            cur = self.db.execute(
                """INSERT INTO labels VALUES (?,?,?,?,?,?,?)
                   ON CONFLICT (crm, lead_id, source) DO UPDATE SET outcome=excluded.outcome, inputs_json=excluded.inputs_json,
                       decided_at=excluded.decided_at, pulled_at=excluded.pulled_at
                   WHERE labels.outcome != excluded.outcome OR labels.inputs_json != excluded.inputs_json""",
                (self.crm, lead_id, source, outcome, json.dumps(inputs, default=str, sort_keys=True),
                 decided_at.isoformat() if decided_at else None, _now()),
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
        midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        today = self.db.execute("SELECT COALESCE(SUM(cost_usd),0), COUNT(*) FROM calls WHERE crm=? AND ts>=?", (self.crm, midnight)).fetchone()
        total = self.db.execute("SELECT COALESCE(SUM(cost_usd),0), COUNT(*) FROM calls WHERE crm=?", (self.crm,)).fetchone()
        flagged = self.db.execute("SELECT COUNT(*) FROM leads WHERE crm=? AND needs_review=1 AND state IN ('written','pending_write')", (self.crm,)).fetchone()[0]
        parked = self.db.execute("SELECT lead_id, last_error FROM leads WHERE crm=? AND state='parked' ORDER BY updated_at", (self.crm,)).fetchall()
        tiers = dict(self.db.execute("SELECT COALESCE(tier,'-'), COUNT(*) FROM leads WHERE crm=? AND state IN ('written','pending_write') GROUP BY tier", (self.crm,)).fetchall())
        return {
            "states": counts, "flagged": flagged, "tiers": tiers, "parked": parked,
            "cost_today": today[0], "calls_today": today[1], "cost_total": total[0], "calls_total": total[1],
        }

    def cost_today(self) -> float:
        midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        return self.db.execute("SELECT COALESCE(SUM(cost_usd),0) FROM calls WHERE crm=? AND ts>=?", (self.crm, midnight)).fetchone()[0]


def cursor_with_lag(start: datetime, lag_s: float = 120.0) -> datetime:
    """The next cycle's ``since``: this cycle's start minus a lag, for clock skew and slow indexes."""
    return start - timedelta(seconds=lag_s)
