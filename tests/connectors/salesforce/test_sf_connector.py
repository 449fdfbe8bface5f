"""Salesforce-specific behaviour, against the HTTPS emulator with the real simple-salesforce."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from crmsync import (
    ApiBudgetExhausted,
    FatalConnectorError,
    FieldsConfig,
    RetriableConnectorError,
    ScoreUpdate,
)

from sf_emulator import PASSWORD, SalesforceEmulator
from sf_helpers import PASSWORD_AUTH, SF_FIELDS


def data_calls(emu: SalesforceEmulator, method: str | None = None, prefix: str = "/services/data/") -> int:
    return sum(1 for m, p in emu.requests if p.startswith(prefix) and (method is None or m == method))


def leads(emu: SalesforceEmulator, n: int, **values) -> list[str]:
    return [emu.add({"Company": f"Co {i}", "Monthly_Order_Volume__c": float(i), **values}) for i in range(n)]


def score(lead_id: str, value: int = 50, **extra) -> ScoreUpdate:
    return ScoreUpdate(lead_id, {"AI_Score__c": value, **extra})


# -- paging ------------------------------------------------------------------------------------------
def test_paging_follows_next_records_url_with_batch_size(make, emulator) -> None:
    leads(emulator, 450)
    got = list(make(page_size=200).fetch_unscored(None, 10_000))
    assert len(got) == 450 and len({lead.id for lead in got}) == 450
    assert data_calls(emulator, prefix="/services/data/v59.0/query/") == 3
    assert data_calls(emulator, prefix="/services/data/v59.0/query/01g") == 2  # the nextRecordsUrl pages


def test_default_page_is_2000(make, emulator) -> None:
    leads(emulator, 2100)
    assert len(list(make().fetch_unscored(None, 10_000))) == 2100
    assert data_calls(emulator, prefix="/services/data/v59.0/query/") == 2


def test_two_long_text_fields_shrink_pages_to_200(make, emulator) -> None:
    leads(emulator, 450)
    fields = FieldsConfig(
        inputs={"description": "Description", "notes": "Notes_Long__c"},
        outputs=SF_FIELDS.outputs,
        review_decision=SF_FIELDS.review_decision,
    )
    assert len(list(make(fields=fields).fetch_unscored(None, 10_000))) == 450
    assert data_calls(emulator, prefix="/services/data/v59.0/query/") == 3


def test_converted_leads_are_skipped_by_default(make, emulator) -> None:
    keep = emulator.add({"Company": "Open"})
    emulator.add({"Company": "Won", "IsConverted": True})
    assert [lead.id for lead in make().fetch_unscored(None, 100)] == [keep]
    assert len(list(make(skip_converted=False).fetch_unscored(None, 100))) == 2


# -- sessions and auth ---------------------------------------------------------------------------------
@pytest.mark.parametrize("auth,domain", [(PASSWORD_AUTH, "login"), ({"mode": "client_credentials"}, "acme.my")])
def test_expired_session_logs_in_again_and_carries_on(make, emulator, auth, domain) -> None:
    a, b = leads(emulator, 2)
    conn = make(auth=auth, domain=domain)
    assert conn.write([score(a)])[0].ok
    emulator.expire_sessions()
    assert conn.write([score(b)])[0].ok
    assert emulator.logins == 2
    assert emulator.records["Lead"][b]["AI_Score__c"] == 50


def test_jwt_bearer_login(make, emulator, monkeypatch) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    emulator.jwt_public_key = key.public_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    monkeypatch.setenv("SF_PRIVATE_KEY", pem.decode())
    (a,) = leads(emulator, 1)
    conn = make(auth={"mode": "jwt", "username": PASSWORD_AUTH["username"]})
    assert conn.write([score(a)])[0].ok
    emulator.expire_sessions()
    assert conn.write([score(a, 51)])[0].ok and emulator.logins == 2


def test_bare_token_expiry_stops_with_what_to_do(make, emulator, monkeypatch) -> None:
    monkeypatch.setenv("SF_ACCESS_TOKEN", emulator.issue_token())
    (a,) = leads(emulator, 1)
    conn = make(auth={"mode": "access_token"}, instance_url=emulator.base_url)
    assert conn.write([score(a)])[0].ok
    emulator.expire_sessions()
    with pytest.raises(FatalConnectorError) as err:
        conn.write([score(a)])
    assert "SF_ACCESS_TOKEN" in str(err.value) and "sf org display" in str(err.value) and "client_credentials" in str(err.value)
    assert emulator.logins == 0


def test_wrong_password_is_fatal_and_never_echoed(make, emulator, monkeypatch) -> None:
    wrong = "Wr0ng-Secret-Value"
    monkeypatch.setenv("SF_PASSWORD", wrong)
    conn = make()
    with pytest.raises(FatalConnectorError) as err:
        list(conn.fetch_unscored(None, 10))
    assert "INVALID_LOGIN" in str(err.value) and wrong not in str(err.value) and PASSWORD not in str(err.value)
    problems = conn.check()
    assert problems and problems[0].where == "crm.options" and wrong not in problems[0].message


def test_a_login_error_echoing_the_secret_is_scrubbed(make, emulator, monkeypatch) -> None:
    wrong = "Wr0ng-Secret-Value"
    monkeypatch.setenv("SF_PASSWORD", wrong)
    original = emulator.login_soap
    monkeypatch.setattr(
        emulator,
        "login_soap",
        lambda body: (
            500,
            original("")[1].replace(
                "Invalid username, password, security token; or user locked out.</sf:exceptionMessage>",
                f"bad password {wrong}</sf:exceptionMessage>",
            ),
        ),
    )
    with pytest.raises(FatalConnectorError) as err:
        list(make().fetch_unscored(None, 10))
    assert "bad password ***" in str(err.value) and wrong not in str(err.value)


# -- API budget ----------------------------------------------------------------------------------------
def test_request_limit_exceeded_is_budget_exhausted(make, emulator) -> None:
    leads(emulator, 1)
    emulator.api_used = emulator.api_max
    with pytest.raises(ApiBudgetExhausted, match="REQUEST_LIMIT_EXCEEDED"):
        list(make().fetch_unscored(None, 10))


def test_limit_info_share_stops_new_work(make, emulator) -> None:
    (a,) = leads(emulator, 1)
    emulator.api_max, emulator.api_used = 1000, 600
    conn = make()  # default max_api_share = 0.5
    with pytest.raises(ApiBudgetExhausted, match=r"60[12]/1000 .*max_api_share = 0.5"):
        list(conn.fetch_unscored(None, 10))
    with pytest.raises(ApiBudgetExhausted):
        conn.write([score(a)])
    assert data_calls(emulator, "PATCH") == 0 and data_calls(emulator, prefix="/services/data/v59.0/query") == 0
    assert any(p.where == "crm.options.max_api_share" and p.severity == "warning" for p in conn.check())
    assert len(list(make(max_api_share=0.9).fetch_unscored(None, 10))) == 1


# -- transient failures --------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [("status", 503, "SERVER_UNAVAILABLE"), ("status", 500, "UNKNOWN_EXCEPTION"), ("drop",)])
def test_transient_failures_are_retried(make, emulator, failure) -> None:
    (a,) = leads(emulator, 1)
    conn = make()
    conn.describe()
    emulator.script = [failure, failure]
    assert conn.write([score(a, 77)])[0].ok
    assert emulator.records["Lead"][a]["AI_Score__c"] == 77
    emulator.script = [failure, failure]
    assert len(list(conn.fetch_unscored(None, 10))) == 0  # scored now


@pytest.mark.parametrize("failure", [("status", 503, "SERVER_UNAVAILABLE"), ("drop",)])
def test_retries_are_bounded(make, emulator, failure) -> None:
    (a,) = leads(emulator, 1)
    conn = make(max_retries=2)
    conn.describe()
    emulator.script = [failure] * 3
    with pytest.raises(RetriableConnectorError, match="after 3 attempts") as err:
        conn.write([score(a)])
    assert not isinstance(err.value, FatalConnectorError)
    assert emulator.records["Lead"][a]["AI_Score__c"] is None


# -- writes --------------------------------------------------------------------------------------------
def test_per_record_errors_keep_order_and_lock_is_retryable(make, emulator) -> None:
    ok1, locked, converted, gone, ok2 = leads(emulator, 5)
    emulator.rejections[locked] = ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
    emulator.records["Lead"][converted]["IsConverted"] = True
    del emulator.records["Lead"][gone]
    out = make().write([score(i) for i in (ok1, locked, converted, gone, "00Qbad", ok2)])
    assert [o.ok for o in out] == [True, False, False, False, False, True]
    assert [o.lead_id for o in out] == [ok1, locked, converted, gone, "00Qbad", ok2]
    assert out[1].retryable and out[1].error.startswith("UNABLE_TO_LOCK_ROW: ")
    assert not out[2].retryable and out[2].error.startswith("CANNOT_UPDATE_CONVERTED_LEAD: ")
    assert out[3].error.startswith("ENTITY_IS_DELETED: ") and out[4].error.startswith("MALFORMED_ID: ")


def test_unknown_field_fails_the_whole_call_naming_it(make, emulator) -> None:
    (a,) = leads(emulator, 1)
    conn = make()
    conn.describe()
    emulator.remove_field("AI_Tier__c")  # an admin deleted it after our describe
    with pytest.raises(FatalConnectorError, match=r"INVALID_FIELD.*AI_Tier__c"):
        conn.write([score(a, AI_Tier__c="A")])
    with pytest.raises(FatalConnectorError, match="AI_Tier__c"):  # describe again: caught before the call
        conn.write([score(a, AI_Tier__c="A")])


def test_values_are_converted_to_salesforce_types(make, emulator) -> None:
    (a,) = leads(emulator, 1)
    at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    out = make().write(
        [
            score(
                a,
                87,
                AI_Needs_Review__c=None,
                AI_Scored_At__c=at,
                AI_Confidence__c=0.75,
                AI_Reasons__c=["Big volume", "Decision maker"],
                AI_Model__c="m" * 500,
            )
        ]
    )
    assert out[0].ok, out[0].error
    rec = emulator.records["Lead"][a]
    assert rec["AI_Needs_Review__c"] is False and rec["AI_Scored_At__c"] == at and rec["AI_Confidence__c"] == 75
    assert rec["AI_Reasons__c"] == "Big volume; Decision maker" and rec["AI_Model__c"] == "m" * 100


def test_emulator_refuses_quoted_datetimes_and_long_text_filters(make, emulator) -> None:
    conn = make()
    conn.describe()
    sf = conn.client.sf
    with pytest.raises(Exception) as quoted:
        sf.query("SELECT Id FROM Lead WHERE LastModifiedDate > '2026-01-01T00:00:00Z'")
    assert "should not be enclosed in quotes" in str(quoted.value)
    with pytest.raises(Exception) as filtered:
        sf.query("SELECT Id FROM Lead WHERE Description = null")
    assert "can not be filtered" in str(filtered.value)


# -- check, fields, labels -----------------------------------------------------------------------------
def test_check_names_each_field_and_its_fix(make, emulator) -> None:
    emulator.remove_field("AI_Score__c")
    emulator.schema["Lead"]["AI_Confidence__c"]["type"] = "string"
    emulator.schema["Lead"]["AI_Model__c"]["updateable"] = False
    fields = FieldsConfig(
        inputs={**SF_FIELDS.inputs, "revenue": "Revenue__c"}, outputs=SF_FIELDS.outputs, review_decision=SF_FIELDS.review_decision
    )
    problems = {p.where: p for p in make(fields=fields).check()}
    assert set(problems) == {"fields.inputs.revenue", "fields.outputs.score", "fields.outputs.confidence", "fields.outputs.model"}
    assert "Revenue__c" in problems["fields.inputs.revenue"].message
    assert "AI_Score__c" in problems["fields.outputs.score"].message
    assert "Number" in problems["fields.outputs.score"].fix and "Field Name: AI_Score" in problems["fields.outputs.score"].fix
    assert "Percent" in problems["fields.outputs.confidence"].fix
    assert "Field-Level Security" in problems["fields.outputs.model"].fix


def test_create_fields_prints_setup_steps_for_missing_fields(make, emulator) -> None:
    assert make().create_fields() == []
    emulator.remove_field("AI_Needs_Review__c")
    with pytest.raises(NotImplementedError) as steps:
        make().create_fields()
    text = str(steps.value)
    assert "1. Setup → Object Manager → Lead" in text and "Checkbox" in text and "AI_Needs_Review__c" in text
    assert "AI_Score__c" not in text


def test_fetch_labels(make, emulator) -> None:
    reviewed = emulator.add({"Company": "R", "AI_Review_Decision__c": "Qualified"})
    rejected = emulator.add({"Company": "U", "AI_Review_Decision__c": "unqualified"})
    won = emulator.add({"Company": "W", "IsConverted": True, "ConvertedDate": "2026-02-03"})
    lost = emulator.add({"Company": "L", "Status": "Closed - Not Converted"})
    emulator.add({"Company": "Open"})
    labels = {lab.lead_id: lab for lab in make().fetch_labels()}
    assert set(labels) == {reviewed, rejected, won, lost}
    assert (labels[reviewed].outcome, labels[reviewed].source) == ("qualified", "review")
    assert labels[rejected].outcome == "unqualified"
    assert (labels[won].outcome, labels[won].source) == ("qualified", "conversion")
    assert labels[won].decided_at == datetime(2026, 2, 3, tzinfo=UTC)
    assert labels[lost].outcome == "unqualified" and labels[won].inputs["company"] == "W"


def test_options_cross_checks() -> None:
    from crmsync_salesforce import SalesforceOptions

    with pytest.raises(ValueError, match="My Domain"):
        SalesforceOptions.model_validate({"auth": {"mode": "client_credentials"}})
    with pytest.raises(ValueError, match="instance_url"):
        SalesforceOptions.model_validate({"auth": {"mode": "access_token"}})
    with pytest.raises(ValueError):
        SalesforceOptions.model_validate({"auth": {"mode": "password", "username": "u", "password": "inline"}})


# -- API call count --------------------------------------------------------------------------------------
def test_1000_leads_cost_the_minimum_calls(make, emulator) -> None:
    n = 1000
    ids = leads(emulator, n)
    conn = make()
    got = list(conn.fetch_unscored(None, 10_000))
    assert len(got) == n
    out = conn.write([score(i, k % 101) for k, i in enumerate(ids)])
    assert all(o.ok for o in out)
    query_pages = data_calls(emulator, prefix="/services/data/v59.0/query")
    updates = data_calls(emulator, "PATCH")
    assert (query_pages, updates) == (math.ceil(n / 2000), math.ceil(n / 200))  # 1 + 5 = 6
    assert data_calls(emulator) == 6 + 1  # + one describe per connector
    assert emulator.logins == 1  # the login is not an API request in Salesforce's count
    assert emulator.api_used == 7


def test_a_secret_pasted_into_an_env_key_is_not_echoed() -> None:
    from pydantic import ValidationError

    from crmsync.config import format_validation_error
    from crmsync_salesforce import SalesforceOptions

    pasted = "00D000000000001!AQ-pasted-token"
    with pytest.raises(ValidationError) as err:
        SalesforceOptions.model_validate(
            {"auth": {"mode": "access_token", "access_token_env": pasted}, "instance_url": "https://x.my.salesforce.com"}
        )
    text = format_validation_error(err.value, "crmsync.toml", "", SalesforceOptions)
    assert "access_token_env" in text and pasted not in text


def test_a_login_answered_by_a_5xx_page_is_retried_not_fatal(make, emulator, monkeypatch) -> None:
    original, answers = emulator.login_soap, [(503, "Service Unavailable")] * 2
    monkeypatch.setattr(emulator, "login_soap", lambda body: answers.pop(0) if answers else original(body))
    assert make().check() == []
    answers[:] = [(503, "Service Unavailable")] * 5
    with pytest.raises(RetriableConnectorError, match="login: HTTP 503"):
        list(make(max_retries=1).fetch_unscored(None, 10))


def test_the_calibrated_probability_lands_in_a_percent_field_and_check_knows_its_shape(make, emulator) -> None:
    """Issue 15's optional output on Salesforce: P(qualified) 0.42 is stored as 42 in a Percent field, and
    `crmsync check` describes what the field must be instead of failing on an output it does not know."""
    from sf_emulator import _f

    fields = SF_FIELDS.model_copy(update={"outputs": SF_FIELDS.outputs.model_copy(update={"probability": "AI_Probability__c"})})
    conn = make(fields=fields)
    problems = conn.check()
    assert [p.where for p in problems] == ["fields.outputs.probability"]
    assert "AI_Probability__c" in problems[0].message
    emulator.schema["Lead"]["AI_Probability__c"] = _f("AI_Probability__c", "percent", precision=4)
    (a,) = leads(emulator, 1)
    out = make(fields=fields).write([score(a, 70, AI_Probability__c=0.42)])
    assert out[0].ok, out[0].error
    assert emulator.records["Lead"][a]["AI_Probability__c"] == 42
    assert make(fields=fields).check() == []
