"""A rubric edit takes effect at the next batch; a broken edit keeps the last good rubric scoring."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crmsync.app import build_connector, build_scorer
from crmsync.config import load_config
from crmsync.cycle import Cycle
from crmsync.rubric import bundled_rubric_path
from crmsync.state import Ledger
from tests.daemon_helpers import KEY_ENV, crm_exec, lead, ledger_rows, write_setup
from tests.emulators import OpenAIEmulator


def test_broken_edit_keeps_last_good_rubric_then_fix_takes_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rubric = tmp_path / "lead_score.md"
    good = bundled_rubric_path().read_text()
    rubric.write_text(good)
    with OpenAIEmulator() as emu:
        monkeypatch.setenv(KEY_ENV, emu.api_key)
        cfg = load_config(write_setup(tmp_path, emu.base_url, [lead(1)], rubric=rubric))
        connector = build_connector(cfg)
        ledger = Ledger(cfg.state_dir / "ledger.sqlite", "sqlite")
        cycle = Cycle(cfg, connector, ledger, build_scorer(cfg))
        assert cycle.run().ok
        v1 = ledger_rows(tmp_path)["E001"]["rubric_version"]

        # Sales ops save a broken edit (a typo in the tier table) while the daemon runs.
        broken = good.replace("B = 60", "B = sixty")
        rubric.write_text(broken)
        crm_exec(tmp_path, "INSERT INTO leads (id, company, monthly_orders, created_at) VALUES ('N1', 'New', 900, '2030-01-01')")
        with caplog.at_level(logging.ERROR, logger="crmsync.rubric"):
            report = cycle.run()
        assert report.scored == 1, "scoring went on"
        assert ledger_rows(tmp_path)["N1"]["rubric_version"] == v1, "with the last good rubric"
        line = next(i for i, t in enumerate(broken.splitlines(), 1) if "sixty" in t)
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "rubric edit rejected, still scoring with the last good version" in logged
        assert f"{rubric}:{line}" in logged

        # The fix takes effect at the next batch, with a new version recorded on new scores.
        rubric.write_text(good.replace("A = 80", "A = 85"))
        crm_exec(tmp_path, "INSERT INTO leads (id, company, monthly_orders, created_at) VALUES ('N2', 'Newer', 900, '2030-01-02')")
        assert cycle.run().scored == 1
        v3 = ledger_rows(tmp_path)["N2"]["rubric_version"]
        assert v3 not in (v1, None)
        # Old scores are not silently redone because the rubric changed: only `crmsync rescore` does that.
        assert ledger_rows(tmp_path)["E001"]["rubric_version"] == v1
        assert emu.request_count() == 3
        connector.close()
        ledger.close()
