"""Scoring benchmarks, reported as ratios against a baseline measured in the same run (machines are noisy).

1. crmsync's overhead per lead: Scorer.score (prompt, validation, chain, costing) vs a bare openai SDK call
   with the same prompt, both against the local OpenAI emulator with no added latency.
2. Concurrency: leads/s at [scoring] concurrency 4 vs 1, with 150 ms of simulated model latency.
3. Prompt caching: cost per lead once the rubric prefix is cached vs the first (uncached) lead.

Run: python bench/bench_scoring.py [N]
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The LLM emulator lives in tests/ (no fake ships in crmsync); this bench starts it as the tests do, imported
# by its package path (tests.emulators) with the repo root on the path.
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from crmsync.app import build_scorer  # noqa: E402
from crmsync.config import Config  # noqa: E402
from crmsync.models import Lead  # noqa: E402
from crmsync.rubric import bundled_rubric_path, load_rubric  # noqa: E402
from crmsync.scoring import build_prompt  # noqa: E402
from tests.emulators import OpenAIEmulator, delay  # noqa: E402


def leads(n: int) -> list[Lead]:
    with open(ROOT / "crmsync/defaults/sample_leads.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = Config().fields.inputs
    return [Lead(id=f"{i}", inputs={k: rows[i % len(rows)][c] for k, c in cols.items()}) for i in range(n)]


def config(base_url: str, concurrency: int) -> Config:
    return Config.model_validate(
        {
            "providers": {"fast": {"type": "openai", "model": "bench", "base_url": base_url, "api_key_env": "BENCH_KEY", "max_retries": 0}},
            "chain": [{"provider": "fast"}],
            "scoring": {"concurrency": concurrency},
            "prices": {"bench": {"input": 0.10, "cached_input": 0.01, "output": 0.50, "as_of": "2026-11-01"}},
        }
    )


def main(n: int) -> None:
    sample = leads(n)
    rubric = load_rubric(bundled_rubric_path())
    with OpenAIEmulator() as emu:
        os.environ["BENCH_KEY"] = emu.api_key
        # 1. overhead: bare SDK loop (baseline) vs crmsync
        client = openai.OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
        prompts = [build_prompt(rubric, lead) for lead in sample]
        t0 = time.perf_counter()
        for p in prompts:
            client.chat.completions.create(
                model="bench", messages=[{"role": "system", "content": p.system}, {"role": "user", "content": p.user}]
            )
        bare = (time.perf_counter() - t0) / n
        scorer = build_scorer(config(emu.base_url, 1))
        t0 = time.perf_counter()
        results = [scorer.score(lead) for lead in sample]
        ours = (time.perf_counter() - t0) / n
        del results

        # 2. concurrency with simulated latency
        emu.script("bench", delay(0.15))
        speeds = {}
        for c in (1, 4):
            s = build_scorer(config(emu.base_url, c))
            t0 = time.perf_counter()
            done = sum(1 for _ in s.score_many(sample, c))
            speeds[c] = done / (time.perf_counter() - t0)

    with OpenAIEmulator() as fresh:  # 3. caching, on an emulator that has seen no prefix yet
        os.environ["BENCH_KEY"] = fresh.api_key
        s = build_scorer(config(fresh.base_url, 1))
        costs = [s.score(lead).cost_usd for lead in sample]

    print(f"N = {n} leads, sample rubric ({len(prompts[0].system)} chars of stable prefix)")
    print(f"{'measure':<46}{'baseline':>14}{'crmsync':>14}{'ratio':>9}")
    print(f"{'time per lead, no model latency (s)':<46}{bare:>14.5f}{ours:>14.5f}{ours / bare:>9.2f}")
    print(f"{'leads/s with 150 ms latency, concurrency 1 vs 4':<46}{speeds[1]:>14.2f}{speeds[4]:>14.2f}{speeds[4] / speeds[1]:>9.2f}")
    warm = statistics.mean(costs[1:])
    print(f"{'cost per lead USD, first (uncached) vs cached':<46}{costs[0]:>14.8f}{warm:>14.8f}{warm / costs[0]:>9.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
