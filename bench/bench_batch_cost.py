"""What a backlog costs through the providers' batch APIs against the synchronous path (issue 14).

A backlog of N leads (default 2,000) in the local CRM, scored by the daemon's own cycle (crmsync.cycle.Cycle with
the real ledger, scorer and connector) twice per provider, each time against a fresh emulator so prompt caching
starts cold both ways: once synchronously (`batch = "never"`), once through the batch API (`batch = "always"`:
one cycle submits, the next applies the results). The real openai / anthropic SDKs do the talking. The token
counts come from the same emulator brain both ways (checked equal below); prices come from the config's [prices]
(batch_discount left at its default, 0.5). Done means: cost ratio ≤ 0.55.

    python bench/bench_batch_cost.py [N]
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The LLM emulators live in tests/ (no fake ships in crmsync); the repo root goes on the path to import them.
sys.path.insert(0, str(ROOT))

from crmsync.app import build_connector, build_scorer  # noqa: E402
from crmsync.config import Config  # noqa: E402
from crmsync.cycle import Cycle  # noqa: E402
from crmsync.state import Ledger  # noqa: E402
from tests.emulators.anthropic_batch import AnthropicBatchEmulator  # noqa: E402
from tests.emulators.openai_batch import OpenAIBatchEmulator  # noqa: E402

KEYS = {"openai": "CRMSYNC_BENCH_OPENAI_KEY", "anthropic": "CRMSYNC_BENCH_ANTHROPIC_KEY"}
MODELS = {"openai": "gpt-6-luna", "anthropic": "claude-haiku-5-5"}
# List prices from /work/shared/API-NOTES.md §8 (USD per 1M tokens): input, cached input, cache write, output.
PRICES = {"gpt-6-luna": (0.10, 0.01, 0.125, 0.50), "claude-haiku-5-5": (0.10, 0.01, 0.125, 0.50)}


def seed(path: Path, n: int) -> None:
    titles = ["VP Operations", "Intern", "Head of Logistics", "Owner", "Student", "COO"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "company", "title", "industry", "employees", "monthly_orders", "source", "description"])
        for i in range(n):
            w.writerow(
                [
                    f"L{i:05d}",
                    f"Brand {i}",
                    titles[i % len(titles)],
                    "Apparel",
                    5 + i % 400,
                    (i * 37) % 20000,
                    "Demo request" if i % 3 else "Web form",
                    f"Lead number {i}: we ship parcels every week",
                ]
            )


def config(kind: str, url: str, tmp: Path, csv_path: Path, batch: str, n: int) -> Config:
    inp, cached, write, out = PRICES[MODELS[kind]]
    return Config.model_validate(
        {
            "crm": {"type": "sqlite", "options": {"seed_csv": str(csv_path)}},
            "fields": {"inputs": {k: k for k in ("company", "title", "industry", "employees", "monthly_orders", "source", "description")}},
            "providers": {"p": {"type": kind, "model": MODELS[kind], "base_url": url, "api_key_env": KEYS[kind], "max_retries": 0}},
            "chain": [{"provider": "p", "batch": batch}],
            "prices": {MODELS[kind]: {"input": inp, "cached_input": cached, "cache_write": write, "output": out, "as_of": "2026-11-01"}},
            "scoring": {"concurrency": 16},
            "daemon": {"state_dir": str(tmp), "fetch_limit": n, "changed_lag_s": 0},
        }
    )


def run(kind: str, batch: str, n: int, root: Path, csv_path: Path) -> dict[str, Any]:
    emu_cls = OpenAIBatchEmulator if kind == "openai" else AnthropicBatchEmulator
    with emu_cls() as emu:
        os.environ[KEYS[kind]] = emu.api_key
        url = emu.base_url
        cfg = config(kind, url, root / f"{kind}-{batch}", csv_path, batch, n)
        connector = build_connector(cfg)
        ledger = Ledger(cfg.state_dir / "ledger.sqlite", cfg.crm.type)
        scorer = build_scorer(cfg)
        started = time.perf_counter()
        try:
            cycle = Cycle(cfg, connector, ledger, scorer)
            reports = [cycle.run(rows=0)]
            if batch != "never":
                reports.append(cycle.run(rows=0))  # the batch ended at its first poll: results applied
            tokens = ledger.db.execute(
                "SELECT SUM(input_tokens), SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens) FROM calls"
            ).fetchone()
            written = ledger.db.execute("SELECT COUNT(*) FROM leads WHERE state='written'").fetchone()[0]
        finally:
            scorer.chain.close()
            connector.close()
            ledger.close()
        return {
            "cost": sum(r.cost_usd for r in reports),
            "saved": sum(r.batch_saved_usd for r in reports),
            "tokens": tuple(tokens),
            "written": written,
            "seconds": time.perf_counter() - started,
            "sync_calls": emu.request_count(MODELS[kind]),
            "batched": len(emu.batched_requests()),
        }


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv_path = root / "leads.csv"
        seed(csv_path, n)
        for kind in ("openai", "anthropic"):
            sync, batch = run(kind, "never", n, root, csv_path), run(kind, "always", n, root, csv_path)
            ratio = batch["cost"] / sync["cost"]
            same = sync["tokens"] == batch["tokens"]
            ok &= ratio <= 0.55 and same and sync["written"] == batch["written"] == n
            print(
                f"{kind} ({MODELS[kind]}), {n} leads: synchronous ${sync['cost']:.4f} ({sync['sync_calls']} calls); "
                f"batch ${batch['cost']:.4f} ({batch['batched']} batched requests, {batch['sync_calls']} synchronous); "
                f"ratio {ratio:.3f}; saving shown ${batch['saved']:.4f}; tokens (input, cached, cache write, output) "
                f"{'identical' if same else 'DIFFER'}: {batch['tokens']}; written {sync['written']} / {batch['written']}"
            )
    print("PASS: batch cost ratio ≤ 0.55" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
