"""Shared by the Salesforce tests and the call-count bench: the field mapping and a connector wired to the emulator.

Credential logins go to https://{domain}.salesforce.com (hard-coded in simple-salesforce); ``build`` mounts a
transport adapter on the connector's session that sends those requests to the emulator instead (tests only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from crmsync import ConnectorContext, FieldsConfig
from crmsync.support import SYSTEM_CLOCK, Clock
from crmsync_salesforce import SalesforceConnector, SalesforceOptions
from crmsync_salesforce.client import make_session

try:  # by package path (tests.connectors.salesforce...), as bench/bench_sync_calls.py imports these helpers
    from . import sf_emulator
except ImportError:  # by pytest, from this folder
    import sf_emulator  # type: ignore[no-redef]

SF_FIELDS = FieldsConfig(
    inputs={"company": "Company", "title": "Title", "monthly_orders": "Monthly_Order_Volume__c", "description": "Description"},
    outputs={
        "score": "AI_Score__c",
        "tier": "AI_Tier__c",
        "confidence": "AI_Confidence__c",
        "needs_review": "AI_Needs_Review__c",
        "reasons": "AI_Reasons__c",
        "scored_at": "AI_Scored_At__c",
        "rubric_version": "AI_Rubric_Version__c",
        "model": "AI_Model__c",
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
            request.url = self.target + (request.url or "")[len(f"{parts.scheme}://{parts.netloc}") :]
        return super().send(request, **kwargs)


def build(
    emu: sf_emulator.SalesforceEmulator,
    ca_pem: str,
    tmp: Path,
    *,
    fields: FieldsConfig = SF_FIELDS,
    clock: Clock = SYSTEM_CLOCK,
    **options: Any,
) -> SalesforceConnector:
    opts = SalesforceOptions.model_validate({"auth": PASSWORD_AUTH, "ca_bundle": ca_pem, "retry_base_s": 0.0, **options})
    session = make_session(opts, tmp)
    session.mount("https://", LoginHostRewrite(emu.base_url))
    return SalesforceConnector(opts, ConnectorContext(fields=fields, base_dir=tmp, state_dir=tmp), session=session, clock=clock)
