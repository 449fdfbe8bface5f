"""Incremental sync on the local CRM, through `crmsync run --once` as a user runs it: a backlog larger than one
cycle drains, new leads are not starved by other integrations' edits, scores crmsync did not make are left
alone, a reviewer who decides mid-cycle wins, and a lost ledger is rebuilt without an LLM call."""

from __future__ import annotations

import csv
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import crm_exec, crm_rows, crmsync, lead, ledger_rows, stamp, start_daemon, write_setup
from tests.emulators import OpenAIEmulator, default_rule, rule


@pytest.fixture
def emu():
    with OpenAIEmulator() as e:
        yield e


def scored(tmp: Path) -> set[str]:
    return {i for i, r in crm_rows(tmp).items() if r["ai_score"] is not None}


def test_a_backlog_of_three_fetch_limits_drains_in_three_cycles(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 31)], concurrency=4, extra="fetch_limit = 10")
    for n in (10, 20, 30):
        r = crmsync(cfg, "run", "--once", key=emu.api_key)
        assert r.returncode == 0, r.stderr
        assert len(scored(tmp_path)) == n, r.stdout[-400:]
    assert emu.request_count() == 30, "every lead paid for exactly once"
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0 and "scored 0" in r.stdout
    assert emu.request_count() == 30


def test_new_leads_are_scored_while_another_integration_touches_hundreds(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(
        tmp_path, emu.base_url, [lead(i) for i in range(1, 201)], concurrency=8, extra="fetch_limit = 500\nchanged_limit = 50"
    )
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    assert len(scored(tmp_path)) == 200
    crmsync(cfg, "run", "--once", key=emu.api_key)  # reads crmsync's own 200 writes (in pages of changed_limit)
    paid = emu.request_count()
    crm_exec(tmp_path, "ALTER TABLE leads ADD COLUMN owner_note TEXT")  # a field crmsync does not map
    for wave in range(3):
        # Another integration rewrites a non-input column of every scored lead, and 5 new leads arrive.
        crm_exec(tmp_path, "UPDATE leads SET owner_note = ?, modified_at = ? WHERE ai_score IS NOT NULL", (f"X{wave}", stamp()))
        for k in range(5):
            crm_exec(
                tmp_path,
                "INSERT INTO leads (id, company, title, monthly_orders, created_at, modified_at) VALUES (?,?,?,?,?,?)",
                (f"N{wave}{k}", f"New {wave}{k}", "COO", 9000, stamp(), stamp()),
            )
        r = crmsync(cfg, "run", "--once", key=emu.api_key)
        assert r.returncode == 0, r.stderr
        new = {f"N{wave}{k}" for k in range(5)}
        assert new <= scored(tmp_path), f"wave {wave}: the new leads waited behind touched ones: {r.stdout[-300:]}"
        paid += 5
        assert emu.request_count() == paid, "touched leads are never rescored: their inputs did not change"


def test_scores_crmsync_did_not_make_are_adopted_not_overwritten(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 6)])
    with open(tmp_path / "leads.csv", newline="") as fh:  # an import that carries another tool's scores
        rows = list(csv.DictReader(fh))
    for row in rows[:3]:
        row["ai_score"] = "42"
    with open(tmp_path / "leads.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*rows[0].keys(), "ai_score"])
        w.writeheader()
        w.writerows(rows)
    for _ in range(2):
        crm_exec(tmp_path, "UPDATE leads SET modified_at = ? WHERE 1", (stamp(),)) if (tmp_path / "state").exists() else None
        r = crmsync(cfg, "run", "--once", key=emu.api_key)
        assert r.returncode == 0, r.stderr
    crm = crm_rows(tmp_path)
    assert [crm[f"E{i:03d}"]["ai_score"] for i in (1, 2, 3)] == [42, 42, 42], "never overwritten"
    assert emu.request_count() == 2, "only the two unscored leads were paid for"
    assert "adopted 3" in r.stdout or ledger_rows(tmp_path)["E001"]["state"] == "external"
    assert {i: ledger_rows(tmp_path)[i]["state"] for i in ("E001", "E002", "E003")} == dict.fromkeys(("E001", "E002", "E003"), "external")
    status = crmsync(cfg, "status", key=emu.api_key).stdout
    assert re.search(r"adopted \(scored elsewhere\)\s*│\s*3", status), status
    assert "changes read up to" in status and "unscored scan" in status

    # When its inputs change afterwards, an adopted lead is scored again.
    crm_exec(tmp_path, "UPDATE leads SET monthly_orders = 70000, modified_at = ? WHERE id = 'E002'", (stamp(),))
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    assert emu.request_count() == 3
    assert crm_rows(tmp_path)["E002"]["ai_score"] != 42 and crm_rows(tmp_path)["E001"]["ai_score"] == 42


def test_a_reviewer_who_decides_mid_cycle_wins(tmp_path: Path, emu: OpenAIEmulator) -> None:
    """Seven leads are decided by a reviewer while the cycle is scoring them (after the fetch, before the write)."""
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 21)], concurrency=4)
    decided = [f"E{i:03d}" for i in (2, 5, 7, 11, 13, 17, 19)]
    started = threading.Event()

    def slow(lead_: dict, body: dict) -> dict:
        started.set()
        time.sleep(0.15)
        return default_rule(lead_, body)

    emu.script("emu-fast", rule(slow))
    proc = start_daemon(cfg, "--once", key=emu.api_key)
    assert started.wait(30), "the cycle never started scoring"
    time.sleep(0.1)
    for lead_id in decided:  # as a reviewer in the CRM would: their decision and their own score
        crm_exec(
            tmp_path, "UPDATE leads SET ai_review_decision = 'unqualified', ai_score = 3, modified_at = ? WHERE id = ?", (stamp(), lead_id)
        )
    _out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 0, errs
    crm = crm_rows(tmp_path)
    assert [crm[i]["ai_score"] for i in decided] == [3] * 7, "the reviewer's values stand"
    assert all(crm[i]["ai_review_decision"] == "unqualified" for i in decided)
    others = [f"E{i:03d}" for i in range(1, 21) if f"E{i:03d}" not in decided]
    assert all(crm[i]["ai_score"] not in (None, 3) for i in others)
    states = ledger_rows(tmp_path)
    assert all(states[i]["state"] == "human" for i in decided)
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    assert crm_rows(tmp_path)["E002"]["ai_score"] == 3, "nor at any later cycle"
    assert emu.request_count() <= 20


@pytest.mark.parametrize("mapped", [True, False])
def test_a_lost_ledger_is_rebuilt_from_the_crm_without_an_llm_call(tmp_path: Path, emu: OpenAIEmulator, mapped: bool) -> None:
    extra_fields = '\n[fields.outputs]\ninput_hash = "ai_input_hash"\n' if mapped else ""
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 11)])
    cfg.write_text(cfg.read_text() + extra_fields)
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    assert emu.request_count() == 10
    before = {i: r["ai_score"] for i, r in crm_rows(tmp_path).items()}
    if mapped:
        assert all(r["ai_input_hash"] for r in crm_rows(tmp_path).values()), "the CRM says which inputs each score came from"

    (tmp_path / "state" / "ledger.sqlite").unlink()  # the state directory's ledger is lost
    for extra in ("-wal", "-shm"):
        (tmp_path / "state" / f"ledger.sqlite{extra}").unlink(missing_ok=True)
    crm_exec(tmp_path, "UPDATE leads SET monthly_orders = 99999, modified_at = ? WHERE id = 'E004'", (stamp(),))
    if mapped:
        r = crmsync(cfg, "ledger", "rebuild", key=emu.api_key)
        assert r.returncode == 0, r.stderr
        assert "9 scored by crmsync with unchanged inputs (kept), 1 with changed inputs (rescored next cycle)" in r.stdout
        assert "No LLM call was made." in r.stdout
        assert emu.request_count() == 10
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    after = {i: r["ai_score"] for i, r in crm_rows(tmp_path).items()}
    if mapped:
        assert emu.request_count() == 11, "only the lead whose inputs changed is scored again"
        assert after["E004"] != before["E004"]
    else:
        assert emu.request_count() == 10, "without a ledger, a scored lead is adopted, never repaid"
    assert {i: s for i, s in after.items() if i != "E004"} == {i: s for i, s in before.items() if i != "E004"}


def test_parked_and_failed_leads_do_not_block_the_unscored_stream(tmp_path: Path, emu: OpenAIEmulator) -> None:
    """The first fetch_limit leads are rejected by a CRM validation rule forever; the rest still get scored."""
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 13)], extra="fetch_limit = 4")
    crmsync(cfg, "check", key=emu.api_key)  # creates the local CRM
    db = sqlite3.connect(tmp_path / "state" / "local-crm.sqlite")
    with db:
        db.executemany(
            "INSERT INTO crm_validation_rules VALUES (?, 'AI score cannot be set on partner leads')", [(f"E{i:03d}",) for i in range(1, 5)]
        )
    db.close()
    for _ in range(4):
        crmsync(cfg, "run", "--once", key=emu.api_key)
    assert scored(tmp_path) == {f"E{i:03d}" for i in range(5, 13)}
    assert emu.request_count() == 12, "parked leads are never paid for again"
    states = ledger_rows(tmp_path)
    assert all(states[f"E{i:03d}"]["state"] == "parked" for i in range(1, 5))


def test_run_once_prints_a_bounded_table_unless_asked_for_all(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 61)], concurrency=4)
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    shown = [line for line in r.stdout.splitlines() if line.startswith("│ E0")]
    assert len(shown) == 20, "the first 20 (none is flagged here)"
    assert "(40 more lead(s) not shown; `--show all` prints every one)" in r.stdout
    crm_exec(tmp_path, "UPDATE leads SET ai_score = NULL, modified_at = ?", (stamp(),))  # wiped by an import
    (tmp_path / "state" / "ledger.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (tmp_path / "state" / f"ledger.sqlite{extra}").unlink(missing_ok=True)
    r = crmsync(cfg, "run", "--once", "--show", "all", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    assert len([line for line in r.stdout.splitlines() if line.startswith("│ E0")]) == 60
    assert "not shown" not in r.stdout
