"""Fixtures: a throw-away CA, the Salesforce emulator over HTTPS, and connectors wired to it.

Credential logins go to https://{domain}.salesforce.com (hard-coded in simple-salesforce); tests mount a
transport adapter on the connector's session that sends those requests to the emulator instead.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import trustme
from requests.adapters import HTTPAdapter

sys.path.insert(0, str(Path(__file__).parent))

import sf_emulator  # noqa: E402
from crmsync import ConnectorContext, FieldsConfig  # noqa: E402
from crmsync_salesforce import SalesforceConnector, SalesforceOptions  # noqa: E402
from crmsync_salesforce.client import make_session  # noqa: E402

SF_FIELDS = FieldsConfig(
    inputs={"company": "Company", "title": "Title", "monthly_orders": "Monthly_Order_Volume__c", "description": "Description"},
    outputs={
        "score": "AI_Score__c", "tier": "AI_Tier__c", "confidence": "AI_Confidence__c", "needs_review": "AI_Needs_Review__c",
        "reasons": "AI_Reasons__c", "scored_at": "AI_Scored_At__c", "rubric_version": "AI_Rubric_Version__c", "model": "AI_Model__c",
    },
    review_decision="AI_Review_Decision__c",
)
PASSWORD_AUTH = {"mode": "password", "username": sf_emulator.USERNAME}


class LoginHostRewrite(HTTPAdapter):
    """Tests only: send https://*.salesforce.com (the SDK's fixed login host) to the emulator."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        if (parts.hostname or "").endswith(".salesforce.com"):
            request.url = self.target + (request.url or "")[len(f"{parts.scheme}://{parts.netloc}"):]
        return super().send(request, **kwargs)


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


def build(emu: sf_emulator.SalesforceEmulator, ca_pem: str, tmp: Path, *, fields: FieldsConfig = SF_FIELDS, **options: Any) -> SalesforceConnector:
    opts = SalesforceOptions.model_validate({"auth": PASSWORD_AUTH, "ca_bundle": ca_pem, "retry_base_s": 0.0, **options})
    session = make_session(opts, tmp)
    session.mount("https://", LoginHostRewrite(emu.base_url))
    return SalesforceConnector(opts, ConnectorContext(fields=fields, base_dir=tmp, state_dir=tmp), session=session)


@pytest.fixture
def make(emulator: sf_emulator.SalesforceEmulator, ca_pem: str, tmp_path: Path, sf_env: None) -> Any:
    def _make(**options: Any) -> SalesforceConnector:
        return build(emulator, ca_pem, tmp_path, **options)

    return _make
