"""`crmsync check` against HubSpot: dropdown outputs must offer every value crmsync writes (or a reviewer must
pick), and an optional output left out of [fields.outputs] is neither checked, created nor written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crmsync import ScoreUpdate, output_values
from crmsync.app import build_connector
from crmsync.checks import run_checks
from crmsync.config import Config

from hubspot_emulator import _opts
from hubspot_harness import FIELDS, Harness


def _config(make_config: Callable[..., Config], harness: Harness, **outputs: Any) -> Config:
    fields: dict[str, Any] = {"inputs": dict(FIELDS)}
    if outputs:
        fields["outputs"] = outputs
    return make_config(crm={"type": "hubspot", "options": {"host": harness.emu.host}}, fields=fields)


def test_a_tier_dropdown_without_every_tier_fails_check(harness: Harness, make_config: Callable[..., Config]) -> None:
    props = harness.emu.properties["contacts"]
    props["ai_tier"].update(type="enumeration", fieldType="select", options=_opts("A", "B", "C"))  # no D
    props["ai_review_decision"]["options"] = _opts("qualified")  # no unqualified
    problems = {p.where: p for p in run_checks(_config(make_config, harness))}
    tier = problems["fields.outputs.tier"]
    assert tier.message == "ai_tier is a list of options without D; crmsync writes A, B, C, D"
    assert tier.fix == "add the option values D to ai_tier in the CRM, or map tier to a text field"
    decision = problems["fields.review_decision"]
    assert decision.message == (
        "ai_review_decision is a list of options without unqualified; a reviewer must be able to choose qualified, unqualified"
    )
    assert tier.severity == decision.severity == "error"


def test_a_complete_dropdown_passes(harness: Harness, make_config: Callable[..., Config]) -> None:
    harness.emu.properties["contacts"]["ai_tier"].update(type="enumeration", fieldType="select", options=_opts("D", "C", "B", "A"))
    assert [p for p in run_checks(_config(make_config, harness)) if p.severity == "error"] == []


def test_a_model_dropdown_must_hold_each_chain_step(harness: Harness, make_config: Callable[..., Config]) -> None:
    harness.emu.properties["contacts"]["ai_model"].update(type="enumeration", fieldType="select", options=_opts("other:model"))
    problems = {p.where: p for p in run_checks(_config(make_config, harness))}
    assert problems["fields.outputs.model"].message == (
        "ai_model is a list of options without local:SmolLM2-135M-Instruct; crmsync writes local:SmolLM2-135M-Instruct"
    )


def test_omitted_optional_outputs_are_not_checked_created_or_written(harness: Harness, make_config: Callable[..., Config]) -> None:
    for name in ("ai_tier", "ai_confidence", "ai_reasons", "ai_scored_at", "ai_rubric_version", "ai_model"):
        del harness.emu.properties["contacts"][name]  # a portal that has only the two required outputs
    config = _config(make_config, harness, score="ai_score", needs_review="ai_needs_review")
    assert config.fields.outputs.tier is None and config.fields.outputs.model is None
    assert [p for p in run_checks(config) if p.severity == "error"] == []
    conn = build_connector(config)  # as `crmsync fields create` / `run` build it
    assert conn.create_fields() == []  # nothing optional to create
    rid = harness.add(1)[0]
    values = output_values(config.fields, {"score": 77, "tier": "B", "needs_review": False, "model": "fast:x", "confidence": 0.9})
    assert values == {"ai_score": 77, "ai_needs_review": False}
    assert conn.write([ScoreUpdate(rid, values)])[0].ok
    stored = harness.emu.get(rid)
    assert stored["ai_score"] == "77" and "ai_tier" not in stored and "ai_model" not in stored
