"""Leads scored within a provider's rate limit, through the CLI (issue 11's Done scenario).

An OpenAI API emulator enforces 500 requests/min the way the API does (refilled continuously, about one
second's worth banked; over it: 429 with Retry-After and x-ratelimit-* headers on every response) and answers
after 0.5 s. crmsync scores 240 leads at concurrency 16, as separate processes, in three ways:

  score, limit configured   `crmsync score` with [providers.fast] requests_per_minute = 500
  score, headers only       `crmsync score`, crmsync not told the limit: it reads the headers and the 429s
  run --once, headers only  the daemon's cycle over the local CRM seeded with the same 240 leads

Printed as ratios: scored / 240, and throughput / limit, where throughput = leads answered per minute between the
emulator receiving the first request and sending the last answer (the server's view, so process start-up is not
counted); "incl. start-up" divides by the whole command's wall time instead (Python start-up, imports, the CSV
or the local CRM's seed import included).

Run: python bench/bench_pacing.py [LEADS] [LIMIT_PER_MIN]
"""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The LLM emulator lives in tests/ (no fake ships in crmsync); this bench starts it as the tests do, imported
# by its package path (tests.emulators) with the repo root on the path.
sys.path.insert(0, str(ROOT))

from tests.emulators import OpenAIEmulator, delay  # noqa: E402

KEY_ENV = "BENCH_PACING_KEY"
LATENCY_S = 0.5
CONCURRENCY = 16


def write_inputs(tmp: Path, n: int) -> Path:
    path = tmp / "leads.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "company", "title", "monthly_orders", "employees", "description"])
        w.writerows([f"L{i:04d}", f"Brand {i}", "VP Operations", 250 * (i % 40), 20 + i % 200, f"Lead {i}"] for i in range(n))
    return path


def write_config(tmp: Path, base_url: str, limit: int | None) -> Path:
    cfg = tmp / "crmsync.toml"
    pacing = f"requests_per_minute = {limit}" if limit else ""
    cfg.write_text(f"""
[crm]
type = "sqlite"
[crm.options]
seed_csv = "leads.csv"
[fields]
inputs = {{ company = "company", title = "title", monthly_orders = "monthly_orders", employees = "employees", description = "description" }}
[providers.fast]
type = "openai"
model = "bench"
base_url = "{base_url}"
api_key_env = "{KEY_ENV}"
max_retries = 0
timeout_s = 30
{pacing}
[[chain]]
provider = "fast"
[scoring]
concurrency = {CONCURRENCY}
[daemon]
state_dir = "state"
""")
    return cfg


def run(label: str, args: list[str], n: int, limit: int, configured: bool) -> tuple[str, float, float, float, int, int]:
    with tempfile.TemporaryDirectory() as d, OpenAIEmulator(requests_per_minute=limit) as emu:
        tmp = Path(d)
        emu.script("*", delay(LATENCY_S))
        inputs = write_inputs(tmp, n)
        cfg = write_config(tmp, emu.base_url, limit if configured else None)
        env = {**os.environ, KEY_ENV: emu.api_key}
        env.pop("CRMSYNC_CONFIG", None)
        cmd = [
            sys.executable,
            "-m",
            "crmsync",
            *[a.replace("{in}", str(inputs)).replace("{out}", str(tmp / "out.csv")) for a in args],
            "--config",
            str(cfg),
        ]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
        wall = time.monotonic() - t0
        if "score" in args:
            rows = list(csv.DictReader((tmp / "out.csv").open()))
            scored = sum(r["status"] == "scored" for r in rows)
        else:
            db = sqlite3.connect(tmp / "state" / "ledger.sqlite")
            scored = db.execute("SELECT COUNT(*) FROM leads WHERE state IN ('written','pending_write')").fetchone()[0]
            db.close()
        answered = [r for r in emu.requests if r.status == 200]
        span = max(r.done or r.at for r in answered) - min(r.at for r in emu.requests)
        if proc.returncode not in (0, 1):
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        return label, scored / n, len(answered) / span * 60 / limit, wall, emu.rate_limited_count(), proc.returncode


def main(n: int, limit: int) -> None:
    print(f"{n} leads, provider limit {limit} requests/min (one second banked), {LATENCY_S} s latency, concurrency {CONCURRENCY}")
    print(f"{'':<28}{'scored/' + str(n):>12}{'throughput/limit':>18}{'incl. start-up':>16}{'wall s':>9}{'429s':>7}{'exit':>6}")
    for label, args, configured in (
        ("score, limit configured", ["score", "--input", "{in}", "--output", "{out}"], True),
        ("score, headers only", ["score", "--input", "{in}", "--output", "{out}"], False),
        ("run --once, headers only", ["run", "--once"], False),
    ):
        name, ratio, tput, wall, refused, rc = run(label, args, n, limit, configured)
        print(f"{name:<28}{ratio:>12.3f}{tput:>18.3f}{ratio * n / wall * 60 / limit:>16.3f}{wall:>9.1f}{refused:>7}{rc:>6}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 240, int(sys.argv[2]) if len(sys.argv) > 2 else 500)
