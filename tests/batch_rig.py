"""A crmsync setup on disk for the batch tests: the local CRM seeded from a CSV, providers pointing at the batch
emulators (OpenAI and/or Anthropic), a chain given as TOML. In process (``rig``) or as the real CLI."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from crmsync.app import build_connector
from crmsync.config import load_config
from tests.cycle_rig import CycleRig
from tests.daemon_helpers import COLUMNS, KEY_ENV

ANTHROPIC_KEY_ENV = "CRMSYNC_E2E_ANTHROPIC_KEY"
INPUTS = ", ".join(f'{k} = "{k}"' for k in ("company", "title", "industry", "employees", "monthly_orders", "source", "description"))


def write_config(
    tmp: Path,
    leads: list[dict[str, Any]],
    *,
    openai_url: str | None = None,
    anthropic_url: str | None = None,
    chain: str,
    extra: str = "",
    fetch_limit: int = 500,
) -> Path:
    with open(tmp / "leads.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(leads)
    providers = ""
    if openai_url:
        for name, model in (("fast", "emu-fast"), ("strong", "emu-strong")):
            providers += (
                f'[providers.{name}]\ntype = "openai"\nmodel = "{model}"\nbase_url = "{openai_url}"\n'
                f'api_key_env = "{KEY_ENV}"\nmax_retries = 0\ntimeout_s = 10\n\n'
            )
    if anthropic_url:
        providers += (
            f'[providers.claude]\ntype = "anthropic"\nmodel = "emu-claude"\nbase_url = "{anthropic_url}"\n'
            f'api_key_env = "{ANTHROPIC_KEY_ENV}"\nmax_retries = 0\ntimeout_s = 10\n\n'
        )
    cfg = tmp / "crmsync.toml"
    cfg.write_text(f"""
[crm]
type = "sqlite"
[crm.options]
seed_csv = "leads.csv"

[fields]
inputs = {{ {INPUTS} }}

{providers}
{chain}

[prices."emu-fast"]
input = 1.0
output = 2.0
as_of = 2026-11-01
[prices."emu-strong"]
input = 4.0
output = 8.0
as_of = 2026-11-01
[prices."emu-claude"]
input = 3.0
cache_write = 3.75
cached_input = 0.3
output = 15.0
as_of = 2026-11-01

[daemon]
interval_s = 10
state_dir = "state"
changed_lag_s = 0
fetch_limit = {fetch_limit}
{extra}
""")
    return cfg


def rig(cfg: Path) -> CycleRig:
    config = load_config(cfg)
    return CycleRig(config, build_connector(config))
