"""`run --once` stops like the daemon on SIGTERM/SIGINT: no new lead starts, the ones in flight finish and are
stored and written, exit 0 with a line saying it stopped early. The next run scores the rest; none is paid twice."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_helpers import crm_rows, crmsync, lead, ledger_rows, start_daemon, write_setup
from tests.emulators import OpenAIEmulator, delay


@pytest.fixture
def emu() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as e:
        yield e


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_once_finishes_in_flight_leads_and_exits_0(tmp_path: Path, emu: OpenAIEmulator, sig: signal.Signals) -> None:
    emu.script("emu-fast", delay(0.4))
    cfg = write_setup(tmp_path, emu.base_url, [lead(i) for i in range(1, 21)], concurrency=2)
    proc = start_daemon(cfg, "--once", key=emu.api_key)
    deadline = time.time() + 30
    while emu.request_count() < 3:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"{sig.name} received: finishing in-flight leads, then stopping" in err
    line = next(text for text in out.splitlines() if text.startswith("fetched "))
    assert line.endswith("[stopped early]"), line
    assert "Traceback" not in err

    # Every call paid for was stored and written; no lead was left half-done.
    ledger = ledger_rows(tmp_path)
    assert 3 <= len(ledger) < 20
    assert emu.request_count() == len(ledger)
    assert all(row["state"] == "written" for row in ledger.values())
    assert {k for k, v in crm_rows(tmp_path).items() if v["ai_score"] is not None} == set(ledger)

    # The next run scores the rest and pays for none twice.
    r = crmsync(cfg, "run", "--once", key=emu.api_key)
    assert r.returncode == 0, r.stderr
    assert emu.request_count() == 20
    assert all(v["ai_score"] is not None for v in crm_rows(tmp_path).values())
