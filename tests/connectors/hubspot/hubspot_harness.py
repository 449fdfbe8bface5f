"""Shared helpers for the HubSpot tests: the token, the field mapping, and a connector factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmsync.config import FieldsConfig
from crmsync.connector import ConnectorContext
from crmsync_hubspot import HubSpotConnector, HubSpotOptions
from tests.fakes import FakeClock

try:  # by package path (tests.connectors.hubspot...), as bench/bench_sync_calls.py imports this harness
    from .hubspot_emulator import HubSpotEmulator
except ImportError:  # by pytest, from this folder
    from hubspot_emulator import HubSpotEmulator  # type: ignore[no-redef]

TOKEN = "pat-na1-11111111-2222-3333-4444-emulatortoken"
EPOCH = 1_780_000_000.0  # the fake clock's wall-time origin (2026)
FIELDS = {"company": "company", "title": "jobtitle", "monthly_orders": "monthly_orders", "description": "description"}


def add_input_properties(emu: HubSpotEmulator, object_type: str = "contacts") -> None:
    emu.add_property(object_type, "monthly_orders", "number", "number")
    emu.add_property(object_type, "description", "string", "textarea")


class Harness:
    def __init__(self, emu: HubSpotEmulator, tmp: Path, clock: FakeClock | None = None) -> None:
        self.emu = emu
        self.clock = clock
        self.fields = FieldsConfig(inputs=dict(FIELDS))
        self.ctx = ConnectorContext(fields=self.fields, base_dir=tmp, state_dir=tmp)

    def connector(self, **options: Any) -> HubSpotConnector:
        opts = HubSpotOptions(**{"host": self.emu.host, "ca_bundle": self.emu.ca_pem, **options})
        return HubSpotConnector(opts, self.ctx, clock=self.clock)

    def setup_fields(self) -> None:
        self.connector().create_fields()

    def add(self, n: int = 1, **props: Any) -> list[str]:
        return [self.emu.create({"company": f"Co {i}", "jobtitle": "CEO", "monthly_orders": i, **props}) for i in range(n)]
