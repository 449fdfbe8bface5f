"""Every output crmsync can write has a field definition in each CRM connector: a new output (the calibrated
probability, issue 15) mapped on Salesforce or HubSpot must be checkable and creatable, not a KeyError."""

from __future__ import annotations

from crmsync.config import OutputFields
from crmsync_hubspot.properties import DEFINITIONS, FITTING
from crmsync_salesforce.fields import OUTPUT_SPECS


def test_salesforce_knows_every_output() -> None:
    assert set(OUTPUT_SPECS) == set(OutputFields.model_fields)


def test_hubspot_knows_every_output() -> None:
    outputs = set(OutputFields.model_fields)
    assert set(DEFINITIONS) - {"review_decision"} == outputs
    assert set(FITTING) - {"review_decision"} == outputs
