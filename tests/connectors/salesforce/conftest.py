"""Fixtures: a throw-away CA, the Salesforce emulator over HTTPS, the secrets in the environment, and ``make``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

sys.path.insert(0, str(Path(__file__).parent))

from crmsync_salesforce import SalesforceConnector

import sf_emulator
from sf_helpers import build


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_pem(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def emulator(ca: trustme.CA) -> Iterator[sf_emulator.SalesforceEmulator]:
    emu = sf_emulator.SalesforceEmulator(ca)
    yield emu
    emu.close()


@pytest.fixture
def sf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SF_PASSWORD", sf_emulator.PASSWORD)
    monkeypatch.setenv("SF_SECURITY_TOKEN", sf_emulator.SECURITY_TOKEN)
    monkeypatch.setenv("SF_CONSUMER_KEY", sf_emulator.CONSUMER_KEY)
    monkeypatch.setenv("SF_CONSUMER_SECRET", sf_emulator.CONSUMER_SECRET)


@pytest.fixture
def make(emulator: sf_emulator.SalesforceEmulator, ca_pem: str, tmp_path: Path, sf_env: None) -> Any:
    def _make(**options: Any) -> SalesforceConnector:
        return build(emulator, ca_pem, tmp_path, **options)

    return _make
