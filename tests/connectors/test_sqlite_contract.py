"""The local SQLite CRM runs the same contract suite as every other connector."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crmsync.config import FieldsConfig
from crmsync.connector import ConnectorContext
from crmsync.testing import ConnectorContract
from crmsync_sqlite import SQLiteConnector, SQLiteOptions


class SQLiteBackend:
    system_fields = frozenset({"modified_at"})
    missing_field = "contract_missing"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.fields = FieldsConfig(
            inputs={"company": "company", "title": "title", "monthly_orders": "monthly_orders", "description": "description"}
        )
        self.built: list[SQLiteConnector] = []
        self.admin = self.connector()
        have = {r[1] for r in self.admin.db.execute("PRAGMA table_info(leads)")}
        for col in set(self.fields.inputs.values()) - have:  # the CRM's own columns (a seed CSV's header brings them)
            self.admin.db.execute(f'ALTER TABLE leads ADD COLUMN "{col}"')
        self.n = 0

    def connector(self, fields: FieldsConfig | None = None) -> SQLiteConnector:
        ctx = ConnectorContext(fields=fields or self.fields, base_dir=self.tmp, state_dir=self.tmp)
        self.built.append(SQLiteConnector(SQLiteOptions(seed_csv=""), ctx))
        return self.built[-1]

    def add_lead(self, inputs: dict[str, Any]) -> str:
        self.n += 1
        stamp = datetime.now(UTC).isoformat(timespec="microseconds")  # a CRM stamps a new record as modified
        return self.admin.add({"id": f"T{self.n:04d}", "created_at": stamp, "modified_at": stamp, **inputs})

    def raw_record(self, lead_id: str) -> dict[str, Any]:
        return dict(self.admin.db.execute("SELECT * FROM leads WHERE id = ?", [lead_id]).fetchone())

    def _set(self, lead_id: str, col: str, value: Any) -> None:
        self.admin.db.execute(
            f'UPDATE leads SET "{col}" = ?, modified_at = ? WHERE id = ?',
            [value, datetime.now(UTC).isoformat(timespec="microseconds"), lead_id],
        )

    def get_output(self, lead_id: str, output: str) -> Any:
        col = getattr(self.fields.outputs, output)
        v = self.admin.db.execute(f'SELECT "{col}" FROM leads WHERE id = ?', [lead_id]).fetchone()[0]
        return bool(v) if output == "needs_review" and v is not None else v

    def set_input(self, lead_id: str, name: str, value: Any) -> None:
        self._set(lead_id, self.fields.inputs[name], value)

    def set_review_decision(self, lead_id: str, value: str) -> None:
        assert self.fields.review_decision
        self._set(lead_id, self.fields.review_decision, value)

    def reject_writes(self, lead_id: str, message: str) -> None:
        self.admin.db.execute("INSERT INTO crm_validation_rules VALUES (?, ?)", [lead_id, message])

    def delete_lead(self, lead_id: str) -> None:
        self.admin.db.execute("DELETE FROM leads WHERE id = ?", [lead_id])

    def lock_lead(self, lead_id: str) -> Callable[[], None]:
        """SQLite locks the whole file, not a row: another program's write transaction. The connectors wait a
        short busy_timeout (not 5 s) so the test stays quick."""
        for conn in self.built[1:]:
            conn.db.execute("PRAGMA busy_timeout=50")
        self.admin.db.execute("BEGIN IMMEDIATE")

        def release() -> None:
            self.admin.db.execute("ROLLBACK")

        return release

    def mark_converted(self, lead_id: str) -> None:
        self._set(lead_id, "converted", 1)

    def mark_disqualified(self, lead_id: str) -> None:
        self._set(lead_id, "disqualified", 1)


class TestSQLiteContract(ConnectorContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> SQLiteBackend:
        return SQLiteBackend(tmp_path)
