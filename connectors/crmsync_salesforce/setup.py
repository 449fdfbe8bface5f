"""`crmsync check`, restricted picklists and `fields create` for Salesforce: what the connector reports about the
org's fields (through describe) rather than what it reads or writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmsync import ConnectorError, Problem

from . import fields as fieldspec

if TYPE_CHECKING:
    from .connector import SalesforceConnector


def check(self: SalesforceConnector) -> list[Problem]:
    try:
        described = self.describe(refresh=True)
    except ConnectorError as exc:
        return [
            Problem(
                where="crm.options",
                message=str(exc),
                fix="Fix the credentials, domain or instance_url in [crm.options] and its environment variables",
            )
        ]
    if not described:
        return [
            Problem(
                where="crm.options.object",
                message=f"{self.options.object} has no visible fields",
                fix="Give the integration user read access to the object",
            )
        ]
    problems = fieldspec.check(self.options.object, self.fields, described)
    usage = self.client.usage()
    if usage and usage[0] >= self.options.max_api_share * usage[1]:
        problems.append(
            Problem(
                where="crm.options.max_api_share",
                severity="warning",
                message=f"the org has used {usage[0]}/{usage[1]} daily API requests, past max_api_share = {self.options.max_api_share:g}",
                fix="Wait for usage to drop (rolling 24 h), or raise max_api_share if other integrations can spare it",
            )
        )
    return problems


def output_options(self: SalesforceConnector) -> dict[str, list[str]]:
    """Mapped outputs (and the review decision) that are restricted picklists: the active values each allows.
    `crmsync check` compares them with every value crmsync may write (Salesforce rejects others with
    INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST; an unrestricted picklist takes any value through the API)."""
    described = self.describe()
    mapped = {**self._outputs(), **({"review_decision": self.fields.review_decision} if self.fields.review_decision else {})}
    return {
        name: [str(v.get("value")) for v in described[api].get("picklistValues") or [] if v.get("active", True)]
        for name, api in mapped.items()
        if api in described and described[api].get("type") == "picklist" and described[api].get("restrictedPicklist")
    }


def create_fields(self: SalesforceConnector) -> list[str]:
    """Not automated on purpose (see the package docstring): prints the exact Setup steps instead."""
    try:
        described: dict[str, dict[str, Any]] | None = self.describe(refresh=True)
    except ConnectorError:
        described = None
    steps = fieldspec.instructions(self.options.object, self.fields, described)
    if not steps:
        return []
    raise NotImplementedError(
        "crmsync does not create Salesforce fields itself: an admin creates them (it takes a few minutes and "
        "keeps the integration user without 'Customize Application'). In Salesforce:\n" + steps + "\nThen run `crmsync check`."
    )
