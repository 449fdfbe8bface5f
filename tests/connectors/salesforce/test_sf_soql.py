"""The SOQL builder: names are validated, values are typed literals, nothing a user types reaches a query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from crmsync import Bookmark, ConfigError, FieldsConfig
from crmsync_salesforce import soql

from sf_helpers import SF_FIELDS


@pytest.mark.parametrize("good", ["Id", "Company", "AI_Score__c", "Monthly_Order_Volume__c", "Owner__r", "X1"])
def test_valid_names_pass(good: str) -> None:
    assert soql.name(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1abc",
        "Id, Name",
        "Company FROM Lead --",
        "AI_Score__c OR Id != null",
        "Name'",
        "a__b__c",
        "Score_",
        "_x",
        "Lead.Name",
        "x" * 81,
    ],
)
def test_invalid_names_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a valid field API name"):
        soql.name(bad)


def test_datetime_literal_is_unquoted_utc_z() -> None:
    local = datetime(2026, 1, 1, 1, 30, 5, 999_000, tzinfo=timezone(timedelta(hours=1)))
    assert soql.datetime_literal(local) == "2026-01-01T00:30:05Z"
    with pytest.raises(ValueError):
        soql.datetime_literal(datetime(2026, 1, 1))  # noqa: DTZ001 -- a naive time is what must be refused


def test_string_literal_escapes_quotes_and_backslashes() -> None:
    assert soql.string_literal("O'Brien\\") == "'O\\'Brien\\\\'"


def test_select() -> None:
    q = soql.select("Lead", ["Id", "Company", "Id"], "AI_Score__c = null", order_by=["CreatedDate", "Id"], limit=5)
    assert q == "SELECT Id, Company FROM Lead WHERE AI_Score__c = null ORDER BY CreatedDate ASC, Id ASC LIMIT 5"


def test_injection_through_the_field_mapping_is_refused(make) -> None:
    evil = FieldsConfig(
        inputs={"company": "Company FROM Lead WHERE Id != null --"},
        outputs=SF_FIELDS.outputs,
        review_decision=SF_FIELDS.review_decision,
    )
    with pytest.raises(ConfigError):
        make(fields=evil)


def test_lead_values_never_reach_the_query(make, emulator) -> None:
    rid = emulator.add({"Company": "x' OR Id != null OR Company = 'y", "Title": "\\'; DELETE"})
    conn = make()
    since = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    until = datetime(2099, 1, 1, tzinfo=UTC)
    leads = list(conn.fetch_changed(Bookmark(since, "00Q000000000000AAA' OR Id != null"), until, 50))
    assert leads[0].inputs["company"] == "x' OR Id != null OR Company = 'y"
    assert [lead.id for lead in conn.fetch_unscored("00Q0' OR Id != null", 50)] == [rid]
    cols = "Id, LastModifiedDate, AI_Score__c, AI_Review_Decision__c, Company, Title, Monthly_Order_Volume__c, Description"
    assert emulator.queries == [
        (
            f"SELECT {cols} FROM Lead WHERE (LastModifiedDate > 2026-03-04T05:06:07Z OR (LastModifiedDate = 2026-03-04T05:06:07Z "
            "AND Id > '00Q000000000000AAA\\' OR Id != null')) AND LastModifiedDate <= 2099-01-01T00:00:00Z AND IsConverted = false "
            "ORDER BY LastModifiedDate ASC, Id ASC LIMIT 50"
        ),
        (
            f"SELECT {cols} FROM Lead WHERE AI_Score__c = null AND AI_Review_Decision__c = null AND Id > '00Q0\\' OR Id != null' "
            "AND IsConverted = false ORDER BY Id ASC LIMIT 50"
        ),
    ]
