"""One crmsync per state dir: a second `run` (or `rescore`, `labels pull`) exits 3 naming the holder; read-only
commands work alongside; a holder killed with -9 blocks no one; no lead is ever paid twice."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_helpers import crm_rows, crmsync, lead, ledger_rows, start_daemon, write_setup
from tests.emulators import OpenAIEmulator, delay


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as e:
        e.script("emu-fast", delay(0.3))
        yield e


def _wait_for_calls(emu: OpenAIEmulator, n: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 30
    while emu.request_count() < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the daemon made no LLM call"
        time.sleep(0.05)


def _busy_message(state: Path, pid: int, command: str) -> re.Pattern[str]:
    return re.compile(
        re.escape(f"error: another crmsync (pid {pid} on {socket.gethostname()}, `crmsync {command}` since ")
        + r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
        + re.escape(
            f") is already using the state directory {state}. Only one may run per state directory: two would score and "
            f"pay for every lead twice. Fix: stop the other one first (e.g. `systemctl stop crmsync`), or give this one "
            f"its own [daemon] state_dir."
        )
    )


def test_second_instance_is_refused_naming_the_holder(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 21)])
    daemon = start_daemon(cfg, key=emu.api_key)
    try:
        _wait_for_calls(emu, 1, daemon)
        state = tmp_path / "state"
        for args in [("run", "--once"), ("run",), ("rescore", "--all"), ("labels", "pull")]:
            r = crmsync(cfg, *args, key=emu.api_key)
            assert r.returncode == 3, (args, r.stdout, r.stderr)
            assert _busy_message(state, daemon.pid, "run").fullmatch(" ".join(r.stderr.split())), r.stderr
        # Read-only commands work alongside the daemon.
        for args in [("status",), ("check",), ("ledger", "backup", str(tmp_path / "backup.sqlite"))]:
            r = crmsync(cfg, *args, key=emu.api_key)
            assert r.returncode == 0, (args, r.stdout, r.stderr)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    # Nothing was paid twice: one call per lead in the ledger, each scored once.
    ledger = ledger_rows(tmp_path)
    assert emu.request_count() == len(ledger) >= 1
    assert all(row["score_attempts"] == 1 for row in ledger.values())


def test_two_runs_started_together_pay_once(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 11)], concurrency=2)
    a, b = start_daemon(cfg, "--once", key=emu.api_key), start_daemon(cfg, "--once", key=emu.api_key)
    outs = [p.communicate(timeout=120) for p in (a, b)]
    assert sorted([a.returncode, b.returncode]) == [0, 3], outs
    loser = outs[[a.returncode, b.returncode].index(3)][1]
    assert "is already using the state directory" in loser and "Traceback" not in loser
    assert emu.request_count() == 10
    assert sum(1 for row in crm_rows(tmp_path).values() if row["ai_score"] is not None) == 10


def test_a_holder_killed_with_sigkill_blocks_no_one(tmp_path: Path, emu: OpenAIEmulator) -> None:
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 6)])
    daemon = start_daemon(cfg, key=emu.api_key)
    _wait_for_calls(emu, 1, daemon)
    daemon.send_signal(signal.SIGKILL)
    daemon.communicate(timeout=30)
    lock = tmp_path / "state" / "crmsync.lock"
    assert json.loads(lock.read_text())["pid"] == daemon.pid  # the stale file is still there...
    r = crmsync(cfg, "run", "--once", key=emu.api_key)  # ...and does not block
    assert r.returncode == 0, r.stderr
    assert json.loads(lock.read_text())["pid"] != daemon.pid
    assert all(row["ai_score"] is not None for row in crm_rows(tmp_path).values())
