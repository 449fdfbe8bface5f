"""The ledger: what crmsync knows about each lead, in one embedded SQLite file. The only module that
imports ``sqlite3`` for crmsync's own state.

A score is stored before it is written to the CRM, so a crash never costs a second LLM call: the next run
writes what was scored but not written. A lead is rescored only when its mapped inputs change (by
fingerprint) or an admin asks; never because crmsync's own write bumped its modified time.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from .masking import redact  # every stored string passes it: no secret value lands in the ledger
from .errors import CrmsyncError, LedgerError
from .faults import RESTORE, damaged, detail, empty, fault, size
from .models import ScoreResult


class LeadState(str, Enum):
    pending_write = "pending_write"  # scored, stored, not yet in the CRM
    written = "written"
    parked = "parked"  # the CRM kept rejecting the write: a person must look (reason stored)
    failed = "failed"  # every provider was down: no score, retried next cycle
    rescore = "rescore"  # an admin asked for a fresh score
    human = "human"  # a reviewer decided: crmsync never overwrites this lead
    external = "external"  # scored by someone else (another tool, a lost ledger): left alone unless its inputs change


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
    # 2: one bookmark per fetch stream (unscored: an id keyset; changed: modified time + id). Replaces cursors.
    """
        CREATE TABLE bookmarks (
            crm TEXT NOT NULL, stream TEXT NOT NULL, modified_at TEXT, lead_id TEXT NOT NULL DEFAULT '',
            updated_at TEXT NOT NULL, PRIMARY KEY (crm, stream));
        INSERT INTO bookmarks (crm, stream, modified_at, lead_id, updated_at)
            SELECT crm, 'changed', since, '', since FROM cursors WHERE since IS NOT NULL;
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


# -- opening and probing (messages: crmsync/faults.py). The file is never replaced or "repaired" here: a ledger
# crmsync cannot trust is a person's decision.
PROBE_BYTES = 64 * 1024  # the probe commits this much: a disk that cannot take it cannot take a cycle's results
MIN_FREE_BYTES = 8 * 1024 * 1024  # below this on the ledger's disk, refuse to start paying for scores


def _check_intact(db: sqlite3.Connection, path: Path) -> None:
    """A cut-short or damaged file is refused at open, not discovered halfway through a paid cycle."""
    page = db.execute("PRAGMA page_size").fetchone()[0]
    nbytes = path.stat().st_size
    if nbytes % page:
        raise damaged(path, f"is cut short ({nbytes} bytes is not a whole number of {page}-byte pages)")
    verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if verdict != "ok":
        raise damaged(path, f"is damaged (integrity check: {verdict})")


class Ledger:
    """One crm's view of the ledger file. Thread-safe: scoring threads record results as they finish."""

    def __init__(self, path: Path, crm: str) -> None:
        """Open the ledger; a missing file is a fresh start. Raises LedgerError (the file left as is) when it is
        empty, damaged, not a database, or cannot be opened."""
        self.path = path
        self.crm = crm
        self._lock = threading.Lock()
        try:
            if not path.exists():
                self._create(path)
            elif path.stat().st_size == 0:  # never taken as new: that would rescore and repay every lead
                raise empty(path)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._inode = path.stat().st_ino
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a recorded score survives a power cut
            _check_intact(self.db, path)
            self._migrate()
        except BaseException as exc:
            if hasattr(self, "db"):
                with contextlib.suppress(sqlite3.Error):
                    self.db.close()  # leaves no -wal/-shm beside a file it refused
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise fault(path, exc) from None
            raise

    def _create(self, path: Path) -> None:
        """A new ledger is built under a temporary name and renamed when whole: a crash during the first start
        never leaves an empty or half-made file where the ledger belongs."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".new")
        tmp.unlink(missing_ok=True)  # left by a crash during an earlier first start: it never held a score
        self.db = sqlite3.connect(tmp, isolation_level=None)
        try:
            self._migrate()
        finally:
            self.db.close()
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut
        finally:
            os.close(fd)

    def probe_writable(self, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        """Raise LedgerError unless this cycle's results can be recorded. Call it before the first LLM call of a
        cycle: a read-only ledger, a full disk or a deleted file then costs nothing. It commits a real write of
        PROBE_BYTES to a scratch table (not ledger data, so not a migration)."""
        try:
            if not self.path.exists() or self.path.stat().st_ino != self._inode:
                raise LedgerError(
                    f"the ledger {self.path} was deleted or replaced while crmsync was running: results would go to a "
                    f"file no one can see. Fix: stop crmsync; {RESTORE}; then start it again."
                )
            free = shutil.disk_usage(self.path.parent).free
            if free < min_free_bytes:
                raise fault(self.path, OSError(errno.ENOSPC, f"only {size(free)} free, below the {size(min_free_bytes)} crmsync keeps in reserve"))
            with self._lock:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    self.db.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL, pad BLOB NOT NULL)")
                    self.db.execute("INSERT OR REPLACE INTO probe VALUES (1, ?, zeroblob(?))", (_now(), PROBE_BYTES))
                    self.db.execute("COMMIT")
                except BaseException:
                    if self.db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self.db.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError) as exc:
            raise fault(self.path, exc) from None

    def fault(self, exc: BaseException) -> LedgerError:
        """The one clear message for a sqlite3/OS error met while using this ledger (for callers outside state.py)."""
        return fault(self.path, exc)

    def backup(self, dest: Path) -> int:
        """Copy the ledger with SQLite's online backup (consistent while crmsync runs); returns the bytes written.
        Written under a temporary name and renamed when checked: a half-written backup never has the real name."""
        if dest.exists():
            raise CrmsyncError(f"{dest} already exists: a backup never overwrites a file. Fix: choose a new name.")
        tmp = dest.with_name(dest.name + ".partial")
        try:
            target = sqlite3.connect(tmp)
            try:
                self.db.backup(target)
                verdict = target.execute("PRAGMA quick_check(1)").fetchone()[0]
            finally:
                target.close()
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"the copy failed its integrity check: {verdict}")
            os.replace(tmp, dest)
        except (sqlite3.Error, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise CrmsyncError(
                f"cannot write the backup {dest} ({detail(exc)}). Fix: choose a directory this user can write, on a disk "
                f"with space. The ledger {self.path} was not changed."
            ) from None
        return dest.stat().st_size

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
            f"SELECT lead_id, state, fingerprint, rubric_version, result_json, write_attempts, last_error FROM leads WHERE crm=? AND state IN ({marks}) ORDER BY updated_at",
            (self.crm, *[s.value for s in states]),
        ).fetchall()
        return [self._row(r) for r in rows]

    def ids_in_state(self, state: LeadState, limit: int | None = None) -> list[str]:
        """Lead ids in one state, oldest change first: no result is parsed (a backlog may hold thousands)."""
        sql = "SELECT lead_id FROM leads WHERE crm=? AND state=? ORDER BY updated_at" + (" LIMIT ?" if limit else "")
        return [r[0] for r in self.db.execute(sql, (self.crm, state.value, *([limit] if limit else [])))]

    # -- writes (each one commits: a kill between two of them loses nothing) -------------------------
    def record_result(self, lead_id: str, fp: str, result: ScoreResult) -> None:
        self.record_results([(lead_id, fp, result)])

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
            leads.append((
                self.crm, lead_id, fp, result.rubric_version, state.value, redact(result.model_dump_json()), result.score,
                result.tier, result.confidence, int(result.needs_review), result.cost_usd,
                redact("; ".join(h.detail for h in result.hops if h.detail))[:1000] if state == LeadState.failed else None,
                result.scored_at.isoformat(), now,
            ))
            calls += [
                (now, self.crm, lead_id, h.provider, h.model, h.outcome.value, h.usage.input_tokens, h.usage.cached_input_tokens,
                 h.usage.cache_write_tokens, h.usage.output_tokens, h.cost_usd)
                for h in result.hops if h.attempts
            ]
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

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """Every change to the ledger goes through here: one transaction (one fsync) for many statements, since a
        per-row autocommit costs milliseconds each; and a disk or file fault becomes one clear LedgerError."""
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                raise self.fault(exc) from None

    def mark_written(self, lead_ids: Iterable[str]) -> None:
        now = _now()
        with self._tx():
            self.db.executemany(
                "UPDATE leads SET state='written', written_at=?, updated_at=?, last_error=NULL WHERE crm=? AND lead_id=? AND state='pending_write'",
                [(now, now, self.crm, i) for i in lead_ids],
            )

    def mark_write_failed(self, lead_id: str, error: str, max_attempts: int) -> LeadState:
        """Count a rejected write; park the lead once it has failed ``max_attempts`` times."""
        with self._tx():
            r = self.db.execute("SELECT write_attempts FROM leads WHERE crm=? AND lead_id=?", (self.crm, lead_id)).fetchone()
            attempts = (r[0] if r else 0) + 1
            state = LeadState.parked if attempts >= max_attempts else LeadState.pending_write
            self.db.execute(
                "UPDATE leads SET write_attempts=?, last_error=?, state=?, updated_at=? WHERE crm=? AND lead_id=?",
                (attempts, redact(error)[:1000], state.value, _now(), self.crm, lead_id),
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

    def request_rescore(self, *, rubric_version: str | None = None, tier: str | None = None, lead_ids: list[str] | None = None,
                        include_parked: bool = False) -> int:
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

    def provider_failures(self) -> list[dict[str, Any]]:
        """Per provider that ever failed (unavailable or refused): when its last failure was recorded, the
        outcome, the cause (from that lead's stored hop, when the lead was not rescored since), and when it
        last answered. From the ``calls`` table, which keeps every hop's outcome; for `crmsync status`."""
        rows = self.db.execute(  # SQLite: the bare columns come from the row holding MAX(ts)
            "SELECT provider, MAX(ts), outcome, lead_id FROM calls WHERE crm=? AND outcome IN ('unavailable','rejected') "
            "GROUP BY provider ORDER BY provider", (self.crm,)).fetchall()
        answered = dict(self.db.execute(
            "SELECT provider, MAX(ts) FROM calls WHERE crm=? AND outcome IN ('ok','repaired','invalid') GROUP BY provider",
            (self.crm,)).fetchall())
        out = []
        for provider, ts, outcome, lead_id in rows:
            stored = self.get(lead_id)
            hops = stored.result.hops if stored and stored.result else []
            cause = next((h.detail for h in reversed(hops) if h.provider == provider and h.outcome.value == outcome), "")
            out.append({"provider": provider, "at": ts, "outcome": outcome, "cause": cause, "last_answer": answered.get(provider)})
        return out


