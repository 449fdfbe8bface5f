"""HubSpot-specific behaviour, against the emulator through the real hubspot-api-client."""

from __future__ import annotations

import json
import logging
import math
import ssl
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta, timezone

import pytest

from crmsync import ApiBudgetExhausted, FatalConnectorError, RetriableConnectorError, ScoreUpdate
from crmsync_hubspot import to_hubspot

from hubspot_emulator import HubSpotEmulator
from hubspot_harness import TOKEN, Harness


def scores(ids: list[str], **extra: object) -> list[ScoreUpdate]:
    return [ScoreUpdate(i, {"ai_score": 50 + n % 50, "ai_needs_review": False, **extra}) for n, i in enumerate(ids)]


# -- fetch ------------------------------------------------------------------------------------------
def test_keyset_paging_gets_past_the_search_cap(fake_harness: Harness) -> None:
    emu = fake_harness.emu
    emu.search_cap = 500  # the real cap is 10,000; same rule, smaller numbers
    ids = fake_harness.add(1234)
    emu.calls.clear()
    got = [lead.id for lead in fake_harness.connector().fetch_unscored(None, 100_000)]
    assert got == ids, "every lead once, oldest (lowest hs_object_id) first"
    assert emu.calls["search"] == math.ceil(1234 / 200)


def test_keyset_paging_real_size_cap(fake_harness: Harness) -> None:
    ids = fake_harness.add(10_050)
    got = [lead.id for lead in fake_harness.connector().fetch_unscored(None, 100_000)]
    assert len(got) == 10_050 and len(set(got)) == 10_050 and got[-1] == ids[-1]


def test_emulator_refuses_paging_past_the_cap(emulator: HubSpotEmulator) -> None:
    emulator.search_cap = 300
    for i in range(400):
        emulator.create({"company": f"c{i}"})

    def page(after: int) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"{emulator.host}/crm/v3/objects/contacts/search",
            method="POST",
            data=json.dumps({"limit": 200, "after": str(after)}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=emulator.ca_pem)) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    status, body = page(0)
    assert status == 200 and body["total"] == 400 and body["paging"]["next"]["after"] == "200"
    status, body = page(200)
    assert status == 400 and body["category"] == "VALIDATION_ERROR"


def test_fetch_skips_customers_and_sees_leads_without_a_stage(harness: Harness) -> None:
    plain = harness.add(1)[0]
    lead = harness.emu.create({"company": "L", "lifecyclestage": "lead"})
    customer = harness.emu.create({"company": "C", "lifecyclestage": "customer"})
    ids = {lead.id for lead in harness.connector().fetch_unscored(None, 100)}
    assert {plain, lead} <= ids and customer not in ids


def test_leads_object_is_selectable(harness: Harness) -> None:
    from hubspot_harness import add_input_properties

    add_input_properties(harness.emu, "leads")
    conn = harness.connector(object_type="leads")
    conn.create_fields()
    rid = harness.emu.create({"company": "Lead Co", "hs_lead_name": "x"}, "leads")
    assert [lead.id for lead in conn.fetch_unscored(None, 10)] == [rid]
    assert conn.write(scores([rid]))[0].ok
    assert harness.emu.get(rid, "leads")["ai_score"] == "50"
    assert any(r["path"] == "/crm/v3/objects/0-136/search" for r in harness.emu.requests)


def test_eventual_consistency_stale_hits_are_yielded_once_as_indexed(fake_harness: Harness, fake_clock) -> None:
    emu = fake_harness.emu
    emu.index_delay_s = 30
    ids = fake_harness.add(3)
    fake_clock.sleep(31)  # created long ago: indexed
    conn = fake_harness.connector()
    first = [lead.id for lead in conn.fetch_unscored(None, 100)]
    assert first == ids
    assert all(o.ok for o in conn.write(scores(ids)))
    # A moment later the index still says "unscored": each stale hit comes back once, showing what the index says.
    again = list(conn.fetch_unscored(None, 100))
    assert [lead.id for lead in again] == ids and len({lead.id for lead in again}) == len(again)
    assert all(lead.has_score is False for lead in again)
    assert emu.get(ids[0])["ai_score"] == "50", "the CRM itself has the score"
    fake_clock.sleep(31)
    assert [lead.id for lead in conn.fetch_unscored(None, 100)] == []


def test_a_lead_given_twice_is_written_once(harness: Harness) -> None:
    a, b = harness.add(2)
    harness.emu.calls.clear()
    outcomes = harness.connector().write([*scores([a]), *scores([b]), ScoreUpdate(a, {"ai_score": 77})])
    assert [o.lead_id for o in outcomes] == [a, b, a] and all(o.ok for o in outcomes)
    assert harness.emu.calls["batch_update"] == 1
    assert harness.emu.get(a)["ai_score"] == "77"
    assert sum(1 for h in harness.emu.objects["contacts"][a].history) == 1


# -- rate limits ------------------------------------------------------------------------------------
def test_secondly_429_backs_off_then_succeeds(fake_harness: Harness, fake_clock) -> None:
    fake_harness.add(3)
    fake_harness.emu.script_429("SECONDLY", kind="search")
    before = len(fake_clock.sleeps)
    assert len(list(fake_harness.connector().fetch_unscored(None, 10))) == 3
    assert fake_harness.emu.rate_limited["search"] == 1
    assert 1.0 in fake_clock.sleeps[before:], "SECONDLY without Retry-After: wait one second"


def test_emulator_secondly_limit_is_honoured_by_the_limiter(fake_harness: Harness, fake_clock) -> None:
    fake_harness.add(1000)
    fake_harness.emu.search_per_second = 5
    leads = list(fake_harness.connector(search_per_second=4).fetch_unscored(None, 1000))
    assert len(leads) == 1000 and fake_harness.emu.rate_limited["search"] == 0
    fake_harness.emu.search_per_second = 2  # another integration eats the account's share: 429 SECONDLY, then back off
    leads = list(fake_harness.connector(search_per_second=4).fetch_unscored(None, 1000))
    assert len(leads) == 1000 and fake_harness.emu.rate_limited["search"] > 0


def test_ten_secondly_429_uses_retry_after_when_present(fake_harness: Harness, fake_clock) -> None:
    ids = fake_harness.add(2)
    fake_harness.emu.script_429("TEN_SECONDLY_ROLLING", kind="batch_update", retry_after=3)
    assert all(o.ok for o in fake_harness.connector().write(scores(ids)))
    assert 3.0 in fake_clock.sleeps


def test_get_429_is_not_silently_retried_by_the_sdk(fake_harness: Harness, fake_clock) -> None:
    fake_harness.emu.calls.clear()
    fake_harness.emu.script_429("TEN_SECONDLY_ROLLING", kind="properties_get", retry_after=2)
    assert fake_harness.connector().check() == []
    assert fake_harness.emu.calls["properties_get"] == 2 and 2.0 in fake_clock.sleeps, "the retry was ours, and counted"


def test_daily_429_raises_budget_exhausted_and_stops_calling(fake_harness: Harness) -> None:
    fake_harness.add(2)
    fake_harness.emu.script_429("DAILY", kind="search")
    conn = fake_harness.connector()
    with pytest.raises(ApiBudgetExhausted, match="daily"):
        list(conn.fetch_unscored(None, 10))
    fake_harness.emu.calls.clear()
    with pytest.raises(ApiBudgetExhausted):
        list(conn.fetch_unscored(None, 10))
    assert fake_harness.emu.calls["search"] == 0


def test_our_daily_share_is_enforced_client_side(fake_harness: Harness) -> None:
    ids = fake_harness.add(3)
    conn = fake_harness.connector(daily_limit=2)
    conn.write(scores(ids[:1]))
    conn.write(scores(ids[1:2]))
    with pytest.raises(ApiBudgetExhausted, match="daily_limit"):
        conn.write(scores(ids[2:]))


def test_5xx_is_retried_boundedly_then_retriable(fake_harness: Harness) -> None:
    fake_harness.add(1)
    fake_harness.emu.script_error(503, {"status": "error", "message": "busy", "category": "SERVICE_UNAVAILABLE"}, kind="search", times=10)
    with pytest.raises(RetriableConnectorError, match="gave up after 5 attempts"):
        list(fake_harness.connector(max_retries=4).fetch_unscored(None, 10))


# -- write ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["207", "400"])
def test_unknown_id_fails_alone_whether_207_or_400(harness: Harness, mode: str) -> None:
    harness.emu.missing_ids = mode
    ids = harness.add(5)
    harness.emu.delete(ids[1])
    outcomes = harness.connector().write(scores(ids))
    assert [o.ok for o in outcomes] == [True, False, True, True, True]
    assert "OBJECT_NOT_FOUND" in (outcomes[1].error or "") and not outcomes[1].retryable


def test_207_is_one_call(harness: Harness) -> None:
    ids = harness.add(100)
    harness.emu.delete(ids[50])
    harness.emu.calls.clear()
    outcomes = harness.connector().write(scores(ids))
    assert sum(not o.ok for o in outcomes) == 1 and harness.emu.calls["batch_update"] == 1


def test_400_bad_record_is_isolated_and_the_rest_land(harness: Harness) -> None:
    ids = harness.add(100)
    updates = scores(ids)
    updates[37] = ScoreUpdate(ids[37], {"ai_score": "eighty", "ai_needs_review": False})  # not a number
    harness.emu.calls.clear()
    outcomes = harness.connector().write(updates)
    assert [o.lead_id for o in outcomes] == ids
    assert [i for i, o in enumerate(outcomes) if not o.ok] == [37]
    assert "eighty" in (outcomes[37].error or "")
    assert all(harness.emu.get(i).get("ai_score") for n, i in enumerate(ids) if n != 37)
    assert harness.emu.calls["batch_update"] <= 1 + 2 * math.ceil(math.log2(100))


def test_unknown_property_everywhere_is_fatal_with_the_fix(harness: Harness) -> None:
    ids = harness.add(4)
    with pytest.raises(FatalConnectorError, match="crmsync fields create"):
        harness.connector().write([ScoreUpdate(i, {"no_such_prop": 1}) for i in ids])


def test_values_become_hubspot_strings() -> None:
    when = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert [to_hubspot(v) for v in (87, 0.75, True, False, None, ["a", "b"], when, "x")] == [
        "87",
        "0.75",
        "true",
        "false",
        "",
        "a; b",
        "2026-11-27T09:00:00.123Z",
        "x",
    ]


# -- check / create ---------------------------------------------------------------------------------
def test_check_names_each_missing_or_unfit_property(emulator: HubSpotEmulator, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    emulator.add_property("contacts", "ai_score", "string", "text")  # wrong type
    del emulator.properties["contacts"]["description"]  # a mapped input gone
    problems = {p.where: p for p in Harness(emulator, tmp_path).connector().check()}
    assert "number" in problems["fields.outputs.score"].message
    assert "crmsync fields create" in problems["fields.outputs.tier"].fix
    assert "crmsync fields create" in problems["fields.outputs.needs_review"].fix
    assert "description" in problems["fields.inputs.description"].message


def test_check_reports_bad_token_and_missing_scopes(emulator: HubSpotEmulator, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-wrong")
    (p,) = Harness(emulator, tmp_path).connector().check()
    assert "HUBSPOT_ACCESS_TOKEN" in p.message and "401" in p.message
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    emulator.scopes = {"crm.objects.contacts.read"}
    (p,) = Harness(emulator, tmp_path).connector().check()
    assert "crm.schemas.contacts.read" in p.message


def test_fields_create_is_idempotent(emulator: HubSpotEmulator, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    conn = Harness(emulator, tmp_path).connector()
    created = conn.create_fields()
    assert created[0] == "group crmsync" and {"ai_score", "ai_needs_review", "ai_scored_at", "ai_review_decision"} <= set(created)
    assert emulator.properties["contacts"]["ai_needs_review"]["type"] == "bool"
    assert conn.check() == []
    assert conn.create_fields() == []
    conn.client.properties = list  # a stale view: every create answers 409
    conn.client.groups = list
    assert conn.create_fields() == []


# -- labels -----------------------------------------------------------------------------------------
def test_fetch_labels(harness: Harness) -> None:
    e = harness.emu
    reviewed = e.create({"company": "R", "ai_review_decision": "unqualified", "lifecyclestage": "customer"})
    won = e.create({"company": "W", "lifecyclestage": "opportunity"})
    lost = e.create({"company": "L", "hs_lead_status": "UNQUALIFIED"})
    e.create({"company": "N", "lifecyclestage": "lead"})
    labels = {lab.lead_id: (lab.outcome, lab.source) for lab in harness.connector().fetch_labels()}
    assert labels == {reviewed: ("unqualified", "review"), won: ("qualified", "conversion"), lost: ("unqualified", "conversion")}


# -- secrets ----------------------------------------------------------------------------------------
def test_token_never_in_logs_or_errors(emulator: HubSpotEmulator, tmp_path, monkeypatch, caplog) -> None:
    secret = "pat-na1-SECRET-0000-do-not-log"
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", secret)
    h = Harness(emulator, tmp_path)
    conn = h.connector(max_retries=1, max_backoff_s=0.01)
    texts = [repr(conn.client), repr(conn.options)]
    with pytest.raises(FatalConnectorError) as fatal:  # 401
        list(conn.fetch_unscored(None, 5))
    texts.append(str(fatal.value))
    texts += [p.message + p.fix for p in conn.check()]
    emulator.token = secret
    emulator.script_error(500, {"status": "error", "message": f"echo {secret}", "category": "ERROR"}, times=5)
    with pytest.raises(RetriableConnectorError) as exc:
        list(conn.fetch_unscored(None, 5))
    texts.append(str(exc.value))
    port = emulator.host.rsplit(":", 1)[1]
    emulator.stop()
    down = Harness(emulator, tmp_path).connector(max_retries=1, max_backoff_s=0.01, host=f"https://127.0.0.1:{port}")
    with pytest.raises(RetriableConnectorError) as exc:
        list(down.fetch_unscored(None, 5))
    texts.append(str(exc.value))
    assert all(secret not in t for t in texts)
    assert secret not in caplog.text


# -- call budget ------------------------------------------------------------------------------------
def test_1000_leads_cost_the_minimum_number_of_calls(fake_harness: Harness) -> None:
    n = 1000
    fake_harness.add(n)
    conn = fake_harness.connector()
    fake_harness.emu.calls.clear()  # setup (fields create / check) is counted apart: 1-2 calls per `crmsync check`
    leads = list(conn.fetch_unscored(None, n))
    outcomes = conn.write(scores([lead.id for lead in leads]))
    assert len(leads) == n and all(o.ok for o in outcomes)
    calls = fake_harness.emu.calls
    assert calls["search"] == math.ceil(n / 200) and calls["batch_update"] == math.ceil(n / 100)
    assert sum(calls.values()) == 15 and sum(fake_harness.emu.rate_limited.values()) == 0


def test_changed_stream_reads_a_bulk_import_in_one_millisecond_exactly_once(fake_harness: Harness, fake_clock) -> None:
    """450 contacts share one lastmodifieddate (a bulk import on the fake clock) and 30 come a second later. Search
    sorts by one property, so ties are read by id; paging by any limit returns each contact exactly once, in order."""
    from crmsync import Bookmark

    bulk = fake_harness.add(450)
    fake_clock.sleep(1)
    later = fake_harness.add(30)
    conn = fake_harness.connector()
    start = Bookmark(datetime.fromtimestamp(fake_harness.emu.clock() - 3600, tz=UTC))
    until = datetime.fromtimestamp(fake_harness.emu.clock() + 1, tz=UTC)
    for limit in (1_000, 120, 45):
        mark, got = start, []
        while True:
            page = list(conn.fetch_changed(mark, until, limit))
            assert len(page) <= limit
            if not page:
                break
            got += page
            mark = Bookmark(page[-1].modified_at, page[-1].id)
        ids = [lead.id for lead in got]
        assert ids == bulk + later, f"limit {limit}: {len(ids)} read, {len(set(ids))} distinct"
