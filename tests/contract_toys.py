"""Toy in-memory connectors for tests/test_contract_catches.py: one that keeps the connector contract, and
subclasses that each break it in exactly one way. A contract suite that lets one of them pass is missing a test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crmsync.config import FieldsConfig
from crmsync.connector import Bookmark, Connector, ConnectorContext, ConnectorOptions, LabelRecord, ScoreUpdate
from crmsync.errors import FatalConnectorError
from crmsync.models import CrmLead, Problem, WriteOutcome

INPUTS = {"company": "company", "title": "title", "monthly_orders": "monthly_orders", "description": "description"}
DECISIONS = ("qualified", "unqualified")


class ToyCRM:
    """Records as dicts; every change stamps ``modified_at`` (a strictly increasing clock, like a real CRM's)."""

    def __init__(self, fields: FieldsConfig) -> None:
        outputs = {v for v in fields.outputs.model_dump().values() if v}
        self.schema = {"id", "modified_at", "owner", "status", "converted", "disqualified", *INPUTS.values(), *outputs}
        self.schema.add(fields.review_decision or "ai_review_decision")
        self.records: dict[str, dict[str, Any]] = {}
        self.rejected: dict[str, str] = {}
        self.locked: set[str] = set()
        self.clock = datetime(2026, 1, 1, tzinfo=UTC)

    def tick(self) -> datetime:
        self.clock = max(self.clock + timedelta(microseconds=1), datetime.now(UTC))
        return self.clock

    def add(self, values: dict[str, Any]) -> str:
        rid = f"L{len(self.records) + 1:04d}"
        rec: dict[str, Any] = dict.fromkeys(self.schema)
        rec.update(values, id=rid, owner="alice", status="Open", converted=False, disqualified=False, modified_at=self.tick())
        self.records[rid] = rec
        return rid

    def update(self, rid: str, values: dict[str, Any], stamp: bool = True) -> None:
        self.records[rid].update(values)
        if stamp:
            self.records[rid]["modified_at"] = self.tick()


class ToyConnector(Connector):
    """Keeps the whole contract."""

    def __init__(self, crm: ToyCRM, fields: FieldsConfig) -> None:
        super().__init__(ConnectorOptions(), ConnectorContext(fields=fields, base_dir=Path("."), state_dir=Path(".")))
        self.crm = crm

    def _lead(self, rec: dict[str, Any]) -> CrmLead:
        decision = rec.get(self.fields.review_decision or "")
        return CrmLead(
            id=rec["id"],
            inputs={n: rec.get(c) for n, c in self.fields.inputs.items()},
            has_score=rec.get(self.fields.outputs.score) is not None,
            review_decision=decision or None,
            modified_at=rec["modified_at"],
        )

    def _open(self) -> list[dict[str, Any]]:
        return [r for r in self.crm.records.values() if not r["converted"]]

    def _unscored(self, after_id: str | None) -> list[dict[str, Any]]:
        decision = self.fields.review_decision or ""
        return [
            r
            for r in self._open()
            if r.get(self.fields.outputs.score) is None and not r.get(decision) and (after_id is None or r["id"] > after_id)
        ]

    def fetch_unscored(self, after_id: str | None, limit: int) -> Iterator[CrmLead]:
        rows = sorted(self._unscored(after_id), key=lambda r: r["id"])
        return iter([self._lead(r) for r in rows[:limit]])

    def _changed(self, after: Bookmark) -> list[CrmLead]:
        return [lead for lead in map(self._lead, self._open()) if after.before(lead)]

    def fetch_changed(self, after: Bookmark, until: datetime, limit: int) -> Iterator[CrmLead]:
        leads = [lead for lead in self._changed(after) if lead.modified_at <= until]  # type: ignore[operator]
        return iter(sorted(leads, key=lambda x: (x.modified_at, x.id))[:limit])

    def fetch_ids(self, ids: Sequence[str]) -> Iterator[CrmLead]:
        return iter([self._lead(self.crm.records[i]) for i in dict.fromkeys(ids) if i in self.crm.records])

    def _write_one(self, up: ScoreUpdate) -> WriteOutcome:
        rid = up.lead_id
        if rid not in self.crm.records:
            return WriteOutcome(lead_id=rid, ok=False, error="ENTITY_IS_DELETED: no such lead")
        if rid in self.crm.locked:
            return WriteOutcome(lead_id=rid, ok=False, error="UNABLE_TO_LOCK_ROW: try again", retryable=True)
        if rid in self.crm.rejected:
            return WriteOutcome(lead_id=rid, ok=False, error=f"VALIDATION: {self.crm.rejected[rid]}")
        if self.crm.records[rid].get(self.fields.review_decision or ""):
            return WriteOutcome(lead_id=rid, ok=False, human=True, error="a reviewer decided")
        self.crm.update(rid, dict(up.values))
        return WriteOutcome(lead_id=rid, ok=True)

    def write(self, updates: Sequence[ScoreUpdate]) -> list[WriteOutcome]:
        unknown = {k for up in updates for k in up.values} - self.crm.schema
        if unknown:
            raise FatalConnectorError(f"no such fields: {sorted(unknown)}")
        return [self._write_one(up) for up in updates]

    def check(self) -> list[Problem]:
        mapped = {f"fields.inputs.{n}": c for n, c in self.fields.inputs.items()}
        mapped.update({f"fields.outputs.{n}": c for n, c in self.fields.outputs.model_dump().items() if c})
        return [
            Problem(where=w, message=f"field {c!r} does not exist", fix="map an existing field, or `crmsync fields create`")
            for w, c in mapped.items()
            if c not in self.crm.schema
        ]

    def create_fields(self) -> list[str]:
        missing = sorted({c for c in self.fields.outputs.model_dump().values() if c} - self.crm.schema)
        self.crm.schema.update(missing)
        return missing

    def _label(self, rec: dict[str, Any]) -> LabelRecord | None:
        decision = str(rec.get(self.fields.review_decision or "") or "").strip().lower()
        inputs = {n: rec.get(c) for n, c in self.fields.inputs.items()}
        if decision in DECISIONS:
            return LabelRecord(rec["id"], inputs, decision, "review", rec["modified_at"])  # type: ignore[arg-type]
        if rec["converted"]:
            return LabelRecord(rec["id"], inputs, "qualified", "conversion", rec["modified_at"])
        if rec["disqualified"]:
            return LabelRecord(rec["id"], inputs, "unqualified", "conversion", rec["modified_at"])
        return None

    def fetch_labels(self) -> Iterator[LabelRecord]:
        return iter([x for x in map(self._label, self.crm.records.values()) if x is not None])


class ToyBackend:
    """The contract's view of a ToyCRM, built around one connector class."""

    system_fields = frozenset({"modified_at"})
    missing_field = "contract_missing"

    def __init__(self, cls: type[ToyConnector]) -> None:
        self.cls = cls
        self.fields = FieldsConfig(inputs=dict(INPUTS))
        self.crm = ToyCRM(self.fields)

    def connector(self, fields: FieldsConfig | None = None) -> ToyConnector:
        return self.cls(self.crm, fields or self.fields)

    def add_lead(self, inputs: dict[str, Any]) -> str:
        return self.crm.add({INPUTS[k]: v for k, v in inputs.items()})

    def get_output(self, lead_id: str, output: str) -> Any:
        return self.crm.records[lead_id][getattr(self.fields.outputs, output)]

    def raw_record(self, lead_id: str) -> dict[str, Any]:
        return dict(self.crm.records[lead_id])

    def set_input(self, lead_id: str, name: str, value: Any) -> None:
        self.crm.update(lead_id, {INPUTS[name]: value})

    def set_review_decision(self, lead_id: str, value: str) -> None:
        self.crm.update(lead_id, {self.fields.review_decision or "ai_review_decision": value})

    def reject_writes(self, lead_id: str, message: str) -> None:
        self.crm.rejected[lead_id] = message

    def lock_lead(self, lead_id: str) -> Callable[[], None]:
        self.crm.locked.add(lead_id)
        return lambda: self.crm.locked.discard(lead_id)

    def delete_lead(self, lead_id: str) -> None:
        del self.crm.records[lead_id]

    def mark_converted(self, lead_id: str) -> None:
        self.crm.update(lead_id, {"converted": True})

    def mark_disqualified(self, lead_id: str) -> None:
        self.crm.update(lead_id, {"disqualified": True, "status": "Lost"})


# -- each broken in exactly one way ------------------------------------------------------------------


class UnscoredNewestFirst(ToyConnector):
    def fetch_unscored(self, after_id: str | None, limit: int) -> Iterator[CrmLead]:
        rows = sorted(self._unscored(after_id), key=lambda r: r["id"], reverse=True)
        return iter([self._lead(r) for r in rows[:limit]])


class ChangedNewestFirst(ToyConnector):
    def fetch_changed(self, after: Bookmark, until: datetime, limit: int) -> Iterator[CrmLead]:
        leads = [lead for lead in self._changed(after) if lead.modified_at <= until]  # type: ignore[operator]
        return iter(sorted(leads, key=lambda x: (x.modified_at, x.id), reverse=True)[:limit])


class ChangedIgnoresUntil(ToyConnector):
    def fetch_changed(self, after: Bookmark, until: datetime, limit: int) -> Iterator[CrmLead]:
        return iter(sorted(self._changed(after), key=lambda x: (x.modified_at, x.id))[:limit])


class WritesOutsideMapping(ToyConnector):
    def _write_one(self, up: ScoreUpdate) -> WriteOutcome:
        out = super()._write_one(up)
        if out.ok:
            self.crm.update(up.lead_id, {"status": "Working"})  # "helpfully" moves the lead along
        return out


class WriteKeepsModifiedTime(ToyConnector):
    def _write_one(self, up: ScoreUpdate) -> WriteOutcome:
        rec = self.crm.records.get(up.lead_id)
        stamp = rec["modified_at"] if rec else None
        out = super()._write_one(up)
        if rec is not None:
            rec["modified_at"] = stamp  # a write path that bypasses the CRM's modified-time stamp
        return out


class CheckFindsNothing(ToyConnector):
    def check(self) -> list[Problem]:
        return []


class FetchIdsAddsOthers(ToyConnector):
    def fetch_ids(self, ids: Sequence[str]) -> Iterator[CrmLead]:
        return iter([self._lead(r) for r in self.crm.records.values()])  # every lead, asked for or not


class FetchIdsSkipsScored(ToyConnector):
    def fetch_ids(self, ids: Sequence[str]) -> Iterator[CrmLead]:
        return (lead for lead in super().fetch_ids(ids) if not lead.has_score)


class ConversionBeatsReview(ToyConnector):
    def _label(self, rec: dict[str, Any]) -> LabelRecord | None:
        if rec["converted"]:
            inputs = {n: rec.get(c) for n, c in self.fields.inputs.items()}
            return LabelRecord(rec["id"], inputs, "qualified", "conversion", rec["modified_at"])
        return super()._label(rec)


class IgnoresDisqualified(ToyConnector):
    def _label(self, rec: dict[str, Any]) -> LabelRecord | None:
        return None if rec["disqualified"] and not rec.get(self.fields.review_decision or "") else super()._label(rec)


class CreateFieldsDoesNothing(ToyConnector):
    def create_fields(self) -> list[str]:
        return []


class LockIsFinal(ToyConnector):
    def _write_one(self, up: ScoreUpdate) -> WriteOutcome:
        return super()._write_one(up).model_copy(update={"retryable": False})


class ValidationIsRetryable(ToyConnector):
    def _write_one(self, up: ScoreUpdate) -> WriteOutcome:
        out = super()._write_one(up)
        return out.model_copy(update={"retryable": True}) if not out.ok else out


#: broken toy → the contract tests that must fail for it
BROKEN: dict[type[ToyConnector], set[str]] = {
    UnscoredNewestFirst: {"test_unscored_stream_is_in_ascending_id_order", "test_unscored_stream_resumes_after_an_id"},
    ChangedNewestFirst: {"test_a_partial_changed_read_takes_the_earliest_changes"},
    ChangedIgnoresUntil: {"test_changed_stream_stops_at_until"},
    WritesOutsideMapping: {"test_write_changes_only_mapped_outputs"},
    WriteKeepsModifiedTime: {"test_write_moves_the_modified_time"},
    CheckFindsNothing: {"test_check_names_a_field_that_does_not_exist"},
    FetchIdsAddsOthers: {"test_fetch_ids_returns_exactly_the_requested_leads"},
    FetchIdsSkipsScored: {"test_fetch_ids_returns_exactly_the_requested_leads"},
    ConversionBeatsReview: {"test_labels_follow_the_rule"},
    IgnoresDisqualified: {"test_a_disqualified_lead_is_an_unqualified_label"},
    CreateFieldsDoesNothing: {"test_create_fields_makes_missing_outputs_writable"},
    LockIsFinal: {"test_a_transient_write_failure_is_retryable"},
    ValidationIsRetryable: {"test_a_rejected_value_is_not_retryable", "test_deleted_record_fails_alone"},
}
