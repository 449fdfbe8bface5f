"""CRM API calls per daemon cycle, counted by the Salesforce and HubSpot emulators: what `crmsync run --once` costs
the org's API allocation for N new leads, and what the next cycle costs to re-read crmsync's own writes.

It drives the daemon's own cycle (crmsync.cycle.Cycle with the real ledger, scorer and connector; an OpenAI
emulator scores), not a connector alone. Minimums for N = 1,000, fetch_limit ≥ N:
  Salesforce: ⌈N/2000⌉ query page + 1 re-check (sObject Collections retrieve, 2,000 ids) + ⌈N/200⌉ updates + 1 describe
  HubSpot:    ⌈N/200⌉ searches + ⌈N/100⌉ re-checks (batch read) + ⌈N/100⌉ updates
  next cycle: ⌈N/2000⌉ (Salesforce) / ⌈N/200⌉ (HubSpot) changed-stream pages, plus one unscored search.

    python bench/bench_sync_calls.py [N]
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The CRM and LLM emulators live in tests/ (no fake ships in crmsync); this bench starts them as the tests do. The
# repo root goes on the path so that each is imported by its package path (tests.connectors.hubspot...), explicitly.
sys.path.insert(0, str(ROOT))

import trustme  # noqa: E402

from crmsync.app import build_scorer  # noqa: E402
from crmsync.config import Config  # noqa: E402
from crmsync.connector import Connector  # noqa: E402
from crmsync.cycle import Cycle, CycleReport  # noqa: E402
from crmsync.state import Ledger  # noqa: E402
from tests.emulators import OpenAIEmulator  # noqa: E402

KEY_ENV = "CRMSYNC_BENCH_OPENAI_KEY"


def config(oa: OpenAIEmulator, tmp: Path, crm: str, fields: dict[str, Any] | None, n: int) -> Config:
    return Config.model_validate(
        {
            "crm": {"type": crm},
            **({"fields": fields} if fields else {}),
            "providers": {"fast": {"type": "openai", "model": "emu", "base_url": oa.base_url, "api_key_env": KEY_ENV, "max_retries": 0}},
            "chain": [{"provider": "fast"}],
            "scoring": {"concurrency": 16},
            "daemon": {"state_dir": str(tmp / crm), "fetch_limit": max(n, 1000), "changed_lag_s": 0},
        }
    )


def two_cycles(
    cfg: Config, connector: Connector, now: Callable[[], datetime], counts: Callable[[], Counter[str]], settle: Callable[[], None]
) -> tuple[Counter[str], Counter[str], CycleReport]:
    ledger = Ledger(cfg.state_dir / "ledger.sqlite", cfg.crm.type)
    scorer = build_scorer(cfg)
    cycle = Cycle(cfg, connector, ledger, scorer, now=now)
    first = cycle.run(rows=0)
    one = counts()
    settle()
    cycle.run(rows=0)
    two = counts() - one
    ledger.close()
    scorer.close()
    return one, two, first


def salesforce(n: int, oa: OpenAIEmulator, tmp: Path) -> tuple[Counter[str], Counter[str], CycleReport]:
    from tests.connectors.salesforce.sf_emulator import PASSWORD, SECURITY_TOKEN, SalesforceEmulator
    from tests.connectors.salesforce.sf_helpers import PASSWORD_AUTH, SF_FIELDS, build

    os.environ.setdefault("SF_PASSWORD", PASSWORD)
    os.environ.setdefault("SF_SECURITY_TOKEN", SECURITY_TOKEN)
    ca = trustme.CA()
    ca_pem = str(tmp / "ca.pem")
    ca.cert_pem.write_to_path(ca_pem)
    emu = SalesforceEmulator(ca)
    try:
        for i in range(n):
            emu.add({"Company": f"Co {i}", "Title": "CEO", "Monthly_Order_Volume__c": float(i)})
        cfg = config(oa, tmp, "salesforce", SF_FIELDS.model_dump(), n)
        conn = build(emu, ca_pem, tmp, fields=cfg.fields, auth=PASSWORD_AUTH, ca_bundle=ca_pem)

        def counts() -> Counter[str]:
            c: Counter[str] = Counter()
            for method, path in emu.requests:
                if not path.startswith("/services/data/"):
                    continue
                kind = (
                    "describe"
                    if path.endswith("/describe")
                    else "query"
                    if "/query" in path
                    else "re-check"
                    if method == "POST"
                    else "update"
                    if method == "PATCH"
                    else path
                )
                c[kind] += 1
            return c

        return two_cycles(cfg, conn, lambda: datetime.now(UTC), counts, lambda: time.sleep(0.5))
    finally:
        emu.close()


def hubspot(n: int, oa: OpenAIEmulator, tmp: Path) -> tuple[Counter[str], Counter[str], CycleReport]:
    from tests.connectors.hubspot.hubspot_emulator import HubSpotEmulator
    from tests.connectors.hubspot.hubspot_harness import EPOCH, FIELDS, TOKEN, Harness, add_input_properties
    from tests.fakes import FakeClock  # the emulator and the connector's call budget share it: no real waiting

    clock = FakeClock()
    emu = HubSpotEmulator(TOKEN, clock=lambda: EPOCH + clock.now).start()
    try:
        add_input_properties(emu)
        os.environ["HUBSPOT_ACCESS_TOKEN"] = TOKEN
        h = Harness(emu, tmp, clock)
        h.setup_fields()
        h.add(n)
        emu.calls.clear()
        cfg = config(oa, tmp, "hubspot", {"inputs": dict(FIELDS)}, n)
        conn = h.connector()
        return two_cycles(
            cfg,
            conn,
            lambda: datetime.fromtimestamp(EPOCH + clock.now, tz=UTC),
            lambda: Counter({k: v for k, v in emu.calls.items() if k in ("search", "batch_read", "batch_update")}),
            lambda: clock.sleep(1),
        )
    finally:
        emu.stop()


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    ok = True
    with OpenAIEmulator() as oa, tempfile.TemporaryDirectory() as d:
        os.environ[KEY_ENV] = oa.api_key
        tmp = Path(d)
        print(f"CRM API calls, one `run --once` cycle over N={n} new leads, then the next cycle\n")
        one, two, rep = salesforce(n, oa, tmp)
        minimum = math.ceil(n / 2000) + 1 + math.ceil(n / 200)
        got = one["query"] + one["re-check"] + one["update"]
        ok &= got <= minimum and rep.written == n and two["query"] <= math.ceil(n / 2000) + 1
        print(
            f"Salesforce  cycle 1: {one['query']} query page + {one['re-check']} re-check + {one['update']} updates "
            f"= {got} (minimum {minimum}), + {one['describe']} describe; written {rep.written}"
        )
        print(f"            cycle 2: {two['query']} query pages (changed stream {two['query'] - 1}, unscored 1), {two['update']} updates")
        one, two, rep = hubspot(n, oa, tmp)
        minimum = math.ceil(n / 200) + 2 * math.ceil(n / 100)
        got = one["search"] + one["batch_read"] + one["batch_update"]
        ok &= got <= minimum and rep.written == n and two["search"] <= math.ceil(n / 200) + 1
        print(
            f"HubSpot     cycle 1: {one['search']} searches + {one['batch_read']} re-checks + {one['batch_update']} updates "
            f"= {got} (minimum {minimum}); written {rep.written}"
        )
        print(
            f"            cycle 2: {two['search']} searches (changed stream {two['search'] - 1}, unscored 1), {two['batch_update']} updates"
        )
        print(f"\nLLM requests: {oa.request_count()} (each lead once, over both CRMs)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
