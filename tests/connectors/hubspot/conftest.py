"""Fixtures: a running HubSpot emulator and connectors built against it (real hubspot-api-client, loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeClock

from hubspot_emulator import HubSpotEmulator
from hubspot_harness import EPOCH, TOKEN, Harness, add_input_properties


@pytest.fixture
def emulator() -> Iterator[HubSpotEmulator]:
    emu = HubSpotEmulator(TOKEN).start()
    add_input_properties(emu)
    yield emu
    emu.stop()


@pytest.fixture
def fake_emulator(fake_clock: FakeClock) -> Iterator[HubSpotEmulator]:
    """An emulator on the same fake clock as the connector: rate limits and index delay without real waiting."""
    emu = HubSpotEmulator(TOKEN, clock=lambda: EPOCH + fake_clock.now).start()
    add_input_properties(emu)
    yield emu
    emu.stop()


@pytest.fixture
def harness(emulator: HubSpotEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    # The emulator serves https with a throw-away CA. Harness.connector passes it as ca_bundle; a config with
    # only `host` (crmsync.app.build_connector in the cycle tests) trusts it through the REQUESTS_CA_BUNDLE fallback.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_pem)
    h = Harness(emulator, tmp_path)
    h.setup_fields()
    return h


@pytest.fixture
def fake_harness(fake_emulator: HubSpotEmulator, fake_clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake_emulator.ca_pem)
    h = Harness(fake_emulator, tmp_path, fake_clock)
    h.setup_fields()
    return h
