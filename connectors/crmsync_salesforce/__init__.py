"""Salesforce connector: scores Leads (or Contacts) of one org through simple-salesforce.

Reads: one SOQL query built from validated field API names (no user values), paged through
``nextRecordsUrl``. Writes: sObject Collections, 200 records per call, ``allOrNone`` false, results matched
by position. Bulk API 2.0 is not used: a crmsync cycle writes at most ``daemon.fetch_limit`` leads (500 by
default), where Collections costs ⌈N/200⌉ synchronous calls with per-record JSON errors and re-login, while a
Bulk 2.0 job costs about 5–6 calls, polls asynchronously, reports failures as CSV, and never logs in again.

``crmsync fields create`` does not call the Metadata API: the integration user would need "Customize
Application" / "Modify All Data", and a field created that way has no field-level security for any profile,
so it would exist yet stay invisible to that user. It prints the exact Setup steps instead.
"""

from .config import AccessTokenAuth, ClientCredentialsAuth, JwtAuth, PasswordAuth, SalesforceOptions
from .connector import SalesforceConnector

__all__ = [
    "AccessTokenAuth",
    "ClientCredentialsAuth",
    "JwtAuth",
    "PasswordAuth",
    "SalesforceConnector",
    "SalesforceOptions",
]
