"""`crmsync ledger backup` and the README's restore procedure: a consistent copy made while crmsync may run,
never over an existing file; restored, it lets crmsync carry on without paying for any lead again."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tests.emulators import OpenAIEmulator
from tests.ops_helpers import add_leads, cli, said, setup


def test_backup_then_restore_pays_nothing_again(tmp_path: Path) -> None:
    with OpenAIEmulator() as emu:
        cfg = setup(tmp_path, emu.base_url, 3)
        assert cli(cfg, "run", "--once", key=emu.api_key).returncode == 0
        state = tmp_path / "state"
        ledger, backup = state / "ledger.sqlite", tmp_path / "ledger-backup.sqlite"

        r = cli(cfg, "ledger", "backup", str(backup), key=emu.api_key)
        assert r.returncode == 0, r.stderr
        assert said(r.stdout) == f"ledger {ledger} backed up to {backup} ({backup.stat().st_size} bytes)"
        db = sqlite3.connect(backup)
        assert db.execute("SELECT COUNT(*) FROM leads WHERE state = 'written'").fetchone()[0] == 3
        db.close()
        assert not (tmp_path / "ledger-backup.sqlite.partial").exists()

        r = cli(cfg, "ledger", "backup", str(backup), key=emu.api_key)  # never over an existing file
        assert r.returncode == 1
        assert said(r.stderr) == f"error: {backup} already exists: a backup never overwrites a file. Fix: choose a new name."

        ledger.write_bytes(b"\0" * 8192)  # damaged
        assert cli(cfg, "run", "--once", key=emu.api_key).returncode == 4
        # The README's restore: keep the bad files, put the backup in place, start.
        (state / "damaged").mkdir()
        for f in state.glob("ledger.sqlite*"):
            f.rename(state / "damaged" / f.name)
        shutil.copyfile(backup, ledger)
        add_leads(tmp_path, ["N1"])
        r = cli(cfg, "run", "--once", key=emu.api_key)
        assert r.returncode == 0, r.stderr
        assert emu.request_count() == 4  # the new lead only: the 3 in the backup are not paid for again
