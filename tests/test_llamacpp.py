"""The genuine local model (SmolLM2-135M via llama-cpp-python) through the whole scoring path.

Its scores are meaningless; what is tested is the plumbing: prompt → grammar-constrained generation →
validation → chain → ScoreResult with real token counts. Kept to two leads (~2 s each on 2 cores).
"""
from __future__ import annotations

import time

import pytest

from crmsync.models import HopOutcome, ScoreStatus



@pytest.fixture(scope="module")
def local_scorer(tmp_path_factory):
    from crmsync.config import load_config
    from crmsync.app import build_scorer

    d = tmp_path_factory.mktemp("llamacpp")
    (d / "crmsync.toml").write_text(
        '[providers.local]\ntype = "llamacpp"\nmodel_path = "smollm2"\nn_ctx = 4096\nn_threads = 2\nmax_output_tokens = 256\n'
        '\n[[chain]]\nprovider = "local"\n\n[prices.SmolLM2-135M-Instruct]\ninput = 0\noutput = 0\nas_of = 2026-11-01\n',
        encoding="utf-8",
    )
    t0 = time.monotonic()
    scorer = build_scorer(load_config(d / "crmsync.toml"))  # the production composition root
    print(f"\nllamacpp: model load {time.monotonic() - t0:.2f}s")
    yield scorer
    for p in scorer.chain.providers.values():
        p.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["good", "injection"])
def test_local_model_whole_path(local_scorer, leads, rubric, name):
    t0 = time.monotonic()
    result = local_scorer.score(leads[name], rubric)
    took = time.monotonic() - t0
    hop = result.hops[0]
    print(f"llamacpp {name}: {took:.2f}s status={result.status.value} outcome={hop.outcome.value} "
          f"score={result.score} conf={result.confidence} in={hop.usage.input_tokens} out={hop.usage.output_tokens} "
          f"attempts={hop.attempts} review={[r.value for r in result.review_reasons]}")

    assert result.status in (ScoreStatus.scored, ScoreStatus.unscorable)
    assert result.rubric_version == rubric.version and len(result.hops) == 1
    assert hop.provider == "local" and hop.model == "SmolLM2-135M-Instruct"
    assert hop.outcome in (HopOutcome.ok, HopOutcome.repaired, HopOutcome.invalid)
    assert hop.usage.input_tokens > 1000  # the whole rubric went in (it is ~1,250 tokens)
    assert hop.usage.output_tokens > 0 and hop.cost_usd == 0.0
    if result.status is ScoreStatus.scored:
        assert isinstance(result.score, int) and 0 <= result.score <= 100
        assert result.tier == rubric.tier_for(result.score)
        assert 0.0 <= result.confidence <= 1.0 and 1 <= len(result.reasons) <= 3
    else:
        assert result.score is None and result.tier is None and result.needs_review
    if name == "injection":  # whatever the tiny model says, the lead is flagged by our own check
        assert result.needs_review
