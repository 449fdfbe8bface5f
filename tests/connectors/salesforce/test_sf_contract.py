"""The Salesforce connector runs the same contract suite as every connector, against the emulator."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crmsync import FieldsConfig
from crmsync.testing import ConnectorContract
from crmsync_salesforce import SalesforceConnector

from sf_emulator import SalesforceEmulator
from sf_helpers import SF_FIELDS, build


class SalesforceBackend:
    system_fields = frozenset({"LastModifiedDate", "SystemModstamp"})
    missing_field = "Contract_Missing__c"

    def __init__(self, emu: SalesforceEmulator, ca_pem: str, tmp: Path) -> None:
        self.emu, self.ca_pem, self.tmp = emu, ca_pem, tmp
        self.fields = SF_FIELDS

    def connector(self, fields: FieldsConfig | None = None) -> SalesforceConnector:
        return build(self.emu, self.ca_pem, self.tmp, fields=fields or self.fields)

    def raw_record(self, lead_id: str) -> dict[str, Any]:
        return dict(self.emu.records["Lead"][lead_id])

    def add_lead(self, inputs: dict[str, Any]) -> str:
        return self.emu.add({self.fields.inputs[k]: v for k, v in inputs.items()})

    def get_output(self, lead_id: str, output: str) -> Any:
        value = self.emu.records["Lead"][lead_id][getattr(self.fields.outputs, output)]
        return int(value) if isinstance(value, float) and value.is_integer() and output == "score" else value

    def set_input(self, lead_id: str, name: str, value: Any) -> None:
        self.emu.set(lead_id, self.fields.inputs[name], value)

    def set_review_decision(self, lead_id: str, value: str) -> None:
        assert self.fields.review_decision
        self.emu.set(lead_id, self.fields.review_decision, value)

    def reject_writes(self, lead_id: str, message: str) -> None:
        self.emu.rejections[lead_id] = ("FIELD_CUSTOM_VALIDATION_EXCEPTION", message)

    def delete_lead(self, lead_id: str) -> None:
        del self.emu.records["Lead"][lead_id]

    def lock_lead(self, lead_id: str) -> Callable[[], None]:
        """UNABLE_TO_LOCK_ROW: another transaction holds the record (API-NOTES 1.4: the retryable code)."""
        self.emu.rejections[lead_id] = ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")

        def release() -> None:
            self.emu.rejections.pop(lead_id, None)

        return release

    def mark_converted(self, lead_id: str) -> None:
        self.emu.set(lead_id, "IsConverted", True)
        self.emu.set(lead_id, "ConvertedDate", datetime.now(UTC).date().isoformat())

    def mark_disqualified(self, lead_id: str) -> None:
        self.emu.set(lead_id, "Status", "Closed - Not Converted")  # SalesforceOptions.disqualified_statuses' default


class TestSalesforceContract(ConnectorContract):
    @pytest.fixture
    def backend(self, emulator: SalesforceEmulator, ca_pem: str, tmp_path: Path, sf_env: None) -> SalesforceBackend:
        return SalesforceBackend(emulator, ca_pem, tmp_path)
