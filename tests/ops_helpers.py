"""Helpers for the operations tests (one instance per state dir, ledger faults, SIGTERM, seed import).

The CLI runs as a real subprocess. Two wrappers from util-linux make the operating system refuse writes honestly:
``setpriv`` drops the capability that lets root ignore file modes (CI runs as root, where ``chmod 444`` would
otherwise not bite), and ``prlimit --fsize`` caps the size a process may grow a file to, so the kernel fails
writes past it the way a full disk does (SQLite then reports "database or disk is full").
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.daemon_helpers import env, lead, stamp, write_setup

# Root's "ignore file modes" capabilities; without them the kernel checks modes as for any other user.
PLAIN_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []


def setup(tmp: Path, base_url: str, n: int, **kw: Any) -> Path:
    """A config with ``n`` seed leads whose local CRM lives outside the state dir (tmp/crm), so a read-only state
    dir says something about the ledger only."""
    cfg = write_setup(tmp, base_url, [lead(i) for i in range(1, n + 1)], **kw)
    (tmp / "crm").mkdir(exist_ok=True)
    cfg.write_text(
        cfg.read_text().replace('seed_csv = "leads.csv"', f'seed_csv = "leads.csv"\npath = "{tmp / "crm" / "local-crm.sqlite"}"')
    )
    return cfg


def cli(cfg: Path, *args: str, key: str, wrap: list[str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [*(wrap or []), sys.executable, "-m", "crmsync", *args, "--config", str(cfg)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(key), timeout=timeout, cwd=cfg.parent)


def start(cfg: Path, *args: str, key: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "crmsync", *args, "--config", str(cfg)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(key), cwd=cfg.parent)


def said(text: str) -> str:
    """What a person reads, with the terminal's line wrapping undone."""
    return " ".join(text.split())


def crm_db(tmp: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp / "crm" / "local-crm.sqlite")
    db.row_factory = sqlite3.Row
    return db


def add_leads(tmp: Path, ids: list[str]) -> None:
    db = crm_db(tmp)
    with db:
        db.executemany(
            "INSERT INTO leads (id, company, title, monthly_orders, created_at, modified_at) VALUES (?, 'New Co', 'COO', 9000, ?, ?)",
            [(i, stamp(), stamp()) for i in ids],
        )
    db.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
