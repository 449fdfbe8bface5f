"""The local CRM's seed import is all or nothing: `kill -9` during a 2,000-row import, then a restart, leaves every
row present. A seed CSV that is not UTF-8 (or has a broken row) is one config error naming the file and the line."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import crmsync, env, lead, write_setup

ROWS = 2000


def _count(tmp: Path) -> int:
    path = tmp / "state" / "local-crm.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM leads").fetchone()[0]
    except sqlite3.OperationalError:  # no table yet: the import's transaction never committed
        return 0
    finally:
        db.close()


@pytest.mark.parametrize("kill_at_wal_bytes", [1 << 20, 8 << 20])
def test_kill_9_during_seed_import_then_restart_has_every_row(tmp_path: Path, kill_at_wal_bytes: int) -> None:
    # 2,000 leads with long descriptions (~40 MB): the import takes long enough to be killed in the middle.
    cfg = write_setup(tmp_path, "http://127.0.0.1:9/v1", [lead(i, description=f"{i} " + "x" * 20_000) for i in range(1, ROWS + 1)])
    wal = tmp_path / "state" / "local-crm.sqlite-wal"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmsync", "fields", "create", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(""),
        cwd=tmp_path,
    )
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        if wal.exists() and wal.stat().st_size >= kill_at_wal_bytes:  # the import is writing its transaction
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the import finished before it could be killed: make the seed bigger"
    assert _count(tmp_path) in (0, ROWS)  # never a partial import (before: 4 rows, and a restart never loaded the rest)

    r = crmsync(cfg, "fields", "create", key="")
    assert r.returncode == 0, r.stderr
    assert _count(tmp_path) == ROWS
    db = sqlite3.connect(tmp_path / "state" / "local-crm.sqlite")
    ids = {row[0] for row in db.execute("SELECT id FROM leads")}
    db.close()
    assert ids == {f"E{i:03d}" for i in range(1, ROWS + 1)}


def _config_error(cfg: Path) -> str:
    r = crmsync(cfg, "fields", "create", key="")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return " ".join(r.stderr.split())


def test_non_utf8_seed_csv_names_file_and_line(tmp_path: Path) -> None:
    cfg = write_setup(tmp_path, "http://127.0.0.1:9/v1", [lead(1), lead(2, company="Müller Versand GmbH"), lead(3)])
    seed = tmp_path / "leads.csv"
    seed.write_bytes(seed.read_text(encoding="utf-8").encode("cp1252"))  # what Excel's plain "CSV" writes
    assert _config_error(cfg) == (
        f"configuration error local CRM: seed CSV {seed} line 3: not valid UTF-8 (byte 0xfc). Save it as UTF-8 (in Excel: "
        f"File > Save As > 'CSV UTF-8'), or convert it, e.g. `iconv -f cp1252 -t utf-8 leads.csv > leads-utf8.csv`, and "
        f"point seed_csv at the new file."
    )
    assert _count(tmp_path) == 0


def test_broken_row_names_the_line_and_imports_nothing(tmp_path: Path) -> None:
    cfg = write_setup(tmp_path, "http://127.0.0.1:9/v1", [lead(1), lead(2), lead(1)])
    seed = tmp_path / "leads.csv"
    assert _config_error(cfg) == (
        f"configuration error local CRM: seed CSV {seed} line 4: id 'E001' is there twice (or already in the table). "
        f"Give each lead its own id; nothing was imported."
    )
    assert _count(tmp_path) == 0
    seed.write_bytes(seed.read_bytes().replace(b"Lead number 2", b"x" * 200_000))
    assert _config_error(cfg) == (
        f"configuration error local CRM: seed CSV {seed} line 3: field larger than field limit (131072). Fix the file, or export it again."
    )
