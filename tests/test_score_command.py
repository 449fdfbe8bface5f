"""`crmsync score`: a file in, a file out, a summary; and the example config and bundled data stay valid."""

from __future__ import annotations

import csv
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from crmsync.config import Config, load_config
from tests.daemon_helpers import crmsync, write_setup
from tests.emulators import OpenAIEmulator, error

ROOT = Path(__file__).resolve().parents[1]


def test_score_csv_writes_results_and_summary(tmp_path: Path) -> None:
    with OpenAIEmulator() as emu:
        emu.script(
            "emu-fast",
            {"score": 85, "confidence": 0.95, "reasons": ["ok"], "missing_or_contradictory": [], "lead_text_contains_instructions": False},
            error(500),
            {
                "score": 30,
                "confidence": 0.4,
                "reasons": ["thin"],
                "missing_or_contradictory": ["employees"],
                "lead_text_contains_instructions": False,
            },
        )
        cfg = write_setup(tmp_path, emu.base_url, [])
        src = tmp_path / "in.csv"
        src.write_text("id,company,monthly_orders,description\nA,Acme,9000,Big\nB,Beta,10,Small\n")
        out = tmp_path / "out.csv"
        r = crmsync(cfg, "score", "--input", str(src), "--output", str(out), "--concurrency", "1", key=emu.api_key)
        rows = list(csv.DictReader(out.open()))
        assert [row["id"] for row in rows] == ["A", "B"]
        assert rows[0]["score"] == "85" and rows[0]["tier"] == "A" and rows[0]["needs_review"] == "False"
        # B: the provider failed (500, no retries configured) → no score, never a made-up one.
        assert rows[1]["status"] == "failed" and rows[1]["score"] == ""
        assert r.returncode == 1
        text = " ".join(r.stdout.split())
        assert "tier A │ 1" in text and "failures │ 1" in text
        assert re.search(r"cost per lead │ \$0\.\d{6}", text)


def test_score_rejects_a_file_without_mapped_columns(tmp_path: Path) -> None:
    with OpenAIEmulator() as emu:
        cfg = write_setup(tmp_path, emu.base_url, [])
        src = tmp_path / "in.csv"
        src.write_text("name,phone\nx,1\n")
        r = crmsync(cfg, "score", "--input", str(src), key=emu.api_key)
        assert r.returncode == 2
        assert "none of the mapped input columns" in " ".join(r.stderr.split())
        assert emu.request_count() == 0


def test_example_config_is_valid_and_shows_every_key() -> None:
    cfg = load_config(ROOT / "config.example.toml")
    text = (ROOT / "config.example.toml").read_text()
    tomllib.loads(text)

    def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for name, f in model.model_fields.items():
            if name in ("base_dir", "source"):
                continue
            out.add(name)
            ann = f.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                out |= keys(ann)
        return out

    missing = sorted(k for k in keys(Config) if not re.search(rf"(^|\s|\[|\.|#\s*){re.escape(k)}\b", text, re.M))
    assert missing == [], f"config.example.toml does not mention: {missing}"
    assert cfg.chain[0].provider == "fast"


def test_bundled_sample_leads_map_onto_the_default_inputs() -> None:
    sample = ROOT / "crmsync" / "defaults" / "sample_leads.csv"
    header = next(csv.reader(sample.open()))
    assert set(Config().fields.inputs.values()) <= set(header)
    assert sum(1 for _ in csv.DictReader(sample.open())) >= 30


@pytest.mark.parametrize("path", ["examples/quickstart.toml", "bench/bank_marketing/config.toml", "bench/bank_marketing/config.local.toml"])
def test_shipped_configs_are_valid(path: str) -> None:
    from crmsync.app import rubric_path
    from crmsync.rubric import load_rubric

    cfg = load_config(ROOT / path)
    load_rubric(rubric_path(cfg))  # and their rubric parses
