"""`kill -9` of `crmsync run --once` (the real CLI, a subprocess) at each point between recording a batch and
applying its results, then restarts: no lead is submitted twice, none is lost, every lead is written once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.batch_rig import ANTHROPIC_KEY_ENV, write_config
from tests.daemon_helpers import KEY_ENV, crm_rows, lead, ledger_rows
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator
from tests.test_batch_cycle import ALWAYS, expected_score, sent_per_lead

N = 20


def run_once(cfg: Path, keys: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, **keys}
    env.pop("CRMSYNC_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "crmsync", "run", "--once", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cfg.parent,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out


def kill_at(proc: subprocess.Popen[str], emu: OpenAIBatchEmulator | AnthropicBatchEmulator, op: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline and not any(e[0] == op for e in emu.events):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    assert any(e[0] == op for e in emu.events), f"never reached {op}"
    proc.kill()
    proc.wait(timeout=10)
    emu.delays.clear()


def assert_every_lead_written_once(tmp: Path, emu: OpenAIBatchEmulator | AnthropicBatchEmulator) -> None:
    crm, ledger = crm_rows(tmp), ledger_rows(tmp)
    assert all(crm[f"E{i:03d}"]["ai_score"] == expected_score(crm[f"E{i:03d}"]) for i in range(1, N + 1)), "none lost"
    assert all(row["state"] == "written" and row["score_attempts"] == 1 for row in ledger.values()), "written once"
    assert sent_per_lead(emu) == {f"Brand {i}": 1 for i in range(1, N + 1)}, "no lead submitted twice"


@pytest.fixture
def oa():
    with OpenAIBatchEmulator() as emu:
        yield emu
        assert not emu.errors, emu.errors


# upload / create_before: the batch never reached the provider; create_after: it did, the id never came back;
# retrieve: killed while polling; content: killed while reading the results.
@pytest.mark.parametrize("op", ["upload", "create_before", "create_after", "retrieve", "content"])
def test_openai_kill_9_between_submit_and_results(tmp_path: Path, oa: OpenAIBatchEmulator, op: str) -> None:
    cfg = write_config(tmp_path, [lead(i) for i in range(1, N + 1)], openai_url=oa.base_url, chain=ALWAYS)
    keys = {KEY_ENV: oa.api_key}
    oa.delays[op] = 60.0
    proc = run_once(cfg, keys)
    if op in ("retrieve", "content"):  # the first run submits; the second is killed while reading
        assert "sent to batch 20" in finish(proc)
        proc = run_once(cfg, keys)
    kill_at(proc, oa, op)
    before = {k: v["state"] for k, v in ledger_rows(tmp_path).items()}
    assert set(before.values()) == {"batched"}, "recorded before the provider was called"
    for _ in range(3):  # restarts: resume, and (if the batch never got through) submit once, then apply
        finish(run_once(cfg, keys))
        if all(v["state"] == "written" for v in ledger_rows(tmp_path).values()):
            break
    assert_every_lead_written_once(tmp_path, oa)
    assert len(oa.batches) == 1, "exactly one batch ever reached the provider"


def test_anthropic_kill_9_after_the_batch_was_created(tmp_path: Path) -> None:
    with AnthropicBatchEmulator() as an:
        cfg = write_config(
            tmp_path,
            [lead(i) for i in range(1, N + 1)],
            anthropic_url=an.base_url,
            chain='[[chain]]\nprovider = "claude"\nbatch = "always"',
        )
        keys = {ANTHROPIC_KEY_ENV: an.api_key}
        an.delays["create_after"] = 60.0
        proc = run_once(cfg, keys)
        kill_at(proc, an, "create_after")
        out = finish(run_once(cfg, keys))  # found again by size and time, results checked by custom_id
        assert "scored 20" in out, out
        assert_every_lead_written_once(tmp_path, an)
        assert len(an.batches) == 1
