"""The daemon end to end: the real CLI as a subprocess, the local CRM, the OpenAI SDK against the emulator."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import crm_exec, crm_rows, crmsync, lead, ledger_rows, stamp, start_daemon, write_setup
from tests.emulators import OpenAIEmulator, default_rule, delay


@pytest.fixture
def emu():
    with OpenAIEmulator() as e:
        yield e


def test_cycles_score_new_and_changed_leads_only(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 6)])
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    rows = crm_rows(tmp_path)
    assert all(rows[f"E{i:03d}"]["ai_score"] is not None for i in range(1, 6))
    expected = default_rule(
        {
            "monthly_orders": 1500,
            "employees": 23,
            "title": "VP Operations",
            "source": "Demo request",
            "industry": "Apparel",
            "description": "Lead number 3",
        },
        {},
    )
    assert rows["E003"]["ai_score"] == expected["score"]
    assert emu.request_count() == 5

    # Unchanged leads are not rescored, although crmsync's own write bumped their modified time.
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    assert emu.request_count() == 5

    # New leads between cycles are scored; a changed input is rescored; nothing else.
    crm_exec(
        tmp_path,
        "INSERT INTO leads (id, company, title, monthly_orders, created_at, modified_at) VALUES ('N1', 'New Co', 'COO', 12000, ?, ?)",
        (stamp(), stamp()),
    )
    crm_exec(tmp_path, "UPDATE leads SET monthly_orders = 40000, modified_at = ? WHERE id = 'E001'", (stamp(),))
    before = rows["E001"]["ai_score"]
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    assert emu.request_count() == 7
    rows = crm_rows(tmp_path)
    assert rows["N1"]["ai_score"] is not None
    assert rows["E001"]["ai_score"] > before
    assert ledger_rows(tmp_path)["E002"]["score_attempts"] == 1


def test_dry_run_writes_nothing(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 4)])
    r = crmsync(cfg, "run", "--once", "--dry-run", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    assert "dry run" in r.stdout
    assert emu.request_count() == 3
    assert all(row["ai_score"] is None for row in crm_rows(tmp_path).values())
    assert ledger_rows(tmp_path) == {}


def test_sigterm_stops_cleanly_with_a_consistent_ledger(tmp_path: Path, emu: OpenAIEmulator) -> None:
    emu.script("emu-fast", delay(0.4))
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 21)])
    proc = start_daemon(cfg, key=emu.api_key)
    deadline = time.time() + 30
    while time.time() < deadline and emu.request_count() < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped cleanly" in err
    ledger = ledger_rows(tmp_path)
    crm = crm_rows(tmp_path)
    # Everything scored before the stop was stored, and written; nothing was lost or left half-done.
    assert 1 <= len(ledger) < 20
    assert all(row["state"] == "written" for row in ledger.values())
    assert {k for k, v in crm.items() if v["ai_score"] is not None} == set(ledger)
    assert emu.request_count() == len(ledger)


@pytest.mark.parametrize("kill_after", [1, 4, 7])
def test_kill_9_mid_cycle_loses_nothing_and_pays_once(tmp_path: Path, emu: OpenAIEmulator, kill_after: int) -> None:
    emu.script("emu-fast", delay(0.25))
    n = 10
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, n + 1)])
    proc = start_daemon(cfg, "--once", key=emu.api_key)
    deadline = time.time() + 30
    while time.time() < deadline and len(ledger_rows(tmp_path)) < kill_after:
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=10)
    stored_before = set(ledger_rows(tmp_path))
    assert len(stored_before) >= kill_after
    calls_before = emu.request_count()
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    crm = crm_rows(tmp_path)
    ledger = ledger_rows(tmp_path)
    assert all(crm[f"E{i:03d}"]["ai_score"] is not None for i in range(1, n + 1)), "every lead ends scored"
    assert all(row["state"] == "written" and row["score_attempts"] == 1 for row in ledger.values()), "scored exactly once"
    # Only the leads not stored before the kill were scored again: at most the one call in flight was paid twice.
    assert emu.request_count() - calls_before == n - len(stored_before)
    assert emu.request_count() <= n + 1


def test_rejected_write_is_parked_with_the_crm_message_and_others_land(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 4)])
    crmsync(cfg, "check", key=emu.api_key)  # builds the connector, which creates the CRM file
    crm_exec(tmp_path, "INSERT INTO crm_validation_rules VALUES ('E002', 'Partner leads cannot be scored')")
    r1 = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r1.returncode == 1
    assert "Partner leads cannot be scored" in r1.stderr
    ledger = ledger_rows(tmp_path)
    assert ledger["E002"]["state"] == "parked" and ledger["E002"]["write_attempts"] == 1, "a validation rule never passes on a resend"
    assert ledger["E001"]["state"] == ledger["E003"]["state"] == "written"
    r2 = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r2.returncode == 0 and ledger_rows(tmp_path)["E002"]["write_attempts"] == 1
    assert emu.request_count() == 3, "a parked lead is never paid for again"
    s = crmsync(cfg, "status", key=emu.api_key)
    assert "parked" in s.stdout and "E002" in s.stdout and "Partner leads cannot be scored" in s.stdout


def test_human_decision_is_never_overwritten(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)])
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    crm_exec(
        tmp_path,
        "UPDATE leads SET ai_review_decision='unqualified', ai_score=5, monthly_orders=99999, modified_at=? WHERE id='E001'",
        (stamp(),),
    )
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    assert crm_rows(tmp_path)["E001"]["ai_score"] == 5
    assert emu.request_count() == 1
    assert ledger_rows(tmp_path)["E001"]["state"] == "human"


def test_rescore_after_rubric_change_only_when_asked(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(1), lead(2)])
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    version = ledger_rows(tmp_path)["E001"]["rubric_version"]
    r = crmsync(cfg, "rescore", "--rubric-version", version, "--tier", ledger_rows(tmp_path)["E001"]["tier"], key=emu.api_key)
    assert r.returncode == 0 and "will be rescored" in r.stdout
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    assert emu.request_count() >= 3
    assert ledger_rows(tmp_path)["E001"]["score_attempts"] == 2


def test_daily_llm_budget_stops_new_leads_and_loses_none(tmp_path: Path, emu: OpenAIEmulator) -> None:
    # Each emulated call costs about $0.0017 at the test prices; a $0.004 budget allows 3 leads (the third crosses it).
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 9)], extra="")
    cfg.write_text(cfg.read_text().replace("[scoring]\nconcurrency = 1", "[scoring]\nconcurrency = 1\nmax_cost_per_day_usd = 0.004"))
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    assert "daily LLM budget reached" in r.stdout
    assert "wait for tomorrow" in r.stderr
    first = emu.request_count()
    assert 1 <= first < 8
    # The same day, the next cycle starts nothing new; the waiting leads are unscored, not lost.
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert emu.request_count() == first
    crm = crm_rows(tmp_path)
    assert sum(row["ai_score"] is not None for row in crm.values()) == first
    assert len(ledger_rows(tmp_path)) == first
    # Raising the budget lets the rest through.
    cfg.write_text(cfg.read_text().replace("max_cost_per_day_usd = 0.004", "max_cost_per_day_usd = 1.0"))
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    assert all(row["ai_score"] is not None for row in crm_rows(tmp_path).values())
    assert emu.request_count() == 8


def test_daemon_serves_prometheus_metrics(tmp_path: Path, emu: OpenAIEmulator) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 5)], extra=f"metrics_port = {port}")
    proc = start_daemon(cfg, key=emu.api_key)
    try:
        body = ""
        deadline = time.time() + 30
        while time.time() < deadline and 'crmsync_leads_total{outcome="scored"} 4.0' not in body:
            time.sleep(0.2)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
        assert 'crmsync_leads_total{outcome="scored"} 4.0' in body, body[-2000:]
        assert 'crmsync_crm_writes_total{result="ok"} 4.0' in body
        assert 'crmsync_llm_calls_total{model="emu-fast",outcome="ok",provider="fast"} 4.0' in body
        assert "crmsync_last_cycle_ok 1.0" in body
        cost = float(next(line.split()[1] for line in body.splitlines() if line.startswith("crmsync_llm_cost_usd_total ")))
        assert cost > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_malformed_answers_reach_the_crm_as_a_review_flag_without_a_score(tmp_path: Path, emu: OpenAIEmulator) -> None:
    from tests.emulators import raw

    emu.script("emu-fast", raw('{"score": 150, "confidence": "very"'))  # malformed, and out of range
    cfg = write_setup(tmp_path, emu.base_url, [lead(1)])
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    row = crm_rows(tmp_path)["E001"]
    assert row["ai_score"] is None and row["ai_tier"] is None, "never a made-up score"
    assert row["ai_needs_review"] == 1
    assert row["ai_reasons"].startswith("Review: no valid answer. No valid answer from any model; please score by hand.")
    assert emu.request_count() == 2  # the answer and one repair attempt
    # The next cycle does not pay again for the same inputs.
    assert crmsync(cfg, "run", "--once", key=emu.api_key).returncode == 0
    assert emu.request_count() == 2
