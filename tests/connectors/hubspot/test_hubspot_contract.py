"""The HubSpot connector runs the same contract suite as every other connector, against the emulator."""
from __future__ import annotations

from typing import Any

import pytest

from crmsync.testing import ConnectorContract
from crmsync_hubspot import HubSpotConnector

from hubspot_harness import Harness


class HubSpotBackend:
    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.emu = harness.emu
        self.fields = harness.fields

    def connector(self) -> HubSpotConnector:
        return self.h.connector()

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


class TestHubSpotContract(ConnectorContract):
    @pytest.fixture
    def backend(self, harness: Harness) -> HubSpotBackend:
        return HubSpotBackend(harness)
