"""`crmsync check` against Salesforce: a restricted picklist output must hold every value crmsync writes, and the
review-decision picklist both values a reviewer picks; an unrestricted picklist takes any value through the API."""

from __future__ import annotations

from typing import Any

from crmsync.checks import option_problems
from crmsync.config import Config
from crmsync.rubric import bundled_rubric_path, load_rubric

from sf_helpers import SF_FIELDS


def _picklist(values: list[str], restricted: bool = True) -> dict[str, Any]:
    return {
        "type": "picklist",
        "restrictedPicklist": restricted,
        "picklistValues": [{"value": v, "label": v, "active": True, "defaultValue": False} for v in values],
    }


def test_restricted_picklists_must_hold_every_value(make, emulator) -> None:
    lead = emulator.schema["Lead"]
    lead["AI_Tier__c"].update(_picklist(["A", "B", "C"]))
    lead["AI_Tier__c"]["picklistValues"].append({"value": "D", "label": "D", "active": False, "defaultValue": False})
    lead["AI_Review_Decision__c"].update(_picklist(["Qualified", "Unqualified"]))  # case does not matter here
    conn = make()
    assert conn.check() == []  # types fit: only the values are wrong
    config, rubric = Config(fields=SF_FIELDS), load_rubric(bundled_rubric_path())
    (problem,) = option_problems(config, conn, rubric)
    assert (problem.where, problem.message, problem.fix) == (
        "fields.outputs.tier",
        "AI_Tier__c is a list of options without D; crmsync writes A, B, C, D",
        "add the option values D to AI_Tier__c in the CRM, or map tier to a text field",
    )


def test_unrestricted_picklists_and_text_fields_pass(make, emulator) -> None:
    emulator.schema["Lead"]["AI_Tier__c"].update(_picklist(["A"], restricted=False))
    assert option_problems(Config(fields=SF_FIELDS), make(), load_rubric(bundled_rubric_path())) == []
