"""Count HubSpot API calls for one cycle of N leads (fetch + write) against the minimum ⌈N/200⌉ + ⌈N/100⌉.

Runs the real connector and hubspot-api-client against the local emulator on a fake clock (no real waiting).
Usage: python bench/bench_hubspot_calls.py [N ...]   (default: 1000)
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "connectors" / "hubspot"))

from crmsync import ScoreUpdate  # noqa: E402
from crmsync_hubspot import FakeClock  # noqa: E402
from hubspot_emulator import HubSpotEmulator  # noqa: E402
from hubspot_harness import EPOCH, TOKEN, Harness, add_input_properties  # noqa: E402


def run(n: int) -> dict[str, float]:
    clock = FakeClock()
    emu = HubSpotEmulator(TOKEN, clock=lambda: EPOCH + clock.now).start()
    try:
        add_input_properties(emu)
        os.environ["HUBSPOT_ACCESS_TOKEN"] = TOKEN
        h = Harness(emu, Path(tempfile.mkdtemp()), clock)
        conn = h.connector()
        emu.calls.clear()
        conn.create_fields()  # once per portal: group + output properties
        create = sum(emu.calls.values())
        emu.calls.clear()
        problems = conn.check()  # once per start
        check = sum(emu.calls.values())
        h.add(n)
        emu.calls.clear()
        t0, c0 = time.perf_counter(), clock.now
        leads = list(conn.fetch(None, n))
        outcomes = conn.write([ScoreUpdate(lead.id, {"ai_score": 50, "ai_needs_review": False}) for lead in leads])
        assert len(leads) == n and all(o.ok for o in outcomes) and not problems
        return {"n": n, "search": emu.calls["search"], "update": emu.calls["batch_update"], "create": create, "check": check,
                "429": sum(emu.rate_limited.values()), "paced_s": clock.now - c0, "wall_s": time.perf_counter() - t0}
    finally:
        emu.stop()


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1000]
    print(f"{'N':>7} {'search':>7} {'min':>5} {'update':>7} {'min':>5} {'total':>6} {'min':>5} {'create':>6} {'check':>5} {'429s':>5} {'paced s':>8} {'wall s':>7}")
    ok = True
    for n in sizes:
        r = run(n)
        ms, mu = math.ceil(n / 200), math.ceil(n / 100)
        total = r["search"] + r["update"]
        ok &= total == ms + mu
        print(f"{n:>7} {r['search']:>7} {ms:>5} {r['update']:>7} {mu:>5} {total:>6} {ms + mu:>5} {r['create']:>6} {r['check']:>5} {r['429']:>5} {r['paced_s']:>8.2f} {r['wall_s']:>7.2f}")
    print("create = `crmsync fields create` on an empty portal (groups GET+POST, properties GET + one POST per field), once per portal")
    print("check = `crmsync check` (properties GET + a 1-record search), once per start; neither is in the per-cycle total")
    print("paced s = time the client-side limiter made the cycle take (4 searches/s); 0 rate-limited (429) answers expected")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
