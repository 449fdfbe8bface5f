"""`crmsync eval` end to end: the real CLI, the real OpenAI SDK, the local OpenAI emulator's default rule."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmsync.cli import cli
from crmsync.config import DEFAULT_INPUTS
from crmsync.errors import ConfigError
from crmsync.evaluation.cli import register
from crmsync.rubric import bundled_rubric_path, load_rubric
from tests.emulators import default_rule

if "eval" not in cli.commands:  # the lead engineer adds `register(cli)` to crmsync/cli.py; until then, here
    register(cli)

LABELS = Path(__file__).resolve().parent.parent / "crmsync" / "defaults" / "labeled_leads.csv"
MODEL = "gpt-eval"


def expected(path: Path, tiers: dict[str, int], qualified: tuple[str, ...] = ("A", "B")) -> dict[str, Any]:
    """Precision/recall computed independently: default_rule on each lead as the scorer sends it."""

    def tier(score: int) -> str:
        return next(t for t, cut in sorted(tiers.items(), key=lambda kv: -kv[1]) if score >= cut)

    tp = fp = fn = 0
    per = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            lead = {k: row[col] for k, col in DEFAULT_INPUTS.items() if row.get(col) not in (None, "")}
            t = tier(default_rule(lead)["score"])
            per[row["id"]] = t
            call, truth = t in qualified, row["outcome"] == "qualified"
            tp += call and truth
            fp += call and not truth
            fn += truth and not call
    return {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "tiers": per}


@pytest.fixture
def run_eval(openai_emu, make_config, tmp_path):
    def run(*args: str, targets: dict[str, float] | None = None, filename: str = "crmsync.toml") -> tuple[Any, dict[str, Any]]:
        cfg = make_config(
            providers={"oa": openai_emu.provider(MODEL)}, filename=filename, eval={"targets": targets or {}}, scoring={"concurrency": 4}
        )
        out_json = tmp_path / "metrics.json"
        out_json.unlink(missing_ok=True)
        result = CliRunner().invoke(cli, ["eval", "--config", cfg.source, "--json", str(out_json), *args])
        assert result.exit_code in (0, 1), result.output + repr(result.exception)
        return result, json.loads(out_json.read_text())

    return run


def test_eval_reports_what_the_default_rule_implies(run_eval, openai_emu, tmp_path):
    want = expected(LABELS, load_rubric(bundled_rubric_path()).tiers)
    html = tmp_path / "report.html"
    result, data = run_eval("--labels", str(LABELS), "--html", str(html), targets={"precision": 0.5, "recall": 0.5})
    ev = data["runs"][next(iter(data["runs"]))]
    assert ev["precision"] == pytest.approx(want["precision"], abs=1e-12)
    assert ev["recall"] == pytest.approx(want["recall"], abs=1e-12)
    assert ev["n_labeled"] == ev["n_scored"] == 60
    assert f"{want['precision']:.3f}" in result.output and f"{want['recall']:.3f}" in result.output
    assert "PASS" in result.output and "FAIL" not in result.output
    assert result.exit_code == 0
    assert openai_emu.request_count() == 60
    page = html.read_text()
    assert page.count("<svg") == 3 and "Reliability diagram" in page and "<script" not in page

    # the same report again: everything from the cache, no request to the model
    result, data = run_eval("--labels", str(LABELS))
    assert openai_emu.request_count() == 60
    assert data["from_cache"] == 60 and data["scored_now"] == 0
    assert data["runs"][next(iter(data["runs"]))]["precision"] == pytest.approx(want["precision"], abs=1e-12)


def test_failing_target_exits_1(run_eval):
    result, data = run_eval("--labels", str(LABELS), targets={"precision": 0.99, "max_ece": 0.9})
    assert result.exit_code == 1
    assert "FAIL" in result.output and "precision" in result.output
    checks = {c["name"]: c["passed"] for c in data["runs"][next(iter(data["runs"]))]["checks"]}
    assert checks == {"precision": False, "max_ece": True}


def test_reruns_report_stability_and_key_the_cache(run_eval, openai_emu):
    _, data = run_eval("--labels", str(LABELS), "--reruns", "2")
    assert openai_emu.request_count() == 120  # the rerun index is part of the cache key
    assert data["runs"][next(iter(data["runs"]))]["stability"] == 1.0  # the emulator is deterministic


def test_compare_prompt_lists_changed_leads(run_eval, tmp_path):
    base = bundled_rubric_path().read_text(encoding="utf-8")
    cand = tmp_path / "candidate.md"
    cand.write_text(base.replace("A = 80", "A = 85").replace("B = 60", "B = 50"), encoding="utf-8")
    new_tiers = load_rubric(cand).tiers
    old = expected(LABELS, load_rubric(bundled_rubric_path()).tiers)
    new = expected(LABELS, new_tiers)
    changed = sorted(i for i in old["tiers"] if old["tiers"][i] != new["tiers"][i])
    assert changed, "the candidate rubric should move some leads"
    result, data = run_eval("--labels", str(LABELS), "--compare-prompt", str(cand), targets={"precision": 0.01})
    assert sorted(c["id"] for c in data["changed"]) == changed
    assert f"{len(changed)} lead(s) changed tier" in result.output
    for lead_id in changed:
        assert lead_id in result.output
    names = list(data["runs"])
    assert names[0].startswith("current") and names[1].startswith("candidate")
    assert data["runs"][names[1]]["precision"] == pytest.approx(new["precision"], abs=1e-12)
    assert result.exit_code == 0


def test_bad_labels_file_names_the_row(openai_emu, make_config, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,company,outcome\nX1,Acme,qualified\nX2,Beta,maybe\n", encoding="utf-8")
    cfg = make_config(providers={"oa": openai_emu.provider(MODEL)})
    result = CliRunner().invoke(cli, ["eval", "--config", cfg.source, "--labels", str(bad)])
    assert isinstance(result.exception, ConfigError)
    assert "bad.csv:3" in str(result.exception) and "maybe" in str(result.exception)
    assert openai_emu.request_count() == 0
