"""The whole cycle against Salesforce: a real Ledger, a real Scorer (crmsync.app.build_scorer, one `openai` provider
pointed at the OpenAI emulator), the real Salesforce connector (simple-salesforce over HTTPS) talking to the
Salesforce emulator. The connector is built with ``sf_helpers.build`` because the SDK's login host is fixed and
only an injected requests session can send it to the emulator; everything else is as `crmsync run` wires it.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmsync.cli import cli
from crmsync.config import Config
from crmsync.state import LeadState
from tests.cycle_rig import CycleRig
from tests.emulators import default_rule, rule

from sf_emulator import SalesforceEmulator
from sf_helpers import PASSWORD_AUTH, SF_FIELDS, build

MODEL = "emu-salesforce"


class Rig(CycleRig):
    def __init__(self, config: Config, emu: SalesforceEmulator, oa: Any, ca_pem: str, tmp: Path) -> None:
        # The same options as the config's [crm.options]; only the session is test-specific.
        super().__init__(config, build(emu, ca_pem, tmp, fields=config.fields, **config.crm.options))
        self.emu = emu
        self.oa = oa

    def add(self, n: int, **values: Any) -> list[str]:
        return [self.emu.add({"Company": f"Co {i}", "Title": "CEO", "Monthly_Order_Volume__c": float(i), **values}) for i in range(n)]

    def lead(self, rid: str) -> dict[str, Any]:
        return self.emu.records["Lead"][rid]

    def state(self, rid: str) -> LeadState | None:
        row = self.ledger.get(rid)
        return row.state if row else None

    def data_calls(self, method: str | None = None) -> int:
        return sum(1 for m, p in self.emu.requests if p.startswith("/services/data/") and (method is None or m == method))


@pytest.fixture
def make_rig(
    emulator: SalesforceEmulator, ca_pem: str, sf_env: None, openai_emu: Any, make_config: Callable[..., Config], tmp_path: Path
) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(*, fields: dict[str, Any] | None = None, scoring: dict[str, Any] | None = None, **daemon: Any) -> Rig:
        config = make_config(
            providers={"fast": openai_emu.provider(MODEL)},
            crm={"type": "salesforce", "options": {"auth": PASSWORD_AUTH, "ca_bundle": ca_pem, "retry_base_s": 0.0}},
            fields=fields or SF_FIELDS.model_dump(),
            daemon={"state_dir": str(tmp_path / "state"), "max_write_attempts": 2, "changed_lag_s": 0, **daemon},
            **({"scoring": scoring} if scoring else {}),
        )
        rigs.append(Rig(config, emulator, openai_emu, ca_pem, tmp_path))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


def expected_score(i: int, orders: float | None = None) -> int:
    """What the OpenAI emulator's default rule gives lead "Co i"."""
    return default_rule({"company": f"Co {i}", "title": "CEO", "monthly_orders": float(i) if orders is None else orders})["score"]


def test_one_cycle_scores_and_writes_all_and_a_second_rescores_nothing(rig: Rig) -> None:
    n = 6
    ids = rig.add(n)
    first = rig.run()
    assert first.ok, first.line()
    assert (first.fetched, first.scored, first.written) == (n, n, n)
    assert rig.oa.request_count() == n
    for i, rid in enumerate(ids):
        rec = rig.lead(rid)
        assert rec["AI_Score__c"] == expected_score(i)
        assert rec["AI_Tier__c"] and rec["AI_Model__c"] == f"fast:{MODEL}" and rec["AI_Scored_At__c"] is not None
        assert isinstance(rec["AI_Needs_Review__c"], bool)
        assert 0 <= rec["AI_Confidence__c"] <= 100, "a Percent field stores 55 for 55 %"
        assert rig.state(rid) == LeadState.written
    # login + describe + one query + one re-check of review decisions (sObject Collections retrieve) + one update
    assert (rig.emu.logins, rig.data_calls(), rig.data_calls("PATCH")) == (1, 4, 1)
    assert rig.emu.api_used == 4

    second = rig.run()  # our own write bumped LastModifiedDate: read once by the changed stream, rescored never
    assert second.ok, second.line()
    assert second.fetched == n, "the leads our write touched were fetched again (else this proves nothing)"
    assert second.skipped == n and second.scored == 0 and second.written == 0
    assert rig.oa.request_count() == n
    assert rig.data_calls("PATCH") == 1
    assert rig.data_calls() == 6, "a changed-stream query and an unscored query; describe is cached per connector"
    third = rig.run()
    assert third.fetched == 0, "each change is read once: the bookmark moved past our own writes"
    assert rig.data_calls() == 8


def test_session_expiry_mid_cycle_logs_in_again_and_completes(rig: Rig) -> None:
    ids = rig.add(4)

    def expire_then_score(lead: dict, body: dict) -> dict:
        rig.emu.expire_sessions()  # the session dies while the cycle is scoring: after the fetch, before the write
        return default_rule(lead, body)

    rig.oa.script(MODEL, rule(expire_then_score), rule(default_rule))
    report = rig.run()
    assert report.ok and not report.errors, report.line()
    assert report.written == 4
    assert rig.emu.logins == 2
    assert all(rig.lead(rid)["AI_Score__c"] == expected_score(i) for i, rid in enumerate(ids))
    assert all(rig.state(rid) == LeadState.written for rid in ids)
    assert rig.oa.request_count() == 4


def test_api_budget_past_share_stops_before_work_and_loses_nothing(rig: Rig) -> None:
    ids = rig.add(3)
    rig.emu.api_max, rig.emu.api_used = 1000, 600  # Sforce-Limit-Info past max_api_share = 0.5
    report = rig.run()
    assert len(report.errors) == 1 and report.errors[0].startswith("CRM API budget:"), report.errors
    assert "max_api_share = 0.5" in report.errors[0]
    assert report.scored == report.written == 0 and not report.ok
    assert rig.oa.request_count() == 0, "nothing scored"
    assert not rig.emu.queries and rig.data_calls("PATCH") == 0, "stopped before any query or update"
    assert rig.ledger.in_state(*LeadState) == [] and rig.ledger.bookmark("unscored") is None
    assert all(rig.lead(rid)["AI_Score__c"] is None for rid in ids)

    rig.emu.api_used = 0  # the rolling 24 h window moved on: budget back
    calls_before = rig.data_calls()
    again = rig.run()  # the same daemon, the same connector: the next cycle must pick the work up
    assert not again.errors, (
        f"still refused after the budget came back, with {rig.data_calls() - calls_before} API call(s) this cycle "
        f"(judged on the stale Sforce-Limit-Info of the last cycle): {again.errors}"
    )
    assert again.ok, again.line()
    assert again.written == 3 and rig.oa.request_count() == 3
    assert all(rig.lead(rid)["AI_Score__c"] == expected_score(i) for i, rid in enumerate(ids))


def test_validation_rule_rejection_is_parked_at_once_with_salesforce_message_others_written(rig: Rig) -> None:
    """A validation rule rejects the same values every time: sending them again only burns API calls."""
    ids = rig.add(4)
    bad = ids[1]
    rig.emu.rejections[bad] = ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "AI score cannot be set on partner leads")

    first = rig.run()
    assert (first.written, first.write_errors, first.parked) == (3, 1, 1)
    assert [rig.lead(rid)["AI_Score__c"] is not None for rid in ids] == [True, False, True, True]
    row = rig.ledger.get(bad)
    assert row is not None and row.state == LeadState.parked and row.write_attempts == 1
    assert row.last_error == "FIELD_CUSTOM_VALIDATION_EXCEPTION: AI score cannot be set on partner leads"
    assert rig.data_calls("PATCH") == 1

    second = rig.run()
    assert (second.scored, second.write_errors, second.parked) == (0, 0, 0) and rig.data_calls("PATCH") == 1
    assert rig.oa.request_count() == 4, "never paid to score it again"
    assert [rig.state(rid) for rid in ids] == [LeadState.written, LeadState.parked, LeadState.written, LeadState.written]


def test_locked_row_is_sent_again_in_the_same_cycle_and_never_parked(rig: Rig) -> None:
    """UNABLE_TO_LOCK_ROW (another integration holds the row) is retryable: re-sent after a pause, not parked."""
    ids = rig.add(3)
    locked = ids[0]
    rig.emu.rejections[locked] = ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
    rig.emu.rejections_left[locked] = 1

    report = rig.run()
    assert (report.written, report.write_errors, report.parked) == (3, 1, 0)
    assert all(rig.state(rid) == LeadState.written for rid in ids)
    assert rig.lead(locked)["AI_Score__c"] is not None
    assert rig.data_calls("PATCH") == 2, "one batch, then the locked lead alone"
    assert rig.oa.request_count() == 3


def test_a_row_locked_all_cycle_waits_for_the_next_cycle_pending(rig: Rig) -> None:
    ids = rig.add(2)
    locked = ids[1]
    rig.emu.rejections[locked] = ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")

    first = rig.run()  # max_write_attempts = 2 in this rig: sent twice this cycle, then left for the next
    assert (first.written, first.write_errors, first.parked) == (1, 1, 0)
    row = rig.ledger.get(locked)
    assert row is not None and row.state == LeadState.pending_write and "UNABLE_TO_LOCK_ROW" in (row.last_error or "")
    for _ in range(3):  # however many cycles it stays locked, it is never parked and never paid again
        rig.run()
    assert rig.state(locked) == LeadState.pending_write
    del rig.emu.rejections[locked]
    last = rig.run()
    assert last.written == 1 and rig.state(locked) == LeadState.written
    assert rig.oa.request_count() == 2


def test_labels_pull_into_the_ledger_and_export(rig: Rig, tmp_path: Path) -> None:
    """`labels pull` builds its connector from the config (build_connector), which cannot reach the emulator: the
    SDK logs in at a fixed *.salesforce.com host. So this runs the command's own loop (connector.fetch_labels() →
    Ledger.add_label) on the injected-session connector; `labels export` needs no CRM and runs as the CLI."""
    converted = rig.emu.add(
        {"Company": "Won Co", "Title": "COO", "Monthly_Order_Volume__c": 4200.0, "IsConverted": True, "ConvertedDate": "2026-02-03"}
    )
    reviewed = rig.emu.add({"Company": "Reviewed Co", "Title": "Intern", "AI_Review_Decision__c": "unqualified"})
    rig.add(2)  # open leads: no label

    seen = changed = 0
    for rec in rig.connector.fetch_labels():  # crmsync/evaluation/cli.py labels_pull, verbatim
        seen += 1
        changed += rig.ledger.add_label(rec.lead_id, rec.source, rec.outcome, rec.inputs, rec.decided_at)
    assert (seen, changed) == (2, 2)
    got = {x["lead_id"]: x for x in rig.ledger.labels()}
    assert set(got) == {converted, reviewed}
    assert (got[converted]["source"], got[converted]["outcome"]) == ("conversion", "qualified")
    assert got[converted]["decided_at"].startswith("2026-02-03")
    assert got[converted]["inputs"] == {"company": "Won Co", "title": "COO", "monthly_orders": 4200.0, "description": None}
    assert (got[reviewed]["source"], got[reviewed]["outcome"]) == ("review", "unqualified")
    assert sum(rig.ledger.add_label(r.lead_id, r.source, r.outcome, r.inputs, r.decided_at) for r in rig.connector.fetch_labels()) == 0

    out_csv = tmp_path / "labels.csv"
    r = CliRunner().invoke(cli, ["labels", "export", "--config", rig.config.source, "--output", str(out_csv)])
    assert r.exit_code == 0, r.output
    rows = {row["id"]: row for row in csv.DictReader(out_csv.open(encoding="utf-8"))}
    assert set(rows) == {converted, reviewed}
    assert rows[converted]["Company"] == "Won Co" and rows[converted]["label_source"] == "conversion"
    assert rows[reviewed]["outcome"] == "unqualified" and rows[reviewed]["Title"] == "Intern"
    assert rig.oa.request_count() == 0 and rig.data_calls("PATCH") == 0


# -- incremental sync (issue 9) ----------------------------------------------------------------------------------
def test_a_backlog_of_three_fetch_limits_drains_in_three_cycles(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(fetch_limit=5)
    ids = rig.add(15)
    for n in (5, 10, 15):
        report = rig.run()
        assert report.ok and report.written == 5, report.line()
        assert sum(rig.lead(rid)["AI_Score__c"] is not None for rid in ids) == n
    assert rig.oa.request_count() == 15 and rig.run().scored == 0


def test_a_reviewer_who_decides_while_the_lead_is_scored_wins(rig: Rig) -> None:
    ids = rig.add(4)
    decided = {ids[1], ids[3]}
    by_company = {rig.lead(rid)["Company"]: rid for rid in ids}

    def reviewer_meanwhile(lead: dict, body: dict) -> dict:
        rid = by_company[lead["company"]]
        if rid in decided:  # the rep decides after the fetch, while the model is thinking
            rig.emu.set(rid, "AI_Review_Decision__c", "unqualified")
            rig.emu.set(rid, "AI_Score__c", 2.0)
        return default_rule(lead, body)

    rig.oa.script(MODEL, rule(reviewer_meanwhile))
    report = rig.run()
    assert report.ok, report.line()
    assert (report.written, report.human_at_write) == (2, 2)
    for rid in decided:
        assert rig.lead(rid)["AI_Score__c"] == 2.0 and rig.state(rid) == LeadState.human
    assert rig.data_calls("POST") == 1, "one sObject Collections retrieve re-checked the whole batch"


def test_without_sobject_collections_retrieve_the_recheck_reads_by_soql(rig: Rig) -> None:
    rig.emu.collections_retrieve = False
    ids = rig.add(3)
    company = {rig.lead(rid)["Company"]: rid for rid in ids}

    def reviewer_meanwhile(lead: dict, body: dict) -> dict:
        if company[lead["company"]] == ids[0]:
            rig.emu.set(ids[0], "AI_Review_Decision__c", "qualified")
        return default_rule(lead, body)

    rig.oa.script(MODEL, rule(reviewer_meanwhile))
    report = rig.run()
    assert report.ok and (report.written, report.human_at_write) == (2, 1), report.line()
    assert rig.lead(ids[0])["AI_Score__c"] is None
    assert any("Id IN (" in q for q in rig.emu.queries), "the decisions were read with SOQL"


def test_scores_salesforce_already_has_are_adopted_never_rescored(rig: Rig) -> None:
    ids = rig.add(3, AI_Score__c=42.0)
    fresh = rig.add(2)
    assert rig.run().written == 2
    for rid in ids:
        rig.emu.set(rid, "Status", "Working - Contacted")  # another integration touches them
    time.sleep(0.1)  # the emulator's clock runs a few ms ahead (1 ms per write); changes newer than `until` wait
    report = rig.run()
    assert report.adopted == 3 and report.scored == 0, report.line()
    assert [rig.lead(rid)["AI_Score__c"] for rid in ids] == [42.0] * 3
    assert rig.oa.request_count() == 2 and all(rig.state(r) == LeadState.external for r in ids)
    rig.emu.set(ids[0], "Monthly_Order_Volume__c", 50000.0)  # its inputs change: now crmsync scores it
    time.sleep(0.1)
    assert rig.run().scored == 1 and rig.lead(ids[0])["AI_Score__c"] != 42.0
    assert fresh


def test_no_llm_money_once_the_api_share_is_crossed(make_rig: Callable[..., Rig]) -> None:
    """Other integrations use up the org's API share while crmsync is scoring: scoring stops at the next write
    (a flush every 0.05 s here) instead of paying for leads that cannot be written; nothing is lost."""
    rig = make_rig(write_flush_s=0.05)
    ids = rig.add(40)
    rig.emu.api_max = 1000
    n = 0

    def others_use_the_api(lead: dict, body: dict) -> dict:
        nonlocal n
        n += 1
        if n == 5:
            rig.emu.api_used = 700  # past max_api_share = 0.5
        time.sleep(0.05)
        return default_rule(lead, body)

    rig.oa.script(MODEL, rule(others_use_the_api))
    report = rig.run()
    paid = rig.oa.request_count()
    # Results are recorded every 0.25 s and written at the next flush: about half a second of scoring (10 leads
    # here) after the crossing, instead of the whole cycle (40).
    assert paid <= 20, f"{paid} LLM calls after the share was crossed at the 5th"
    assert report.api_budget_reached or any(e.startswith("CRM API budget") for e in report.errors), report.line()
    scored_ids = [rid for rid in ids if rig.state(rid) in (LeadState.written, LeadState.pending_write)]
    assert len(scored_ids) == paid, "every paid result is kept"
    rig.emu.api_used = 0  # the rolling window moves on
    while rig.run().scored:
        pass
    assert all(rig.lead(rid)["AI_Score__c"] is not None for rid in ids)
    assert rig.oa.request_count() == 40, "nobody paid twice"


def test_while_salesforce_refuses_writes_no_new_lead_is_paid_for(make_rig: Callable[..., Rig]) -> None:
    """Scores from an earlier cycle are written first; while Salesforce is down for them, nothing new is scored."""
    rig = make_rig(max_write_attempts=5)
    first = rig.add(3)
    for rid in first:
        rig.emu.rejections[rid] = ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
    assert rig.run().write_errors == 3
    rig.emu.rejections.clear()
    later = rig.add(5)
    rig.emu.script = [("status", 503, "SERVER_UNAVAILABLE")] * 8  # every attempt of the next calls
    report = rig.run()
    assert report.errors and report.errors[0].startswith("CRM unavailable"), report.line()
    assert rig.oa.request_count() == 3, "no new lead was paid for while its score could not be written"
    rig.emu.script = []
    again = rig.run()
    assert again.ok and again.written == 8, again.line()
    assert all(rig.lead(rid)["AI_Score__c"] is not None for rid in first + later)
    assert rig.oa.request_count() == 8
