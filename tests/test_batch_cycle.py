"""Issue 14 through the daemon's own cycle: leads go through the providers' batch APIs (the real openai and
anthropic SDKs against the batch emulators), results come back through the same write path, and every lead the
batch could not answer ends scored by the next step or retried."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from crmsync.batch_store import BatchStore
from tests.batch_rig import ANTHROPIC_KEY_ENV, rig, write_config
from tests.daemon_helpers import KEY_ENV, crm_exec, crm_rows, lead, ledger_rows, stamp
from tests.emulators import default_rule, raw
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator

ALWAYS = '[[chain]]\nprovider = "fast"\nbatch = "always"'


@pytest.fixture
def oa(monkeypatch: pytest.MonkeyPatch):
    with OpenAIBatchEmulator() as emu:
        monkeypatch.setenv(KEY_ENV, emu.api_key)
        yield emu
        assert not emu.errors, emu.errors


@pytest.fixture
def an(monkeypatch: pytest.MonkeyPatch):
    with AnthropicBatchEmulator() as emu:
        monkeypatch.setenv(ANTHROPIC_KEY_ENV, emu.api_key)
        yield emu
        assert not emu.errors, emu.errors


def expected_score(row: dict) -> int:
    inputs = {k: row[k] for k in ("company", "title", "industry", "employees", "monthly_orders", "source", "description")}
    return default_rule({k: v for k, v in inputs.items() if v not in (None, "")})["score"]


def hops(tmp: Path, lead_id: str) -> list[dict]:
    return json.loads(ledger_rows(tmp)[lead_id]["result_json"])["hops"]


def sent_per_lead(emu) -> dict[str, int]:
    """How often each lead went out in any batch (by the lead block in its prompt)."""
    counts: dict[str, int] = {}
    for r in emu.batched_requests():
        text = json.dumps(r.body)
        name = text.split('\\"company\\": \\"')[1].split('\\"')[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_a_backlog_goes_out_as_one_batch_and_lands_with_the_synchronous_scores(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    leads = [lead(i) for i in range(1, 31)]
    r = rig(write_config(tmp_path, leads, openai_url=oa.base_url, chain=ALWAYS))
    try:
        first = r.run()
        assert first.batched == 30 and first.scored == 0
        assert oa.request_count("emu-fast") == 0, "no synchronous call"
        assert len(oa.batches) == 1 and all(v == "batched" for v in (x["state"] for x in ledger_rows(tmp_path).values()))
        second = r.run()
    finally:
        r.close()
    assert second.scored == 30 and second.written == 30 and second.batched == 0
    crm = crm_rows(tmp_path)
    assert all(crm[x["id"]]["ai_score"] == expected_score(x) for x in leads)
    ledger = ledger_rows(tmp_path)
    assert all(row["state"] == "written" and row["score_attempts"] == 1 for row in ledger.values())
    h = hops(tmp_path, "E007")
    assert [(x["mode"], x["outcome"]) for x in h] == [("batch", "ok")]
    # Half price: what the same tokens cost synchronously is recorded as the saving.
    assert h[0]["cost_usd"] == pytest.approx(h[0]["saved_usd"]) and h[0]["cost_usd"] > 0
    assert second.batch_saved_usd == pytest.approx(second.cost_usd)
    assert "batch saving $" in second.line()
    assert sent_per_lead(oa) == {f"Brand {i}": 1 for i in range(1, 31)}


def test_auto_scores_a_trickle_at_once_and_batches_a_backlog(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    chain = '[[chain]]\nprovider = "fast"\nbatch = "auto"'
    cfg = write_config(
        tmp_path, [lead(i) for i in range(1, 6)], openai_url=oa.base_url, chain=chain, extra="[scoring]\nbatch_min_leads = 10"
    )
    r = rig(cfg)
    try:
        report = r.run()
        assert report.scored == 5 and report.batched == 0 and oa.request_count("emu-fast") == 5
        for i in range(6, 18):
            crm_exec(
                tmp_path,
                "INSERT INTO leads (id, company, monthly_orders, created_at, modified_at) VALUES (?,?,?,?,?)",
                (f"N{i:02d}", f"New {i}", 100 * i, stamp(), stamp()),
            )
        report = r.run()
        assert report.batched == 12 and report.scored == 0
        report = r.run()
        assert report.scored == 12
    finally:
        r.close()
    assert all(v["ai_score"] is not None for v in crm_rows(tmp_path).values())


def test_expired_and_errored_requests_go_to_the_next_step(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    chain = ALWAYS + '\n[[chain]]\nprovider = "strong"'
    leads = [lead(i) for i in range(1, 13)]
    r = rig(write_config(tmp_path, leads, openai_url=oa.base_url, chain=chain))
    oa.hold().fail_requests({1, 3, 5}, status=500)
    try:
        r.run()
        oa.expire(processed=8)  # 8 processed (3 of them errored), 4 expired
        report = r.run()
    finally:
        r.close()
    assert report.scored == 12 and report.written == 12 and report.fell_back == 7
    assert oa.request_count("emu-strong") == 7, "the 7 without an answer, synchronously on the next step"
    ledger = ledger_rows(tmp_path)
    assert all(row["state"] == "written" for row in ledger.values())
    outcomes = {lead_id: [(h["mode"], h["outcome"]) for h in hops(tmp_path, lead_id)] for lead_id in ledger}
    assert outcomes["E002"] == [("batch", "unavailable"), ("score", "ok")]  # errored
    assert outcomes["E012"] == [("batch", "unavailable"), ("score", "ok")]  # expired
    assert "batch_expired" in hops(tmp_path, "E012")[0]["detail"]
    assert outcomes["E001"] == [("batch", "ok")]


def test_a_one_step_chain_retries_what_the_batch_could_not_answer(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    r = rig(write_config(tmp_path, [lead(i) for i in range(1, 6)], openai_url=oa.base_url, chain=ALWAYS))
    oa.fail_requests({0, 2}, status=503)
    try:
        r.run()
        oa.fail_requests(set())
        report = r.run()
        # No answer, no made-up score: recorded as failed, and the unscored stream sends them again (a new batch).
        assert report.scored == 3 and report.failed == 2 and report.batched == 2
        assert {k for k, v in ledger_rows(tmp_path).items() if v["state"] == "batched"} == {"E001", "E003"}
        report = r.run()
        assert report.scored == 2
    finally:
        r.close()
    assert all(v["ai_score"] is not None for v in crm_rows(tmp_path).values())
    assert sent_per_lead(oa) == {"Brand 1": 2, "Brand 2": 1, "Brand 3": 2, "Brand 4": 1, "Brand 5": 1}


def test_an_invalid_answer_gets_its_one_repair_then_the_next_step(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    chain = ALWAYS + '\n[[chain]]\nprovider = "strong"'
    r = rig(write_config(tmp_path, [lead(i) for i in range(1, 4)], openai_url=oa.base_url, chain=chain, extra="[scoring]\nconcurrency = 1"))
    # Three invalid batch answers (malformed, out of range, cut short); then lead 1's repair is invalid too.
    oa.script("emu-fast", raw("not json"), raw('{"score": 150}'), raw("{"), raw("still not json"), rule_all())
    try:
        r.run()
        r.run()
    finally:
        r.close()
    got = {i: [(h["mode"], h["step"], h["outcome"]) for h in hops(tmp_path, i)] for i in ("E001", "E002", "E003")}
    assert got["E001"] == [("batch", 0, "invalid"), ("score", 0, "invalid"), ("score", 1, "ok")]
    assert got["E002"] == [("batch", 0, "invalid"), ("score", 0, "repaired")]
    assert got["E003"] == [("batch", 0, "invalid"), ("score", 0, "repaired")]
    assert oa.request_count("emu-strong") == 1
    assert all(v["ai_score"] is not None for v in crm_rows(tmp_path).values())


def rule_all():
    from tests.emulators import rule

    return rule(default_rule)


def test_a_lead_changed_or_decided_while_its_batch_was_out(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    r = rig(write_config(tmp_path, [lead(i) for i in range(1, 6)], openai_url=oa.base_url, chain=ALWAYS))
    oa.hold()
    try:
        r.run()
        crm_exec(tmp_path, "UPDATE leads SET monthly_orders = 90000, modified_at = ? WHERE id = 'E002'", (stamp(),))
        crm_exec(tmp_path, "UPDATE leads SET ai_review_decision = 'qualified', modified_at = ? WHERE id = 'E004'", (stamp(),))
        oa.finish()
        oa.hold(False)
        report = r.run()
        assert report.scored == 3 and report.batched == 1, "E002 discarded and sent again with its new inputs"
        r.run()
    finally:
        r.close()
    crm, ledger = crm_rows(tmp_path), ledger_rows(tmp_path)
    assert crm["E002"]["ai_score"] == expected_score(crm["E002"]) and crm["E002"]["monthly_orders"] == 90000
    assert crm["E004"]["ai_score"] is None and ledger["E004"]["state"] == "human"
    assert ledger["E002"]["score_attempts"] == 1, "the stale result was never recorded"
    db = sqlite3.connect(tmp_path / "state" / "ledger.sqlite")
    calls = db.execute("SELECT lead_id, COUNT(*), SUM(cost_usd) FROM calls GROUP BY lead_id").fetchall()
    db.close()
    # ... but it was billed: both of E002's batch answers are in the spend; E004's (decided meanwhile) too.
    assert {lead_id: n for lead_id, n, _ in calls} == {"E001": 1, "E002": 2, "E003": 1, "E004": 1, "E005": 1}
    assert all(cost > 0 for _, _, cost in calls)
    assert sent_per_lead(oa)["Brand 2"] == 2


def test_low_confidence_escalates_into_the_next_steps_batch(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    chain = ALWAYS + '\nescalate_below = 0.8\n[[chain]]\nprovider = "strong"\nbatch = "always"'
    leads = [lead(i, employees="" if i % 2 else 30) for i in range(1, 7)]  # odd ids: confidence 0.55
    r = rig(write_config(tmp_path, leads, openai_url=oa.base_url, chain=chain))
    try:
        assert r.run().batched == 6
        second = r.run()
        assert second.scored == 3 and second.batched == 3  # the unsure three go into step 2's batch
        third = r.run()
        assert third.scored == 3 and third.escalated == 3
    finally:
        r.close()
    assert [(h["step"], h["mode"]) for h in hops(tmp_path, "E001")] == [(0, "batch"), (1, "batch")]
    assert len(oa.batched_requests("emu-strong")) == 3 and oa.request_count("emu-strong") == 0
    assert all(v["state"] == "written" and v["score_attempts"] == 1 for v in ledger_rows(tmp_path).values())


def test_anthropic_message_batches_with_the_cached_rubric_prefix(tmp_path: Path, an: AnthropicBatchEmulator) -> None:
    chain = '[[chain]]\nprovider = "claude"\nbatch = "always"'
    leads = [lead(i) for i in range(1, 9)]
    r = rig(write_config(tmp_path, leads, anthropic_url=an.base_url, chain=chain))
    an.fail_requests({2}, status=529)
    an.finish_after_polls = 1
    try:
        assert r.run().batched == 8
        assert r.run().scored == 0  # first poll: still in progress
        report = r.run()
    finally:
        r.close()
    assert report.scored == 7 and report.failed == 1
    params = an.batched_requests()[0].body
    assert params["system"][0]["cache_control"] == {"type": "ephemeral"} and "temperature" not in params
    crm = crm_rows(tmp_path)
    assert all(crm[x["id"]]["ai_score"] == expected_score(x) for x in leads if x["id"] != "E003")
    assert "overloaded_error" in hops(tmp_path, "E003")[0]["detail"]


def test_replaying_a_half_applied_batch_records_nothing_twice(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    """A crash after results were recorded but before their requests were marked applied: the replay is a no-op."""
    r = rig(write_config(tmp_path, [lead(i) for i in range(1, 5)], openai_url=oa.base_url, chain=ALWAYS))
    try:
        r.run()
        r.run()
        store = BatchStore(r.ledger)
        r.ledger.db.execute("UPDATE batch_requests SET state='pending'")
        r.ledger.db.execute("UPDATE batches SET state='submitted'")
        assert len(store.outstanding()) == 1
        report = r.run()
        assert report.scored == 0 and report.written == 0
        assert store.outstanding() == []
    finally:
        r.close()
    assert all(v["score_attempts"] == 1 and v["state"] == "written" for v in ledger_rows(tmp_path).values())


def test_metrics_count_leads_sent_to_batch_and_the_saving() -> None:
    from crmsync.cycle import CycleReport
    from crmsync.metrics import Metrics

    m = Metrics()
    m.observe(CycleReport(batched=2000, batch_saved_usd=0.0894), 1.0, None)
    m.observe(CycleReport(batched=5), 1.0, None)
    assert m.registry.get_sample_value("crmsync_leads_sent_to_batch_total") == 2005
    assert m.registry.get_sample_value("crmsync_batch_saving_usd_total") == pytest.approx(0.0894)
