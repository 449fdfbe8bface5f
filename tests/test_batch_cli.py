"""The batch commands as a person uses them: `crmsync status`, `crmsync batches list|cancel`, `crmsync score --batch`."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.batch_rig import write_config
from tests.daemon_helpers import KEY_ENV, crmsync, lead, ledger_rows
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.test_batch_cycle import ALWAYS, expected_score, sent_per_lead


@pytest.fixture
def oa():
    with OpenAIBatchEmulator() as emu:
        yield emu
        assert not emu.errors, emu.errors


def test_status_lists_outstanding_batches_and_cancel_sends_their_leads_on(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    chain = ALWAYS + '\n[[chain]]\nprovider = "strong"'
    cfg = write_config(tmp_path, [lead(i) for i in range(1, 7)], openai_url=oa.base_url, chain=chain)
    oa.hold()
    r = crmsync(cfg, "run", "--once", key=oa.api_key)
    assert r.returncode == 0, r.stderr
    assert "6 lead(s) sent to a batch; their scores land at a later cycle." in r.stdout and "sent to batch 6" in r.stdout
    (batch_id,) = oa.batches
    r = crmsync(cfg, "status", key=oa.api_key)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"batch {batch_id} \(fast, step 1\): 6 leads, out \d+ s, submitted", r.stdout), r.stdout
    assert re.search(r"│ batched +│ +6 │", r.stdout), r.stdout
    r = crmsync(cfg, "batches", "cancel", key=oa.api_key)
    assert r.returncode == 2 and "name the batches to cancel" in r.stderr
    r = crmsync(cfg, "batches", "cancel", "batch_nope", key=oa.api_key)
    assert r.returncode == 1 and "no outstanding batch batch_nope; `crmsync batches list` shows them" in r.stderr
    r = crmsync(cfg, "batches", "cancel", batch_id, key=oa.api_key)
    assert r.returncode == 0, r.stderr
    assert f"batch {batch_id} (fast, 6 leads): cancelling; what did not run is scored by the next step" in r.stdout
    r = crmsync(cfg, "run", "--once", key=oa.api_key)  # cancelled: every lead goes to step 2, synchronously
    assert r.returncode == 0, r.stderr
    assert oa.request_count("emu-strong") == 6
    assert all(v["state"] == "written" for v in ledger_rows(tmp_path).values())
    r = crmsync(cfg, "batches", "list", key=oa.api_key)
    assert "no outstanding batches" in r.stdout


def test_chain_batch_takes_never_auto_or_always(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[chain]]\nprovider = "local"\nbatch = "sometimes"\n')
    r = crmsync(cfg, "check", key="unused")
    assert r.returncode == 2
    assert "`chain[0].batch` (line 3): Input should be 'never', 'auto' or 'always', got 'sometimes'." in r.stderr


def test_score_batch_for_a_file_resumes_without_submitting_twice(tmp_path: Path, oa: OpenAIBatchEmulator) -> None:
    cfg = write_config(tmp_path, [], openai_url=oa.base_url, chain=ALWAYS, extra="[scoring]\nbatch_poll_s = 0.2")
    with open(tmp_path / "in.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(lead(1)))
        w.writeheader()
        w.writerows(lead(i) for i in range(1, 11))
    env = {**os.environ, KEY_ENV: oa.api_key}
    cmd = [sys.executable, "-m", "crmsync", "score", "--config", str(cfg), "-i", "in.csv", "-o", "out.csv", "--batch"]
    r = subprocess.run([*cmd[:-3], "--batch"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "--batch needs --output" in r.stderr
    oa.hold()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    while not oa.batches or not any(e[0] == "retrieve" for e in oa.events):
        assert proc.poll() is None, proc.communicate()
    proc.kill()
    proc.wait()
    oa.finish()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "resuming: 10 lead(s) are already out in a batch" in r.stderr and "batch saving: $" in r.stderr
    with open(tmp_path / "out.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["id"] for row in rows] == [f"E{i:03d}" for i in range(1, 11)]
    by_id = {x["id"]: x for x in (lead(i) for i in range(1, 11))}
    assert all(int(row["score"]) == expected_score(by_id[row["id"]]) for row in rows)
    assert sent_per_lead(oa) == {f"Brand {i}": 1 for i in range(1, 11)} and oa.request_count("emu-fast") == 0
    assert {row["hops"] for row in rows} == {"fast[batch]:ok(0.90)"}


def test_check_warns_when_a_step_batches_on_a_provider_without_a_batch_api(tmp_path: Path) -> None:
    """The learned step has no batch API: `batch` there would silently cost the full price, so `check` says so."""
    from crmsync.checks import provider_problems
    from crmsync.config import load_config

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        '[providers.learned]\ntype = "learned"\n'
        '[[chain]]\nprovider = "learned"\nbatch = "auto"\n'
    )
    found = [p for p in provider_problems(load_config(cfg), "learned") if p.where == "chain[0].batch"]
    assert [(p.severity, p.message) for p in found] == [
        (
            "warning",
            (
                "provider 'learned' (type learned) has no batch API: batch = \"auto\" is ignored and its leads are scored "
                "synchronously, at the full price"
            ),
        )
    ]
