"""The local CRM: a lead table in a SQLite file, seeded from a CSV. The embedded default for trying crmsync
and for scoring a CSV export before connecting the real CRM. It behaves like a small CRM: output fields are
columns, every write bumps ``modified_at``, and per-record validation rules can reject a write."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field

from crmsync import (
    Bookmark,
    ConfigError,
    Connector,
    ConnectorContext,
    ConnectorOptions,
    CrmLead,
    LabelRecord,
    Problem,
    RetriableConnectorError,
    ScoreUpdate,
    WriteOutcome,
)
from crmsync.support import harvest_label

PAGE = 500  # rows per read and per write transaction
_IDENT_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The seed CSV's rows, each with the line it ends on. An unreadable or non-UTF-8 file is a ConfigError naming
    the file and the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"local CRM: cannot read seed CSV {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"local CRM: seed CSV {path} line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}). Save it as UTF-8 "
            f"(in Excel: File > Save As > 'CSV UTF-8'), or convert it, e.g. `iconv -f cp1252 -t utf-8 {path.name} > "
            f"{path.stem}-utf8.csv`, and point seed_csv at the new file."
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        line = reader.reader.line_num  # DictReader's own line_num stops at the last good row
        raise ConfigError(f"local CRM: seed CSV {path} line {line}: {exc}. Fix the file, or export it again.") from None


def bundled_sample_leads() -> Path:
    return Path(str(resources.files("crmsync.defaults").joinpath("sample_leads.csv")))


class SQLiteOptions(ConnectorOptions):
    path: str = Field("local-crm.sqlite", description="the SQLite file; relative to [daemon] state_dir")
    seed_csv: str | None = Field("bundled", description='CSV to load when the table is empty; "bundled" = sample leads; "" = none')
    table: str = "leads"
    converted_column: str = Field("converted", description="1 = the lead converted (a label for eval)")
    disqualified_column: str = Field("disqualified", description="1 = the lead was disqualified, lost (a label for eval)")


def _ident(name: str) -> str:
    if not name or not set(name) <= _IDENT_OK:
        raise ConfigError(f"local CRM: {name!r} is not a valid column name (letters, digits, underscore).")
    return f'"{name}"'


def _now() -> str:
    return _stamp(datetime.now(UTC))


def _stamp(value: datetime) -> str:
    """The one text form of a time in this table, so text order is time order."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


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
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return value


class SQLiteConnector(Connector):
    Options = SQLiteOptions
    options: SQLiteOptions
    write_batch = PAGE
    read_batch = PAGE

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
        """Tables, columns and the seed import in one transaction: a kill at any point leaves all of it or none,
        and an empty table is seeded again at the next start."""
        with self._transaction():
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (id TEXT PRIMARY KEY, created_at TEXT, modified_at TEXT, "
                f"{_ident(self.options.converted_column)} INTEGER NOT NULL DEFAULT 0)"
            )
            self.db.execute("CREATE TABLE IF NOT EXISTS crm_validation_rules (lead_id TEXT PRIMARY KEY, message TEXT NOT NULL)")
            # crmsync's own columns only: an input column comes from the CRM's data (the CSV), so a mapping that
            # names a missing one is reported by check() instead of hidden behind an empty new column.
            wanted = {v for v in self.fields.outputs.model_dump().values() if v}
            if self.fields.review_decision:
                wanted.add(self.fields.review_decision)
            for col in sorted(wanted - self._columns()):
                self.db.execute(f"ALTER TABLE {self.table} ADD COLUMN {_ident(col)}")
            if self.options.disqualified_column not in self._columns():  # a CRM file made before this column existed
                self.db.execute(
                    f"ALTER TABLE {self.table} ADD COLUMN {_ident(self.options.disqualified_column)} INTEGER NOT NULL DEFAULT 0"
                )
            seed = self.options.seed_csv
            empty = self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0] == 0
            if seed and empty:
                self.import_csv(bundled_sample_leads() if seed == "bundled" else self.context.base_dir / seed)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (this connection autocommits otherwise); joins the caller's if one is open."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def import_csv(self, path: Path) -> int:
        """Load leads from a CSV export (columns = CRM fields; an ``id`` column is used when present): all rows in
        one transaction, or none."""
        rows = _read_csv(path)
        with self._transaction():
            if rows:
                for col in sorted(set(rows[0][1]) - self._columns()):
                    self.db.execute(f"ALTER TABLE {self.table} ADD COLUMN {_ident(col)}")
            n = self.db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]
            for i, (line, row) in enumerate(rows):
                values = {k: _typed(v or "") for k, v in row.items() if k}
                values["id"] = str(values["id"]) if values.get("id") is not None else f"L{n + i + 1:05d}"
                stamp = _now()
                if values.get("created_at") is None:
                    values["created_at"] = stamp
                values["modified_at"] = stamp
                try:
                    self.add(values)
                except sqlite3.IntegrityError:
                    raise ConfigError(
                        f"local CRM: seed CSV {path} line {line}: id {values['id']!r} is there twice (or already "
                        f"in the table). Give each lead its own id; nothing was imported."
                    ) from None
        return len(rows)

    def add(self, values: dict[str, Any]) -> str:
        cols = ", ".join(_ident(k) for k in values)
        marks = ", ".join("?" for _ in values)
        self.db.execute(f"INSERT INTO {self.table} ({cols}) VALUES ({marks})", [_to_sql(v) for v in values.values()])
        return str(values["id"])

    # -- the contract -------------------------------------------------------------------------------
    def _page(self, where: str, params: list[Any], order: str, limit: int) -> list[sqlite3.Row]:
        conv = _ident(self.options.converted_column)
        return self.db.execute(
            f"SELECT * FROM {self.table} WHERE ({where}) AND COALESCE({conv}, 0) = 0 ORDER BY {order} LIMIT ?", [*params, limit]
        ).fetchall()

    def fetch_unscored(self, after_id: str | None, limit: int) -> Iterator[CrmLead]:
        where = f"{_ident(self.fields.outputs.score)} IS NULL"
        if self.fields.review_decision:
            decision = _ident(self.fields.review_decision)
            where += f" AND ({decision} IS NULL OR {decision} = '')"
        last, left = after_id or "", limit
        while left > 0:  # pages, as a real CRM serves them: no cursor stays open across writes
            rows = self._page(f"{where} AND id > ?", [last], "id", min(PAGE, left))
            for row in rows:
                yield self._lead(row)
            if len(rows) < min(PAGE, left):
                return
            last, left = rows[-1]["id"], left - len(rows)

    def fetch_changed(self, after: Bookmark, until: datetime, limit: int) -> Iterator[CrmLead]:
        at, last, left = _stamp(after.modified_at), after.lead_id, limit
        end = _stamp(until)
        while left > 0:
            rows = self._page(
                "(modified_at > ? OR (modified_at = ? AND id > ?)) AND modified_at <= ?",
                [at, at, last, end],
                "modified_at, id",
                min(PAGE, left),
            )
            for row in rows:
                yield self._lead(row)
            if len(rows) < min(PAGE, left):
                return
            at, last, left = rows[-1]["modified_at"], rows[-1]["id"], left - len(rows)

    def fetch_ids(self, ids: Sequence[str]) -> Iterator[CrmLead]:
        for i in range(0, len(ids), PAGE):
            chunk = list(ids[i : i + PAGE])
            marks = ",".join("?" for _ in chunk)
            yield from (self._lead(r) for r in self._page(f"id IN ({marks})", chunk, "id", len(chunk)))

    def read_decisions(self, ids: Sequence[str]) -> dict[str, str | None]:
        return {lead.id: lead.review_decision for lead in self.fetch_ids(ids)}

    def _lead(self, row: sqlite3.Row) -> CrmLead:
        decision = row[self.fields.review_decision] if self.fields.review_decision else None
        hash_col = self.fields.outputs.input_hash
        modified = row["modified_at"]
        return CrmLead(
            id=row["id"],
            inputs=self._inputs(row),
            has_score=row[self.fields.outputs.score] is not None,
            input_hash=(row[hash_col] or None) if hash_col else None,
            review_decision=str(decision) if decision not in (None, "") else None,
            modified_at=datetime.fromisoformat(modified) if modified else None,
        )

    def _inputs(self, row: sqlite3.Row) -> dict[str, Any]:
        """The mapped inputs; a column the table lacks reads as empty (check() reports it)."""
        have = row.keys()
        return {name: row[col] if col in have else None for name, col in self.fields.inputs.items()}

    def write(self, updates: Sequence[ScoreUpdate]) -> list[WriteOutcome]:
        """One transaction per call. The update is conditional on an empty review decision, so a reviewer who
        decided a moment ago always wins (reported as ``human``)."""
        rules = dict(self.db.execute("SELECT lead_id, message FROM crm_validation_rules").fetchall())
        undecided = ""
        if self.fields.review_decision:
            decision = _ident(self.fields.review_decision)
            undecided = f" AND ({decision} IS NULL OR {decision} = '')"
        out: list[WriteOutcome] = []
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # another program holds the file's write lock past busy_timeout
            raise RetriableConnectorError(f"local CRM {self.path} is busy ({exc}): another program is writing to it") from None
        try:
            for up in updates:
                if up.lead_id in rules:
                    out.append(WriteOutcome(lead_id=up.lead_id, ok=False, error=f"FIELD_CUSTOM_VALIDATION_EXCEPTION: {rules[up.lead_id]}"))
                    continue
                sets = ", ".join(f"{_ident(k)} = ?" for k in up.values)
                cur = self.db.execute(
                    f"UPDATE {self.table} SET {sets}, modified_at = ? WHERE id = ?{undecided}",
                    [*(_to_sql(v) for v in up.values.values()), _now(), up.lead_id],
                )
                if cur.rowcount:
                    out.append(WriteOutcome(lead_id=up.lead_id, ok=True))
                elif self.db.execute(f"SELECT 1 FROM {self.table} WHERE id = ?", (up.lead_id,)).fetchone():
                    out.append(WriteOutcome(lead_id=up.lead_id, ok=False, human=True, error="a reviewer decided: not written"))
                else:
                    out.append(WriteOutcome(lead_id=up.lead_id, ok=False, error="ENTITY_IS_DELETED: no lead with this id"))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return out

    def check(self) -> list[Problem]:
        problems = []
        cols = self._columns()
        for name, col in self.fields.inputs.items():
            if col not in cols:
                problems.append(
                    Problem(
                        where=f"fields.inputs.{name}",
                        message=f"column {col!r} is not in the local CRM table",
                        fix="add the column to your CSV, or fix the mapping",
                    )
                )
        return problems

    def create_fields(self) -> list[str]:
        before = self._columns()
        self._ensure_schema()
        return sorted(self._columns() - before)

    def fetch_labels(self) -> Iterator[LabelRecord]:
        decision = self.fields.review_decision
        conv, lost = self.options.converted_column, self.options.disqualified_column
        for row in self.db.execute(f"SELECT * FROM {self.table}"):
            stamp = row["modified_at"]
            label = harvest_label(
                row["id"],
                self._inputs(row),
                decision=row[decision] if decision else None,
                converted=bool(row[conv]),
                disqualified=bool(row[lost]),
                modified_at=datetime.fromisoformat(stamp) if stamp else None,
            )
            if label is not None:
                yield label

    def close(self) -> None:
        self.db.close()
