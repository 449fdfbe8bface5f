"""The ledger's schema: lead states, the input fingerprint and the numbered migrations."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from .models import ScoreResult


class LeadState(str, Enum):
    pending_write = "pending_write"  # scored, stored, not yet in the CRM
    written = "written"
    parked = "parked"  # the CRM kept rejecting the write: a person must look (reason stored)
    failed = "failed"  # every provider was down: no score, retried next cycle
    rescore = "rescore"  # an admin asked for a fresh score
    human = "human"  # a reviewer decided: crmsync never overwrites this lead
    external = "external"  # scored by someone else (another tool, a lost ledger): left alone unless its inputs change
    batched = "batched"  # sent to a provider's batch API; its result is applied by crmsync/batching.py, never re-sent


def fingerprint(inputs: dict[str, Any]) -> str:
    """A stable hash of the mapped inputs (and only them)."""
    canon = json.dumps({k: ("" if v is None else str(v)) for k, v in sorted(inputs.items())}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:20]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


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
    # 3: provider batch APIs (issue 14; queries in crmsync/batch_store.py). A batch row is written, state
    # 'submitting', BEFORE the provider is called; 'submitted' once its id is known. One row per request, keyed by
    # its custom_id, with the lead and the input fingerprint it was made from.
    """
        CREATE TABLE batches (
            crm TEXT NOT NULL, local_id TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, step INTEGER NOT NULL,
            batch_id TEXT, state TEXT NOT NULL, rubric_version TEXT NOT NULL, requests INTEGER NOT NULL,
            provider_status TEXT, counts_json TEXT, cost_usd REAL NOT NULL DEFAULT 0, saved_usd REAL NOT NULL DEFAULT 0,
            error TEXT, created_at TEXT NOT NULL, submitted_at TEXT, polled_at TEXT, ended_at TEXT,
            PRIMARY KEY (crm, local_id));
        CREATE INDEX batches_state ON batches (crm, state);
        CREATE TABLE batch_requests (
            crm TEXT NOT NULL, custom_id TEXT NOT NULL, local_id TEXT NOT NULL, lead_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL, prior_json TEXT, state TEXT NOT NULL, updated_at TEXT NOT NULL,
            PRIMARY KEY (crm, custom_id));
        CREATE INDEX batch_requests_batch ON batch_requests (crm, local_id, state);
        CREATE INDEX batch_requests_lead ON batch_requests (crm, lead_id, state);
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
