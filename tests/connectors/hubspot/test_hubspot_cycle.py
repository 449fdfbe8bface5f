"""The whole cycle against HubSpot: a real Ledger, a real Scorer (crmsync.app.build_scorer, one `openai` provider
pointed at the OpenAI emulator), the real HubSpot connector (crmsync.app.build_connector) talking to the HubSpot
emulator through the real hubspot-api-client. Nothing is mocked.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmsync.app import build_connector
from crmsync.cli import cli
from crmsync.config import Config
from crmsync.state import LeadState, Ledger
from tests.cycle_rig import CycleRig
from tests.emulators import default_rule, rule

from hubspot_emulator import HubSpotEmulator
from hubspot_harness import FIELDS, Harness

MODEL = "emu-hubspot"


class Rig(CycleRig):
    """One crmsync setup against the two emulators, as `crmsync run` wires it."""

    def __init__(self, config: Config, emu: HubSpotEmulator, oa: Any) -> None:
        super().__init__(config, build_connector(config))
        self.emu = emu
        self.oa = oa

    def add(self, n: int, **props: Any) -> list[str]:
        return [self.emu.create({"company": f"Co {i}", "jobtitle": "CEO", "monthly_orders": i, **props}) for i in range(n)]

    def state(self, rid: str) -> LeadState | None:
        row = self.ledger.get(rid)
        return row.state if row else None


@pytest.fixture
def make_rig(harness: Harness, openai_emu: Any, make_config: Callable[..., Config], tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """`harness` set HUBSPOT_ACCESS_TOKEN and created the crmsync properties (as `crmsync fields create`)."""
    rigs: list[Rig] = []

    def make(outputs: dict[str, Any] | None = None, **daemon: Any) -> Rig:
        config = make_config(
            providers={"fast": openai_emu.provider(MODEL)},
            crm={"type": "hubspot", "options": {"host": harness.emu.host}},
            fields={"inputs": dict(FIELDS), **({"outputs": outputs} if outputs else {})},
            daemon={"state_dir": str(tmp_path / "state"), "max_write_attempts": 2, "changed_lag_s": 0, **daemon},
        )
        rigs.append(Rig(config, harness.emu, openai_emu))
        harness.emu.calls.clear()
        harness.emu.requests.clear()
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


def expected_score(i: int, orders: Any = None) -> str:
    """What the OpenAI emulator's default rule gives contact "Co i" (as HubSpot stores it: a string)."""
    return str(default_rule({"company": f"Co {i}", "title": "CEO", "monthly_orders": str(i if orders is None else orders)})["score"])


def test_one_cycle_scores_and_writes_all_with_minimum_calls(rig: Rig) -> None:
    n = 7
    ids = rig.add(n)
    report = rig.run()
    assert report.ok, report.line()
    assert (report.fetched, report.scored, report.written, report.skipped) == (n, n, n, 0)
    assert rig.oa.request_count() == n, "one model request per contact"
    for i, rid in enumerate(ids):
        props = rig.emu.get(rid)
        assert props["ai_score"] == expected_score(i)
        assert props["ai_needs_review"] in ("true", "false")
        assert props["ai_tier"] and props["ai_model"] == f"fast:{MODEL}" and props["ai_rubric_version"]
        assert rig.state(rid) == LeadState.written
    # Minimum: one search page (n <= 200), one batch read of the review decisions just before the write, and one
    # batch update (n <= 100); nothing else.
    assert dict(rig.emu.calls) == {"search": 1, "batch_read": 1, "batch_update": 1}
    assert rig.emu.rate_limited == {}
    assert rig.ledger.bookmark("changed") is not None


def test_stale_search_index_does_not_cause_a_second_score_or_write(rig: Rig) -> None:
    n = 5
    rig.emu.index_delay_s = 60  # searches see each contact's pre-write properties for a minute
    ids = rig.add(n)
    first = rig.run()
    assert first.ok and first.written == n
    assert rig.emu.calls["batch_update"] == 1 and rig.oa.request_count() == n

    second = rig.run()  # right after: the index still says "no ai_score" for every contact
    assert second.ok, second.line()
    assert second.fetched == n, "the emulator did serve the stale hits (else this test proves nothing)"
    assert second.skipped == n and second.scored == 0 and second.written == 0
    assert rig.oa.request_count() == n, "not scored again"
    assert rig.emu.calls["batch_update"] == 1, "not written again"
    assert rig.emu.calls["search"] == 3, "cycle 1: unscored; cycle 2: changed + unscored"
    assert all(rig.state(rid) == LeadState.written for rid in ids)
    assert all(rig.ledger.get(rid).write_attempts == 0 for rid in ids)


def test_changed_input_is_rescored_others_are_not(rig: Rig) -> None:
    ids = rig.add(4)
    assert rig.run().written == 4
    attempts_before = {rid: rig.ledger.db.execute("SELECT score_attempts FROM leads WHERE lead_id=?", (rid,)).fetchone()[0] for rid in ids}
    modified_before = rig.emu.get(ids[1])["lastmodifieddate"]
    rig.emu.update(ids[1], {"monthly_orders": 20000})  # a person edits it: lastmodifieddate moves
    assert rig.emu.get(ids[1])["lastmodifieddate"] >= modified_before
    rig.emu.calls.clear()

    report = rig.run()
    assert report.ok, report.line()
    assert report.scored == 1 and report.written == 1 and report.skipped == 3
    assert rig.oa.request_count() == 5
    assert rig.emu.get(ids[1])["ai_score"] == expected_score(1, 20000) != expected_score(1)
    assert rig.emu.get(ids[2])["ai_score"] == expected_score(2)
    assert dict(rig.emu.calls) == {"search": 2, "batch_read": 1, "batch_update": 1}, "changed + unscored searches"
    last = rig.oa.requests[-1]
    assert "20000" in str(last.body["messages"][-1]["content"]), "the rescore saw the new input"
    attempts = {rid: rig.ledger.db.execute("SELECT score_attempts FROM leads WHERE lead_id=?", (rid,)).fetchone()[0] for rid in ids}
    assert attempts == {**attempts_before, ids[1]: attempts_before[ids[1]] + 1}


def test_one_rejected_record_lands_the_rest_and_is_parked_at_once(rig: Rig) -> None:
    ids = rig.add(5)
    bad = ids[2]
    message = "Partner contacts cannot be scored"
    rig.emu.validation_rules[bad] = message  # HubSpot answers the whole batch with a 400 naming it

    first = rig.run()
    assert (first.written, first.write_errors, first.parked) == (4, 1, 1), "a validation error cannot pass on a resend"
    assert not first.ok
    assert [rid for rid in ids if rig.emu.get(rid).get("ai_score")] == [rid for rid in ids if rid != bad], "the rest landed"
    assert [rig.emu.get(rid)["ai_score"] for rid in ids if rid != bad] == [expected_score(i) for i in (0, 1, 3, 4)]
    row = rig.ledger.get(bad)
    assert row is not None and row.state == LeadState.parked and row.write_attempts == 1
    assert message in (row.last_error or "") and "VALIDATION_ERROR" in (row.last_error or "")

    rig.emu.calls.clear()
    second = rig.run()  # parked: still unscored in HubSpot, but neither rescored nor written again
    assert second.scored == 0 and second.written == 0 and second.write_errors == 0
    assert rig.emu.calls["batch_update"] == 0 and rig.oa.request_count() == 5
    assert rig.state(bad) == LeadState.parked
    assert rig.ledger.summary()["parked"] == [(bad, row.last_error)]


def test_labels_pull_and_export(rig: Rig, tmp_path: Path) -> None:
    reviewed = rig.emu.create({"company": "Reviewed Co", "jobtitle": "COO", "monthly_orders": 4200, "ai_review_decision": "qualified"})
    customer = rig.emu.create({"company": "Won Co", "jobtitle": "Founder", "monthly_orders": 900, "lifecyclestage": "customer"})
    rig.emu.create({"company": "Open Co", "jobtitle": "CEO", "monthly_orders": 10, "lifecyclestage": "lead"})
    source = rig.config.source
    runner = CliRunner()

    r = runner.invoke(cli, ["labels", "pull", "--config", source])
    assert r.exit_code == 0, r.output
    assert "2 label(s) in the CRM, 2 new or changed" in r.output
    ledger = Ledger(rig.config.state_dir / "ledger.sqlite", "hubspot")
    try:
        got = {x["lead_id"]: x for x in ledger.labels()}
    finally:
        ledger.close()
    assert set(got) == {reviewed, customer}
    assert (got[reviewed]["source"], got[reviewed]["outcome"]) == ("review", "qualified")
    assert (got[customer]["source"], got[customer]["outcome"]) == ("conversion", "qualified")
    assert got[reviewed]["inputs"] == {"company": "Reviewed Co", "title": "COO", "monthly_orders": "4200", "description": None}
    assert got[customer]["decided_at"], "the conversion carries lastmodifieddate"

    out_csv = tmp_path / "labels.csv"
    r = runner.invoke(cli, ["labels", "export", "--config", source, "--output", str(out_csv)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert list(rows[0]) == ["id", *FIELDS.values(), "outcome", "label_source"]
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == {reviewed, customer}
    assert by_id[reviewed]["company"] == "Reviewed Co" and by_id[reviewed]["jobtitle"] == "COO"
    assert by_id[reviewed]["monthly_orders"] == "4200" and by_id[reviewed]["label_source"] == "review"
    assert by_id[customer]["outcome"] == "qualified" and by_id[customer]["label_source"] == "conversion"
    assert rig.oa.request_count() == 0 and rig.emu.calls["batch_update"] == 0, "labels never score or write"


# -- incremental sync (issue 9) ----------------------------------------------------------------------------------
def test_a_backlog_of_three_fetch_limits_drains_in_three_cycles(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(fetch_limit=6)
    ids = rig.add(18)
    for n in (6, 12, 18):
        report = rig.run()
        assert report.ok and report.written == 6, report.line()
        assert sum(bool(rig.emu.get(rid).get("ai_score")) for rid in ids) == n
    assert rig.oa.request_count() == 18 and rig.run().scored == 0


def test_new_contacts_are_scored_while_another_integration_touches_scored_ones(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(fetch_limit=50, changed_limit=20)
    ids = rig.add(40)
    assert rig.run().written == 40
    for wave in range(3):
        for rid in ids:  # another integration rewrites a property crmsync does not map
            rig.emu.update(rid, {"lifecyclestage": "lead" if wave % 2 else "subscriber"})
        new = rig.add(3, company=f"Wave {wave}")
        time.sleep(0.01)
        report = rig.run()
        assert report.ok, report.line()
        assert all(rig.emu.get(rid).get("ai_score") for rid in new), f"wave {wave}: {report.line()}"
    assert rig.oa.request_count() == 49, "touched contacts are never rescored"


def test_a_reviewer_who_decides_while_the_contact_is_scored_wins(rig: Rig) -> None:
    ids = rig.add(5)
    decided = {ids[0], ids[3]}
    by_company = {rig.emu.get(rid)["company"]: rid for rid in ids}

    def reviewer_meanwhile(lead: dict, body: dict) -> dict:
        rid = by_company[lead["company"]]
        if rid in decided:
            rig.emu.update(rid, {"ai_review_decision": "qualified", "ai_score": "99"})
        return default_rule(lead, body)

    rig.oa.script(MODEL, rule(reviewer_meanwhile))
    report = rig.run()
    assert report.ok, report.line()
    assert (report.written, report.human_at_write) == (3, 2)
    assert all(rig.emu.get(rid)["ai_score"] == "99" and rig.state(rid) == LeadState.human for rid in decided)
    assert rig.emu.calls["batch_read"] == 1, "one batch read re-checked the batch"


def test_without_batch_read_the_recheck_searches_by_id(rig: Rig) -> None:
    rig.emu.batch_read_enabled = False
    ids = rig.add(3)
    by_company = {rig.emu.get(rid)["company"]: rid for rid in ids}

    def reviewer_meanwhile(lead: dict, body: dict) -> dict:
        if by_company[lead["company"]] == ids[1]:
            rig.emu.update(ids[1], {"ai_review_decision": "unqualified"})
        return default_rule(lead, body)

    rig.oa.script(MODEL, rule(reviewer_meanwhile))
    report = rig.run()
    assert report.ok and (report.written, report.human_at_write) == (2, 1), report.line()
    assert not rig.emu.get(ids[1]).get("ai_score")


def test_scores_hubspot_already_has_are_adopted_never_rescored(rig: Rig) -> None:
    ids = rig.add(3, ai_score="42")
    rig.add(2)
    assert rig.run().written == 2
    for rid in ids:
        rig.emu.update(rid, {"lifecyclestage": "lead"})
    time.sleep(0.01)
    report = rig.run()
    assert report.adopted == 3 and report.scored == 0, report.line()
    assert [rig.emu.get(rid)["ai_score"] for rid in ids] == ["42"] * 3
    assert rig.oa.request_count() == 2


def test_next_cycle_rereads_its_own_writes_in_the_fewest_pages(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(fetch_limit=1000)
    rig.add(450)
    assert rig.run().written == 450
    rig.emu.calls.clear()
    time.sleep(0.01)
    second = rig.run()
    assert second.skipped == 450 and second.scored == 0, second.line()
    assert rig.emu.calls["search"] <= 3 + 1, "⌈450/200⌉ changed-stream pages and one unscored search"


def test_a_lost_ledger_is_rebuilt_from_the_input_hash_property_without_an_llm_call(make_rig: Callable[..., Rig], tmp_path: Path) -> None:
    from crmsync.rebuild import rebuild

    rig = make_rig(outputs={"score": "ai_score", "needs_review": "ai_needs_review", "tier": "ai_tier", "input_hash": "ai_input_hash"})
    rig.emu.add_property("contacts", "ai_input_hash", "string", "text")
    ids = rig.add(6)
    assert rig.run().written == 6
    assert all(len(rig.emu.get(rid)["ai_input_hash"]) == 20 for rid in ids)
    rig.emu.update(ids[2], {"monthly_orders": 55555})  # changed after its score: must be scored again
    time.sleep(0.01)
    lost = Ledger(tmp_path / "new-ledger.sqlite", "hubspot")  # the old one is gone
    counts = rebuild(rig.config, rig.connector, lost)
    assert (counts["written"], counts["rescore"]) == (5, 1)
    rig.ledger, rig.cycle.ledger = lost, lost
    report = rig.run()
    assert report.scored == 1 and rig.oa.request_count() == 7, report.line()
    assert rig.emu.get(ids[2])["ai_score"] == expected_score(2, 55555)
