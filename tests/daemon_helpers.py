"""Helpers for the end-to-end tests: a config on disk, the local CRM file, and the daemon as a subprocess."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KEY_ENV = "CRMSYNC_E2E_OPENAI_KEY"
COLUMNS = ["id", "company", "title", "industry", "employees", "monthly_orders", "source", "description"]


def lead(i: int, **kw: Any) -> dict[str, Any]:
    row = {
        "id": f"E{i:03d}",
        "company": f"Brand {i}",
        "title": "VP Operations",
        "industry": "Apparel",
        "employees": 20 + i,
        "monthly_orders": 500 * i,
        "source": "Demo request",
        "description": f"Lead number {i}",
    }
    row.update(kw)
    return row


def write_setup(
    tmp: Path,
    base_url: str,
    leads: list[dict[str, Any]],
    *,
    extra: str = "",
    chain: str | None = None,
    concurrency: int = 1,
    rubric: Path | None = None,
) -> Path:
    with open(tmp / "leads.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(leads)
    rubric_line = f'[rubric]\npath = "{rubric}"\n' if rubric else ""
    chain_text = chain or '[[chain]]\nprovider = "fast"'
    cfg = tmp / "crmsync.toml"
    cfg.write_text(
        f"""
[crm]
type = "sqlite"
[crm.options]
seed_csv = "leads.csv"

[fields.inputs]
company = "company"
title = "title"
industry = "industry"
employees = "employees"
monthly_orders = "monthly_orders"
source = "source"
description = "description"

{rubric_line}
[providers.fast]
type = "openai"
model = "emu-fast"
base_url = "{base_url}"
api_key_env = "{KEY_ENV}"
max_retries = 0
timeout_s = 10

{chain_text}

[scoring]
concurrency = {concurrency}

[prices."emu-fast"]
input = 1.0
output = 2.0
as_of = 2026-11-01

[daemon]
interval_s = 10
state_dir = "state"
max_write_attempts = 2
changed_lag_s = 0
{extra}
"""
    )
    return cfg


def stamp() -> str:
    """Now, in the local CRM's text form of a time (what its own writes store in modified_at)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def crm_rows(tmp: Path) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(tmp / "state" / "local-crm.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in db.execute("SELECT * FROM leads")}
    finally:
        db.close()


def crm_exec(tmp: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    db = sqlite3.connect(tmp / "state" / "local-crm.sqlite")
    with db:
        db.execute(sql, params)
    db.close()


def ledger_rows(tmp: Path) -> dict[str, dict[str, Any]]:
    path = tmp / "state" / "ledger.sqlite"
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return {r["lead_id"]: dict(r) for r in db.execute("SELECT * FROM leads")}
    except sqlite3.OperationalError:  # the daemon is still creating the file
        return {}
    finally:
        db.close()


def env(key: str) -> dict[str, str]:
    e = dict(os.environ)
    e[KEY_ENV] = key
    e.pop("CRMSYNC_CONFIG", None)
    return e


def crmsync(cfg: Path | None, *args: str, key: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "crmsync", *args] + (["--config", str(cfg)] if cfg else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env(key), timeout=timeout, cwd=cfg.parent if cfg else None)


def start_daemon(cfg: Path, *args: str, key: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "crmsync", "run", "--config", str(cfg), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(key), cwd=cfg.parent)
