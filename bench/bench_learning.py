"""Issue 15 on real data: the learned step, its calibration, the drift signal and the cascade, on the UCI Bank Marketing
file (45,211 clients, 11.7 % subscribed; `duration` dropped: it is only known after the call and leaks the label).

One run prints, side by side, crmsync's learned step (crmsync.learning.train.fit, the code `crmsync train model` runs)
and a plain scikit-learn reference (one-hot + StandardScaler + LogisticRegression(class_weight="balanced")) fitted on
the same training rows and measured on the same held-out rows:

1. stratified split (70/30): learned AUC within 0.015 of the reference or above; calibrated ECE <= 0.05;
2. time-ordered split (the file is in call order, May 2008 .. Nov 2010; train on the first 70 %): learned within 0.05
   of the reference, and the drift signal (PSI of inputs and scores, no label needed) flags the later leads;
3. the cascade (learned step first, escalate_below; the LLM for its uncertain band) against the LLM-only chain, through
   crmsync's real Scorer and chain, with the same [review] confidence_below: LLM calls as a share, AUC, review share,
   cost per lead. The LLM is the OpenAI emulator of tests/emulators (real openai SDK over HTTP) whose deterministic
   brain here is `bank_brain` below: the bank rubric's signals (bench/bank_marketing/rubric.md) written as a rule.
   It is no real model; the point is that the machinery and the measurement are right.

Run: python bench/bench_learning.py [--data ../shared/data/bank-marketing/Bank-bias-data.csv.gz] [--sample 2000] [--gbt]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The LLM emulator lives in tests/ (no fake ships in crmsync); started as the tests do, with the repo root on the path.
sys.path.insert(0, str(ROOT))

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

from crmsync.learning.artefact import Store  # noqa: E402
from crmsync.learning.calibrate import ChainOutput, fit_maps, probability  # noqa: E402
from crmsync.learning.drift import compare, window_of  # noqa: E402
from crmsync.learning.settings import LearnConfig  # noqa: E402
from crmsync.learning.train import LabeledRow, card_markdown, fit, prob_ece, to_score  # noqa: E402
from tests.emulators import OpenAIEmulator  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "bank-marketing" / "Bank-bias-data.csv.gz"
# scorer input name → file column, as bench/bank_marketing/config.toml maps them; `duration` left out (label leak)
MAPPING = {
    "age": "age",
    "job": "job",
    "marital": "marital",
    "education": "education",
    "credit_default": "default",
    "balance_eur": "balance",
    "housing_loan": "housing",
    "personal_loan": "loan",
    "contact_channel": "contact",
    "last_contact_day": "day",
    "last_contact_month": "month",
    "contacts_this_campaign": "campaign",
    "days_since_previous_campaign": "pdays",
    "previous_contacts": "previous",
    "previous_outcome": "poutcome",
}
NUMERIC = ["age", "balance_eur", "last_contact_day", "contacts_this_campaign", "days_since_previous_campaign", "previous_contacts"]
CUT = 45  # the bank rubric's lowest qualified tier (B = 45; qualified = A or B)


def load(path: Path) -> list[LabeledRow]:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        return [
            LabeledRow(
                f"B{i:05d}",
                {k: (int(r[c]) if k in NUMERIC else r[c].strip()) for k, c in MAPPING.items()},
                1 if r["y"].strip() == "yes" else 0,
                f"{i:06d}",
            )  # file order is call order
            for i, r in enumerate(csv.DictReader(fh), 1)
        ]


def reference_auc(train: list[LabeledRow], test: list[LabeledRow]) -> float:
    """The plain scikit-learn reference, fitted on the same rows."""
    cats = [k for k in MAPPING if k not in NUMERIC]
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), list(range(len(NUMERIC)))),
            ("cat", OneHotEncoder(handle_unknown="ignore"), list(range(len(NUMERIC), len(MAPPING)))),
        ]
    )
    model = make_pipeline(pre, LogisticRegression(class_weight="balanced", max_iter=2000))

    def matrix(rows: list[LabeledRow]) -> list[list[Any]]:
        return [[r.inputs[k] for k in NUMERIC] + [r.inputs[k] for k in cats] for r in rows]

    model.fit(matrix(train), [r.outcome for r in train])
    return float(roc_auc_score([r.outcome for r in test], model.predict_proba(matrix(test))[:, 1]))


def bank_brain(lead: dict, body: dict | None = None) -> dict:
    """The emulator's deterministic answer for a bank client: the rubric's signals as a rule (not a model)."""

    def num(k: str, default: float = 0.0) -> float:
        try:
            return float(lead.get(k, default))
        except (TypeError, ValueError):
            return default

    score, strong, signals = 15, False, 0
    if lead.get("previous_outcome") == "success":
        score, strong = 72, True
    if 0 <= num("days_since_previous_campaign", -1) < 100:
        score, signals = score + 10, signals + 1
    for hit, pts in (
        (lead.get("job") in ("student", "retired") or not 25 <= num("age", 40) <= 60, 8),
        (num("balance_eur") > 1000, 6),
        (lead.get("contact_channel") == "cellular", 5),
        (lead.get("last_contact_month") in ("mar", "sep", "oct", "dec"), 14),
        (lead.get("education") == "tertiary", 4),
        (lead.get("housing_loan") == "yes", -7),
        (lead.get("personal_loan") == "yes", -5),
        (num("contacts_this_campaign", 1) >= 4, -6),
        (lead.get("contact_channel") == "unknown", -7),
        (lead.get("last_contact_month") == "may", -5),
        (lead.get("job") == "blue-collar", -4),
    ):
        if hit:
            score, signals = score + pts, signals + 1
    if lead.get("credit_default") == "yes":
        score = min(score, 14)
    confidence = 0.85 if strong else round(min(0.7, 0.5 + 0.03 * signals), 2)
    return {
        "score": max(0, min(100, score)),
        "confidence": confidence,
        "reasons": ["bank rubric rule"],
        "missing_or_contradictory": [],
        "lead_text_contains_instructions": False,
    }


def config_toml(base_url: str, models: Path, chain: list[tuple[str, float | None]]) -> str:
    steps = "".join(f'[[chain]]\nprovider = "{p}"\n' + (f"escalate_below = {e}\n" if e is not None else "") for p, e in chain)
    inputs = "".join(f'{k} = "{k}"\n' for k in MAPPING)
    return (
        f'[rubric]\npath = "{ROOT / "bench/bank_marketing/rubric.md"}"\n\n[fields.inputs]\n{inputs}\n'
        f'[providers.learned]\ntype = "learned"\npath = "{models}"\n\n'
        f'[providers.oa]\ntype = "openai"\nmodel = "gpt-6-luna"\nbase_url = "{base_url}"\napi_key_env = "BENCH_KEY"\nmax_retries = 0\n\n'
        f'{steps}\n[review]\nconfidence_below = 0.6\n\n[daemon]\nstate_dir = "{models.parent}"\n\n'
        '[prices."gpt-6-luna"]\ninput = 0.10\ncached_input = 0.01\ncache_write = 0.125\noutput = 0.50\nas_of = 2026-11-01\n'
    )


def run_chain(cfg_path: Path, rows: list[LabeledRow], emu: OpenAIEmulator) -> tuple[int, list[Any]]:
    """(LLM calls, one ScoreResult per row) through crmsync's own Scorer and chain."""
    from crmsync.app import build_scorer
    from crmsync.config import load_config
    from crmsync.models import Lead

    scorer = build_scorer(load_config(cfg_path))
    before = emu.request_count()
    try:
        by_id = {lead.id: res for lead, res in scorer.score_many((Lead(id=r.lead_id, inputs=dict(r.inputs)) for r in rows), concurrency=8)}
    finally:
        scorer.close()
    return emu.request_count() - before, [by_id[r.lead_id] for r in rows]


def outputs(rows: list[LabeledRow], res: list[Any]) -> list[ChainOutput]:
    return [
        ChainOutput(x.rubric_version, x.provider or "", float(x.score), float(x.confidence or 0), r.outcome)
        for r, x in zip(rows, res, strict=True)
        if x.score is not None
    ]


def chain_metrics(calls: int, rows: list[LabeledRow], res: list[Any], maps: dict[str, Any]) -> dict[str, Any]:
    """AUC of the score; AUC and ECE of P(qualified) from the per-step calibration fitted on other leads."""
    out = outputs(rows, res)
    y = [o.outcome for o in out]
    p = [probability({"method": "isotonic", "maps": maps}, o.rubric_version, o.step, o.score, o.confidence) or 0.0 for o in out]
    return {
        "llm_calls": calls,
        "auc": roc_auc_score(y, [o.score for o in out]),
        "auc_cal": roc_auc_score(y, p),
        "ece_cal": prob_ece(y, p),
        "ece_raw": prob_ece(y, [o.score / 100 for o in out]),
        "review": sum(x.needs_review for x in res) / len(res),
        "cost": sum(x.cost_usd for x in res) / len(res),
    }


def check(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sample", type=int, default=2000, help="held-out leads sent through the chains (cascade vs LLM-only)")
    ap.add_argument("--escalate-below", type=float, default=0.65, help="the learned step's confidence under which the LLM scores")
    ap.add_argument("--gbt", action="store_true", help="also fit gradient-boosted trees on each split (slower), for information")
    args = ap.parse_args()
    rows = load(args.data)
    print(f"{len(rows)} rows, {sum(r.outcome for r in rows)} subscribed; inputs: {', '.join(MAPPING)} (duration dropped)\n")
    cfg = LearnConfig()
    results: dict[str, Any] = {}
    fails = 0
    for how in ("stratified", "time"):
        t0 = time.perf_counter()
        trained = fit(rows, list(MAPPING), cfg, how=how, qualified_cut=CUT)
        ids = set(trained.card["train_ids"])
        train = [r for r in rows if r.lead_id in ids]
        ref = reference_auc(train, trained.test_rows)
        held = trained.card["metrics"]["held_out"]
        base = trained.card["drift_baseline"]
        scores = [to_score(p, CUT)[0] for p in trained.test_raw]
        # The serving window follows the recent leads (counts halve every 2,000), so the order leads arrive in matters:
        # time split, call order; stratified split, a random order (the same population as training: the control).
        order = list(range(len(scores))) if how == "time" else random.Random(0).sample(range(len(scores)), len(scores))
        inputs = [trained.test_rows[i].inputs for i in order]
        drift_all = compare(base, window_of(base, inputs, [scores[i] for i in order]), cfg.drift_psi_alarm)
        first = compare(base, window_of(base, inputs[:500], [scores[i] for i in order[:500]]), cfg.drift_psi_alarm)
        results[how] = trained
        tr_rate = sum(r.outcome for r in train) / len(train)
        te_rate = held["qualified"] / held["n"]
        print(
            f"== {how} split: train {len(train)} (positive rate {tr_rate:.1%}), held out {held['n']} ({te_rate:.1%}); "
            f"{time.perf_counter() - t0:.0f} s"
        )
        print(f"   {'':28}{'ROC AUC':>9}{'precision':>11}{'recall':>8}{'ECE P(q)':>10}")
        print(f"   {'sklearn reference (plain LR)':28}{ref:>9.4f}")
        print(f"   {'crmsync learned step':28}{held['auc']:>9.4f}{held['precision']:>11.3f}{held['recall']:>8.3f}{held['ece']:>10.4f}")
        if args.gbt:  # for information: `crmsync train model --algorithm gbt` on the same split
            g = fit(rows, list(MAPPING), cfg, how=how, qualified_cut=CUT, algorithm="gbt").card["metrics"]["held_out"]
            print(f"   {'crmsync learned step, gbt':28}{g['auc']:>9.4f}{g['precision']:>11.3f}{g['recall']:>8.3f}{g['ece']:>10.4f}")
        print(f"   drift, window after all {held['n']} held-out leads: {drift_all.line()}")
        print(f"   drift, window after the first 500 held-out leads (no label needed): {first.line()}")
        if how == "stratified":
            a, b = held["auc"] >= ref - 0.015, held["ece"] <= 0.05
            print(
                f"   {check(a)} learned AUC {held['auc']:.4f} >= reference {ref:.4f} - 0.015; "
                f"{check(b)} calibrated ECE {held['ece']:.4f} <= 0.05"
            )
            print(f"   {check(not drift_all.alarm and not first.alarm)} no drift alarm on a random split (control)")
            fails += (not a) + (not b) + drift_all.alarm + first.alarm
        else:
            a = held["auc"] >= ref - 0.05
            print(
                f"   {check(a)} learned AUC {held['auc']:.4f} >= reference {ref:.4f} - 0.05; "
                f"{check(first.alarm)} drift flags the later leads from the first 500, before any outcome is known"
            )
            fails += (not a) + (not first.alarm)
        print()

    # 3. cascade vs LLM-only, on a sample of the stratified held-out leads, through the real chain
    trained = results["stratified"]
    sample = random.Random(1).sample(trained.test_rows, min(args.sample, len(trained.test_rows)))  # random: the whole period
    cal_ids = set(random.Random(2).sample(trained.card["train_ids"], args.sample))
    cal_rows = [r for r in rows if r.lead_id in cal_ids]  # the calibration's own leads: none of them held out
    with tempfile.TemporaryDirectory() as d, OpenAIEmulator() as emu:
        os.environ["BENCH_KEY"] = emu.api_key
        emu.default = bank_brain
        models = Store(Path(d) / "models" / "model")
        models.promote(models.save(trained.bundle, trained.card, card_markdown(trained.card)), "bench")
        out = {}
        variants: tuple[tuple[str, list[tuple[str, float | None]]], ...] = (
            ("LLM only", [("oa", None)]),
            ("learned only", [("learned", None)]),
            ("cascade", [("learned", args.escalate_below), ("oa", None)]),
        )
        for name, chain in variants:
            path = Path(d) / f"{name.replace(' ', '-')}.toml"
            path.write_text(config_toml(emu.base_url, models.root, chain), encoding="utf-8")
            _, cal_res = run_chain(path, cal_rows, emu)  # fit P(qualified) per answering step on training leads
            maps = fit_maps(outputs(cal_rows, cal_res), "isotonic")
            calls, res = run_chain(path, sample, emu)
            out[name] = chain_metrics(calls, sample, res, maps)
    print(
        f"== chains on {len(sample)} stratified held-out leads ({sum(r.outcome for r in sample)} subscribed); learned escalate_below "
        f"{args.escalate_below}, [review] confidence_below 0.6; LLM = OpenAI emulator + bank_brain rule"
    )
    print(f"   {'':14}{'LLM calls':>10}{'AUC score':>10}{'AUC P(q)':>9}{'ECE score/100':>14}{'ECE P(q)':>9}{'review':>8}{'cost/lead':>12}")
    for name, m in out.items():
        print(
            f"   {name:14}{m['llm_calls']:>10}{m['auc']:>10.4f}{m['auc_cal']:>9.4f}{m['ece_raw']:>14.4f}{m['ece_cal']:>9.4f}"
            f"{m['review']:>8.1%}{m['cost']:>12.8f}"
        )
    share = out["cascade"]["llm_calls"] / max(1, out["LLM only"]["llm_calls"])
    print(
        f"   cascade LLM calls: {share:.1%} of the LLM-only chain's. AUC of the calibrated P(qualified): cascade "
        f"{out['cascade']['auc_cal']:.4f}, LLM only {out['LLM only']['auc_cal']:.4f}, learned only {out['learned only']['auc_cal']:.4f}"
    )
    print(
        f"   (P(q): isotonic per answering step, fitted on {len(cal_rows)} training leads scored by the same chain; the raw scores of two"
        " steps are on different scales, which is why the cascade's raw-score AUC is lower)"
    )
    print(f"\n{'all checks passed' if not fails else f'{fails} check(s) failed'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
