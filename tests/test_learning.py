"""Issue 15: `crmsync train` and its guardrails, through the CLI on labeled leads in a real ledger.

Each refusal is shown with the exact message a person sees: too few labels (with how many are missing), a field
set after the outcome (by name), the label under another name (by near-perfect separation), a model that does not
beat the serving one, a model that misses [eval.targets]. Promotion and rollback move the CURRENT pointer only.
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmsync.cli import cli
from crmsync.learning.artefact import store
from crmsync.providers.base import Provider
from crmsync.state import Ledger
from crmsync.testing import ProviderContract

INPUTS = {"monthly_orders": "monthly_orders", "industry": "industry", "employees": "employees"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def synth(n: int, seed: int = 0, *, informative: bool = True) -> list[tuple[dict[str, Any], int]]:
    """Leads whose outcome follows their order volume and industry (about a third qualified)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        orders = rng.randint(0, 10_000)
        industry = rng.choice(["apparel", "beauty", "food", "toys", "software"])
        employees = rng.randint(1, 400)
        z = -2.6 + 4.0 * orders / 10_000 + (0.8 if industry in ("apparel", "beauty") else -0.3)
        y = 1 if rng.random() < 1 / (1 + math.exp(-z)) else 0
        out.append(({"monthly_orders": orders, "industry": industry, "employees": employees}, y))
    return out


def put_labels(cfg: Any, rows: list[tuple[dict[str, Any], int]], start: int = 0) -> None:
    ledger = Ledger(cfg.state_dir / "ledger.sqlite", cfg.crm.type)
    try:
        for i, (inputs, y) in enumerate(rows, start):
            ledger.add_label(f"L{i:05d}", "review", "qualified" if y else "unqualified", inputs, T0 + timedelta(hours=i))
    finally:
        ledger.close()


def train(cfg: Any, *args: str) -> Any:
    return CliRunner().invoke(cli, ["train", *args, "--config", cfg.source])


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def toml(sections: dict[str, dict[str, Any]]) -> str:
    """Just enough TOML for these configs: tables of scalars, lists and inline tables."""

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {val(x)}' for k, x in v.items()) + "}"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    out = []
    for name, table in sections.items():
        if isinstance(table, list):
            for item in table:
                out += [f"[[{name}]]", *(f'"{k}" = {val(v)}' for k, v in item.items()), ""]
        else:
            out += [f"[{name}]", *(f'"{k}" = {val(v)}' for k, v in table.items()), ""]
    return "\n".join(out)


@pytest.fixture
def learn_config(tmp_path: Path):
    """``learn_config(inputs, **sections)`` → a Config loaded from a TOML file in tmp_path, state in tmp_path/state."""
    from crmsync.config import load_config

    count = [0]

    def make(inputs: dict[str, str] | bool | None = None, **sections: Any) -> Any:
        count[0] += 1
        data: dict[str, Any] = {"daemon": {"state_dir": str(tmp_path / "state")}}
        if inputs is not False:  # False: crmsync's default inputs (the bundled sample leads' columns)
            data["fields.inputs"] = inputs if isinstance(inputs, dict) else INPUTS
        for k, v in sections.items():
            if k in ("eval", "review", "fields") and isinstance(v, dict) and any(isinstance(x, dict) for x in v.values()):
                for sub, table in v.items():
                    data[f"{k}.{sub}"] = table
            else:
                data[k] = v
        path = tmp_path / f"crmsync-{count[0]}.toml"
        path.write_text(toml(data), encoding="utf-8")
        return load_config(path)

    return make


def test_too_few_labels_says_how_many_are_missing(learn_config) -> None:
    cfg = learn_config()
    rows = synth(400)
    pos = [r for r in rows if r[1]][:12]
    neg = [r for r in rows if not r[1]][:138]
    put_labels(cfg, pos + neg)
    r = train(cfg, "model")
    assert r.exit_code == 1
    assert flat(r.output).strip() == (
        "refused: 150 labeled lead(s), 12 qualified and 138 unqualified; training needs at least 200 with 30 of each "
        "([learn] min_labels, min_positives). Missing: 50 more labeled lead(s), 18 more qualified. "
        "Run `crmsync labels pull` as reviews and conversions come in."
    )
    assert store(cfg.state_dir, "model").versions() == []  # nothing written


def test_min_labels_is_configurable(learn_config) -> None:
    cfg = learn_config(learn={"min_labels": 100, "min_positives": 10})
    put_labels(cfg, synth(150))
    r = train(cfg, "model")
    assert r.exit_code == 0, r.output
    assert "trained v0001-" in r.output and "not serving" in r.output
    assert store(cfg.state_dir, "model").current() is None  # trained without --promote: nothing serves


def test_field_set_after_the_outcome_is_refused_by_name(learn_config) -> None:
    cfg = learn_config({**INPUTS, "lead_status": "Status", "OwnerId": "OwnerId"})
    rows = [({**x, "lead_status": "Open", "OwnerId": "005A"}, y) for x, y in synth(300)]
    put_labels(cfg, rows)
    r = train(cfg, "model")
    assert r.exit_code == 1
    assert flat(r.output).strip() == (
        "refused: `lead_status` (looks like a status field), `OwnerId` (looks like an owner field) is set after the outcome "
        "is known, so a model trained on it would look good and predict nothing for a new lead. Remove it from "
        "[fields] inputs, or, if it really is known when the lead arrives, list it in [learn] allow_fields."
    )


def test_the_label_under_another_name_is_refused(learn_config) -> None:
    cfg = learn_config({**INPUTS, "crm_flag": "crm_flag"})
    rows = [({**x, "crm_flag": "green" if y else "grey"}, y) for x, y in synth(300)]
    put_labels(cfg, rows)
    r = train(cfg, "model")
    assert r.exit_code == 1
    assert flat(r.output).strip() == (
        "refused: `crm_flag` (AUC 1.000 on its own) separates qualified from unqualified leads almost perfectly by itself; "
        "that is the label under another name (a field filled when the outcome is known), not a signal a new lead "
        "carries. Remove it from [fields] inputs ([learn] leak_auc = 0.97)."
    )


def test_an_identifier_is_skipped_not_mistaken_for_a_leak(learn_config) -> None:
    cfg = learn_config({**INPUTS, "company": "company"})
    put_labels(cfg, [({**x, "company": f"Company {i}"}, y) for i, (x, y) in enumerate(synth(300))])
    r = train(cfg, "model")
    assert r.exit_code == 0, r.output
    assert "not used: company (free text or an identifier: 210 distinct values in 210 leads)" in flat(r.output)


def test_promote_beat_refuse_and_roll_back(learn_config) -> None:
    weak = learn_config({"employees": "employees", "industry": "industry"})  # cannot see order volume, the strongest signal
    strong = learn_config()
    put_labels(strong, synth(600))
    models = store(strong.state_dir, "model")

    r = train(weak, "model", "--promote")
    assert r.exit_code == 0, r.output
    first = models.current()
    assert first is not None and f"promoted {first.name}: first model; held-out ROC AUC" in flat(r.output)

    r = train(strong, "model", "--promote")
    assert r.exit_code == 0, r.output
    second = models.current()
    assert second is not None and second != first
    m = re.search(
        r"promoted (\S+): ROC AUC (\S+) against (\S+) for (\S+) on the same (\d+) held-out leads; (\S+) is kept: "
        r"`crmsync train rollback` serves it again",
        flat(r.output),
    )
    assert m, r.output
    assert (m.group(1), m.group(4), m.group(6)) == (second.name, first.name, first.name) and float(m.group(2)) > float(m.group(3))
    assert int(m.group(5)) == 180  # the latest 30 % (time-ordered split), none of them in the first model's training

    r = train(weak, "model", "--promote")  # the weak model again: it does not beat the serving one
    assert r.exit_code == 1, r.output
    third = models.versions()[-1]
    m = re.search(
        r"not promoted: it does not beat the serving (\S+): ROC AUC (\S+) against (\S+) on the same 180 held-out leads; "
        r"the serving model stays\. (\S+) is kept on disk, not serving\.",
        flat(r.output),
    )
    assert m, r.output
    assert (m.group(1), m.group(4)) == (second.name, third.name) and float(m.group(2)) < float(m.group(3))
    assert models.current() == second  # the serving model did not move
    shown = flat(train(strong, "show").output)
    assert f"model serving {second.name}" in shown and f"model {first.name}" in shown and f"model {third.name}" in shown

    r = train(strong, "rollback")
    assert r.exit_code == 0, r.output
    assert flat(r.output).strip() == f"rolled back the model: {first.name} serves again ({second.name} is kept on disk)"
    assert models.current() == first and len(models.versions()) == 3  # nothing deleted

    r = train(strong, "rollback")
    assert r.exit_code == 1
    assert flat(r.output).strip() == (
        f"nothing to roll back to: {first.name} is the first version that served under {strong.state_dir / 'models' / 'model'}"
    )


def test_a_model_missing_the_eval_targets_is_not_promoted(learn_config) -> None:
    cfg = learn_config(eval={"targets": {"precision": 0.99}})
    put_labels(cfg, synth(400))
    r = train(cfg, "model", "--promote")
    assert r.exit_code == 1
    assert re.search(
        r"not promoted: held-out metrics miss \[eval\.targets\]: precision 0\.\d+ < 0\.99\. v0001-[0-9a-f]{12} is kept on disk, "
        r"not serving\.",
        flat(r.output),
    ), r.output
    assert store(cfg.state_dir, "model").current() is None


def test_model_card_has_window_features_counts_metrics_and_hash(learn_config) -> None:
    cfg = learn_config()
    put_labels(cfg, synth(400))
    assert train(cfg, "model", "--promote", "--split", "stratified").exit_code == 0
    v = store(cfg.state_dir, "model").current()
    assert v is not None
    card = v.card()
    assert card["hash"] == v.hash and v.name.endswith(v.hash)
    assert card["split"] == "stratified" and card["data_window"]["from"].startswith("2026-01-01")
    assert card["features"]["numeric"] == ["monthly_orders", "employees"] and card["features"]["categorical"] == ["industry"]
    assert card["labels"]["total"] == 400 and card["labels"]["test"] == 120
    assert 0.6 < card["metrics"]["held_out"]["auc"] <= 1.0 and card["metrics"]["held_out"]["ece"] is not None
    assert "held-out metrics: ROC AUC" in (v.path / "card.md").read_text(encoding="utf-8")


def test_rollback_with_nothing_serving(learn_config) -> None:
    cfg = learn_config()
    r = train(cfg, "rollback")
    assert r.exit_code == 1
    assert flat(r.output).strip() == f"nothing to roll back: no model is serving under {cfg.state_dir / 'models' / 'model'}"


# -- the learned provider: a free first step of the chain -------------------------------------------------------------
def cascade_config(learn_config, openai_emu, escalate_below: float = 0.8, sections: dict[str, Any] | None = None) -> Any:
    return learn_config(
        **{
            "providers.learned": {"type": "learned", "path": "state/models/model"},
            "providers.oa": openai_emu.provider("gpt-cascade"),
            "chain": [{"provider": "learned", "escalate_below": escalate_below}, {"provider": "oa"}],
            **(sections or {}),
        }
    )


def test_cascade_sends_only_the_uncertain_band_to_the_llm(learn_config, openai_emu) -> None:
    from crmsync.app import build_scorer
    from crmsync.models import HopOutcome, Lead

    cfg = cascade_config(learn_config, openai_emu)
    put_labels(cfg, synth(600))
    assert train(cfg, "model", "--promote").exit_code == 0
    serving = store(cfg.state_dir, "model").current()
    assert serving is not None
    scorer = build_scorer(cfg)
    try:
        results = [scorer.score(Lead(id=f"N{i}", inputs=x)) for i, (x, _) in enumerate(synth(60, seed=7))]
    finally:
        scorer.close()
    first = [r.hops[0] for r in results]
    assert all(
        h.provider == "learned" and h.outcome == HopOutcome.ok and h.cost_usd == 0 and h.model == f"learned-{serving.hash}" for h in first
    )
    unsure = sum(1 for h in first if (h.confidence or 0) < 0.8)
    assert 0 < unsure < 60
    assert openai_emu.request_count() == unsure  # only the uncertain band reached the LLM
    kept = [r for r in results if len(r.hops) == 1]
    assert len(kept) == 60 - unsure and all(r.model == f"learned-{serving.hash}" and r.cost_usd == 0 for r in kept)


def test_no_model_serving_falls_back_to_the_llm_and_check_says_why(learn_config, openai_emu) -> None:
    from crmsync.app import build_scorer
    from crmsync.models import HopOutcome, Lead

    cfg = cascade_config(learn_config, openai_emu)
    scorer = build_scorer(cfg)
    try:
        learned = scorer.chain.providers["learned"]
        where = cfg.state_dir / "models" / "model"
        [problem] = learned.check()
        assert problem.severity == "warning" and problem.where == "providers.learned"
        assert problem.message == (
            f"no learned model is serving under {where}: run `crmsync train model --promote`; "
            "until then every lead goes to the next chain step"
        )
        r = scorer.score(Lead(id="N1", inputs={"monthly_orders": 9000, "industry": "apparel", "employees": 10}))
    finally:
        scorer.close()
    assert [h.outcome for h in r.hops] == [HopOutcome.unavailable, HopOutcome.ok] and r.provider == "oa"
    assert openai_emu.request_count() == 1


def test_check_warns_on_day_zero_and_errs_when_nothing_follows_the_learned_step(learn_config, openai_emu) -> None:
    """`crmsync check` before the first training: a warning while an LLM step follows, an error when none does."""
    from crmsync.checks import provider_problems

    cfg = cascade_config(learn_config, openai_emu)
    assert [p.severity for p in provider_problems(cfg, "learned")] == ["warning"]
    alone = cfg.model_copy(update={"chain": [step for step in cfg.chain if step.provider == "learned"]})
    [problem] = provider_problems(alone, "learned")
    assert problem.severity == "error" and "no learned model is serving" in problem.message


def test_learned_provider_without_the_extra_names_it(learn_config, openai_emu, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from crmsync.app import build_scorer
    from crmsync.errors import ConfigError

    cfg = cascade_config(learn_config, openai_emu)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if scikit-learn were not installed: `import sklearn` fails
    with pytest.raises(ConfigError) as exc:
        build_scorer(cfg)
    assert str(exc.value) == "provider 'learned' (type learned) needs scikit-learn: pip install 'crmsync[learn]'"


def test_drift_shows_in_status_once_the_leads_change(learn_config, openai_emu) -> None:
    from crmsync.app import build_scorer
    from crmsync.models import Lead

    cfg = cascade_config(learn_config, openai_emu, escalate_below=0.0)
    put_labels(cfg, synth(600))
    assert train(cfg, "model", "--promote").exit_code == 0
    r = CliRunner().invoke(cli, ["status", "--config", cfg.source])
    assert r.exit_code == 0, r.output
    assert re.search(r"learned model v0001-\w+: 0 lead\(s\) scored since training; drift is judged from 100", flat(r.output)), r.output

    def score(rows: list[tuple[dict[str, Any], int]]) -> str:
        scorer = build_scorer(cfg)
        try:
            for i, (x, _) in enumerate(rows):
                scorer.score(Lead(id=f"D{i}", inputs=x))
        finally:
            scorer.close()  # flushes the drift window next to the model
        return flat(CliRunner().invoke(cli, ["status", "--config", cfg.source]).output)

    out = score(synth(150, seed=3))  # the same population as the training window
    assert re.search(
        r"learned model v0001-\w+: stable \(score PSI 0\.\d+, largest \w+ PSI 0\.\d+, alarm above 0\.25; 150 recent leads\)", out
    ), out
    big = [({**x, "monthly_orders": 9_000 + x["monthly_orders"] // 10, "industry": "software"}, y) for x, y in synth(150, seed=4)]
    out = score(big)  # order volumes and industries the model never saw this often
    assert re.search(
        r"learned model v0001-\w+: DRIFT: the leads no longer look like the training window; retrain "
        r"\(score PSI \d+\.\d+, largest \w+ PSI \d+\.\d+, alarm above 0\.25; 300 recent leads\)",
        out,
    ), out
    assert openai_emu.request_count() == 0  # escalate_below 0: the learned step answered every lead

    from crmsync.metrics import Metrics  # /metrics reads the same window

    metrics = Metrics(cfg.state_dir, cfg.learn.drift_psi_alarm)
    metrics.observe_drift()
    assert metrics.registry.get_sample_value("crmsync_learned_drift_alarm") == 1
    assert (metrics.registry.get_sample_value("crmsync_learned_drift_psi", {"what": "scores"}) or 0) > 0.25


# -- calibration: the chain's answers → P(qualified), written to the CRM; review on a probability band ---------------------
def put_scored_labels(cfg: Any, n: int, rubric_version: str, seed: int = 0) -> None:
    """Leads the chain scored (provider "oa") whose outcome follows the score, but not as score/100 says."""
    from crmsync.models import ScoreResult, ScoreStatus

    rng = random.Random(seed)
    ledger = Ledger(cfg.state_dir / "ledger.sqlite", cfg.crm.type)
    try:
        for i in range(n):
            s = rng.randint(0, 100)
            y = 1 if rng.random() < 1 / (1 + math.exp(-(s - 70) / 8)) else 0  # the model is over-optimistic: 60 means ~22 %
            res = ScoreResult(
                status=ScoreStatus.scored,
                score=s,
                tier="A" if s >= 80 else "B" if s >= 60 else "C" if s >= 40 else "D",
                confidence=0.9 if i % 2 else 0.55,
                rubric_version=rubric_version,
                provider="oa",
                model="gpt-x",
                scored_at=T0 + timedelta(hours=i),
            )
            ledger.record_results([(f"C{i:05d}", f"fp{i}", res)])
            ledger.add_label(f"C{i:05d}", "review", "qualified" if y else "unqualified", {}, T0 + timedelta(hours=i))
        ledger.mark_written([f"C{i:05d}" for i in range(n)])  # history: scored and written long ago
    finally:
        ledger.close()


def test_calibration_writes_probability_and_review_follows_the_band(learn_config, openai_emu) -> None:
    import sqlite3

    from crmsync.models import ReviewReason
    from crmsync.rubric import bundled_rubric_path, load_rubric

    version = load_rubric(bundled_rubric_path()).version
    cfg = learn_config(
        False,
        **{
            "providers.oa": openai_emu.provider("gpt-cal"),
            "chain": [{"provider": "oa"}],
            "crm": {"type": "sqlite"},
            "fields.outputs": {"probability": "ai_probability"},
            "review": {"probability_band": [0.3, 0.7]},
        },
    )
    put_scored_labels(cfg, 400, version)
    r = train(cfg, "calibration", "--promote")
    assert r.exit_code == 0, r.output
    m = re.search(r"promoted (v0001-\w+): first calibration; held-out ECE (\S+) \(raw score (\S+)\)", flat(r.output))
    assert m, r.output
    assert float(m.group(2)) < float(m.group(3))  # the map is better calibrated than reading the score as a probability

    r = CliRunner().invoke(cli, ["run", "--once", "--config", cfg.source])
    assert r.exit_code == 0, r.output
    ledger = Ledger(cfg.state_dir / "ledger.sqlite", cfg.crm.type)
    db = sqlite3.connect(cfg.state_dir / "local-crm.sqlite")
    try:
        crm = dict(db.execute("SELECT id, ai_probability FROM leads WHERE ai_score IS NOT NULL").fetchall())
        assert len(crm) == 40
        for lead_id, p in crm.items():
            row = ledger.get(lead_id)
            assert row is not None and row.result is not None and row.result.probability == p
            assert p is not None, (lead_id, row.result)
            assert (ReviewReason.uncertain_probability in row.result.review_reasons) == (0.3 <= p <= 0.7)
            assert ReviewReason.low_confidence not in row.result.review_reasons  # the band replaces the raw confidence rule
    finally:
        db.close()
        ledger.close()
    assert len(set(crm.values())) > 1 and any(0.3 <= p <= 0.7 for p in crm.values())


def test_calibration_refuses_too_few_scored_labels(learn_config, openai_emu) -> None:
    cfg = learn_config(False, **{"providers.oa": openai_emu.provider("gpt-cal"), "chain": [{"provider": "oa"}]})
    put_scored_labels(cfg, 120, "v1")
    r = train(cfg, "calibration")
    assert r.exit_code == 1
    out = flat(r.output)
    assert out.startswith("120 labeled lead(s), 120 of them scored by the chain refused: 120 labeled lead(s), ")
    assert "calibration needs at least 200 with 30 of each ([learn] min_labels, min_positives). Missing: 80 more labeled lead(s)" in out


# -- eval --learned: every variant side by side on the same held-out labels -------------------------------------------------
def test_eval_side_by_side_on_the_same_held_out_leads(learn_config, openai_emu, tmp_path: Path) -> None:
    import csv
    import json

    from crmsync.rubric import bundled_rubric_path, load_rubric

    cfg = cascade_config(learn_config, openai_emu, sections={"prices.gpt-cascade": {"input": 1.0, "output": 2.0, "as_of": "2026-11-01"}})
    train_rows = synth(600)
    put_labels(cfg, train_rows)
    assert train(cfg, "model", "--promote").exit_code == 0
    put_scored_labels(cfg, 400, load_rubric(bundled_rubric_path()).version)  # chain answers for a calibration
    assert train(cfg, "calibration", "--promote").exit_code == 0
    serving = store(cfg.state_dir, "model").current()
    assert serving is not None
    trained_on = serving.card()["train_ids"][:10]  # ten leads the model learned from: they must be left out

    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *INPUTS.values(), "outcome"])
        rows = [(f"E{i:04d}", x, y) for i, (x, y) in enumerate(synth(200, seed=11))]
        rows += [(lid, train_rows[int(lid[1:])][0], train_rows[int(lid[1:])][1]) for lid in trained_on]
        for lid, x, y in rows:
            w.writerow([lid, *(x[k] for k in INPUTS), "qualified" if y else "unqualified"])
    out_json, out_html = tmp_path / "side.json", tmp_path / "side.html"
    r = CliRunner().invoke(
        cli, ["eval", "--learned", "--config", cfg.source, "--labels", str(labels), "--json", str(out_json), "--html", str(out_html)]
    )
    assert r.exit_code == 0, r.output
    assert f"learned model {serving.name}; 10 lead(s) it was trained on are left out of every column: 200 held-out lead(s)" in flat(
        r.output
    )
    runs = json.loads(out_json.read_text())["runs"]
    assert list(runs) == [
        "rubric chain",
        "rubric chain + calibration",
        "learned step",
        "learned step + calibration",
        "cascade (<0.8 to LLM)",
        "cascade (<0.8 to LLM) + calibration",
    ]
    assert {v["n_labeled"] for v in runs.values()} == {200}
    extra = {name: dict(v["extra"]) for name, v in runs.items()}
    assert extra["rubric chain"]["LLM calls per lead"] == "1.000" and extra["learned step"]["LLM calls per lead"] == "0.000"
    cascade_calls = float(extra["cascade (<0.8 to LLM)"]["LLM calls per lead"])
    assert 0 < cascade_calls < 1
    assert openai_emu.request_count() == 200 + round(cascade_calls * 200)  # the cascade paid only for its uncertain band
    assert (
        runs["learned step"]["cost_per_lead"] == 0
        and 0 < runs["cascade (<0.8 to LLM)"]["cost_per_lead"] < runs["rubric chain"]["cost_per_lead"]
    )
    assert "ROC AUC (P(qualified))" in extra["cascade (<0.8 to LLM) + calibration"] and "ECE (P(qualified))" not in extra["learned step"]
    page = out_html.read_text(encoding="utf-8")
    assert page.count("<svg") == 18 and "cascade (&lt;0.8 to LLM)" in page and "LLM calls per lead" in page

    r = CliRunner().invoke(cli, ["eval", "--learned", "--config", cfg.source, "--labels", str(labels)])  # again: nothing paid twice
    assert r.exit_code == 0 and "scored now 0, from cache 600" in flat(r.output), r.output
    assert "crmsync eval --learned: 200 held-out labeled leads" in flat(r.output)
    assert openai_emu.request_count() == 200 + round(cascade_calls * 200)


# -- the provider contract every provider passes ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crmsync.learning.artefact import Store
    from crmsync.learning.settings import LearnConfig
    from crmsync.learning.train import LabeledRow, card_markdown, fit

    rows = [LabeledRow(f"L{i}", x, y, f"{i:06d}") for i, (x, y) in enumerate(synth(400))]
    trained = fit(rows, list(INPUTS), LearnConfig())
    root = tmp_path_factory.mktemp("contract") / "models" / "model"
    models = Store(root)
    models.promote(models.save(trained.bundle, trained.card, card_markdown(trained.card)), "contract")
    return root


class TestLearnedProviderContract(ProviderContract):
    @pytest.fixture
    def provider(self, model_store: Path) -> Provider:
        from crmsync.providers.learned_provider import LearnedProvider

        return LearnedProvider("learned", LearnedProvider.Options(type="learned", path=str(model_store)))

    @pytest.fixture
    def broken_provider(self, tmp_path: Path) -> Provider:
        from crmsync.providers.learned_provider import LearnedProvider

        root = tmp_path / "damaged"  # CURRENT names a version whose model file is gone (day zero is only a warning)
        root.mkdir()
        (root / "CURRENT").write_text("v0001-0123456789ab\n", encoding="utf-8")
        return LearnedProvider("learned", LearnedProvider.Options(type="learned", path=str(root)))
