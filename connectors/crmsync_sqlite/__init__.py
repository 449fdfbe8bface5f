"""The local CRM: a lead table in a SQLite file, seeded from a CSV. The embedded default for trying crmsync
and for scoring a CSV export before connecting the real CRM. It behaves like a small CRM: output fields are
columns, every write bumps ``modified_at``, and per-record validation rules can reject a write."""
from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field

from crmsync import ConfigError, Connector, ConnectorContext, ConnectorOptions, CrmLead, LabelRecord, Problem, ScoreUpdate, WriteOutcome

_IDENT_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def bundled_sample_leads() -> Path:
    return Path(str(resources.files("crmsync.defaults").joinpath("sample_leads.csv")))


class SQLiteOptions(ConnectorOptions):
    path: str = Field("local-crm.sqlite", description="the SQLite file; relative to [daemon] state_dir")
    seed_csv: str | None = Field("bundled", description='CSV to load when the table is empty; "bundled" = sample leads; "" = none')
    table: str = "leads"
    converted_column: str = Field("converted", description="1 = the lead converted (a label for eval)")


def _ident(name: str) -> str:
    if not name or not set(name) <= _IDENT_OK:
        raise ConfigError(f"local CRM: {name!r} is not a valid column name (letters, digits, underscore).")
    return f'"{name}"'


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _typed(value: str) -> Any:
    value = value.strip()
    if value == "":
        return None
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


def _to_sql(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return value


class SQLiteConnector(Connector):
    Options = SQLiteOptions
    options: SQLiteOptions

    def __init__(self, options: SQLiteOptions, context: ConnectorContext) -> None:
        super().__init__(options, context)
        p = Path(options.path).expanduser()
        self.path = p if p.is_absolute() else context.state_dir / p
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.table = _ident(options.table)
        self._ensure_schema()

    # -- schema -------------------------------------------------------------------------------------
    def _columns(self) -> set[str]:
        return {r["name"] for r in self.db.execute(f"PRAGMA table_info({self.table})")}

    def _ensure_schema(self) -> None:
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (id TEXT PRIMARY KEY, created_at TEXT, modified_at TEXT, "
            f"{_ident(self.options.converted_column)} INTEGER NOT NULL DEFAULT 0)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS crm_validation_rules (lead_id TEXT PRIMARY KEY, message TEXT NOT NULL)")
        wanted = set(self.fields.inputs.values()) | {v for v in self.fields.outputs.model_dump().values() if v}
        if self.fields.review_decision:
            wanted.add(self.fields.review_decision)
        for col in sorted(wanted - self._columns()):
            self.db.execute(f"ALTER TABLE {self.table} ADD COLUMN {_ident(col)}")
        seed = self.options.seed_csv
        empty = self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0] == 0
        if seed and empty:
            self.import_csv(bundled_sample_leads() if seed == "bundled" else self.context.base_dir / seed)

    def import_csv(self, path: Path) -> int:
        """Load leads from a CSV export (columns = CRM fields; an ``id`` column is used when present)."""
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise ConfigError(f"local CRM: cannot read seed CSV {path}: {exc.strerror}") from None
        if rows:
            for col in sorted(set(rows[0]) - self._columns()):
                self.db.execute(f"ALTER TABLE {self.table} ADD COLUMN {_ident(col)}")
        n = self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]
        with self.db:
            for i, row in enumerate(rows):
                values = {k: _typed(v or "") for k, v in row.items() if k}
                values.setdefault("id", f"L{n + i + 1:05d}")
                values["id"] = str(values["id"])
                stamp = _now()
                values.setdefault("created_at", stamp)
                values["modified_at"] = stamp
                self.add(values)
        return len(rows)

    def add(self, values: dict[str, Any]) -> str:
        cols = ", ".join(_ident(k) for k in values)
        marks = ", ".join("?" for _ in values)
        self.db.execute(f"INSERT INTO {self.table} ({cols}) VALUES ({marks})", [_to_sql(v) for v in values.values()])
        return str(values["id"])

    # -- the contract -------------------------------------------------------------------------------
    def fetch(self, since: datetime | None, limit: int) -> Iterator[CrmLead]:
        score = _ident(self.fields.outputs.score)
        where = f"{score} IS NULL"
        params: list[Any] = []
        if since is not None:
            where += " OR modified_at > ?"
            params.append(since.astimezone(timezone.utc).isoformat(timespec="microseconds"))
        conv = _ident(self.options.converted_column)
        rows = self.db.execute(
            f"SELECT * FROM {self.table} WHERE ({where}) AND COALESCE({conv}, 0) = 0 ORDER BY created_at, id LIMIT ?",
            [*params, limit],
        ).fetchall()
        for row in rows:
            yield self._lead(row)

    def _lead(self, row: sqlite3.Row) -> CrmLead:
        decision = row[self.fields.review_decision] if self.fields.review_decision else None
        modified = row["modified_at"]
        return CrmLead(
            id=row["id"],
            inputs={name: row[col] for name, col in self.fields.inputs.items()},
            has_score=row[self.fields.outputs.score] is not None,
            review_decision=str(decision) if decision not in (None, "") else None,
            modified_at=datetime.fromisoformat(modified) if modified else None,
        )

    def write(self, updates: Sequence[ScoreUpdate]) -> list[WriteOutcome]:
        rules = dict(self.db.execute("SELECT lead_id, message FROM crm_validation_rules").fetchall())
        out: list[WriteOutcome] = []
        for up in updates:
            if up.lead_id in rules:
                out.append(WriteOutcome(lead_id=up.lead_id, ok=False, error=f"FIELD_CUSTOM_VALIDATION_EXCEPTION: {rules[up.lead_id]}"))
                continue
            sets = ", ".join(f"{_ident(k)} = ?" for k in up.values)
            cur = self.db.execute(
                f"UPDATE {self.table} SET {sets}, modified_at = ? WHERE id = ?",
                [*(_to_sql(v) for v in up.values.values()), _now(), up.lead_id],
            )
            if cur.rowcount == 0:
                out.append(WriteOutcome(lead_id=up.lead_id, ok=False, error="ENTITY_IS_DELETED: no lead with this id"))
            else:
                out.append(WriteOutcome(lead_id=up.lead_id, ok=True))
        return out

    def check(self) -> list[Problem]:
        problems = []
        cols = self._columns()
        for name, col in self.fields.inputs.items():
            if col not in cols:
                problems.append(Problem(where=f"fields.inputs.{name}", message=f"column {col!r} is not in the local CRM table", fix="add the column to your CSV, or fix the mapping"))
        return problems

    def create_fields(self) -> list[str]:
        before = self._columns()
        self._ensure_schema()
        return sorted(self._columns() - before)

    def fetch_labels(self) -> Iterator[LabelRecord]:
        decision = self.fields.review_decision
        conv = self.options.converted_column
        for row in self.db.execute(f"SELECT * FROM {self.table}"):
            inputs = {name: row[col] for name, col in self.fields.inputs.items()}
            value = (row[decision] or "").strip().lower() if decision else ""
            if value in ("qualified", "unqualified"):
                yield LabelRecord(row["id"], inputs, value, "review", datetime.fromisoformat(row["modified_at"]))  # type: ignore[arg-type]
            elif row[conv]:
                yield LabelRecord(row["id"], inputs, "qualified", "conversion", datetime.fromisoformat(row["modified_at"]))

    def close(self) -> None:
        self.db.close()
