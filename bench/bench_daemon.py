"""The daemon's own cost, measured as a user runs it: `crmsync run --once` (a subprocess) on the local CRM, scoring
through the openai SDK against the local OpenAI emulator. Every figure is a ratio against a baseline measured in
the same run, because these machines are shared and noisy.

1. own CPU per lead: user+sys CPU of `crmsync run --once` over N leads, minus that of the bare openai SDK sending
   the same N requests (same body, same concurrency) from a subprocess; reported in ms per lead and as a ratio.
2. throughput at 500 ms model latency, concurrency 16 and 64: leads/s against the ideal concurrency / latency.
3. peak RSS of one cycle of 2k leads vs one of 20k leads (the same run): a cycle's memory must stay flat.

    python bench/bench_daemon.py [--quick]
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The LLM emulator lives in tests/ (no fake ships in crmsync); this bench starts it, and writes the end-to-end
# tests' setup, as those tests do: both imported by package path (tests.emulators, tests.daemon_helpers).
sys.path.insert(0, str(ROOT))

from tests.daemon_helpers import COLUMNS, KEY_ENV, lead, write_setup  # noqa: E402
from tests.emulators import OpenAIEmulator, delay  # noqa: E402

BARE_SDK = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import openai
base_url, key, n, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
body = json.load(sys.stdin)
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
def one(_):
    return client.chat.completions.create(**body).choices[0].message.content
with ThreadPoolExecutor(conc) as pool:
    assert all(pool.map(one, range(n)))
"""


MEASURE = r"""
import json, resource, subprocess, sys
out_path, cmd = sys.argv[1], sys.argv[2:]
rc = subprocess.run(cmd).returncode
u = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": rc, "cpu": u.ru_utime + u.ru_stime, "maxrss": u.ru_maxrss}, open(out_path, "w"))
"""


def child(cmd: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None) -> tuple[float, float, int, str]:
    """Run a command; return (wall s, user+sys CPU s, peak RSS KiB, stdout) of that process alone. A small launcher
    starts it: a child forked straight from this (large) process would count our pages in its peak RSS."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as fh:
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-c", MEASURE, fh.name, *cmd],
            env=env,
            cwd=cwd,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        m = json.loads(Path(fh.name).read_text())
    if m["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed:\n{p.stderr[-2000:]}")
    return wall, m["cpu"], m["maxrss"], p.stdout


with open(ROOT / "crmsync" / "defaults" / "sample_leads.csv", encoding="utf-8", newline="") as _fh:
    SAMPLE = list(csv.DictReader(_fh))


def leads(n: int) -> list[dict[str, object]]:
    """The 40 bundled sample leads, over and over with new ids: a real inbound mix (a few top-tier leads, which the
    guard screens; many C and D), not n copies of one ideal lead."""
    return [lead(i, **{k: v for k, v in SAMPLE[i % len(SAMPLE)].items() if k in COLUMNS and k != "id"}) for i in range(1, n + 1)]


def setup(tmp: Path, emu: OpenAIEmulator, n: int, concurrency: int) -> tuple[Path, dict[str, str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = write_setup(tmp, emu.base_url, leads(n), concurrency=concurrency, extra=f"fetch_limit = {n}")
    env = {**os.environ, KEY_ENV: emu.api_key}
    env.pop("CRMSYNC_CONFIG", None)
    child([sys.executable, "-m", "crmsync", "check", "--config", str(cfg)], env, tmp)  # seeds the local CRM
    return cfg, env


def status_tiers(cfg: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "crmsync", "status", "--config", str(cfg)], env=env, cwd=cfg.parent, capture_output=True, text=True
    ).stdout
    return ", ".join(f"{t} {n}" for t, n in re.findall(r"tier (\w+)\s*│\s*(\d+)", out))


def run_once(cfg: Path, env: dict[str, str]) -> tuple[float, float, int, str]:
    return child([sys.executable, "-m", "crmsync", "run", "--once", "--config", str(cfg)], env, cfg.parent)


def main() -> int:
    quick = "--quick" in sys.argv
    n_cpu = 2_000 if quick else 10_000
    with tempfile.TemporaryDirectory() as d, OpenAIEmulator() as emu:
        tmp = Path(d)
        print(f"crmsync's own cost through `crmsync run --once` (local CRM, OpenAI emulator){' [quick]' if quick else ''}\n")

        # 1. own CPU per lead vs the bare SDK, instant model
        cfg, env = setup(tmp / "cpu", emu, n_cpu, 16)
        before = len(emu.requests)
        _, cpu, _, out = run_once(cfg, env)
        assert f"scored {n_cpu}" in out, out[-500:]
        tiers = status_tiers(cfg, env)
        body = dict(emu.requests[before].body)
        _, cpu_bare, _, _ = child(
            [sys.executable, "-c", BARE_SDK, emu.base_url, emu.api_key, str(n_cpu), "16"], env, tmp, stdin=json.dumps(body)
        )
        # The same leads again with the guard's top-tier screen pointed at no tier: what the screen itself costs.
        cfg2, env2 = setup(tmp / "cpu-noguard", emu, n_cpu, 16)
        cfg2.write_text(cfg2.read_text() + '\n[guard]\ntiers = ["(none)"]\n')
        _, cpu_ng, _, out = run_once(cfg2, env2)
        assert f"scored {n_cpu}" in out, out[-500:]
        per, per_bare, per_ng = (x / n_cpu * 1000 for x in (cpu, cpu_bare, cpu_ng))
        print(
            f"own CPU per lead, run --once over {n_cpu:,} (tiers {tiers}): {per:.2f} ms vs bare SDK {per_bare:.2f} ms "
            f"→ +{per - per_bare:.2f} ms per lead (ratio {per / per_bare:.2f}); without the guard's top-tier pattern "
            f"screen +{per_ng - per_bare:.2f} ms (ratio {per_ng / per_bare:.2f})"
        )

        # 2. throughput at 500 ms latency
        emu.script("*", delay(0.5))
        for conc in (16, 64):
            n = conc * (6 if quick else 12)
            cfg, env = setup(tmp / f"tp{conc}", emu, n, conc)
            before = len(emu.requests)
            _, _, _, out = run_once(cfg, env)
            assert f"scored {n}" in out, out[-500:]
            # The scoring window as the provider sees it: first request in → last answer out (process start-up,
            # config and CRM reads are not throughput).
            arrivals = [r.at for r in emu.requests[before:]]
            window = max(arrivals) + 0.5 - min(arrivals)
            # The same requests from the bare SDK at the same concurrency: what the SDK and the GIL allow here.
            bare_from = len(emu.requests)
            child([sys.executable, "-c", BARE_SDK, emu.base_url, emu.api_key, str(n), str(conc)], env, tmp, stdin=json.dumps(body))
            bare = [r.at for r in emu.requests[bare_from:]]
            bare_window = max(bare) + 0.5 - min(bare)
            ideal = n / (conc / 0.5)
            print(
                f"throughput, concurrency {conc}, 500 ms latency, {n} leads: {ideal / window:.0%} of ideal "
                f"({n / window:.1f} leads/s vs {conc / 0.5:.0f}); the bare SDK {ideal / bare_window:.0%} "
                f"→ ratio {bare_window / window:.2f}"
            )
        emu.script("*", delay(0.0))

        # 3. peak RSS, 2k vs 20k-lead cycle
        small, large = (500, 5_000) if quick else (2_000, 20_000)
        rss = {}
        for n in (small, large):
            cfg, env = setup(tmp / f"rss{n}", emu, n, 16)
            _, _, peak, out = run_once(cfg, env)
            assert f"scored {n}" in out, out[-500:]
            rss[n] = peak
        print(
            f"peak RSS of one cycle: {small:,} leads {rss[small] / 1024:.0f} MB, {large:,} leads {rss[large] / 1024:.0f} MB "
            f"→ ratio {rss[large] / rss[small]:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
