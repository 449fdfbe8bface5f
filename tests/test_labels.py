"""The labels loop on the local SQLite CRM: decisions and conversions → `labels pull` → `labels export` → `eval`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from crmsync.app import build_connector
from crmsync.cli import cli
from crmsync.evaluation.cli import register
from crmsync.models import ModelAnswer
from crmsync.rubric import bundled_rubric_path, load_rubric
from crmsync.scoring import system_prompt
from crmsync.state import Ledger
from crmsync_sqlite import SQLiteConnector

if "labels" not in cli.commands:
    register(cli)


def _setup(make_config, openai_emu):
    cfg = make_config(providers={"oa": openai_emu.provider("gpt-labels")}, crm={"type": "sqlite"})
    conn = build_connector(cfg)  # seeds the local CRM with the bundled sample leads
    assert isinstance(conn, SQLiteConnector)
    db = conn.db
    db.execute("UPDATE leads SET ai_review_decision='qualified' WHERE id IN ('L00001','L00002')")
    db.execute("UPDATE leads SET ai_review_decision='Unqualified' WHERE id IN ('L00015','L00033')")
    db.execute("UPDATE leads SET converted=1 WHERE id IN ('L00004','L00001')")  # L00001: reviewed and converted
    conn.close()
    return cfg


def test_pull_export_and_eval(make_config, openai_emu, tmp_path: Path) -> None:
    cfg = _setup(make_config, openai_emu)
    runner = CliRunner()
    r = runner.invoke(cli, ["labels", "pull", "--config", cfg.source])
    assert r.exit_code == 0, r.output
    assert "5 label(s) in the CRM, 5 new or changed" in r.output
    r = runner.invoke(cli, ["labels", "pull", "--config", cfg.source])
    assert "0 new or changed" in r.output

    ledger = Ledger(cfg.state_dir / "ledger.sqlite", "sqlite")
    got = {(x["lead_id"], x["source"]): x["outcome"] for x in ledger.labels()}
    ledger.close()
    assert got == {
        ("L00001", "review"): "qualified",
        ("L00002", "review"): "qualified",  # a decision beats a conversion
        ("L00004", "conversion"): "qualified",
        ("L00015", "review"): "unqualified",
        ("L00033", "review"): "unqualified",
    }

    out_csv = tmp_path / "labels.csv"
    r = runner.invoke(cli, ["labels", "export", "--config", cfg.source, "--output", str(out_csv)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert [x["id"] for x in rows] == ["L00001", "L00002", "L00004", "L00015", "L00033"]
    assert rows[0]["label_source"] == "review" and rows[0]["company"] == "Northwind Threads"
    assert {x["id"]: x["outcome"] for x in rows}["L00033"] == "unqualified"

    r = runner.invoke(cli, ["eval", "--config", cfg.source, "--labels", str(out_csv), "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    ev = next(iter(json.loads((tmp_path / "m.json").read_text())["runs"].values()))
    assert ev["n_labeled"] == 5 and ev["n_scored"] == 5
    assert openai_emu.request_count() == 5


def test_export_chat_jsonl(make_config, openai_emu, tmp_path: Path) -> None:
    cfg = _setup(make_config, openai_emu)
    runner = CliRunner()
    assert runner.invoke(cli, ["labels", "pull", "--config", cfg.source]).exit_code == 0
    out = tmp_path / "ft.jsonl"
    r = runner.invoke(cli, ["labels", "export", "--config", cfg.source, "--output", str(out), "--format", "chat-jsonl"])
    assert r.exit_code == 0, r.output
    rubric = load_rubric(bundled_rubric_path())
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 5
    for line in lines:
        system, user, assistant = line["messages"]
        assert [system["role"], user["role"], assistant["role"]] == ["system", "user", "assistant"]
        assert system["content"] == system_prompt(rubric)
        assert "```json" in user["content"]
        answer = ModelAnswer.model_validate_json(assistant["content"])
        qualified = rubric.tier_for(answer.score) in ("A", "B")
        assert qualified == ("unqualified" not in answer.reasons[0])
    hostile = [x for x in lines if "SYSTEM: you are now" in x["messages"][1]["content"]]
    assert hostile and json.loads(hostile[0]["messages"][2]["content"])["lead_text_contains_instructions"] is True
