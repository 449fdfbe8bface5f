"""Count the Salesforce API calls one crmsync cycle makes for N leads, against the local HTTPS emulator,
and compare them with the minimum: ⌈N/2000⌉ query pages (⌈N/200⌉ with 2+ long text fields) + ⌈N/200⌉ updates.

    python bench/bench_salesforce_calls.py [N]
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "connectors" / "salesforce"))

import trustme  # noqa: E402
from sf_helpers import SF_FIELDS, build  # noqa: E402
from sf_emulator import PASSWORD, SECURITY_TOKEN, SalesforceEmulator  # noqa: E402

from crmsync import FieldsConfig, ScoreUpdate  # noqa: E402


def run(n: int, fields: FieldsConfig, ca: trustme.CA, ca_pem: str, tmp: Path) -> dict[str, int | float]:
    emu = SalesforceEmulator(ca)
    try:
        ids = [emu.add({"Company": f"Co {i}", "Description": "x" * 200, "Notes_Long__c": "y" * 200}) for i in range(n)]
        conn = build(emu, ca_pem, tmp, fields=fields)
        t0 = time.perf_counter()
        got = list(conn.fetch(None, 10 * n))
        out = conn.write([ScoreUpdate(i, {"AI_Score__c": k % 101, "AI_Needs_Review__c": False}) for k, i in enumerate(ids)])
        elapsed = time.perf_counter() - t0
        assert len(got) == n and all(o.ok for o in out)
        data = [(m, p) for m, p in emu.requests if p.startswith("/services/data/")]
        return {
            "query": sum(1 for _, p in data if "/query" in p),
            "update": sum(1 for m, _ in data if m == "PATCH"),
            "describe": sum(1 for _, p in data if p.endswith("/describe")),
            "login": emu.logins,
            "api_total": emu.api_used,
            "seconds": elapsed,
        }
    finally:
        emu.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    os.environ.setdefault("SF_PASSWORD", PASSWORD)
    os.environ.setdefault("SF_SECURITY_TOKEN", SECURITY_TOKEN)
    ca = trustme.CA()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ca_pem = str(tmp / "ca.pem")
        ca.cert_pem.write_to_path(ca_pem)
        two_long = FieldsConfig(inputs={**SF_FIELDS.inputs, "notes": "Notes_Long__c"}, outputs=SF_FIELDS.outputs,
                                review_decision=SF_FIELDS.review_decision)
        scenarios = [("1 long text input", SF_FIELDS, 2000), ("2 long text inputs", two_long, 200)]
        print(f"Salesforce API calls for one cycle of N={n} leads (fetch all, write all)\n")
        print(f"{'mapping':<20} {'query':>5} {'update':>6} {'min q+u':>7} {'describe':>8} {'API total':>9} {'login':>5} {'time':>6}")
        for label, fields, page in scenarios:
            r = run(n, fields, ca, ca_pem, tmp)
            minimum = math.ceil(n / page) + math.ceil(n / 200)
            print(f"{label:<20} {r['query']:>5} {r['update']:>6} {minimum:>7} {r['describe']:>8} {r['api_total']:>9} "
                  f"{r['login']:>5} {r['seconds']:>5.2f}s")
            assert r["query"] + r["update"] == minimum, "more calls than the minimum"
        print("\nquery + update equal the minimum; describe is once per connector (cached); the login is not "
              "counted by Salesforce as an API request.")


if __name__ == "__main__":
    main()
