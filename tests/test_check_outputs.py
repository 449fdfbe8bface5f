"""[fields.outputs]: an optional output left out (or set to "" / false) is off, as config.example.toml says, in
`check` and on the write path; a rubric too large for a sane prompt warns with its tokens and cost per lead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crmsync.checks import run_checks
from crmsync.config import Config, ConfigError, FieldsConfig, OutputFields, load_config
from crmsync.rubric import bundled_rubric_path, load_rubric
from crmsync.scoring import system_prompt
from tests.daemon_helpers import crm_rows, crmsync, lead, write_setup
from tests.emulators import OpenAIEmulator

REQUIRED_ONLY = '\n[fields.outputs]\nscore = "ai_score"\nneeds_review = "ai_needs_review"\n'


def test_without_a_table_every_default_name_applies() -> None:
    assert FieldsConfig().outputs == OutputFields()
    assert Config().fields.outputs.tier == "ai_tier"


def test_in_a_present_table_an_omitted_optional_output_is_off(make_config: Callable[..., Config]) -> None:
    cfg = make_config(fields={"outputs": {"score": "Score__c", "tier": "Tier__c", "confidence": "", "model": False}})
    o = cfg.fields.outputs
    assert (o.score, o.tier, o.needs_review) == ("Score__c", "Tier__c", "ai_needs_review")  # required: default applies
    assert o.confidence is None and o.model is None  # "" and false: off
    assert o.reasons is None and o.scored_at is None and o.rubric_version is None  # omitted: off


@pytest.mark.parametrize("off", ['""', "false"])
def test_a_required_output_cannot_be_turned_off(tmp_path: Path, off: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[fields.outputs]\nscore = {off}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f"{path}: 1 problem(s):\n  - `fields.outputs`: `score` cannot be turned off: crmsync writes a score "
        "and a needs-review flag to every lead it scores. Map it to a CRM field."
    )


def test_an_omitted_output_is_not_written_to_the_crm(tmp_path: Path) -> None:
    with OpenAIEmulator() as emu:
        cfg = write_setup(tmp_path, emu.base_url, [lead(1), lead(2)], extra=REQUIRED_ONLY)
        r = crmsync(cfg, "run", "--once", key=emu.api_key)
        assert r.returncode == 0, r.stderr
        c = crmsync(cfg, "check", key=emu.api_key)
    assert "all checks passed" in c.stdout, c.stdout
    assert (
        'warning fields.outputs: not written (left out of [fields.outputs], or set to "" / false): tier, '
        "confidence, reasons, scored_at, rubric_version, model"
    ) in " ".join(c.stdout.split())
    rows = crm_rows(tmp_path)
    assert all(row["ai_score"] is not None and row["ai_needs_review"] is not None for row in rows.values())
    assert not {"ai_tier", "ai_confidence", "ai_reasons", "ai_model"} & set(rows["E001"]), "no column, no value"


def _big_rubric(tmp_path: Path, kib: int) -> Path:
    """The bundled rubric plus about ``kib`` KiB of examples."""
    example = "An example lead that we scored 42 because it said so. " * 18 + "\n"  # about 1 KiB
    path = tmp_path / "big.md"
    path.write_text(bundled_rubric_path().read_text(encoding="utf-8") + "\n\n## Appendix: examples\n\n" + example * kib)
    return path


def test_a_huge_rubric_warns_with_tokens_and_cost(
    make_config: Callable[..., Config], make_price: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_OPENAI_KEY", "sk-test-warning")
    rubric = _big_rubric(tmp_path, 100)  # about 100 KiB
    providers = {"fast": {"type": "openai", "model": "gpt-x", "api_key_env": "CRMSYNC_TEST_OPENAI_KEY"}}
    cfg = make_config(providers=providers, rubric={"path": str(rubric)}, prices={"gpt-x": make_price(2.0, 8.0, cached_input=0.2)})
    text = system_prompt(load_rubric(rubric))
    size, tokens = len(text.encode()), len(text) // 4  # bytes shown; tokens estimated at 4 characters each
    (p,) = [p for p in run_checks(cfg) if p.where == "rubric"]
    assert p.severity == "warning"
    assert p.message == (
        f"the system prompt is {size:,} bytes, about {tokens:,} input tokens sent with every lead (more than 20,000); "
        f"input cost per lead fast: ${tokens * 2.0 / 1e6:.4f} (${tokens * 0.2 / 1e6:.4f} once cached)"
    )
    assert p.fix == "shorten the rubric (prompts/README.md); keep examples few and short"


def test_the_bundled_rubric_does_not_warn(make_config: Callable[..., Config]) -> None:
    assert [p for p in run_checks(make_config()) if p.where == "rubric"] == []
