"""The HubSpot connector runs the same contract suite as every other connector, against the emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crmsync.config import FieldsConfig
from crmsync.connector import ConnectorContext
from crmsync.testing import ConnectorContract
from crmsync_hubspot import HubSpotConnector, HubSpotOptions

from hubspot_harness import Harness


class HubSpotBackend:
    system_fields = frozenset({"lastmodifieddate", "hs_lastmodifieddate"})
    missing_field = "crmsync_contract_missing"

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.emu = harness.emu
        self.fields = harness.fields

    def connector(self, fields: FieldsConfig | None = None) -> HubSpotConnector:
        # Short back-off caps: a scripted lock (423) is retried after 0.2 s, not HubSpot's 2 s.
        opts = HubSpotOptions(host=self.emu.host, ca_bundle=self.emu.ca_pem, max_backoff_s=0.2)
        ctx = ConnectorContext(fields=fields or self.fields, base_dir=self.h.ctx.base_dir, state_dir=self.h.ctx.state_dir)
        return HubSpotConnector(opts, ctx, clock=self.h.clock)

    def raw_record(self, lead_id: str) -> dict[str, Any]:
        return self.emu.get(lead_id)

    def add_lead(self, inputs: dict[str, Any]) -> str:
        return self.emu.create({self.fields.inputs[k]: v for k, v in inputs.items()})

    def get_output(self, lead_id: str, output: str) -> Any:
        prop = getattr(self.fields.outputs, output)
        raw = self.emu.get(lead_id).get(prop)
        if raw in (None, ""):
            return None
        kind = self.emu.properties["contacts"][prop]["type"]
        if kind == "number":
            f = float(raw)
            return int(f) if f.is_integer() else f
        if kind == "bool":
            return raw == "true"
        return raw

    def set_input(self, lead_id: str, name: str, value: Any) -> None:
        self.emu.update(lead_id, {self.fields.inputs[name]: value})

    def set_review_decision(self, lead_id: str, value: str) -> None:
        assert self.fields.review_decision
        self.emu.update(lead_id, {self.fields.review_decision: value})

    def reject_writes(self, lead_id: str, message: str) -> None:
        self.emu.validation_rules[lead_id] = message

    def delete_lead(self, lead_id: str) -> None:
        self.emu.delete(lead_id)

    def lock_lead(self, lead_id: str) -> Callable[[], None]:
        """HubSpot locks a whole request, not a record: 423 Locked, "locks last 2 seconds" (docs: Error handling).
        The body's wording is not documented; the status is what counts."""
        self.emu.script_error(
            423,
            {"status": "error", "message": "Locked: too many updates to these records; retry in 2 seconds", "category": "LOCKED"},
            kind="batch_update",
            times=2,
        )
        return lambda: self.emu.scripted.clear()

    def mark_converted(self, lead_id: str) -> None:
        self.emu.update(lead_id, {"lifecyclestage": "opportunity"})  # HubSpotOptions.converted_lifecycle_stages

    def mark_disqualified(self, lead_id: str) -> None:
        self.emu.update(lead_id, {"hs_lead_status": "UNQUALIFIED"})  # HubSpotOptions.disqualified_values


class TestHubSpotContract(ConnectorContract):
    @pytest.fixture
    def backend(self, harness: Harness) -> HubSpotBackend:
        return HubSpotBackend(harness)
