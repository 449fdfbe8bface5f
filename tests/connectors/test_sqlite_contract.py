"""The local SQLite CRM runs the same contract suite as every other connector."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crmsync.config import FieldsConfig
from crmsync.connector import ConnectorContext
from crmsync.testing import ConnectorContract
from crmsync_sqlite import SQLiteConnector, SQLiteOptions


class SQLiteBackend:
    def __init__(self, tmp: Path) -> None:
        self.fields = FieldsConfig(inputs={"company": "company", "title": "title", "monthly_orders": "monthly_orders", "description": "description"})
        self.ctx = ConnectorContext(fields=self.fields, base_dir=tmp, state_dir=tmp)
        self.admin = self.connector()
        self.n = 0

    def connector(self) -> SQLiteConnector:
        return SQLiteConnector(SQLiteOptions(seed_csv=""), self.ctx)

    def add_lead(self, inputs: dict[str, Any]) -> str:
        self.n += 1
        return self.admin.add({"id": f"T{self.n:04d}", "created_at": f"2026-01-01T00:00:{self.n:02d}", **inputs})

    def _set(self, lead_id: str, col: str, value: Any) -> None:
        from datetime import datetime, timezone

        self.admin.db.execute(f'UPDATE leads SET "{col}" = ?, modified_at = ? WHERE id = ?', [value, datetime.now(timezone.utc).isoformat(timespec="microseconds"), lead_id])

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


class TestSQLiteContract(ConnectorContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> SQLiteBackend:
        return SQLiteBackend(tmp_path)
